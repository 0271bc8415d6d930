"""Planet and host-star physics used to compute answers from catalogue rows (numpy only).

Units follow the exoplanet.eu catalogue: planet mass and radius in Jupiter units (``M_J``, ``R_J``), semi-major axis in
AU, stellar radius in solar radii, stellar effective temperature in K. Every function accepts scalars or arrays
(broadcast together) and returns a float / ``np.ndarray`` (the class functions: a ``str`` for scalar input, an object
array of ``str`` otherwise). A NaN input gives a NaN output in the numeric functions; a finite input that is
physically impossible (a non-positive mass, radius, temperature or distance) is a ``ValueError`` naming it.

Constants (IAU 2015 Resolution B3 nominal values for Jupiter, the Earth and the Sun):

* ``M_J = 1.89813e27 kg``, ``R_J = 7.1492e7 m`` (equatorial), ``M_earth = 5.9722e24 kg``, ``R_earth = 6.3781e6 m``
  (equatorial), so ``1 M_J = 317.83 M_earth`` and ``1 R_J = 11.209 R_earth``;
* ``R_sun = 6.957e8 m``, ``T_eff,sun = 5772 K``, ``1 AU = 1.495978707e11 m``.

Note: with the equatorial ``R_J`` Jupiter's bulk density comes out as 1.24 g/cm^3; the often quoted 1.33 g/cm^3 uses
Jupiter's volumetric mean radius (69,911 km).

Formulas:

* bulk density ``rho = M / (4/3 pi R^3)``;
* equilibrium temperature with full heat redistribution ``T_eq = T_eff sqrt(R_* / (2 a)) (1 - A)^(1/4)``
  (e.g. Seager 2010, *Exoplanet Atmospheres*, eq. 3.9); the Earth gives 255 K at Bond albedo ``A = 0.3``;
* insolation relative to the Earth's ``S / S_earth = (R_* / R_sun)^2 (T_eff / 5772 K)^4 / (a / AU)^2``
  (the star's luminosity in solar units from Stefan-Boltzmann, diluted by ``a^2``);
* conservative habitable zone of Kopparapu et al. 2014 (ApJL 787, L29; 1 Earth-mass planet):
  ``S_eff = S0 + a T + b T^2 + c T^3 + d T^4`` with ``T = T_eff - 5780 K``; inner edge (runaway greenhouse)
  ``S0 = 1.107, a = 1.332e-4, b = 1.58e-8, c = -8.308e-12, d = -1.931e-15``; outer edge (maximum greenhouse)
  ``S0 = 0.356, a = 6.171e-5, b = 1.698e-9, c = -3.198e-12, d = -5.575e-16``; the edges lie at
  ``d = sqrt((L / L_sun) / S_eff)`` AU with ``L / L_sun = (R_* / R_sun)^2 (T_eff / 5772 K)^4``. The fit is valid for
  ``2600 K <= T_eff <= 7200 K``; outside that range :func:`habitable_zone_seff` and :func:`habitable_zone_bounds_au`
  return NaN and :func:`habitable_zone_class` raises ``ValueError``. For the Sun these coefficients give 0.951 and
  1.677 AU; the often quoted 0.99 and 1.70 AU are the *moist* and maximum greenhouse limits of Kopparapu et al. 2013
  (ApJ 765, 131), a different (older) model;
* composition class (:func:`composition_class`): ``"giant"`` when ``M > 0.1 M_J`` (31.8 M_earth, about a third of
  Saturn's mass); otherwise ``"rocky"`` when ``R <= 1.1 x 1.07 (M / M_earth)^(1/3.7) R_earth`` (the Earth-like rocky
  mass-radius relation of Zeng et al. 2016, ApJ 819, 127, with a 10% tolerance); otherwise ``"volatile-rich"``
  (too large for rock and iron alone: water, or a hydrogen/helium envelope).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "AU_M",
    "COMPOSITION_CLASSES",
    "GIANT_MASS_MJUP",
    "HABITABLE_ZONE_CLASSES",
    "HZ_TEFF_RANGE_K",
    "KOPPARAPU2014_MAXIMUM_GREENHOUSE",
    "KOPPARAPU2014_RUNAWAY_GREENHOUSE",
    "M_EARTH_KG",
    "M_EARTH_PER_M_JUP",
    "M_JUP_KG",
    "R_EARTH_M",
    "R_EARTH_PER_R_JUP",
    "R_JUP_M",
    "R_SUN_M",
    "SOLAR_TEFF_K",
    "bulk_density_g_cm3",
    "composition_class",
    "equilibrium_temperature_k",
    "habitable_zone_bounds_au",
    "habitable_zone_class",
    "habitable_zone_seff",
    "insolation_earth",
    "mass_earth",
    "radius_earth",
    "rocky_radius_limit_earth",
]

M_JUP_KG = 1.89813e27
R_JUP_M = 7.1492e7
M_EARTH_KG = 5.9722e24
R_EARTH_M = 6.3781e6
M_EARTH_PER_M_JUP = M_JUP_KG / M_EARTH_KG  # 317.83
R_EARTH_PER_R_JUP = R_JUP_M / R_EARTH_M  # 11.209
R_SUN_M = 6.957e8
AU_M = 1.495978707e11
SOLAR_TEFF_K = 5772.0

#: (S0, a, b, c, d) of Kopparapu et al. 2014, Table 1, 1 M_earth: inner (runaway greenhouse) and outer edge.
KOPPARAPU2014_RUNAWAY_GREENHOUSE = (1.107, 1.332e-4, 1.58e-8, -8.308e-12, -1.931e-15)
KOPPARAPU2014_MAXIMUM_GREENHOUSE = (0.356, 6.171e-5, 1.698e-9, -3.198e-12, -5.575e-16)
#: Validity range of the Kopparapu fits (inclusive), in K.
HZ_TEFF_RANGE_K = (2600.0, 7200.0)
_KOPPARAPU_TREF_K = 5780.0

#: Above this mass (0.1 M_J = 31.8 M_earth) a planet is a giant, whatever its radius.
GIANT_MASS_MJUP = 0.1
_ZENG_COEFFICIENT = 1.07
_ZENG_EXPONENT = 1.0 / 3.7
_ROCKY_TOLERANCE = 1.1

COMPOSITION_CLASSES = ("rocky", "volatile-rich", "giant")
HABITABLE_ZONE_CLASSES = ("too hot", "habitable zone", "too cold")


def _positive(name: str, value) -> np.ndarray | float:
    """``value`` as a float (Python scalar in) or float array; a value <= 0 or infinite is a ValueError (NaN passes)."""
    if isinstance(value, (float, int)) and not isinstance(value, bool):  # fast path: builders call this per row
        v = float(value)
        if v <= 0:
            raise ValueError(f"expected {name} > 0, got {v!r} (1 value(s) <= 0)")
        if math.isinf(v):
            raise ValueError(f"expected a finite {name}, got 1 infinite value(s)")
        return v
    arr = np.asarray(value, dtype=np.float64)
    bad = arr <= 0  # False for NaN
    if np.any(bad):
        first = arr[bad].ravel()[0]
        raise ValueError(f"expected {name} > 0, got {first!r} ({int(np.sum(bad))} value(s) <= 0)")
    if np.any(np.isinf(arr)):
        raise ValueError(f"expected a finite {name}, got {int(np.sum(np.isinf(arr)))} infinite value(s)")
    return arr


def _scalars(*values) -> bool:
    return all(isinstance(v, (float, int)) and not isinstance(v, bool) for v in values)


def _out(arr):
    arr = np.asarray(arr)
    return float(arr) if arr.ndim == 0 else arr


def mass_earth(mass_mjup):
    """Mass in Earth masses from Jupiter masses (``x 317.83``)."""
    return _out(np.asarray(mass_mjup, dtype=np.float64) * M_EARTH_PER_M_JUP)


def radius_earth(radius_rjup):
    """Radius in Earth radii from Jupiter radii (``x 11.209``)."""
    return _out(np.asarray(radius_rjup, dtype=np.float64) * R_EARTH_PER_R_JUP)


def bulk_density_g_cm3(mass_mjup, radius_rjup):
    """Bulk density ``M / (4/3 pi R^3)`` in g/cm^3 from mass in M_J and (equatorial) radius in R_J."""
    m = _positive("mass_mjup", mass_mjup) * M_JUP_KG * 1e3  # g
    r = _positive("radius_rjup", radius_rjup) * R_JUP_M * 1e2  # cm
    return _out(m / (4.0 / 3.0 * math.pi * r**3))


def equilibrium_temperature_k(star_teff_k, star_radius_rsun, a_au, albedo=0.3):
    """Equilibrium temperature in K, full heat redistribution: ``T_eff sqrt(R_* / (2 a)) (1 - A)^(1/4)``.

    ``albedo`` is the Bond albedo, in [0, 1)."""
    teff = _positive("star_teff_k", star_teff_k)
    rstar = _positive("star_radius_rsun", star_radius_rsun) * R_SUN_M
    a = _positive("a_au", a_au) * AU_M
    albedo = np.asarray(albedo, dtype=np.float64)
    bad = (albedo < 0) | (albedo >= 1) | np.isnan(albedo)
    if np.any(bad):
        raise ValueError(f"expected 0 <= albedo < 1, got {albedo[bad].ravel()[0]!r}")
    return _out(teff * np.sqrt(rstar / (2.0 * a)) * (1.0 - albedo) ** 0.25)


def _luminosity_lsun(star_teff_k, star_radius_rsun) -> np.ndarray:
    teff = _positive("star_teff_k", star_teff_k)
    rstar = _positive("star_radius_rsun", star_radius_rsun)
    return rstar**2 * (teff / SOLAR_TEFF_K) ** 4


def insolation_earth(star_teff_k, star_radius_rsun, a_au):
    """Stellar flux at the planet relative to the Earth's: ``R_*^2 (T_eff / 5772)^4 / a^2`` (R_sun, K, AU)."""
    lum = _luminosity_lsun(star_teff_k, star_radius_rsun)
    a = _positive("a_au", a_au)
    return _out(lum / a**2)


