"""Validation helpers shared by every family's configuration (torch-free, like the configs)."""

from __future__ import annotations

import math
import numbers
from dataclasses import fields
from typing import Any

from transformers.configuration_utils import PreTrainedConfig

# Keys that `PreTrainedConfig`, `from_pretrained` and `to_dict()` put into a config dict besides the fields of
# the dataclass; they are handled by `PreTrainedConfig.__post_init__`. Anything else is an unknown key.
STANDARD_EXTRA_KEYS = frozenset(
    {
        "model_type",
        "torch_dtype",
        "num_labels",
        "name_or_path",
        "_name_or_path",
        "_commit_hash",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "_attn_implementation_internal",
        "_experts_implementation_internal",
    }
)


def reject_unknown_keys(config_class, kwargs: dict) -> None:
    """An unknown key (a typo, a field of another family) is an error naming it and the valid keys."""
    unknown = sorted(key for key in kwargs if key not in STANDARD_EXTRA_KEYS)
    if unknown:
        own = [f.name for f in fields(config_class) if f.name not in base_field_names()]
        raise ValueError(
            f"{config_class.__name__} got unknown key(s) {unknown}; valid keys are {own} "
            f"(plus the standard PreTrainedConfig keys {sorted(base_field_names() | STANDARD_EXTRA_KEYS)})"
        )


def check_norm_table(mean, std, variable_names: list[str], num_levels: int, level_word: str = "level"):
    """(V x Z) mean/std tables given together or not at all; one positive std per variable and level."""
    if (mean is None) != (std is None):
        raise ValueError(
            f"norm_mean and norm_std are given together or not at all, got norm_mean="
            f"{'None' if mean is None else 'a table'} and norm_std={'None' if std is None else 'a table'}"
        )
    if mean is None:
        return None, None
    tables = []
    for name, table in (("norm_mean", as_list(mean)), ("norm_std", as_list(std))):
        if not isinstance(table, (list, tuple)) or len(table) != len(variable_names):
            found = len(table) if isinstance(table, (list, tuple)) else type(table).__name__
            raise ValueError(
                f"{name} must hold one row per variable: expected {len(variable_names)} rows "
                f"(variable_names={variable_names}), got {found}"
            )
        rows = []
        for variable, row in zip(variable_names, table):
            row = float_list(f"{name}[{variable!r}]", row)
            if len(row) != num_levels:
                raise ValueError(
                    f"{name}[{variable!r}] must hold one value per {level_word}: expected {num_levels} "
                    f"(len(level_values)), got {len(row)}"
                )
            if name == "norm_std" and any(v <= 0 for v in row):
                raise ValueError(f"norm_std[{variable!r}] must be positive, got {row}")
            rows.append(row)
        tables.append(rows)
    return tables[0], tables[1]


def check_planet_stats(mean, std, planet_param_names: list[str]):
    """(P,) planet parameter mean/std given together or not at all; positive std."""
    if (mean is None) != (std is None):
        raise ValueError(
            f"planet_param_mean and planet_param_std are given together or not at all, got "
            f"planet_param_mean={mean} and planet_param_std={std}"
        )
    if mean is None:
        return None, None
    mean = float_list("planet_param_mean", mean)
    std = float_list("planet_param_std", std)
    for name, values in (("planet_param_mean", mean), ("planet_param_std", std)):
        if len(values) != len(planet_param_names):
            raise ValueError(
                f"{name} must hold one value per planet parameter: expected {len(planet_param_names)} "
                f"(planet_param_names={planet_param_names}), got {len(values)}"
            )
    if any(v <= 0 for v in std):
        raise ValueError(f"planet_param_std must be positive, got {std}")
    return mean, std


def base_field_names() -> set[str]:
    return {f.name for f in fields(PreTrainedConfig)}


def as_list(values):
    # numpy arrays (from a dataset schema) become plain lists so the config stays JSON-serialisable
    return values.tolist() if hasattr(values, "tolist") and not isinstance(values, (list, tuple)) else values


