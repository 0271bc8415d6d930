"""Synthetic planet ensemble: determinism, ground-truth physics, planet splits, schema round trip, signal vs noise."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.synth import (
    PLANET_PARAM_NAMES,
    PLANET_PARAM_RANGES,
    VARIABLE_NAMES,
    emission_spectrum,
    planck_radiance,
    planet_constants,
    sample_planet_parameters,
    simulate_planet,
    spectrum_wavelengths,
    synthesize_planets,
)
from astrobio_hf.physics import PhysicsConstraints, cell_centre_latitudes, uniform_longitudes

SMALL = dict(n_planets=6, n_climate_steps=6, n_geological_steps=2, n_levels=4, n_lat=8, n_lon=12, seed=3)


def _read_split(data_dir: Path, schema: DatasetSchema, split: str) -> list[dict]:
    """All rows of a split, with fields reshaped to (V, T, Tg, Z, Y, X)."""
    V, Z, Y, X = schema.cube_shape
    Tg = len(schema.geological_time_values)
    rows = []
    for name in schema.shard_files(split):
        table = pq.read_table(Path(data_dir) / name).to_pylist()
        for row in table:
            row["fields"] = np.asarray(row["fields"], dtype=np.float32).reshape(V, row["n_time"], Tg, Z, Y, X)
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory):
    """The default ensemble (24 planets, 24 x 2 steps, 6 x 16 x 32), built once, with its build time."""
    out = tmp_path_factory.mktemp("synth_default")
    start = time.perf_counter()
    schema = synthesize_planets(out)
    return out, schema, time.perf_counter() - start


def test_defaults_shape_splits_and_speed(default_dataset):
    out, schema, seconds = default_dataset
    assert seconds < 40.0  # < 20 s on an idle 2-core machine; headroom for a loaded CI runner
    assert schema.variable_names == list(VARIABLE_NAMES) and schema.level_unit == "m"
    assert schema.cube_shape == (6, 6, 16, 32)
    assert schema.split_by == "planet"
    ids = {s: set(schema.planet_ids(s)) for s in ("train", "validation", "test")}
    assert [len(ids[s]) for s in ("train", "validation", "test")] == [16, 4, 4]
    assert not (ids["train"] & ids["validation"]) and not (ids["train"] & ids["test"]) and not (ids["validation"] & ids["test"])
    assert len(ids["train"] | ids["validation"] | ids["test"]) == 24
    assert schema.series_lengths("train") == [24] * 16


def test_schema_round_trip_and_fields_match_the_generator(default_dataset):
    out, schema, _ = default_dataset
    loaded = DatasetSchema.from_dir(out)
    assert loaded.to_dict() == schema.to_dict()
    params = sample_planet_parameters(24, np.random.default_rng(0))
    rows = _read_split(out, loaded, "test")
    assert len(rows) == 4
    for row in rows[:2]:
        i = int(row["planet_id"].split("-")[1])
        np.testing.assert_array_equal(np.asarray(row["planet_params"], dtype=np.float32), params[i].astype(np.float32))
        assert row["gravity"] == pytest.approx(params[i][PLANET_PARAM_NAMES.index("gravity")])
        fields = simulate_planet(
            params[i], lat_deg=loaded.lat_values, lon_deg=loaded.lon_values, levels_m=np.asarray(loaded.level_values),
            n_climate_steps=24, n_geological_steps=2, climate_time_step_days=30.0, rng=np.random.default_rng([0, i]),
        )
        expected = np.stack([fields[v] for v in VARIABLE_NAMES]).astype(np.float32)
        np.testing.assert_array_equal(row["fields"], expected)


def test_parameters_in_plausible_rocky_planet_ranges(default_dataset):
    out, schema, _ = default_dataset
    rows = _read_split(out, schema, "train")
    params = np.stack([r["planet_params"] for r in rows])
    for j, name in enumerate(PLANET_PARAM_NAMES):
        lo, hi, _ = PLANET_PARAM_RANGES[name]
        assert np.all(params[:, j] >= lo * (1 - 1e-6)) and np.all(params[:, j] <= hi * (1 + 1e-6)), name
    orbital_steps = params[:, PLANET_PARAM_NAMES.index("orbital_period")] / schema.climate_time_step
    assert np.all((orbital_steps >= 8) & (orbital_steps <= 16))
    T = np.stack([r["fields"][0] for r in rows])
    assert 150.0 < T.min() and T.max() < 360.0
    assert np.isfinite(np.stack([r["fields"] for r in rows])).all()


def test_ground_truth_physics_residuals_are_zero(default_dataset):
    out, schema, _ = default_dataset
    rows = _read_split(out, schema, "validation")
    pc = PhysicsConstraints(
        schema.variable_names, {"hydrostatic": 1.0, "ideal_gas": 1.0, "lapse_rate": 1.0, "mass_continuity": 1.0},
        lat_deg=schema.lat_values, lon_deg=schema.lon_values, levels=schema.level_values, level_unit=schema.level_unit,
    )
    x = torch.from_numpy(np.stack([r["fields"] for r in rows]))  # (B, V, Tc, Tg, Z, Y, X) float32 as stored
    consts = {k: torch.tensor([r[k] for r in rows]) for k in ("gravity", "gas_constant", "heat_capacity", "planet_radius")}
    diag = pc.diagnostics(x.double(), **consts)
    # float32 storage round-off only (the float64 generator gives ~1e-30)
    assert float(diag["hydrostatic"].max()) < 1e-10
    assert float(diag["ideal_gas"].max()) < 1e-10
    assert float(diag["mass_continuity"].max()) < 1e-10
    assert float(diag["lapse_rate"].max()) == 0.0
    assert torch.all(diag["max_lapse_rate_K_per_km"] < diag["dry_adiabat_K_per_km"])
    assert torch.all(diag["mean_lapse_rate_K_per_km"] > 1.0)
    # and the float64 fields straight from the generator are exact
    params = sample_planet_parameters(24, np.random.default_rng(0))
    f = simulate_planet(params[0], lat_deg=schema.lat_values, lon_deg=schema.lon_values,
                        levels_m=np.asarray(schema.level_values), n_climate_steps=4, n_geological_steps=2,
                        climate_time_step_days=30.0, rng=np.random.default_rng(7))
    x64 = torch.from_numpy(np.stack([f[v] for v in VARIABLE_NAMES]))[None]
    res = pc.residuals(x64, **planet_constants(params[0]))
    for name in ("hydrostatic", "ideal_gas", "mass_continuity"):
        assert float(res[name]) < 1e-20, name
    # winds are not trivially zero
    assert float(x[:, 4].abs().max()) > 5.0 and float(x[:, 5].abs().max()) > 0.5


def test_seasonal_signal_exceeds_the_noise():
    lat, lon = cell_centre_latitudes(16), uniform_longitudes(32)
    params = sample_planet_parameters(4, np.random.default_rng(11))
    for i in range(4):
        kw = dict(lat_deg=lat, lon_deg=lon, levels_m=np.linspace(0, 12000, 6), n_climate_steps=24,
                  n_geological_steps=1, climate_time_step_days=30.0)
        noisy = simulate_planet(params[i], rng=np.random.default_rng(i), noise_fraction=0.03, **kw)["T"][:, :, 0]
        clean = simulate_planet(params[i], rng=np.random.default_rng(i), noise_fraction=0.0, **kw)["T"][:, :, 0]
        noise_rms = np.sqrt(np.mean((noisy - clean) ** 2))
        persistence = np.sqrt(np.mean((noisy[4:] - noisy[:-4]) ** 2))  # error of "tomorrow = today" over 4 steps
        assert noise_rms > 0.0
        assert persistence > 5.0 * noise_rms, (persistence, noise_rms)
        assert persistence > 1.0  # K


def test_deterministic_for_a_seed(tmp_path):
    a = synthesize_planets(tmp_path / "a", **SMALL)
    b = synthesize_planets(tmp_path / "b", **SMALL)
    c = synthesize_planets(tmp_path / "c", **{**SMALL, "seed": 4})
    assert a.to_dict() == b.to_dict()
    for split in ("train", "validation", "test"):
        ra, rb = _read_split(tmp_path / "a", a, split), _read_split(tmp_path / "b", b, split)
        assert [r["planet_id"] for r in ra] == [r["planet_id"] for r in rb]
        for x, y in zip(ra, rb):
            np.testing.assert_array_equal(x["fields"], y["fields"])
    fa = np.concatenate([r["fields"].ravel() for r in _read_split(tmp_path / "a", a, "train")])
    fc = np.concatenate([r["fields"].ravel() for r in _read_split(tmp_path / "c", c, "train")])
    assert fa.shape != fc.shape or not np.array_equal(fa, fc)
    assert [len(a.planet_ids(s)) for s in ("train", "validation", "test")] == [4, 1, 1]


def test_invalid_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="n_planets >= 3"):
        synthesize_planets(tmp_path, n_planets=2)
    with pytest.raises(ValueError, match="n_levels >= 2"):
        synthesize_planets(tmp_path, n_planets=3, n_levels=1)


# ---------------------------------------------------------------------------------------------- spectra
def test_default_dataset_has_spectra_from_the_radiative_model(default_dataset):
    out, schema, _ = default_dataset
    assert schema.has_spectra and schema.spectrum_shape == (1, 48) and schema.spectrum_units == "W m-2 um-1"
    assert schema.spectrum_wavelengths[0] == pytest.approx(3.0) and schema.spectrum_wavelengths[-1] == pytest.approx(15.0)
    assert "emission_spectrum" in schema.spectrum_model
    row = _read_split(out, schema, "test")[0]
    i = int(row["planet_id"].split("-")[1])
    params = sample_planet_parameters(24, np.random.default_rng(0))
    f = simulate_planet(
        params[i], lat_deg=schema.lat_values, lon_deg=schema.lon_values, levels_m=np.asarray(schema.level_values),
        n_climate_steps=24, n_geological_steps=2, climate_time_step_days=30.0, rng=np.random.default_rng([0, i]),
    )
    expected = emission_spectrum(
        f["T"][:, -1], f["p"][:, -1], f["q"][:, -1], gravity=planet_constants(params[i])["gravity"],
        lat_deg=schema.lat_values, wavelengths_um=schema.spectrum_wavelengths,
    )
    got = np.asarray(row["spectrum"], dtype=np.float32).reshape(24, 1, 48)
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-6)
    assert np.all(got > 0)


def test_emission_spectrum_known_answers():
    lat = cell_centre_latitudes(4)
    wl = spectrum_wavelengths(16)
    shape = (5, 4, 6)  # (Z, Y, X)
    p = np.broadcast_to(np.array([1e5, 8e4, 6e4, 4e4, 2e4])[:, None, None], shape)
    q = np.full(shape, 0.01)
    # 1. an isothermal column emits pi B(T) at every wavelength, whatever its opacity
    iso = emission_spectrum(np.full(shape, 260.0), p, q, gravity=9.8, lat_deg=lat, wavelengths_um=wl)
    np.testing.assert_allclose(iso, np.pi * planck_radiance(wl, 260.0), rtol=1e-10)
    # 2. a transparent atmosphere (q = 0, grey optical depth ~0.3) over a warm surface: close to the surface's emission
    T = np.broadcast_to(np.array([290.0, 275.0, 260.0, 245.0, 230.0])[:, None, None], shape)
    dry = emission_spectrum(T, p, np.zeros(shape), gravity=9.8, lat_deg=lat, wavelengths_um=wl)
    wet = emission_spectrum(T, p, q, gravity=9.8, lat_deg=lat, wavelengths_um=wl)
    assert np.all(dry < np.pi * planck_radiance(wl, 290.0)) and np.all(dry > np.pi * planck_radiance(wl, 250.0))
    # 3. water vapour in a cooling-with-height column lowers the emission most in its 6.3 micron band
    band, window = np.argmin(np.abs(wl - 6.3)), np.argmin(np.abs(wl - 10.5))
    assert wet[band] / dry[band] < 0.6 and wet[window] / dry[window] > wet[band] / dry[band]
    assert np.all(wet <= dry * (1 + 1e-12))
    # 4. a warmer atmosphere emits more at every wavelength
    warmer = emission_spectrum(T + 5.0, p, q, gravity=9.8, lat_deg=lat, wavelengths_um=wl)
    assert np.all(warmer > wet)