def _in_hz_range(teff) -> np.ndarray:
    teff = np.asarray(teff)
    return (teff >= HZ_TEFF_RANGE_K[0]) & (teff <= HZ_TEFF_RANGE_K[1])


def habitable_zone_seff(star_teff_k):
    """(inner, outer) effective stellar flux of the Kopparapu et al. 2014 conservative habitable zone, S_earth units.

    NaN where ``T_eff`` is outside 2600-7200 K (the fit's validity range) or NaN."""
    teff = _positive("star_teff_k", star_teff_k)
    t = teff - _KOPPARAPU_TREF_K
    coefficients = (KOPPARAPU2014_RUNAWAY_GREENHOUSE, KOPPARAPU2014_MAXIMUM_GREENHOUSE)
    if isinstance(teff, float):  # scalar path (NaN fails the range test too)
        if not HZ_TEFF_RANGE_K[0] <= teff <= HZ_TEFF_RANGE_K[1]:
            return math.nan, math.nan
        s_in, s_out = (s0 + a * t + b * t**2 + c * t**3 + d * t**4 for s0, a, b, c, d in coefficients)
        return s_in, s_out
    ok = _in_hz_range(teff)
    out = []
    for s0, a, b, c, d in coefficients:
        seff = s0 + a * t + b * t**2 + c * t**3 + d * t**4
        out.append(_out(np.where(ok, seff, np.nan)))
    return out[0], out[1]


