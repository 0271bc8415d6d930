"""Unit conversion to SI with pint, for ingesting model output whose unit strings follow CF/UDUNITS habits.

``to_si(values, unit, quantity_hint)`` returns the values in SI and the canonical SI unit string used
across the project: ``K``, ``Pa``, ``kg m-3``, ``m s-1``, ``m``, ``1`` (dimensionless), ...
"""

from __future__ import annotations

import functools
import re
from typing import Optional

import numpy as np

__all__ = ["QUANTITY_SI_UNITS", "VARIABLE_QUANTITIES", "to_si"]

# quantity -> canonical SI unit string
QUANTITY_SI_UNITS: dict[str, str] = {
    "temperature": "K",
    "pressure": "Pa",
    "density": "kg m-3",
    "velocity": "m s-1",
    "length": "m",
    "height": "m",
    "dimensionless": "1",
    "mixing_ratio": "1",
    "specific_humidity": "1",
    "time": "s",
    "acceleration": "m s-2",
    "flux": "W m-2",
    "mass": "kg",
    "molar_mass": "kg mol-1",
    "specific_heat": "J kg-1 K-1",
}

# canonical variable name -> quantity, so that a variable name can be given as the hint
VARIABLE_QUANTITIES: dict[str, str] = {
    "T": "temperature",
    "p": "pressure",
    "rho": "density",
    "q": "specific_humidity",
    "u": "velocity",
    "v": "velocity",
    "z": "height",
}

_PINT_SPELLING = {
    "K": "kelvin",
    "Pa": "pascal",
    "kg m-3": "kilogram / meter ** 3",
    "m s-1": "meter / second",
    "m": "meter",
    "1": "dimensionless",
    "s": "second",
    "m s-2": "meter / second ** 2",
    "W m-2": "watt / meter ** 2",
    "kg": "kilogram",
    "kg mol-1": "kilogram / mole",
    "J kg-1 K-1": "joule / kilogram / kelvin",
}

_DIMENSIONLESS_SPELLINGS = {"1", "", "-", "dimensionless", "fraction", "kg kg-1", "kg/kg", "kg kg**-1", "mol mol-1"}
_PERCENT_SPELLINGS = {"%", "percent", "pct"}
_ALIASES = {
    "degc": "degC",
    "deg_c": "degC",
    "celsius": "degC",
    "degrees_celsius": "degC",
    "degree_celsius": "degC",
    "degf": "degF",
    "deg_f": "degF",
    "fahrenheit": "degF",
    "degrees_fahrenheit": "degF",
    "degk": "K",
    "deg_k": "K",
    "kelvin": "K",
    "mb": "mbar",
    "millibar": "mbar",
    "millibars": "mbar",
}
_EXPONENT = re.compile(r"(?<![\*\^\w])([A-Za-z]+)(\^?)(-?\d+)\b")


@functools.lru_cache(maxsize=1)
def _registry():
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def _normalise_spelling(unit: str) -> str:
    """CF-style ``kg m-3`` / ``m s^-1`` -> pint-style ``kg * m**-3``."""
    text = unit.strip()
    text = _EXPONENT.sub(lambda m: f"{m.group(1)}**{m.group(3)}", text)
    tokens = [t for t in re.split(r"\s+", text) if t]
    return " * ".join(tokens) if all("/" not in t for t in tokens) else " ".join(tokens)


def _resolve_quantity(hint: Optional[str]) -> Optional[str]:
    if hint is None:
        return None
    if hint in VARIABLE_QUANTITIES:
        return VARIABLE_QUANTITIES[hint]
    if hint in QUANTITY_SI_UNITS:
        return hint
    raise ValueError(
        f"unknown quantity_hint {hint!r}; expected one of {sorted(QUANTITY_SI_UNITS)} "
        f"or a variable name in {sorted(VARIABLE_QUANTITIES)}"
    )


def to_si(values: np.ndarray, unit: Optional[str], quantity_hint: Optional[str] = None) -> tuple[np.ndarray, str]:
    """Convert ``values`` given in ``unit`` to SI and return ``(values_si, si_unit)``.

    Args:
        values: numeric array (any shape); returned as float64 of the same shape.
        unit: the unit string as found in the file (``"K"``, ``"degC"``, ``"hPa"``, ``"mbar"``, ``"m s-1"``,
            ``"kg m-3"``, ``"kg kg-1"``, ``"1"``, ``"%"``, ...). Offsets (degC, degF) are applied.
        quantity_hint: the expected physical quantity (``"temperature"``, ``"pressure"``, ``"density"``,
            ``"velocity"``, ``"length"``, ``"dimensionless"``, ...) or a canonical variable name
            (``"T"``, ``"p"``, ``"rho"``, ``"q"``, ``"u"``, ``"v"``, ``"z"``). When given, the unit must have
            that dimensionality.

    Raises:
        ValueError: missing unit, a unit pint does not know, or a unit of the wrong dimensionality for the hint.
    """
    quantity = _resolve_quantity(quantity_hint)
    if unit is None or (isinstance(unit, str) and unit.strip() == "" and quantity not in ("dimensionless", "mixing_ratio", "specific_humidity")):
        raise ValueError(
            f"missing unit{f' for {quantity_hint!r}' if quantity_hint else ''}: expected a unit string "
            f"such as {QUANTITY_SI_UNITS.get(quantity or 'temperature')!r}, got {unit!r}"
        )
    arr = np.asarray(values, dtype=np.float64)
    text = str(unit).strip()
    low = text.lower()

    # 1. dimensionless spellings and percent, handled without pint
    if low in _DIMENSIONLESS_SPELLINGS or low in _PERCENT_SPELLINGS:
        if quantity is not None and QUANTITY_SI_UNITS[quantity] != "1":
            raise ValueError(f"expected a {quantity} unit (SI {QUANTITY_SI_UNITS[quantity]!r}), got dimensionless {unit!r}")
        return (arr / 100.0 if low in _PERCENT_SPELLINGS else arr.copy()), "1"

    # 2. pint
    import pint

    ureg = _registry()
    spelling = _ALIASES.get(low, text)
    try:
        parsed = ureg.Quantity(arr, _normalise_spelling(spelling) if spelling not in ("degC", "degF") else spelling)
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(f"unknown unit {unit!r}{f' for {quantity_hint!r}' if quantity_hint else ''}: {err}") from err
    except Exception as err:  # pint raises a few other parse errors (tokenize, syntax)
        raise ValueError(f"unknown unit {unit!r}{f' for {quantity_hint!r}' if quantity_hint else ''}: {err}") from err

    if quantity is not None:
        si_unit = QUANTITY_SI_UNITS[quantity]
        target = ureg.Unit(_PINT_SPELLING[si_unit])
        if parsed.dimensionality != target.dimensionality:
            raise ValueError(
                f"expected a {quantity} unit convertible to {si_unit!r}, got {unit!r} "
                f"(dimensionality {parsed.dimensionality})"
            )
        return np.asarray(parsed.to(target).magnitude, dtype=np.float64), si_unit

    for si_unit, spelled in _PINT_SPELLING.items():
        target = ureg.Unit(spelled)
        if parsed.dimensionality == target.dimensionality:
            return np.asarray(parsed.to(target).magnitude, dtype=np.float64), si_unit
    base = parsed.to_base_units()
    return np.asarray(base.magnitude, dtype=np.float64), f"{base.units:~}"