def str_list(name, values) -> list[str]:
    values = as_list(values)
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a list of names, got {values!r}")
    values = list(values)
    if any(not isinstance(v, str) or not v for v in values):
        raise ValueError(f"{name} must hold non-empty strings, got {values}")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{name} must be unique, got duplicates {duplicates} in {values}")
    return values


def float_list(name, values) -> list[float]:
    values = as_list(values)
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}")
    return [finite_float(f"{name}[{i}]", v) for i, v in enumerate(values)]


def finite_float(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def int_at_least(name, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


LEVEL_UNITS = ("m", "Pa")


def check_grid(variable_names, variable_units, level_values, level_unit, lat_values, lon_values, *, allow_regional=False):
    """The variables' units and the grid of a climate config: monotonic levels in m or Pa, ascending
    latitudes within [-90, 90] (the poles included), uniform ascending longitudes covering 360 degrees
    (periodic) or, with ``allow_regional``, a smaller span (a regional grid, not periodic).
    Returns (variable_units, level_values, lat_values, lon_values) as plain lists."""
    if variable_units is not None:
        variable_units = [str(u) for u in as_list(variable_units)]
        if len(variable_units) != len(variable_names):
            raise ValueError(
                f"variable_units has {len(variable_units)} entries {variable_units} but variable_names "
                f"has {len(variable_names)} {variable_names}"
            )
    level_values = float_list("level_values", level_values)
    lat_values = float_list("lat_values", lat_values)
    lon_values = float_list("lon_values", lon_values)
    if level_unit not in LEVEL_UNITS:
        raise ValueError(f"level_unit must be one of {list(LEVEL_UNITS)}, got {level_unit!r}")
    if not level_values:
        raise ValueError("level_values must hold at least one level, got []")
    steps = [b - a for a, b in zip(level_values, level_values[1:])]
    if steps and not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
        raise ValueError(f"level_values must be strictly monotonic, got {level_values}")
    if not lat_values or any(not -90.0 <= v <= 90.0 for v in lat_values):
        raise ValueError(f"lat_values must be non-empty and within [-90, 90] degrees, got {lat_values}")
    if any(b <= a for a, b in zip(lat_values, lat_values[1:])):
        raise ValueError(f"lat_values must be ascending, got {lat_values}")
    if len(lon_values) < 2:
        raise ValueError(f"lon_values must hold at least 2 columns, got {lon_values}")
    lon_steps = [b - a for a, b in zip(lon_values, lon_values[1:])]
    if allow_regional:
        spacing = lon_steps[0]
        if spacing <= 0 or any(abs(s - spacing) > 1e-6 * 360.0 for s in lon_steps) or len(lon_values) * spacing > 360.0 * (1 + 1e-6):
            raise ValueError(
                f"lon_values must be uniform and ascending, spanning at most 360 degrees (global, periodic) or less "
                f"(regional), got steps {sorted(set(lon_steps))} over {len(lon_values)} columns"
            )
        return variable_units, level_values, lat_values, lon_values
    spacing = 360.0 / len(lon_values)
    if any(abs(s - spacing) > 1e-6 * 360.0 for s in lon_steps):
        raise ValueError(
            f"lon_values must be uniform and cover 360 degrees (the longitude axis is periodic), i.e. a spacing of "
            f"360/{len(lon_values)} = {spacing} degrees, got steps {sorted(set(lon_steps))}"
        )
    return variable_units, level_values, lat_values, lon_values


def merge_schema_fields(from_schema: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a `from_schema` config: the schema's fields plus the caller's overrides. A
    schema field among the overrides is an error (the dataset is the one source of those values)."""
    clash = sorted(set(from_schema) & set(overrides))
    if clash:
        raise ValueError(f"{clash} come from the dataset schema; do not pass them to from_schema as well")
    return {**from_schema, **overrides}


class GridSizesMixin:
    """Sizes of a config that carries a datacube grid, derived from its name and coordinate lists (never
    stored: those lists are the one source of truth)."""

    @property
    def num_variables(self) -> int:
        return len(self.variable_names)

    @property
    def num_levels(self) -> int:
        return len(self.level_values)

    @property
    def num_lat(self) -> int:
        return len(self.lat_values)

    @property
    def num_lon(self) -> int:
        return len(self.lon_values)