def habitable_zone_bounds_au(star_teff_k, star_radius_rsun):
    """(inner, outer) edges in AU of the Kopparapu et al. 2014 conservative habitable zone: ``sqrt(L / S_eff)``.

    Inner: runaway greenhouse; outer: maximum greenhouse. NaN where ``T_eff`` is outside 2600-7200 K."""
    lum = _luminosity_lsun(star_teff_k, star_radius_rsun)
    s_in, s_out = habitable_zone_seff(star_teff_k)
    return _out(np.sqrt(lum / s_in)), _out(np.sqrt(lum / s_out))


def habitable_zone_class(star_teff_k, star_radius_rsun, a_au):
    """``"too hot"`` (insolation above the runaway-greenhouse S_eff), ``"too cold"`` (below the maximum-greenhouse
    S_eff) or ``"habitable zone"`` (between, edges included) in the Kopparapu et al. 2014 conservative model.

    Raises ``ValueError`` for a NaN input or a ``T_eff`` outside 2600-7200 K (no class can be given there)."""
    if _scalars(star_teff_k, star_radius_rsun, a_au):
        teff = _positive("star_teff_k", star_teff_k)
        if not HZ_TEFF_RANGE_K[0] <= teff <= HZ_TEFF_RANGE_K[1]:
            raise ValueError(
                f"expected star_teff_k within {HZ_TEFF_RANGE_K[0]:g}-{HZ_TEFF_RANGE_K[1]:g} K (Kopparapu et al. 2014 "
                f"validity range), got {teff!r}"
            )
        s = insolation_earth(teff, star_radius_rsun, a_au)
        if math.isnan(s):
            raise ValueError("expected finite star_radius_rsun and a_au, got NaN")
        s_in, s_out = habitable_zone_seff(teff)
        return "too hot" if s > s_in else ("too cold" if s < s_out else "habitable zone")
    teff = np.asarray(_positive("star_teff_k", star_teff_k))
    if np.any(np.isnan(teff)) or np.any(~_in_hz_range(teff)):
        bad = teff[np.isnan(teff) | ~_in_hz_range(teff)].ravel()[0]
        raise ValueError(
            f"expected star_teff_k within {HZ_TEFF_RANGE_K[0]:g}-{HZ_TEFF_RANGE_K[1]:g} K (Kopparapu et al. 2014 "
            f"validity range), got {bad!r}"
        )
    s = np.asarray(insolation_earth(teff, star_radius_rsun, a_au), dtype=np.float64)
    if np.any(np.isnan(s)):
        raise ValueError("expected finite star_radius_rsun and a_au, got NaN")
    s_in, s_out = (np.asarray(v, dtype=np.float64) for v in habitable_zone_seff(teff))
    labels = np.where(s > s_in, "too hot", np.where(s < s_out, "too cold", "habitable zone")).astype(object)
    return str(labels) if labels.ndim == 0 else labels


