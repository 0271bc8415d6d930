"""A physically consistent synthetic ensemble of rocky-planet atmospheres, written as streamable shards.

Every planet is drawn from plausible rocky-planet ranges with a seeded ``numpy.random.Generator`` and
integrated on height levels x lat x lon over climate time (fixed step in days) and geological time
(epochs of stellar brightening and a changing greenhouse). The fields satisfy, up to float32 round-off,
the constraints of ``astrobio_hf.physics.PhysicsConstraints``:

- ``T``: equilibrium temperature of the stellar flux + greenhouse warming, an equator-pole gradient, a
  hemispheric seasonal cycle with the orbital period, a travelling planetary wave whose phase speed is
  tied to the rotation, a small smooth seeded AR(1) "weather" noise (a few % of the seasonal amplitude),
  and a stable lapse rate below the dry adiabat g/cp (smoothly floored at the skin temperature).
- ``p``: integrated hydrostatically from the surface pressure with the log-trapezoid rule used by the
  hydrostatic residual, ``ln p_{k+1} = ln p_k - g dz 0.5 (1/T_k + 1/T_{k+1}) / R`` (residual 0 exactly).
- ``rho = p / (R T)`` (ideal gas, exact).
- ``q``: relative humidity x saturation specific humidity (Clausius-Clapeyron).
- ``u, v``: from a streamfunction psi of the mass flux, with the same discrete operators as
  ``sphere_divergence``: ``rho u = -(1/a) d_dlat(psi)``, ``rho v cos(phi) = (1/a) d_dlon(psi)``; the
  difference operators on different axes commute, so the discrete divergence of ``rho u`` is 0.
  Zonal jets scale with the rotation rate and the equator-pole temperature contrast; the planetary
  wave adds a travelling eddy.

Spectra (:func:`emission_spectrum`): every planet also carries, per climate time step, the disc-averaged
thermal emission spectrum an observer would measure [W m-2 um-1], from a stated simple radiative model
(grey plus water bands, no scattering, no reflected starlight), computed from the fields of the present
geological epoch (the last one):

- absorbers: a grey gas with mass absorption coefficient ``kappa_grey = 2e-5 m2 kg-1`` of air, and water
  vapour with ``kappa_w(lambda)`` [m2 kg-1 of water]: Gaussian bands in ln(lambda) at 2.7 and 6.3 micron,
  the wing of the rotational band beyond 15 micron, and a weak continuum rising with lambda^2;
- layers between consecutive levels, plus an isothermal layer at the top temperature from the highest
  level to space; layer mass path ``dp / g``, layer temperature and ``q`` the means of the two levels;
  optical depth ``dtau = 1.66 (kappa_grey + kappa_w q) dp / g`` (1.66 is the diffusivity factor that
  turns the hemispheric flux integral into one slant path);
- emergent flux ``F = pi [B(T_surface) t_0 + sum_k B(T_k) (1 - exp(-dtau_k)) t_k]`` with ``t_k`` the
  transmission from the top of layer k to space (Planck function B; an isothermal column gives exactly
  ``pi B(T)``, whatever its opacity); the surface is a black body at the lowest level's temperature;
- disc average: cos(latitude)-weighted mean of F over latitude and longitude (P = 1 phase).

Wavelengths: 48 values log-spaced from 3 to 15 micron (thermal emission of 200-330 K atmospheres;
shortward of ~3 micron reflected starlight would dominate, which this model leaves out).

Climate regimes (:func:`planet_regime`): every planet carries a class label ``planet_regime`` in
``REGIME_NAMES = ("frozen", "temperate", "warm")`` from its global-mean surface temperature ``Ts`` in the
present geological epoch (the last one): the mean over climate time and longitude of the lowest level's
``T``, weighted by cos(latitude) (the area of the latitude band), computed from the stored float32 cube
so that anyone can recompute it from the shards. ``frozen``: Ts < 273.15 K (a global mean below the
freezing point of water: a largely ice-covered, snowball-like surface); ``temperate``: 273.15 K <= Ts <
288 K (up to present-day Earth's global mean); ``warm``: Ts >= 288 K (warmer than present-day Earth).
The label is a function of the simulated fields only: computing it draws nothing from the random
streams, so every other field of a dataset is as without labels. The default 24 planets (seed 0) give
train 6 / 5 / 5, validation 1 / 2 / 1 and test 2 / 2 / 0 planets (frozen / temperate / warm).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

from ..physics.grid import cell_centre_latitudes, uniform_longitudes
from ..physics.operators import d_dlat, d_dlon
from .schema import DatasetSchema, Series, write_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "PLANET_PARAM_NAMES",
    "PLANET_PARAM_RANGES",
    "PLANET_PARAM_UNITS",
    "PLANET_POPULATION",
    "PLANET_POPULATION_DIR",
    "REGIME_NAMES",
    "REGIME_RULE",
    "REGIME_THRESHOLDS_K",
    "VARIABLE_NAMES",
    "VARIABLE_UNITS",
    "emission_spectrum",
    "ensure_planet_population",
    "global_mean_surface_temperature",
    "planck_radiance",
    "planet_constants",
    "planet_regime",
    "sample_planet_parameters",
    "simulate_planet",
    "spectrum_wavelengths",
    "synthesize_planets",
    "water_absorption",
]

VARIABLE_NAMES = ("T", "p", "rho", "q", "u", "v")
VARIABLE_UNITS = {"T": "K", "p": "Pa", "rho": "kg m-3", "q": "kg kg-1", "u": "m s-1", "v": "m s-1"}
PLANET_PARAM_NAMES = (
    "stellar_flux",
    "gravity",
    "surface_pressure",
    "mean_molecular_weight",
    "rotation_period",
    "orbital_period",
    "planet_radius",
)
PLANET_PARAM_UNITS = ("W m-2", "m s-2", "Pa", "g mol-1", "day", "day", "m")
# (low, high, "uniform"|"log") per parameter: rocky planets around Sun-like stars
PLANET_PARAM_RANGES: dict[str, tuple[float, float, str]] = {
    "stellar_flux": (900.0, 1800.0, "uniform"),
    "gravity": (6.0, 14.0, "uniform"),
    "surface_pressure": (5.0e4, 2.0e5, "log"),
    "mean_molecular_weight": (28.0, 40.0, "uniform"),
    "rotation_period": (0.8, 5.0, "log"),
    "orbital_period": (240.0, 480.0, "uniform"),
    "planet_radius": (4.5e6, 9.5e6, "uniform"),
}

_GAS_CONSTANT = 8.314462618  # J mol-1 K-1
_STEFAN_BOLTZMANN = 5.670374419e-8  # W m-2 K-4
_BOND_ALBEDO = 0.3
_CP_OVER_R = 3.5  # diatomic-dominated atmosphere
_LATENT_HEAT = 2.5e6  # J kg-1
_R_VAPOUR = 461.5  # J kg-1 K-1
_M_WATER = 18.015  # g mol-1
_PLANCK = 6.62607015e-34  # J s
_LIGHT = 2.99792458e8  # m s-1
_BOLTZMANN = 1.380649e-23  # J K-1
_KAPPA_GREY = 2.0e-5  # m2 kg-1 of air
_DIFFUSIVITY = 1.66
# water-vapour bands: (centre [micron], width in ln(lambda), peak mass absorption coefficient [m2 kg-1])
_WATER_BANDS = ((2.7, 0.06, 3.0), (6.3, 0.12, 8.0), (20.0, 0.25, 5.0))
_WATER_CONTINUUM = 0.005  # m2 kg-1 at 10 micron, scaling with lambda^2
SPECTRUM_MODEL = (
    "Disc-averaged thermal emission [W m-2 um-1] of a non-scattering grey-plus-water-band atmosphere "
    "(astrobio_hf.data.synth.emission_spectrum): layer optical depths 1.66 (kappa_grey + kappa_w(lambda) q) dp/g, "
    "Planck emission of every layer and of the surface attenuated to space, cos(latitude)-weighted mean over the disc."
)


REGIME_NAMES = ("frozen", "temperate", "warm")
#: upper bounds [K] of the global-mean surface temperature of every regime but the last (freezing point of water,
#: present-day Earth's global mean)
REGIME_THRESHOLDS_K = (273.15, 288.0)
REGIME_RULE = (
    "Class by the global-mean surface temperature Ts of the present geological epoch (lowest level's T, mean over "
    "climate time and longitude, cos(latitude)-weighted over latitude; astrobio_hf.data.synth.planet_regime): "
    "frozen if Ts < 273.15 K, temperate if 273.15 K <= Ts < 288 K, warm if Ts >= 288 K."
)


def global_mean_surface_temperature(T: np.ndarray, lat_deg: np.ndarray) -> float:
    """Global-mean surface temperature [K] of temperature fields ``T`` (..., Z, Y, X) with level 0 at the surface:
    the mean over all leading axes and longitude of ``T[..., 0, :, :]``, cos(latitude)-weighted over latitude."""
    T = np.asarray(T, dtype=np.float64)
    lat = np.asarray(lat_deg, dtype=np.float64)
    if T.ndim < 3 or lat.ndim != 1 or T.shape[-2] != lat.size:
        raise ValueError(f"expected T (..., Z, Y, X) and lat_deg (Y,) with the same Y, got {T.shape} and {lat.shape}")
    w = np.cos(np.deg2rad(lat))
    surface = T[..., 0, :, :].reshape(-1, lat.size, T.shape[-1])  # (N, Y, X)
    return float(np.einsum("nyx,y->", surface, w) / (w.sum() * surface.shape[0] * surface.shape[-1]))


def planet_regime(T: np.ndarray, lat_deg: np.ndarray) -> int:
    """Class index in ``REGIME_NAMES`` of temperature fields ``T`` (..., Z, Y, X) (pass the present epoch's):
    the number of ``REGIME_THRESHOLDS_K`` at or below their global-mean surface temperature (see the module docstring)."""
    ts = global_mean_surface_temperature(T, lat_deg)
    return int(sum(ts >= t for t in REGIME_THRESHOLDS_K))


def spectrum_wavelengths(n_wavelengths: int = 48, low: float = 3.0, high: float = 15.0) -> np.ndarray:
    """(W,) wavelengths in micron, log-spaced from ``low`` to ``high``."""
    if n_wavelengths < 2 or not (0 < low < high):
        raise ValueError(f"expected n_wavelengths >= 2 and 0 < low < high, got {n_wavelengths}, {low}, {high}")
    return np.exp(np.linspace(np.log(low), np.log(high), n_wavelengths))


def planck_radiance(wavelength_um: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """Planck spectral radiance B_lambda(T) [W m-2 sr-1 um-1]; broadcasts ``wavelength_um`` against ``temperature``."""
    lam = np.asarray(wavelength_um, dtype=np.float64) * 1e-6  # m
    x = _PLANCK * _LIGHT / (lam * _BOLTZMANN * np.asarray(temperature, dtype=np.float64))
    return 2.0 * _PLANCK * _LIGHT**2 / lam**5 / np.expm1(x) * 1e-6


def water_absorption(wavelength_um: np.ndarray) -> np.ndarray:
    """Mass absorption coefficient of water vapour kappa_w(lambda) [m2 kg-1] of the synthetic radiative model."""
    lam = np.asarray(wavelength_um, dtype=np.float64)
    kappa = _WATER_CONTINUUM * (lam / 10.0) ** 2
    for centre, width, peak in _WATER_BANDS:
        kappa = kappa + peak * np.exp(-0.5 * (np.log(lam / centre) / width) ** 2)
    return kappa


def emission_spectrum(
    T: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    *,
    gravity: float,
    lat_deg: np.ndarray,
    wavelengths_um: np.ndarray,
) -> np.ndarray:
    """Disc-averaged emergent thermal flux [W m-2 um-1] of columns on levels (see the module docstring).

    Args:
        T, p, q: (..., Z, Y, X) temperature [K], pressure [Pa] (decreasing with level) and specific
            humidity [kg kg-1], level 0 at the surface.
        gravity: [m s-2]. lat_deg: (Y,) latitudes. wavelengths_um: (W,) wavelengths in micron.

    Returns:
        (..., W) float64 spectra.
    """
    T, p, q = (np.asarray(a, dtype=np.float64) for a in (T, p, q))
    if not (T.shape == p.shape == q.shape) or T.ndim < 3:
        raise ValueError(f"expected T, p, q of one shape (..., Z, Y, X), got {T.shape}, {p.shape}, {q.shape}")
    lam = np.asarray(wavelengths_um, dtype=np.float64)
    kappa_w = water_absorption(lam)  # (W,)
    # 1. layers: between levels, plus an isothermal top layer from the highest level to space
    dp = np.concatenate([p[..., :-1, :, :] - p[..., 1:, :, :], p[..., -1:, :, :]], axis=-3)  # (..., Z, Y, X)
    t_layer = np.concatenate([0.5 * (T[..., :-1, :, :] + T[..., 1:, :, :]), T[..., -1:, :, :]], axis=-3)
    q_layer = np.concatenate([0.5 * (q[..., :-1, :, :] + q[..., 1:, :, :]), q[..., -1:, :, :]], axis=-3)
    mass = (dp / gravity)[..., None]  # (..., Z, Y, X, 1) kg m-2
    dtau = _DIFFUSIVITY * (_KAPPA_GREY + kappa_w * q_layer[..., None]) * mass  # (..., Z, Y, X, W)
    # 2. transmission from the top of every layer to space, and from the surface
    above = np.flip(np.cumsum(np.flip(dtau, axis=-4), axis=-4), axis=-4) - dtau  # optical depth above layer k
    t_top = np.exp(-above)
    t_surface = np.exp(-(above[..., 0, :, :, :] + dtau[..., 0, :, :, :]))  # (..., Y, X, W)
    # 3. emergent flux: surface + layers, pi B
    b_layers = planck_radiance(lam, t_layer[..., None])  # (..., Z, Y, X, W)
    b_surface = planck_radiance(lam, T[..., 0, :, :, None])  # (..., Y, X, W)
    flux = np.pi * (b_surface * t_surface + (b_layers * -np.expm1(-dtau) * t_top).sum(axis=-4))  # (..., Y, X, W)
    # 4. cos(latitude)-weighted disc mean
    w = np.cos(np.deg2rad(np.asarray(lat_deg, dtype=np.float64)))
    w = w / w.sum()
    return np.einsum("...yxw,y->...w", flux, w) / flux.shape[-2]


def sample_planet_parameters(n_planets: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``(n_planets, 7)`` planet parameters in ``PLANET_PARAM_NAMES`` order and ``PLANET_PARAM_UNITS``."""
    cols = []
    for name in PLANET_PARAM_NAMES:
        lo, hi, kind = PLANET_PARAM_RANGES[name]
        if kind == "log":
            cols.append(np.exp(rng.uniform(np.log(lo), np.log(hi), n_planets)))
        else:
            cols.append(rng.uniform(lo, hi, n_planets))
    return np.stack(cols, axis=1)


def planet_constants(params: np.ndarray) -> dict[str, float]:
    """Physical constants of one planet from its parameters: gravity, gas_constant, heat_capacity, planet_radius."""
    p = dict(zip(PLANET_PARAM_NAMES, np.asarray(params, dtype=np.float64).tolist()))
    gas_constant = _GAS_CONSTANT / (p["mean_molecular_weight"] * 1e-3)
    return {
        "gravity": float(p["gravity"]),
        "gas_constant": float(gas_constant),
        "heat_capacity": float(_CP_OVER_R * gas_constant),
        "planet_radius": float(p["planet_radius"]),
    }


def _smooth_modes(lat_rad: np.ndarray, lon_rad: np.ndarray) -> np.ndarray:
    """Low-order smooth basis on the sphere, (M, Y, X), each mode with unit RMS."""
    s = np.sin(lat_rad)[:, None]
    c = np.cos(lat_rad)[:, None]
    lat_parts = [np.ones_like(s), s, 1.5 * s**2 - 0.5]
    lon_parts = [np.ones_like(lon_rad)[None, :]]
    for k in (1, 2):
        lon_parts += [c**k * np.cos(k * lon_rad)[None, :], c**k * np.sin(k * lon_rad)[None, :]]
    modes = np.stack([(a * b) * np.ones((len(lat_rad), len(lon_rad))) for a in lat_parts for b in lon_parts])
    return modes / np.sqrt((modes**2).mean(axis=(1, 2), keepdims=True))


def simulate_planet(
    params: np.ndarray,
    *,
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    levels_m: np.ndarray,
    n_climate_steps: int,
    n_geological_steps: int,
    climate_time_step_days: float,
    rng: np.random.Generator,
    noise_fraction: float = 0.03,
    brightening_per_epoch: float = 0.04,
) -> dict[str, np.ndarray]:
    """Integrate one planet; returns float64 fields ``{T, p, rho, q, u, v}`` of shape (Tc, Tg, Z, Y, X).

    ``params`` are in ``PLANET_PARAM_NAMES`` order; ``rng`` draws the planet's hidden climate factors
    (greenhouse, obliquity, lapse rate, wave, humidity) and its weather noise.
    """
    p = dict(zip(PLANET_PARAM_NAMES, np.asarray(params, dtype=np.float64).tolist()))
    const = planet_constants(params)
    g, R, cp, a = const["gravity"], const["gas_constant"], const["heat_capacity"], const["planet_radius"]
    Tc, Tg, Z = n_climate_steps, n_geological_steps, len(levels_m)
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    zlev = np.asarray(levels_m, dtype=np.float64)
    z_top = max(float(zlev[-1]), 1.0)

    # 1. hidden climate factors of this planet
    greenhouse0 = rng.uniform(10.0, 35.0) * (p["surface_pressure"] / 1e5) ** 0.3  # K
    greenhouse_trend = rng.uniform(-0.25, 0.25)  # relative change per epoch
    rotation_rate = 1.0 / p["rotation_period"]  # rotations per day
    equator_pole = (25.0 + 20.0 * min(rotation_rate, 1.25) / 1.25) * rng.uniform(0.85, 1.15)  # K
    obliquity = np.deg2rad(rng.uniform(10.0, 35.0))
    seasonal_amp = 0.6 * equator_pole * np.sin(obliquity)  # K
    season_phase = rng.uniform(0.0, 2.0 * np.pi)
    lapse = rng.uniform(0.45, 0.8) * g / cp  # K m-1, stable
    wave_m = int(rng.integers(1, 4))
    wave_amp = rng.uniform(1.5, 4.0)  # K
    wave_speed = 2.0 * np.pi / (200.0 * p["rotation_period"])  # rad day-1, tied to the rotation
    wave_phase = rng.uniform(0.0, 2.0 * np.pi)
    humidity = rng.uniform(0.5, 0.85)
    jet = float(np.clip(20.0 * (equator_pole / 35.0) * np.sqrt(rotation_rate), 5.0, 60.0))  # m s-1
    wave_wind = rng.uniform(2.0, 5.0)  # m s-1

    # 2. surface temperature (Tc, Tg, Y, X)
    t_days = np.arange(Tc) * climate_time_step_days
    epochs = np.arange(Tg)
    flux = p["stellar_flux"] * (1.0 + brightening_per_epoch * epochs)  # (Tg,)
    t_eq = (flux * (1.0 - _BOND_ALBEDO) / (4.0 * _STEFAN_BOLTZMANN)) ** 0.25
    t_mean = t_eq + greenhouse0 * (1.0 + greenhouse_trend * epochs)  # (Tg,)
    sin_lat = np.sin(lat)[:, None]
    cos_lat = np.cos(lat)[:, None]
    season = np.sin(2.0 * np.pi * t_days / p["orbital_period"] + season_phase)  # (Tc,)
    wave_arg = wave_m * lon[None, :] - wave_speed * t_days[:, None] + wave_phase  # (Tc, X)
    t_s = (
        t_mean[None, :, None, None]
        + equator_pole * (1.0 / 3.0 - sin_lat**2)[None, None]
        + seasonal_amp * sin_lat[None, None] * season[:, None, None, None]
        + wave_amp * (cos_lat**2)[None, None] * np.cos(wave_arg)[:, None, None, :]
    )
    # AR(1) weather noise, smooth in space, a few % of the seasonal amplitude
    modes = _smooth_modes(lat, lon)  # (M, Y, X)
    alpha = 0.7
    coeff = np.empty((Tc, Tg, modes.shape[0]))
    coeff[0] = rng.standard_normal((Tg, modes.shape[0]))
    for t in range(1, Tc):
        coeff[t] = alpha * coeff[t - 1] + np.sqrt(1.0 - alpha**2) * rng.standard_normal((Tg, modes.shape[0]))
    noise = np.einsum("tkm,myx->tkyx", coeff, modes) / np.sqrt(modes.shape[0])
    t_s = t_s + noise_fraction * seasonal_amp * noise

    # 3. temperature profile: stable lapse rate, smoothly floored at the skin temperature
    t_skin = (t_eq * 2.0**-0.25)[None, :, None, None, None]
    t_lin = t_s[:, :, None] - lapse * zlev[None, None, :, None, None]  # (Tc, Tg, Z, Y, X)
    width = 5.0
    T = t_skin + width * np.logaddexp(0.0, (t_lin - t_skin) / width)

    # 4. pressure: log-trapezoid hydrostatic integration from the surface pressure
    p_surface = p["surface_pressure"] * (1.0 - 5e-4 * (t_s - t_mean[None, :, None, None]))  # thermal lows
    lnp = np.empty_like(T)
    lnp[:, :, 0] = np.log(p_surface)
    for k in range(Z - 1):
        inv_t = 0.5 * (1.0 / T[:, :, k] + 1.0 / T[:, :, k + 1])
        lnp[:, :, k + 1] = lnp[:, :, k] - g * (zlev[k + 1] - zlev[k]) * inv_t / R
    pres = np.exp(lnp)

    # 5. density (ideal gas) and humidity (Clausius-Clapeyron)
    rho = pres / (R * T)
    e_sat = 611.2 * np.exp(_LATENT_HEAT / _R_VAPOUR * (1.0 / 273.15 - 1.0 / T))
    rel_hum = humidity * (1.0 - 0.6 * zlev / z_top)[None, None, :, None, None]
    eps = _M_WATER / p["mean_molecular_weight"]
    e = np.minimum(rel_hum * e_sat, 0.2 * pres)
    q = eps * e / (pres - (1.0 - eps) * e)

    # 6. balanced winds from a streamfunction of the mass flux, with the operators of sphere_divergence
    rho_bar = rho.mean(axis=(-2, -1), keepdims=True)  # (Tc, Tg, Z, 1, 1)
    height = (0.25 + zlev / z_top)[None, None, :, None, None]
    winter = 1.0 - 0.3 * sin_lat[None, None, None] * season[:, None, None, None, None]
    u_jet = jet * (np.sin(2.0 * lat) ** 2)[:, None] * height * winter  # (Tc, Tg, Z, Y, 1)
    flux_u = rho_bar * u_jet
    # psi_zonal = -a * int flux_u dphi (cumulative trapezoid from the southernmost row)
    dphi = np.diff(lat)[:, None]
    increments = 0.5 * (flux_u[..., 1:, :] + flux_u[..., :-1, :]) * dphi
    psi_zonal = -a * np.concatenate([np.zeros_like(flux_u[..., :1, :]), np.cumsum(increments, axis=-2)], axis=-2)
    psi_wave = a * rho_bar * wave_wind * (cos_lat**2)[None, None, None] * np.cos(wave_arg)[:, None, None, None, :]
    psi = torch.from_numpy(np.broadcast_to(psi_zonal + psi_wave, T.shape).copy())
    lat_t, lon_t = torch.from_numpy(lat), torch.from_numpy(lon)
    rho_u = (-d_dlat(psi, lat_t) / a).numpy()
    rho_v = (d_dlon(psi, lon_t) / (a * torch.cos(lat_t)[:, None])).numpy()
    u = rho_u / rho
    v = rho_v / rho
    return {"T": T, "p": pres, "rho": rho, "q": q, "u": u, "v": v}


def _split_planets(n_planets: int, rng: np.random.Generator) -> dict[str, list[int]]:
    n_eval = max(1, round(n_planets / 6))
    order = rng.permutation(n_planets)
    return {
        "train": sorted(order[2 * n_eval :].tolist()),
        "validation": sorted(order[:n_eval].tolist()),
        "test": sorted(order[n_eval : 2 * n_eval].tolist()),
    }


def synthesize_planets(
    output_dir: str | os.PathLike,
    n_planets: int = 24,
    n_climate_steps: int = 24,
    n_geological_steps: int = 2,
    n_levels: int = 6,
    n_lat: int = 16,
    n_lon: int = 32,
    seed: int = 0,
    *,
    top_height: float = 12000.0,
    climate_time_step_days: float = 30.0,
    geological_step_myr: float = 500.0,
    noise_fraction: float = 0.03,
    series_per_shard: int = 4,
    n_wavelengths: int = 48,
) -> DatasetSchema:
    """Synthesise ``n_planets`` planets and write them with ``write_dataset``, split by planet.

    Args:
        output_dir: directory for ``<split>-0000i-of-0000N.parquet`` shards and ``schema.json``.
        n_planets: number of planets (>= 3); 1/6 each (at least 1) go to validation and test, the rest to train.
        n_climate_steps: climate-time steps per planet, ``climate_time_step_days`` apart.
        n_geological_steps: geological epochs, ``geological_step_myr`` apart (4 % stellar brightening
            per epoch and a drifting greenhouse).
        n_levels: height levels, uniform from 0 to ``top_height`` [m].
        n_lat, n_lon: cell-centre latitudes (no poles) and uniform longitudes.
        seed: seed of the ``numpy.random.Generator``; the output is deterministic for a seed.
        noise_fraction: AR(1) weather-noise amplitude as a fraction of each planet's seasonal amplitude.
        series_per_shard: series (planets) per Parquet shard.
        n_wavelengths: W, wavelengths of the emission spectra (log-spaced 3-15 micron).

    Returns:
        the written ``DatasetSchema`` (variables T, p, rho, q, u, v on height levels in m), with spectra
        (T, 1, W) per planet from :func:`emission_spectrum` of the last geological epoch and a regime label
        per planet (:func:`planet_regime` of the last epoch's stored temperatures; ``REGIME_NAMES``).
    """
    # 1. validate the arguments
    if n_planets < 3:
        raise ValueError(f"expected n_planets >= 3 (train, validation and test need a planet each), got {n_planets}")
    for name, value, least in (
        ("n_climate_steps", n_climate_steps, 2),
        ("n_geological_steps", n_geological_steps, 1),
        ("n_levels", n_levels, 2),
        ("n_lat", n_lat, 3),
        ("n_lon", n_lon, 3),
    ):
        if int(value) < least:
            raise ValueError(f"expected {name} >= {least}, got {value}")
    if top_height <= 0 or climate_time_step_days <= 0 or noise_fraction < 0:
        raise ValueError(
            f"expected top_height > 0, climate_time_step_days > 0 and noise_fraction >= 0, got "
            f"{top_height}, {climate_time_step_days}, {noise_fraction}"
        )
    start = time.perf_counter()
    lat_deg = cell_centre_latitudes(n_lat)
    lon_deg = uniform_longitudes(n_lon)
    levels = np.linspace(0.0, float(top_height), n_levels)
    wavelengths = spectrum_wavelengths(n_wavelengths)

    # 2. planet parameters and the split by planet (one seeded generator for both)
    rng = np.random.default_rng(seed)
    params = sample_planet_parameters(n_planets, rng)
    split_index = _split_planets(n_planets, rng)
    logger.info(
        "synthesising %d planets (%d climate x %d geological steps, %d levels, %d x %d) with seed %d",
        n_planets, n_climate_steps, n_geological_steps, n_levels, n_lat, n_lon, seed,
    )

    # 3. integrate every planet with its own child generator (independent of the others)
    series: dict[int, Series] = {}
    for i in range(n_planets):
        fields = simulate_planet(
            params[i],
            lat_deg=lat_deg,
            lon_deg=lon_deg,
            levels_m=levels,
            n_climate_steps=n_climate_steps,
            n_geological_steps=n_geological_steps,
            climate_time_step_days=climate_time_step_days,
            rng=np.random.default_rng([seed, i]),
            noise_fraction=noise_fraction,
        )
        cube = np.stack([fields[v] for v in VARIABLE_NAMES]).astype(np.float32)  # (V, Tc, Tg, Z, Y, X)
        spectrum = emission_spectrum(
            fields["T"][:, -1], fields["p"][:, -1], fields["q"][:, -1],  # present epoch: (Tc, Z, Y, X)
            gravity=planet_constants(params[i])["gravity"], lat_deg=lat_deg, wavelengths_um=wavelengths,
        )  # (Tc, W)
        series[i] = Series(
            planet_id=f"planet-{i:04d}",
            segment=0,
            fields=cube,
            planet_params=params[i].astype(np.float32),
            constants=planet_constants(params[i]),
            spectrum=spectrum[:, None].astype(np.float32),  # (Tc, P=1, W)
            # the stored float32 temperatures of the present epoch: (Tc, Z, Y, X); no random draw
            planet_regime=planet_regime(cube[VARIABLE_NAMES.index("T"), :, -1], lat_deg),
        )
        if (i + 1) % 8 == 0 or i + 1 == n_planets:
            logger.info("synthesised %d/%d planets", i + 1, n_planets)

    # 4. write
    schema = write_dataset(
        output_dir,
        {split: [series[i] for i in idx] for split, idx in split_index.items()},
        variable_names=list(VARIABLE_NAMES),
        units=dict(VARIABLE_UNITS),
        level_values=levels.tolist(),
        level_unit="m",
        lat_values=lat_deg.tolist(),
        lon_values=lon_deg.tolist(),
        climate_time_step=float(climate_time_step_days),
        climate_time_unit="day",
        geological_time_values=[geological_step_myr * k for k in range(n_geological_steps)],
        geological_time_unit="Myr",
        planet_param_names=list(PLANET_PARAM_NAMES),
        planet_param_units=list(PLANET_PARAM_UNITS),
        split_by="planet",
        source=f"astrobio_hf.data.synth.synthesize_planets(seed={seed})",
        series_per_shard=series_per_shard,
        spectrum_wavelengths=wavelengths.tolist(),
        spectrum_phases=None,
        spectrum_units="W m-2 um-1",
        spectrum_model=SPECTRUM_MODEL,
        planet_regime_names=list(REGIME_NAMES),
        planet_regime_rule=REGIME_RULE,
        extra={
            "generator": {
                "seed": int(seed),
                "noise_fraction": float(noise_fraction),
                "top_height_m": float(top_height),
                "splits": {k: [f"planet-{i:04d}" for i in v] for k, v in split_index.items()},
            }
        },
    )
    counts = {
        split: [sum(series[i].planet_regime == k for i in idx) for k in range(len(REGIME_NAMES))]
        for split, idx in split_index.items()
    }
    logger.info("planet regimes %s per split: %s", list(REGIME_NAMES), counts)
    logger.info("synthetic dataset written to %s in %.1f s", output_dir, time.perf_counter() - start)
    return schema


# ------------------------------------------------------------------------------------------------------------
# The planet population of the planet-level families
# ------------------------------------------------------------------------------------------------------------
#: Where the planet-level families (climate_spectra, cnn_vit) keep their embedded default, and how it is made:
#: what they learn varies from planet to planet (the spectrum-climate relation through gravity and composition, the
#: planet parameters, the regime), so they need many planets more than long series: 96 planets (64 for training,
#: 16 validation, 16 test) of 8 climate steps, as many frames as the 24 x 24 of data/synthetic.
PLANET_POPULATION_DIR = "data/planets"
PLANET_POPULATION = {"n_planets": 96, "n_climate_steps": 8, "seed": 0}


def ensure_planet_population(data_dir: str | os.PathLike = PLANET_POPULATION_DIR, **overrides) -> DatasetSchema:
    """The schema of the planet population in ``data_dir``, synthesised first (``synthesize_planets`` with
    ``PLANET_POPULATION``, updated by ``overrides``) when it is missing, or was written by an older version without
    spectra or regime labels, or with other generator settings. Call it from one process."""
    settings = {**PLANET_POPULATION, **overrides}
    path = os.path.join(data_dir, "schema.json")
    reason = "missing"
    try:
        schema = DatasetSchema.from_dir(data_dir) if os.path.isfile(path) else None
    except ValueError as e:  # written by an older version whose shards this one no longer reads, or broken
        schema, reason = None, f"unreadable: {e}"
    if schema is not None:
        generator = (schema.extra or {}).get("generator", {})
        n_planets = sum(len(v) for v in generator.get("splits", {}).values())
        n_steps = {n for split in schema.splits.values() for shard in split for n in shard.n_time}
        if schema.spectrum_wavelengths is None or schema.planet_regime_names is None:
            reason = "outdated: no spectra or regime labels"
        elif (n_planets, n_steps, generator.get("seed")) != (settings["n_planets"], {settings["n_climate_steps"]}, settings["seed"]):
            reason = f"other settings: {n_planets} planets, climate steps {sorted(n_steps)}, seed {generator.get('seed')}"
        else:
            return schema
    logger.warning("synthesising the planet population %s into %s (%s)", settings, data_dir, reason)
    return synthesize_planets(data_dir, **settings)
