"""Physics: grid, units, operators on the sphere and named constraints, against analytic fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from astrobio_hf.physics import (
    CONSTRAINT_NAMES,
    PhysicsConstraints,
    SphereGrid,
    cell_centre_latitudes,
    d_dlat,
    d_dlon,
    sphere_divergence,
    sphere_gradient,
    to_si,
    uniform_longitudes,
    vertical_derivative,
)

G, R, CP, A = 9.80665, 287.05, 1004.6, 6.371e6
EARTH = dict(gravity=G, gas_constant=R, heat_capacity=CP, planet_radius=A)
LAT = cell_centre_latitudes(16)
LON = uniform_longitudes(32)
Z_LEVELS = np.array([0.0, 1000.0, 2500.0, 4500.0, 7000.0, 10000.0])  # non-uniform on purpose
VARS = ("T", "p", "rho", "q", "u", "v")


def _constraints(weights=None, variables=VARS, levels=Z_LEVELS, level_unit="m", **kw):
    weights = {n: 1.0 for n in CONSTRAINT_NAMES} if weights is None else weights
    return PhysicsConstraints(variables, weights, lat_deg=LAT, lon_deg=LON, levels=levels, level_unit=level_unit, **kw)


def _grid_coords(dtype=torch.float64):
    lat = torch.deg2rad(torch.as_tensor(LAT, dtype=dtype))
    lon = torch.deg2rad(torch.as_tensor(LON, dtype=dtype))
    return lat, lon


def _cube(T, p, rho, u=None, v=None, tc=3, tg=2, batch=1):
    """Stack (Z, Y, X)-broadcastable numpy fields into (B, V, Tc, Tg, Z, Y, X) float64."""
    shape = (len(Z_LEVELS), len(LAT), len(LON))
    zero = np.zeros(shape)
    parts = [T, p, rho, np.full(shape, 1e-3), zero if u is None else u, zero if v is None else v]
    cube = np.stack([np.broadcast_to(f, shape) for f in parts])  # (V, Z, Y, X)
    cube = np.broadcast_to(cube[:, None, None], (len(VARS), tc, tg) + shape)
    return torch.tensor(np.broadcast_to(cube, (batch,) + cube.shape).copy())


def _isothermal(T0=250.0, p0=1.0e5, g=G, gas=R):
    z = Z_LEVELS[:, None, None]
    p = p0 * np.exp(-g * z / (gas * T0))
    T = np.full_like(p, T0)
    return T, p, p / (gas * T)


# ---------------------------------------------------------------------------------------------- grid / units


def test_grid_validation_and_radians():
    grid = SphereGrid(LAT, LON, Z_LEVELS, "m")
    assert grid.shape == (6, 16, 32)
    assert torch.allclose(grid.lat_rad(), torch.deg2rad(torch.tensor(LAT)))
    assert LAT[0] == -84.375 and LAT[-1] == 84.375 and LON[-1] == 348.75
    with pytest.raises(ValueError, match="ascending"):
        SphereGrid(LAT[::-1], LON, Z_LEVELS, "m")
    with pytest.raises(ValueError, match=r"\[-90, 90\]"):
        SphereGrid([-95.0, 0.0], LON, Z_LEVELS, "m")
    with pytest.raises(ValueError, match="uniform"):
        SphereGrid(LAT, [0.0, 10.0, 30.0, 40.0], Z_LEVELS, "m")
    with pytest.raises(ValueError, match="level_unit"):
        SphereGrid(LAT, LON, Z_LEVELS, "hPa")
    with pytest.raises(ValueError, match="gravity"):
        SphereGrid(LAT, LON, Z_LEVELS, "m", gravity=-1.0)


def test_to_si_conversions_and_errors():
    np.testing.assert_allclose(to_si(np.array([0.0, 25.0]), "degC", "T")[0], [273.15, 298.15])
    assert to_si(np.array([1013.25]), "hPa", "p") == (pytest.approx(np.array([101325.0])), "Pa")
    np.testing.assert_allclose(to_si(np.array([1000.0]), "mbar")[0], [1e5])
    assert to_si(np.array([3.6]), "km h-1", "u")[1] == "m s-1"
    np.testing.assert_allclose(to_si(np.array([3.6]), "km h-1", "u")[0], [1.0])
    assert to_si(np.array([1.2]), "kg m-3", "rho")[1] == "kg m-3"
    np.testing.assert_allclose(to_si(np.array([5.0]), "g kg-1", "q")[0], [5e-3])
    np.testing.assert_allclose(to_si(np.array([50.0]), "%", "q")[0], [0.5])
    assert to_si(np.array([0.01]), "kg kg-1", "q")[1] == "1"
    with pytest.raises(ValueError, match="missing unit"):
        to_si(np.array([1.0]), None, "T")
    with pytest.raises(ValueError, match="unknown unit 'parsecs_per_fortnight'"):
        to_si(np.array([1.0]), "parsecs_per_fortnight")
    with pytest.raises(ValueError, match="pressure"):
        to_si(np.array([1.0]), "K", "p")


# ---------------------------------------------------------------------------------------------- operators


def test_horizontal_derivatives_analytic():
    lat, lon = _grid_coords()
    lam = lon[None, :].expand(16, 32)
    phi = lat[:, None].expand(16, 32)
    # d/dlambda sin(lambda): centred difference = cos(lambda) sin(dl)/dl
    dl = lon[1] - lon[0]
    assert torch.allclose(d_dlon(torch.sin(lam), lon), torch.cos(lam) * torch.sin(dl) / dl, atol=1e-12)
    # d/dphi of a quadratic is exact (interior and one-sided edges), also on a non-uniform latitude grid
    lat_nu = torch.deg2rad(torch.tensor([-80.0, -60.0, -45.0, -20.0, 0.0, 10.0, 35.0, 70.0], dtype=torch.float64))
    f = (3 * lat_nu**2 - lat_nu + 2)[:, None].expand(8, 5)
    assert torch.allclose(d_dlat(f, lat_nu), (6 * lat_nu - 1)[:, None].expand(8, 5), atol=1e-12)
    # gradient of a*sin(phi) is (0, cos(phi)) up to O(dphi^2)
    east, north = sphere_gradient(A * torch.sin(phi), lat, lon, A)
    assert east.abs().max() < 1e-12
    assert torch.allclose(north, torch.cos(phi), rtol=0.0, atol=1e-2)  # second order: ~dphi^2/6


def test_solid_body_rotation_has_zero_divergence():
    lat, lon = _grid_coords()
    phi, lam = lat[:, None], lon[None, :]
    U = 40.0
    # rotation about the polar axis: exactly 0 discretely
    u = (U * torch.cos(phi)).expand(16, 32)
    assert sphere_divergence(u, torch.zeros_like(u), lat, lon, A).abs().max() < 1e-18
    # rotation about a tilted axis: 0 analytically, discretisation error small against U/a
    alpha = 0.6
    u = U * (torch.cos(phi) * math.cos(alpha) + torch.sin(phi) * torch.cos(lam) * math.sin(alpha))
    v = -U * torch.sin(lam) * math.sin(alpha) * torch.ones_like(phi)
    div = sphere_divergence(u, v, lat, lon, A) * A / U  # in units of U/a
    # equal lat/lon spacing: the centred truncation errors cancel in the interior; the one-sided edge rows
    # next to the poles carry an O(dphi^2 / cos(phi)) error
    assert div[1:-1].abs().max() < 1e-9
    assert div[[0, -1]].abs().max() < 0.2
    # a divergent field is detected: v = U sin(phi) cos(phi) -> div = (U / a) (cos^2 phi - 2 sin^2 phi)
    v_div = (U * torch.sin(phi) * torch.cos(phi)).expand(16, 32)
    assert (sphere_divergence(torch.zeros_like(v_div), v_div, lat, lon, A).abs().mean() * A / U) > 0.3


def test_radius_tensor_broadcasts_over_batch():
    lat, lon = _grid_coords()
    torch.manual_seed(0)
    u, v = torch.randn(2, 3, 16, 32, dtype=torch.float64), torch.randn(2, 3, 16, 32, dtype=torch.float64)
    radius = torch.tensor([6.0e6, 3.0e6], dtype=torch.float64)
    div = sphere_divergence(u, v, lat, lon, radius)
    for b in range(2):
        assert torch.allclose(div[b], sphere_divergence(u[b : b + 1], v[b : b + 1], lat, lon, float(radius[b]))[0])
    with pytest.raises(ValueError, match="B=2"):
        sphere_divergence(u, v, lat, lon, torch.tensor([1.0, 2.0, 3.0]))


def test_vertical_derivative_uses_real_level_spacing():
    z = torch.tensor(Z_LEVELS)
    f = (2e-6 * z**2 - 3e-3 * z + 7)[None, :, None].expand(2, 6, 4)
    assert torch.allclose(vertical_derivative(f, z, dim=1), (4e-6 * z - 3e-3)[None, :, None].expand(2, 6, 4), atol=1e-12)


# ---------------------------------------------------------------------------------------------- constraints


def test_isothermal_hydrostatic_atmosphere_has_zero_residual():
    pc = _constraints()
    res = pc.residuals(_cube(*_isothermal()), **EARTH)
    assert set(res) == set(CONSTRAINT_NAMES)
    for name in ("hydrostatic", "ideal_gas", "lapse_rate", "mass_continuity", "temporal_smoothness",
                 "geological_consistency", "energy_drift"):
        assert res[name].shape == (1,)
        assert float(res[name]) < 1e-20, name


def test_perturbations_raise_the_residual():
    pc = _constraints()
    T, p, rho = _isothermal()
    rng = np.random.default_rng(0)
    bumped = p * (1 + 0.01 * rng.standard_normal(p.shape))
    res = pc.residuals(_cube(T, bumped, rho), **EARTH)
    assert float(res["hydrostatic"]) > 1e-4 and float(res["ideal_gas"]) > 1e-5
    # relative error of -1/H: scaling the lapse of ln p by 1.1 gives a residual of (0.1)^2
    res = pc.residuals(_cube(*_isothermal(g=1.1 * G)), **EARTH)
    assert float(res["hydrostatic"]) == pytest.approx(0.01, rel=1e-9)
    # a divergent wind raises mass continuity
    phi = np.deg2rad(LAT)[:, None]
    res = pc.residuals(_cube(T, p, rho, v=np.broadcast_to(10 * np.sin(phi) * np.cos(phi), (6, 16, 32))), **EARTH)
    assert float(res["mass_continuity"]) > 0.1


def test_solid_body_rotation_mass_continuity_zero():
    pc = _constraints(weights={"mass_continuity": 1.0})
    T, p, rho = _isothermal()
    phi = np.deg2rad(LAT)[None, :, None]
    u = np.broadcast_to(30.0 * np.cos(phi), (6, 16, 32))
    total, terms = pc(_cube(T, p, rho, u=u), **EARTH)
    assert float(terms["mass_continuity"]) < 1e-25 and float(total) < 1e-25


def test_lapse_rate_measured_in_k_per_km():
    pc = _constraints()
    z = Z_LEVELS[:, None, None]
    T = 288.0 - 6.5e-3 * z
    p = 1e5 * np.exp(-G * z / (R * 260.0))
    diag = pc.diagnostics(_cube(T, p, p / (R * T)), **EARTH)
    assert float(diag["mean_lapse_rate_K_per_km"]) == pytest.approx(6.5, rel=1e-9)
    assert float(diag["dry_adiabat_K_per_km"]) == pytest.approx(G / CP * 1000.0)
    assert float(diag["lapse_rate"]) == 0.0  # stable: below g/cp
    T_unstable = 288.0 - 12e-3 * z
    diag = pc.diagnostics(_cube(T_unstable, p, p / (R * T_unstable)), **EARTH)
    assert float(diag["mean_lapse_rate_K_per_km"]) == pytest.approx(12.0, rel=1e-9)
    assert float(diag["lapse_rate"]) == pytest.approx(((12e-3 - G / CP) / (G / CP)) ** 2, rel=1e-9)


def test_pressure_levels_hydrostatic_and_lapse_rate():
    levels = np.array([100000.0, 85000.0, 70000.0, 50000.0, 30000.0, 20000.0])
    T0 = 240.0
    zh = -(R * T0 / G) * np.log(levels / levels[0])
    shape = (6, 16, 32)
    cube = np.stack([np.broadcast_to(f, shape) for f in (np.full(6, T0)[:, None, None], zh[:, None, None])])
    x = torch.tensor(np.broadcast_to(cube[None, :, None, None], (2, 2, 2, 1) + shape).copy())
    pc = PhysicsConstraints(("T", "z"), {"hydrostatic": 1.0, "lapse_rate": 1.0, "energy_drift": 1.0},
                            lat_deg=LAT, lon_deg=LON, levels=levels, level_unit="Pa")
    res = pc.residuals(x, **EARTH)
    assert float(res["hydrostatic"].max()) < 1e-25 and float(res["energy_drift"].max()) < 1e-25
    assert float(pc.diagnostics(x, **EARTH)["mean_lapse_rate_K_per_km"][0]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"'hydrostatic'.*missing \['z'\]"):
        PhysicsConstraints(("T", "p"), {"hydrostatic": 1.0}, lat_deg=LAT, lon_deg=LON, levels=levels, level_unit="Pa")


def test_time_terms_and_short_axes():
    pc = _constraints(variable_scales={"p": 1000.0})
    T, p, rho = _isothermal()
    base = _cube(T, p, rho, tc=4, tg=2)
    ramp = torch.arange(4, dtype=torch.float64).reshape(1, 1, 4, 1, 1, 1, 1)
    # linear in climate time: no second difference; energy drifts
    res = pc.residuals(base + ramp * base * 0.01, **EARTH)
    assert float(res["temporal_smoothness"]) < 1e-20
    assert float(res["energy_drift"]) > 1e-6
    # quadratic in climate time: second difference of T is 2 K, scale 1 -> 4 K^2 on T, averaged over 6 variables
    quad = base.clone()
    quad[:, 0] += (ramp**2)[:, 0]
    assert float(pc.residuals(quad, **EARTH)["temporal_smoothness"]) == pytest.approx(4.0 / 6.0, rel=1e-9)
    # step between epochs: 1000 Pa with scale 1000 -> 1 on p
    step = base.clone()
    step[:, 1, :, 1] += 1000.0
    assert float(pc.residuals(step, **EARTH)["geological_consistency"]) == pytest.approx(1.0 / 6.0, rel=1e-9)
    # too short along Tc / Tg: zeros with the right device and dtype, no error
    short = pc.residuals(_cube(T, p, rho, tc=1, tg=1, batch=3).float(), **EARTH)
    for name in ("temporal_smoothness", "geological_consistency", "energy_drift"):
        assert short[name].shape == (3,) and short[name].dtype == torch.float32 and float(short[name].abs().sum()) == 0.0
    assert float(pc.residuals(_cube(T, p, rho, tc=2, tg=1), **EARTH)["temporal_smoothness"]) == 0.0


def test_gradient_flows_through_every_term():
    pc = _constraints()
    T, p, rho = _isothermal()
    rng = np.random.default_rng(1)
    x = _cube(T, p * (1 + 0.01 * rng.standard_normal(p.shape)), rho, u=rng.standard_normal((6, 16, 32)),
              v=rng.standard_normal((6, 16, 32)), tc=4).float()
    x[:, 0] += torch.linspace(0, 3, 4).reshape(1, 4, 1, 1, 1, 1) ** 2  # T changes in time
    x[:, 0, :, 1] += 40.0  # the epochs differ
    x[:, 0, :, :, 3:] -= 20.0  # a super-adiabatic jump between levels 2 and 3
    x.requires_grad_(True)
    total, terms = pc(x, **EARTH)
    assert set(terms) == set(CONSTRAINT_NAMES) and total.dim() == 0
    for name, term in terms.items():
        assert term.dim() == 0 and torch.isfinite(term), name
        (grad,) = torch.autograd.grad(term, x, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    total.backward()
    assert torch.isfinite(x.grad).all()


def test_unknown_name_missing_variable_and_shape_errors():
    with pytest.raises(ValueError, match=r"unknown constraint name\(s\) \['hydrostatics'\].*hydrostatic"):
        _constraints(weights={"hydrostatics": 1.0})
    with pytest.raises(ValueError, match=r"'mass_continuity'.*missing \['u', 'v'\]"):
        _constraints(weights={"mass_continuity": 1.0}, variables=("T", "p", "rho"))
    with pytest.raises(ValueError, match="variable_scales"):
        _constraints(variable_scales={"salinity": 1.0})
    pc = _constraints(weights={"ideal_gas": 1.0}, variables=("T", "p", "rho"))
    assert pc.available() == ("hydrostatic", "ideal_gas", "lapse_rate", "temporal_smoothness",
                              "geological_consistency", "energy_drift")
    with pytest.raises(ValueError, match=r"expected \(B, V, Tc, Tg, Z, Y, X\) with V=3"):
        pc(torch.zeros(2, 4, 3, 2, 6, 16, 32), **EARTH)
    with pytest.raises(ValueError, match="gravity"):
        pc(torch.ones(2, 3, 3, 2, 6, 16, 32), **{**EARTH, "gravity": torch.ones(3)})


def test_learnable_weights_softplus():
    pc = _constraints(weights={"hydrostatic": 2.0, "ideal_gas": 0.5}, learnable=True)
    assert pc.names == ("hydrostatic", "ideal_gas")
    params = dict(pc.named_parameters())
    assert set(params) == {"raw_weights.hydrostatic", "raw_weights.ideal_gas"}
    w = {k: v.detach() for k, v in pc.weights.items()}
    assert float(w["hydrostatic"]) == pytest.approx(2.0, rel=1e-6) and float(w["ideal_gas"]) == pytest.approx(0.5, rel=1e-6)
    T, p, rho = _isothermal()
    total, terms = pc(_cube(T, p * 1.01, rho).float(), **EARTH)
    w = pc.weights
    expected = sum(w[n] * terms[n] - torch.log(w[n]) for n in pc.names)
    assert torch.allclose(total, expected)
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad) and p.grad.abs() > 0 for p in pc.parameters())
    with pytest.raises(ValueError, match="> 0"):
        _constraints(weights={"hydrostatic": 0.0}, learnable=True)
    fixed = _constraints(weights={"hydrostatic": 2.0})
    assert list(fixed.parameters()) == [] and float(fixed.weights["hydrostatic"]) == 2.0


def test_batched_tensor_constants_broadcast():
    g = torch.tensor([9.81, 3.7], dtype=torch.float64)
    gas = torch.tensor([287.0, 189.0], dtype=torch.float64)
    cp = torch.tensor([1004.0, 735.0], dtype=torch.float64)
    a = torch.tensor([6.4e6, 3.4e6], dtype=torch.float64)
    planets = [_cube(*_isothermal(T0=250.0 - 40 * b, g=float(g[b]), gas=float(gas[b]))) for b in range(2)]
    x = torch.cat(planets)
    pc = _constraints()
    consts = dict(gravity=g, gas_constant=gas, heat_capacity=cp, planet_radius=a)
    res = pc.residuals(x, **consts)
    assert res["hydrostatic"].shape == (2,) and float(res["hydrostatic"].max()) < 1e-20
    assert float(res["ideal_gas"].max()) < 1e-20
    # swapping the constants between the samples breaks both
    swapped = {k: v.flip(0) for k, v in consts.items()}
    assert float(pc.residuals(x, **swapped)["hydrostatic"].min()) > 1e-2
    # per-sample results equal the float-constant results of each sample alone
    bumped = x.clone()
    bumped[:, 1] *= 1.0 + 0.01 * torch.rand(bumped[:, 1].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = pc.residuals(bumped, **consts)
    for b in range(2):
        single = pc.residuals(bumped[b : b + 1], **{k: float(v[b]) for k, v in consts.items()})
        for name in res:
            assert torch.allclose(res[name][b], single[name][0], rtol=1e-10, atol=1e-30), name
    diag = pc.diagnostics(x, **consts)
    assert torch.allclose(diag["dry_adiabat_K_per_km"], g / cp * 1000.0)


# ---------------------------------------------------------------------------------------------- real grids and masks


def test_cell_area_weights_at_the_poles_and_on_a_regional_grid():
    from astrobio_hf.metrics.functional import latitude_weights
    from astrobio_hf.physics.grid import cell_area_weights, inverse_cos_metric, is_periodic_longitude

    poles = np.linspace(-90.0, 90.0, 73)  # the 2.5-degree CAM-FV / NCEP grid
    w = cell_area_weights(poles)
    # the pole rows are caps of half a spacing: area 1 - cos(1.25 deg), relative to the mean
    dphi = math.radians(1.25)
    expected = (1 - math.sin(math.pi / 2 - dphi)) / (2.0 / 73)
    assert w[0] == pytest.approx(expected, rel=1e-9) and w[0] > 0 and np.isfinite(w).all()
    assert torch.allclose(latitude_weights(poles), torch.from_numpy(w))
    # cell-centred global grid: exactly WeatherBench2 (edges at the poles)
    assert cell_area_weights(LAT)[0] == pytest.approx((math.sin(math.radians(-78.75)) + 1) / (2.0 / 16), rel=1e-9)
    # regional: the outer rows are not given the area up to the pole
    rows = np.arange(30.0, 71.0, 2.0)
    regional = cell_area_weights(rows)
    ratio = regional / np.cos(np.radians(rows))
    assert ratio.max() / ratio.min() < 1.001  # every row, the edge ones too, ~ cos(lat) x spacing
    metric = inverse_cos_metric(torch.deg2rad(torch.tensor(poles)))
    assert torch.isfinite(metric).all() and metric[0] > metric[1] > 1.0
    assert is_periodic_longitude(LON) and not is_periodic_longitude(np.arange(-30.0, 40.1, 2.5))


def test_divergence_on_a_pole_grid_and_a_regional_grid_is_finite():
    lat = torch.deg2rad(torch.linspace(-90, 90, 19, dtype=torch.float64))
    lon = torch.deg2rad(torch.arange(36, dtype=torch.float64) * 10)
    u = (40.0 * torch.cos(lat)[:, None]).expand(19, 36)
    div = sphere_divergence(u, torch.zeros_like(u), lat, lon, A)
    assert torch.isfinite(div).all() and div.abs().max() < 1e-15  # solid-body rotation, also at the poles
    regional_lon = torch.deg2rad(torch.arange(-30.0, 40.1, 2.5, dtype=torch.float64))
    f = torch.sin(regional_lon)[None, :].expand(8, -1).clone()
    # no wrap: the edge columns are one-sided, exact for the linear part; a periodic roll would be wrong there
    d = d_dlon(f, regional_lon, periodic=False)
    assert torch.allclose(d[:, 1:-1], torch.cos(regional_lon)[1:-1].expand(8, -1), atol=2e-3)
    assert (d[:, 0] - math.cos(math.radians(-30.0))).abs().max() < 5e-3


def test_masked_residuals_ignore_whatever_the_masked_cells_hold():
    T, p, rho = _isothermal()
    clean = _cube(T, p, rho)
    garbage = clean.clone()
    valid = torch.ones_like(clean, dtype=torch.bool)
    valid[..., 4:9, 10:20] = False
    garbage[~valid] = -1e4
    physics = _constraints(weights={})
    r_clean = physics.residuals(clean, **EARTH)
    r_masked = physics.residuals(garbage, **EARTH, valid=valid)
    r_unmasked = physics.residuals(garbage, **EARTH)
    for name in ("hydrostatic", "ideal_gas", "lapse_rate", "mass_continuity", "temporal_smoothness", "energy_drift"):
        assert torch.allclose(r_masked[name], r_clean[name], atol=1e-10), name
    assert r_unmasked["ideal_gas"].max() > 1.0  # the garbage does show without the mask
    # a sample without any valid value has residual 0, not NaN
    none = physics.residuals(garbage, **EARTH, valid=torch.zeros_like(valid))
    assert all(torch.isfinite(v).all() for v in none.values())


def test_one_level_has_no_vertical_constraints():
    physics = PhysicsConstraints(VARS, {"ideal_gas": 1.0}, lat_deg=LAT, lon_deg=LON, levels=[2.0], level_unit="m")
    assert "hydrostatic" not in physics.available() and "lapse_rate" not in physics.available()
    with pytest.raises(ValueError, match="at least 2 levels, the grid has 1"):
        PhysicsConstraints(VARS, {"lapse_rate": 1.0}, lat_deg=LAT, lon_deg=LON, levels=[2.0], level_unit="m")


def test_a_two_by_two_cut_has_no_horizontal_constraint_but_the_others():
    """A 2 x 2 regional cut of a CMIP grid (esmvaltool-sample-data's kind): no divergence, every other residual."""
    physics = PhysicsConstraints(("T",), {}, lat_deg=[87.5, 88.9], lon_deg=[0.0, 1.4], levels=[1e5, 9.25e4], level_unit="Pa")
    assert "mass_continuity" not in physics.available() and "energy_drift" in physics.available()
    with pytest.raises(ValueError, match="at least 3 latitudes and 3 longitudes, the grid has 2 x 2"):
        PhysicsConstraints(VARS, {"mass_continuity": 1.0}, lat_deg=[87.5, 88.9], lon_deg=[0.0, 1.4], levels=Z_LEVELS, level_unit="m")
    out = physics.residuals(torch.full((1, 1, 3, 1, 2, 2, 2), 250.0, dtype=torch.float64), **EARTH)
    assert all(torch.isfinite(v).all() for v in out.values())