def rocky_radius_limit_earth(mass_earth_value):
    """Largest radius (R_earth) still classed rocky at this mass (M_earth): ``1.1 x 1.07 M^(1/3.7)`` (Zeng+ 2016)."""
    m = _positive("mass_earth", mass_earth_value)
    return _out(_ROCKY_TOLERANCE * _ZENG_COEFFICIENT * m**_ZENG_EXPONENT)


def composition_class(mass_mjup, radius_rjup):
    """``"giant"`` if ``M > 0.1 M_J``; else ``"rocky"`` if ``R <= 1.1 x 1.07 (M/M_earth)^(1/3.7) R_earth`` (Zeng et
    al. 2016 Earth-like mass-radius relation, 10% tolerance); else ``"volatile-rich"``. Inputs in Jupiter units.

    Raises ``ValueError`` for NaN or non-positive inputs."""
    if _scalars(mass_mjup, radius_rjup):
        m, r = _positive("mass_mjup", mass_mjup), _positive("radius_rjup", radius_rjup)
        if math.isnan(m) or math.isnan(r):
            raise ValueError("expected finite mass_mjup and radius_rjup, got NaN")
        if m > GIANT_MASS_MJUP:
            return "giant"
        return "rocky" if r * R_EARTH_PER_R_JUP <= rocky_radius_limit_earth(m * M_EARTH_PER_M_JUP) else "volatile-rich"
    m = _positive("mass_mjup", mass_mjup)
    r = _positive("radius_rjup", radius_rjup)
    if np.any(np.isnan(m)) or np.any(np.isnan(r)):
        raise ValueError("expected finite mass_mjup and radius_rjup, got NaN")
    limit = np.asarray(rocky_radius_limit_earth(m * M_EARTH_PER_M_JUP))
    rocky = r * R_EARTH_PER_R_JUP <= limit
    labels = np.where(m > GIANT_MASS_MJUP, "giant", np.where(rocky, "rocky", "volatile-rich")).astype(object)
    return str(labels) if labels.ndim == 0 else labels
