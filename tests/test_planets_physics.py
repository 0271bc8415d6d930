"""Planet physics (`astrobio_hf.physics.planets`) against analytic cases and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from astrobio_hf.physics import planets as P

EARTH_MASS_MJUP = 1.0 / P.M_EARTH_PER_M_JUP
EARTH_RADIUS_RJUP = 1.0 / P.R_EARTH_PER_R_JUP


def test_unit_conversions():
    assert P.M_EARTH_PER_M_JUP == pytest.approx(317.83, abs=0.005)
    assert P.R_EARTH_PER_R_JUP == pytest.approx(11.209, abs=0.0005)
    assert P.mass_earth(1.0) == pytest.approx(317.83, abs=0.005)
    assert P.radius_earth(1.0) == pytest.approx(11.209, abs=0.0005)
    assert P.mass_earth(EARTH_MASS_MJUP) == pytest.approx(1.0)
    np.testing.assert_allclose(P.radius_earth(np.array([1.0, 2.0])), [11.209, 22.418], atol=1e-3)


def test_density_of_earth_and_jupiter():
    # Earth from its mass and radius written in Jupiter units: 5.9722e27 g / (4/3 pi (6.3781e8 cm)^3) = 5.495 g/cm^3
    # with the equatorial radius; the usual 5.51 g/cm^3 uses the mean radius 6371.0 km
    assert P.bulk_density_g_cm3(EARTH_MASS_MJUP, EARTH_RADIUS_RJUP) == pytest.approx(5.495, abs=0.001)
    assert P.bulk_density_g_cm3(EARTH_MASS_MJUP, 6.3710e6 / P.R_JUP_M) == pytest.approx(5.51, abs=0.005)
    # Jupiter: 1.240 g/cm^3 with the equatorial R_J; the quoted 1.33 uses the volumetric mean radius 69,911 km
    assert P.bulk_density_g_cm3(1.0, 1.0) == pytest.approx(1.2401, abs=0.0005)
    assert P.bulk_density_g_cm3(1.0, 6.9911e7 / P.R_JUP_M) == pytest.approx(1.326, abs=0.001)
    # rho scales as M / R^3
    assert P.bulk_density_g_cm3(2.0, 2.0) == pytest.approx(P.bulk_density_g_cm3(1.0, 1.0) / 4)


def test_equilibrium_temperature_of_earth():
    t = P.equilibrium_temperature_k(P.SOLAR_TEFF_K, 1.0, 1.0, albedo=0.3)
    hand = 5772 * math.sqrt(6.957e8 / (2 * 1.495978707e11)) * 0.7**0.25  # 254.59 K
    assert t == pytest.approx(hand, rel=1e-12)
    assert abs(t - 255.0) < 1.0
    # zero albedo: (1/0.7)^(1/4) warmer; four times farther: half the temperature
    assert P.equilibrium_temperature_k(5772, 1.0, 1.0, albedo=0.0) == pytest.approx(t / 0.7**0.25)
    assert P.equilibrium_temperature_k(5772, 1.0, 4.0) == pytest.approx(t / 2)


def test_insolation():
    assert P.insolation_earth(5772, 1.0, 1.0) == pytest.approx(1.0)
    assert P.insolation_earth(5772, 1.0, 2.0) == pytest.approx(0.25)
    # twice the radius and twice the temperature: 4 x 16 = 64 times the luminosity
    assert P.insolation_earth(2 * 5772, 2.0, 1.0) == pytest.approx(64.0)
    np.testing.assert_allclose(P.insolation_earth(5772, 1.0, np.array([0.5, 1.0])), [4.0, 1.0])


def test_sun_habitable_zone_from_the_stated_formula():
    # Kopparapu et al. 2014, T = 5772 - 5780 = -8 K, written out by hand
    t = -8.0
    s_in = 1.107 + 1.332e-4 * t + 1.58e-8 * t**2 - 8.308e-12 * t**3 - 1.931e-15 * t**4
    s_out = 0.356 + 6.171e-5 * t + 1.698e-9 * t**2 - 3.198e-12 * t**3 - 5.575e-16 * t**4
    assert (s_in, s_out) == pytest.approx((1.105935, 0.355506), abs=1e-6)
    inner, outer = P.habitable_zone_bounds_au(P.SOLAR_TEFF_K, 1.0)
    assert inner == pytest.approx(1 / math.sqrt(s_in), rel=1e-12)
    assert outer == pytest.approx(1 / math.sqrt(s_out), rel=1e-12)
    assert (inner, outer) == pytest.approx((0.951, 1.677), abs=0.001)
    # not Kopparapu 2013's 0.99 (moist greenhouse) / 1.70 AU: the 2014 runaway-greenhouse edge lies further in
    assert inner < 0.97 and outer < 1.69
    assert P.habitable_zone_seff(P.SOLAR_TEFF_K) == pytest.approx((s_in, s_out), rel=1e-12)


def test_habitable_zone_scales_with_luminosity_and_is_nan_outside_the_fit():
    inner, outer = P.habitable_zone_bounds_au(5772, 2.0)  # 4 L_sun: edges twice as far
    sun = P.habitable_zone_bounds_au(5772, 1.0)
    assert (inner, outer) == pytest.approx((2 * sun[0], 2 * sun[1]))
    lo, hi = P.habitable_zone_bounds_au(np.array([2500.0, 2600.0, 7200.0, 8000.0]), 1.0)
    assert np.isnan(lo[[0, 3]]).all() and np.isfinite(lo[[1, 2]]).all() and np.isnan(hi[[0, 3]]).all()


def test_habitable_zone_class_of_solar_system_planets():
    assert P.habitable_zone_class(5772, 1.0, 1.0) == "habitable zone"
    assert P.habitable_zone_class(5772, 1.0, 0.723) == "too hot"  # Venus
    assert P.habitable_zone_class(5772, 1.0, 1.524) == "habitable zone"  # Mars (edge at 1.677 AU)
    assert P.habitable_zone_class(5772, 1.0, 5.2) == "too cold"  # Jupiter
    assert list(P.habitable_zone_class(5772, 1.0, np.array([0.5, 1.0, 2.0]))) == ["too hot", "habitable zone", "too cold"]
    with pytest.raises(ValueError, match="2600-7200 K"):
        P.habitable_zone_class(10000.0, 0.01, 0.002)
    with pytest.raises(ValueError, match="2600-7200 K"):
        P.habitable_zone_class(float("nan"), 1.0, 1.0)


def test_composition_classes():
    assert P.composition_class(EARTH_MASS_MJUP, EARTH_RADIUS_RJUP) == "rocky"
    # Neptune: 17.15 M_earth, 3.88 R_earth; rocky limit 1.1 x 1.07 x 17.15^(1/3.7) = 2.54 R_earth
    assert P.rocky_radius_limit_earth(17.15) == pytest.approx(1.177 * 17.15 ** (1 / 3.7), rel=1e-12)
    assert P.composition_class(17.15 / 317.83, 3.883 / 11.209) == "volatile-rich"
    assert P.composition_class(1.0, 1.0) == "giant"  # Jupiter
    assert P.composition_class(0.2994, 0.843) == "giant"  # Saturn
    # the giant threshold is on mass alone: 0.1 M_J with an Earth radius is a giant, just below it is rocky
    assert P.composition_class(0.1001, EARTH_RADIUS_RJUP) == "giant"
    assert P.composition_class(0.0999, 2.0 / 11.209) == "rocky"
    # exactly on the rocky limit is rocky, 1% above is not
    limit = P.rocky_radius_limit_earth(5.0) / P.R_EARTH_PER_R_JUP
    m = 5.0 / P.M_EARTH_PER_M_JUP
    assert P.composition_class(m, limit * (1 - 1e-9)) == "rocky"
    assert P.composition_class(m, limit * 1.01) == "volatile-rich"
    assert list(P.composition_class(np.array([1.0, EARTH_MASS_MJUP]), np.array([1.0, EARTH_RADIUS_RJUP]))) == ["giant", "rocky"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="radius_rjup > 0"):
        P.bulk_density_g_cm3(1.0, -1.0)
    with pytest.raises(ValueError, match="a_au > 0"):
        P.insolation_earth(5772, 1.0, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="albedo"):
        P.equilibrium_temperature_k(5772, 1.0, 1.0, albedo=1.0)
    with pytest.raises(ValueError, match="finite"):
        P.bulk_density_g_cm3(float("inf"), 1.0)
    assert math.isnan(P.bulk_density_g_cm3(float("nan"), 1.0))  # NaN passes through the numeric functions
    with pytest.raises(ValueError, match="NaN"):
        P.composition_class(float("nan"), 1.0)
