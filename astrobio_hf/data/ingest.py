"""Convert gridded NetCDF output of a climate model (CF conventions, read with xarray) into Parquet shards.

What :func:`ingest_netcdf` does, in order:

1. Opens every file with xarray (``netCDF4`` or ``h5netcdf`` engine, whichever xarray picks), times decoded
   with cftime for any calendar (``standard``, ``noleap``, ``360_day``, year 0 included). A time axis that
   cannot be decoded (garbage units) is opened undecoded: a WARNING says so, the climate steps become step
   indices and ``schema.extra["ingest"]["time_decoding"]`` records why.
2. Combines the files with xarray: files are grouped by their set of gridded variables; each group is
   **concatenated along climate time** in the order given (one file per year or decade; the time must then
   increase strictly), and the groups are **merged by variable** (``xr.merge(join="exact")``: one file per
   variable, as CMIP writes them). Every file must have the grid of the first one and every group its
   times: a difference is a one-line ``ValueError`` naming both files and what differs. A scalar coordinate
   that differs between the groups (``height`` 2 m of ``tas``, 10 m of ``uas``) is logged and kept per
   variable in ``extra["ingest"]["scalar_coordinates"]`` (by NetCDF name).
3. Recognises the dimensions of the chosen variables from CF metadata (``axis``, ``standard_name``,
   ``units``, ``positive``) and common names: climate time (``time``, ``t``, ...), latitude
   (``lat``, ``latitude``, ...), longitude (``lon``, ``longitude``, ...), level (``level``, ``lev``,
   ``plev``, ``pressure``, ``height``, ``altitude``, ``model_level_number``, ...) and, optionally, a
   geological-time dimension (``geological_time``, ``geo_time`` or ``geological_time_dim=``). Any other
   dimension is an error. An axis a variable does not have becomes size 1 (a surface field is Z = 1, at
   its scalar height coordinate when it has one).
4. Maps CF standard names to the canonical short names (``air_temperature`` -> ``T``, ``air_pressure``
   -> ``p``, ``eastward_wind`` -> ``u``, ``northward_wind`` -> ``v``, ``specific_humidity`` -> ``q``,
   ``air_density`` -> ``rho``, ``geopotential_height`` -> ``z``); other variables keep their NetCDF name
   unless ``rename={"UWND": "u"}`` maps them. ``units={"T": "degC"}`` overrides a wrong or missing units
   attribute. Both name variables of the files (else a ``ValueError`` listing what they hold), are logged
   at INFO and recorded in ``extra["ingest"]["renames"]`` / ``["unit_overrides"]``.
5. Converts every variable to SI with :func:`astrobio_hf.physics.units.to_si` (temperatures to K, ...).
   A variable without a ``units`` attribute (and no override), or with a unit pint does not know, is an error.
6. Orders the grid: latitude ascending (data flipped with it; poles included), height levels ascending
   from the surface, pressure levels from the surface up (decreasing pressure). Longitude: a global grid
   (n_lon * spacing = 360) is wrapped to [0, 360) and sorted; a regional grid stays contiguous and
   ascending from a value in [0, 360) (-30 .. 40 becomes 330 .. 400). Nothing is dropped: duplicate
   longitudes after wrapping or a non-monotonic coordinate are errors.
7. Masked values (NaN from ``_FillValue``/``missing_value`` or a land/ocean mask; also netCDF's default fill
   value 9.97e36 in a variable that declares no ``_FillValue``, with a WARNING and
   ``extra["ingest"]["undeclared_default_fill"]``) are kept as NaN, counted
   per variable (log, ``schema.masked_values``, ``extra["ingest"]["masked_values"]`` with the fraction);
   the statistics use valid values only. Inf is an error naming the variable and the count.
8. Splits the one planet by contiguous blocks of climate time (default 70/15/15 % ->
   train/validation/test, the split names synth and the recipes use), each block one
   :class:`~astrobio_hf.data.schema.Series` with its own segment index (blocks may be cut further into
   segments of at most ``segment_steps`` steps) carrying its CF times, and writes them with
   :func:`~astrobio_hf.data.schema.write_dataset` (``split_by="time_block"``; ``climate_time_units`` /
   ``climate_time_calendar`` of the first file's time encoding; shards with page checksums and sha256).

Planet constants are keyword arguments with Earth defaults; they are also stored as the planet
parameters (``gravity``, ``gas_constant``, ``heat_capacity``, ``planet_radius``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from ..physics.units import to_si
from .schema import DatasetSchema, Series, write_dataset

logger = logging.getLogger(__name__)

#: CF standard name -> canonical short name.
CF_STANDARD_NAMES = {
    "air_temperature": "T",
    "air_pressure": "p",
    "eastward_wind": "u",
    "northward_wind": "v",
    "specific_humidity": "q",
    "air_density": "rho",
    "geopotential_height": "z",
}

EARTH_CONSTANTS = {"gravity": 9.80665, "gas_constant": 287.05, "heat_capacity": 1004.6, "planet_radius": 6.371e6}
PLANET_PARAM_UNITS = {"gravity": "m s-2", "gas_constant": "J kg-1 K-1", "heat_capacity": "J kg-1 K-1", "planet_radius": "m"}

_TIME_NAMES = {"time", "t", "times", "month", "months", "year", "years", "day", "days", "climate_time"}
_LAT_NAMES = {"lat", "latitude", "lats", "nav_lat", "xlat", "lat_0"}
_LON_NAMES = {"lon", "longitude", "lons", "long", "nav_lon", "xlon", "lon_0"}
_LEVEL_NAMES = {
    "level", "lev", "levels", "plev", "pressure", "pres", "isobaric", "pfull", "phalf", "height", "altitude",
    "alt", "z", "depth", "model_level_number", "model_level", "hybrid", "sigma", "ilev", "bottom_top",
}
_LEVEL_STANDARD_NAMES = {
    "air_pressure", "height", "altitude", "model_level_number", "atmosphere_hybrid_height_coordinate",
    "atmosphere_hybrid_sigma_pressure_coordinate", "atmosphere_sigma_coordinate", "geopotential_height",
    "atmosphere_ln_pressure_coordinate", "height_above_reference_ellipsoid",
}
_GEO_NAMES = {"geological_time", "geo_time", "geologic_time", "gtime", "tg"}
_LAT_UNITS = {"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"}
_LON_UNITS = {"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"}
_ROTATED = {"grid_latitude", "grid_longitude"}

AXES = ("time", "geological_time", "level", "lat", "lon")


@dataclass
class _Axes:
    """Dimension name (or None) of each recognised axis."""

    time: str | None = None
    geological_time: str | None = None
    level: str | None = None
    lat: str | None = None
    lon: str | None = None


def _attr(obj, key: str) -> str:
    return str(obj.attrs.get(key, "")).strip()


def _classify_dim(ds, dim: str, geological_time_dim: str | None) -> str | None:
    """Which axis a dimension is ("time", "lat", ...) or None when it is not recognised."""
    if geological_time_dim is not None and dim == geological_time_dim:
        return "geological_time"
    name = dim.lower()
    if name in _GEO_NAMES:
        return "geological_time"
    coord = ds[dim] if dim in ds.variables else None
    axis = _attr(coord, "axis").upper() if coord is not None else ""
    std = _attr(coord, "standard_name").lower() if coord is not None else ""
    units = _attr(coord, "units").lower().replace(" ", "_") if coord is not None else ""
    if std in _ROTATED:
        raise ValueError(
            f"dimension {dim!r} is a rotated-pole coordinate ({std}); only regular latitude/longitude grids "
            "can be ingested: regrid to latitude/longitude first"
        )
    if std == "time" or axis == "T" or name in _TIME_NAMES or " since " in units.replace("_", " "):
        return "time"
    if std == "latitude" or axis == "Y" or units in _LAT_UNITS or name in _LAT_NAMES:
        return "lat"
    if std == "longitude" or axis == "X" or units in _LON_UNITS or name in _LON_NAMES:
        return "lon"
    if std in _LEVEL_STANDARD_NAMES or axis == "Z" or name in _LEVEL_NAMES:
        return "level"
    if coord is not None and _attr(coord, "positive").lower() in ("up", "down"):
        return "level"
    if coord is not None and (np.issubdtype(coord.dtype, np.datetime64) or coord.dtype == object):
        return "time"
    return None


def _open(paths: Sequence[str]) -> tuple[list, list[str | None]]:
    """Open every file, times decoded with cftime (any calendar, year 0 included). A time axis that cannot be
    decoded is opened undecoded; the reason is returned per file (None when the times decoded)."""
    import xarray as xr

    datasets, time_errors = [], []
    for p in paths:
        if not os.path.isfile(p):
            raise ValueError(f"NetCDF file {p} does not exist")
        try:
            try:
                ds = xr.open_dataset(p, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True), mask_and_scale=True)
                err = None
            except ValueError as e:  # undecodable time units: fall back to step indices (logged, recorded)
                if "decode time" not in str(e):
                    raise
                ds = xr.open_dataset(p, decode_times=False, mask_and_scale=True)
                err = str(e).split(". Try")[0]
        except Exception as e:  # xarray raises many types for unreadable files
            raise ValueError(f"cannot read {p} as NetCDF with xarray: {e}") from e
        datasets.append(ds)
        time_errors.append(err)
    return datasets, time_errors


def _gridded_variables(ds, geological_time_dim: str | None) -> list[str]:
    """Data variables with latitude/longitude dimensions whose every dimension is recognised."""
    chosen = []
    for v in (str(v) for v in ds.data_vars):
        dims = ds[v].dims
        if not dims or not np.issubdtype(ds[v].dtype, np.number):
            continue
        kinds = [_classify_dim(ds, d, geological_time_dim) for d in dims]
        if None in kinds or not ({"lat", "lon"} & set(kinds)):
            continue  # bounds, grid mappings, auxiliary fields
        chosen.append(v)
    return chosen


def _summary(values) -> str:
    v = np.asarray(values)
    if v.size == 0:
        return "0 values"
    if v.dtype == object or np.issubdtype(v.dtype, np.datetime64):
        return f"{v.size} values {v.reshape(-1)[0]}..{v.reshape(-1)[-1]}"
    v = v.astype(np.float64)
    return f"{v.size} values {v.min():g}..{v.max():g}"


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype == object or b.dtype == object or np.issubdtype(a.dtype, np.datetime64):
        return bool(np.all(a == b))
    return bool(np.allclose(a.astype(np.float64), b.astype(np.float64), rtol=0, atol=1e-6))


_AXIS_WORDS = {"lat": "latitudes", "lon": "longitudes", "level": "levels", "geological_time": "geological times", "time": "times"}


def _axis_coords(ds, geological_time_dim: str | None) -> dict[str, Any]:
    """axis kind -> coordinate values (or the size when a dimension has no coordinate) of a dataset's grid."""
    out = {}
    for d in ds.dims:
        kind = _classify_dim(ds, str(d), geological_time_dim)
        if kind is not None:
            out[kind] = ds[d].values if d in ds.variables else np.arange(ds.sizes[d])
    return out


def _check_same_grid(ref_path, ref, path, other, axes: Sequence[str]) -> None:
    for kind in axes:
        if kind not in ref and kind not in other:
            continue
        a, b = ref.get(kind), other.get(kind)
        if a is None or b is None or not _same(a, b):
            raise ValueError(
                f"{os.path.basename(ref_path)} and {os.path.basename(path)} have different {_AXIS_WORDS[kind]}: "
                f"{'none' if a is None else _summary(a)} vs {'none' if b is None else _summary(b)}"
            )


def _combine(paths: Sequence[str], opened: list, geological_time_dim: str | None):
    """Group the files by their set of gridded variables, concatenate each group along time (xarray), check the
    grids and times agree, and merge the groups by variable (``xr.merge(join="exact")``).

    Returns (dataset, per-variable scalar coordinates dropped because they differ between files)."""
    import xarray as xr

    groups: dict[tuple[str, ...], list[int]] = {}
    order: dict[frozenset, tuple[str, ...]] = {}
    for i, (p, d) in enumerate(zip(paths, opened)):
        names = _gridded_variables(d, geological_time_dim)
        if not names:
            raise ValueError(f"{p}: found no gridded data variable (with latitude/longitude dimensions) among {[str(v) for v in d.data_vars]}")
        key = order.setdefault(frozenset(names), tuple(names))  # the variables in the order of the first such file
        groups.setdefault(key, []).append(i)
    # every file on the grid of the first one (times are compared after concatenating)
    grids = [_axis_coords(d, geological_time_dim) for d in opened]
    for i in range(1, len(paths)):
        _check_same_grid(paths[0], grids[0], paths[i], grids[i], ("lat", "lon", "level", "geological_time"))
    shared = set.intersection(*(set(k) for k in groups)) if len(groups) > 1 else set()
    if shared:
        raise ValueError(
            f"variables {sorted(shared)} are in files with different sets of variables "
            f"({[ [os.path.basename(paths[i]) for i in g] for g in groups.values()]}); each variable must come from "
            "one group of files (concatenated along time)"
        )
    parts, firsts = [], []
    scalar_coords: dict[str, dict[str, str]] = {}
    for names, idx in groups.items():
        dsets = [opened[i][list(names)] for i in idx]
        if len(dsets) > 1:
            time_dim = next((str(d) for d in dsets[0].dims if _classify_dim(dsets[0], str(d), geological_time_dim) == "time"), None)
            if time_dim is None:
                raise ValueError(
                    f"{os.path.basename(paths[idx[0]])} and {os.path.basename(paths[idx[1]])} hold the same variables "
                    f"{list(names)} but no time dimension to concatenate along"
                )
            part = xr.concat(dsets, dim=time_dim, data_vars="all", coords="minimal", compat="override", join="exact")
        else:
            part = dsets[0]
        parts.append(part)
        firsts.append(paths[idx[0]])
    if len(parts) == 1:
        return parts[0], scalar_coords
    times = [_axis_coords(p, geological_time_dim).get("time") for p in parts]
    for k in range(1, len(parts)):
        _check_same_grid(firsts[0], {"time": times[0]} if times[0] is not None else {}, firsts[k],
                         {"time": times[k]} if times[k] is not None else {}, ("time",))
    # scalar coordinates (e.g. height 2 m of tas, 10 m of uas) that differ between groups: kept per variable
    scalars = {str(c) for p in parts for c in p.coords if p[c].ndim == 0}
    for c in sorted(scalars):
        values = [(p[c].values.item(), _attr(p[c], "units")) if c in p.coords else None for p in parts]
        if len({v for v in values}) > 1:
            for p, v in zip(parts, values):
                for name in p.data_vars:
                    if v is not None:
                        scalar_coords.setdefault(str(name), {})[c] = f"{v[0]:g} {v[1]}".strip() if isinstance(v[0], (int, float)) else str(v[0])
            logger.info("ingest: scalar coordinate %r differs between the files (%s); kept per variable in provenance", c,
                        ", ".join(f"{os.path.basename(f)}: {v}" for f, v in zip(firsts, values)))
            parts = [p.drop_vars(c) if c in p.coords else p for p in parts]
    try:
        merged = xr.merge(parts, join="exact", compat="no_conflicts", combine_attrs="drop_conflicts")
    except ValueError as e:
        raise ValueError(f"cannot merge {[os.path.basename(f) for f in firsts]} by variable: {e}") from e
    return merged, scalar_coords


def _select_variables(ds, path: str, variables: Sequence[str] | None, geological_time_dim: str | None) -> list[str]:
    """NetCDF names of the variables to ingest."""
    data_vars = [str(v) for v in ds.data_vars]
    if variables is None:
        chosen = []
        for v in data_vars:
            dims = ds[v].dims
            if not dims or not np.issubdtype(ds[v].dtype, np.number):
                continue
            kinds = [_classify_dim(ds, d, geological_time_dim) for d in dims]
            if None in kinds or not ({"lat", "lon"} & set(kinds)):
                continue  # bounds, grid mappings, auxiliary fields
            chosen.append(v)
        if not chosen:
            raise ValueError(
                f"{path}: found no gridded data variable (with latitude/longitude dimensions) among {data_vars}"
            )
        return chosen
    if len(variables) == 0:
        raise ValueError(f"an empty list of variables was requested from {path}; give None to take every gridded variable")
    by_name = {}
    for v in data_vars:
        by_name.setdefault(v, v)
        std = _attr(ds[v], "standard_name")
        if std:
            by_name.setdefault(std, v)
            if std in CF_STANDARD_NAMES:
                by_name.setdefault(CF_STANDARD_NAMES[std], v)
    unknown = [v for v in variables if v not in by_name]
    if unknown:
        raise ValueError(
            f"unknown variables {unknown} requested from {path}; it has data variables {data_vars} "
            f"(a NetCDF name, a CF standard name or a canonical short name {sorted(set(CF_STANDARD_NAMES.values()))} "
            "of one of them)"
        )
    return [by_name[v] for v in variables]


def _default_fill_value(da) -> float | None:
    """netCDF's default fill value for the on-disk type of a variable that declares no _FillValue, else None."""
    if "_FillValue" in da.encoding or "missing_value" in da.encoding or "_FillValue" in da.attrs:
        return None
    try:
        from netCDF4 import default_fillvals
    except ImportError:  # netCDF4 is a dependency; h5netcdf-only installs fall back to the documented value
        default_fillvals = {"f4": 9.969209968386869e36, "f8": 9.969209968386869e36}
    dtype = np.dtype(da.encoding.get("dtype", da.dtype))
    return float(default_fillvals.get(f"{dtype.kind}{dtype.itemsize}")) if dtype.kind == "f" else None


def _canonical_name(ds, var: str, rename: Mapping[str, str] | None = None) -> str:
    """The name ``var`` is stored under: ``rename[var]`` (by NetCDF or standard name), else the canonical short
    name of its CF standard name, else its NetCDF name."""
    std = _attr(ds[var], "standard_name")
    for key in (var, std):
        if rename and key and key in rename:
            return str(rename[key])
    return CF_STANDARD_NAMES.get(std, var)


def _name_keys(ds, var: str) -> set[str]:
    """Names a user may use for ``var``: its NetCDF name, CF standard name and canonical short name."""
    std = _attr(ds[var], "standard_name")
    return {k for k in (var, std, CF_STANDARD_NAMES.get(std)) if k}


def _time_axis(ds, dim: str | None) -> tuple[float, str, np.ndarray | None]:
    """(step, unit, numeric coordinate) of the climate-time axis; checks it increases strictly."""
    if dim is None:
        return 1.0, "step", None
    if dim not in ds.variables:
        return 1.0, "step", np.arange(ds.sizes[dim], dtype=np.float64)
    coord = ds[dim].values
    if np.issubdtype(coord.dtype, np.datetime64):
        num = (coord - coord[0]) / np.timedelta64(1, "s") / 86400.0
        unit = "day"
    elif coord.dtype == object:  # cftime dates (360-day and other calendars)
        num = np.array([(c - coord[0]).total_seconds() / 86400.0 for c in coord])
        unit = "day"
    elif " since " in _attr(ds[dim], "units"):  # a time axis that could not be decoded: step indices
        num = np.asarray(coord, dtype=np.float64)
        unit = "step"
    else:
        num = np.asarray(coord, dtype=np.float64)
        unit = _attr(ds[dim], "units") or "step"
    if num.size > 1 and np.any(np.diff(num) <= 0):
        bad = int(np.argmax(np.diff(num) <= 0))
        raise ValueError(
            f"climate time {dim!r} must increase strictly after concatenating the files; "
            f"step {bad} -> {bad + 1} goes from {coord[bad]} to {coord[bad + 1]}"
        )
    step = float(np.median(np.diff(num))) if num.size > 1 else 1.0
    if unit == "step":
        step, num = 1.0, np.arange(num.size, dtype=np.float64)
    return step, unit, num


def _cf_times(ds, dim: str | None, units_hint: str | None, calendar_hint: str | None):
    """(numeric CF times, units, calendar) of decoded cftime dates, or (None, None, None)."""
    import cftime

    if dim is None or dim not in ds.variables or ds[dim].dtype != object:
        return None, None, None
    dates = ds[dim].values
    calendar = calendar_hint or getattr(dates[0], "calendar", None) or "standard"
    units = units_hint or "days since 0001-01-01 00:00:00"
    return np.asarray(cftime.date2num(list(dates), units, calendar=calendar), dtype=np.float64), units, calendar


def _level_axis(ds, dim: str | None, var_names: list[str]) -> tuple[np.ndarray, str, np.ndarray | None]:
    """(levels in m or Pa, level_unit, order index putting them from the surface up)."""
    if dim is None:
        # a surface field: take a scalar height coordinate (e.g. 1.5 m air temperature) when there is one
        for name in ("height", "altitude", "level", "lev", "plev", "pressure"):
            if name in ds.coords and ds[name].ndim == 0 and _attr(ds[name], "units"):
                try:
                    value, unit = _level_values(ds[name], name)
                    return value, unit, None
                except ValueError:
                    pass
        return np.zeros(1), "m", None
    candidates = [dim] if dim in ds.variables else []
    # an auxiliary coordinate along the level dimension (e.g. level_height for model_level_number)
    candidates += [str(c) for c in ds.coords if ds[c].dims == (dim,) and str(c) != dim]
    errors = []
    for name in candidates:
        try:
            values, unit = _level_values(ds[name], name)
        except ValueError as e:
            errors.append(str(e))
            continue
        if np.unique(values).size != values.size:
            errors.append(f"level coordinate {name!r} has repeated values {values.tolist()}")
            continue
        order = np.argsort(values) if unit == "m" else np.argsort(-values)
        return values[order], unit, order
    raise ValueError(
        f"level dimension {dim!r} of {var_names} has no height (m) or pressure (Pa) coordinate: "
        + ("; ".join(errors) if errors else "no coordinate variable")
    )


def _level_values(coord, name: str) -> tuple[np.ndarray, str]:
    units = _attr(coord, "units")
    if not units:
        raise ValueError(f"level coordinate {name!r} has no units")
    values = np.atleast_1d(np.asarray(coord.values, dtype=np.float64))
    for hint, level_unit in (("pressure", "Pa"), ("length", "m")):
        try:
            si, _ = to_si(values, units, hint)
            return np.asarray(si, dtype=np.float64), level_unit
        except ValueError:
            continue
    raise ValueError(f"level coordinate {name!r} has units {units!r}, neither a height nor a pressure")


def _degrees(ds, dim: str, kind: str) -> np.ndarray:
    coord = ds[dim]
    units = _attr(coord, "units")
    values = np.asarray(coord.values, dtype=np.float64)
    if units and units.lower().replace(" ", "_") not in _LAT_UNITS | _LON_UNITS | {"degrees", "degree", "deg"}:
        if units.lower() in ("radian", "radians", "rad"):
            return np.degrees(values)
        raise ValueError(f"{kind} coordinate {dim!r} has units {units!r}; expected degrees")
    return values


def _order_longitudes(lon: np.ndarray, dim: str | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(ordered longitudes, order index, global?). A global grid (n * spacing ~= 360) is wrapped to [0, 360)
    and sorted; a regional grid is kept contiguous and ascending, starting at a value in [0, 360) (e.g. a
    grid -30 .. 40 becomes 330 .. 400)."""
    wrapped = np.mod(lon, 360.0)
    if np.unique(np.round(wrapped, 9)).size != lon.size:
        raise ValueError(f"longitude {dim!r} has values that coincide after wrapping to [0, 360): {lon.tolist()}")
    if lon.size < 2:
        return wrapped, np.arange(lon.size), False
    order = np.argsort(wrapped, kind="stable")
    ws = wrapped[order]
    gaps = np.diff(np.concatenate([ws, ws[:1] + 360.0]))
    spacing = float(np.median(gaps[:-1])) if lon.size > 2 else float(gaps[0])
    is_global = bool(np.isclose(lon.size * spacing, 360.0, rtol=1e-3))
    if is_global:
        return ws, order, True
    start = int(np.argmax(gaps)) + 1  # the axis starts after the largest gap (outside the region)
    order = np.roll(order, -start)
    values = wrapped[order]
    values = np.where(values < values[0], values + 360.0, values)
    return values, order, False


def ingest_netcdf(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    variables: Sequence[str] | None = None,
    *,
    planet_id: str | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    split_names: Sequence[str] = ("train", "validation", "test"),
    segment_steps: int | None = None,
    geological_time_dim: str | None = None,
    gravity: float = EARTH_CONSTANTS["gravity"],
    gas_constant: float = EARTH_CONSTANTS["gas_constant"],
    heat_capacity: float = EARTH_CONSTANTS["heat_capacity"],
    planet_radius: float = EARTH_CONSTANTS["planet_radius"],
    series_per_shard: int = 4,
    units: Mapping[str, str] | None = None,
    rename: Mapping[str, str] | None = None,
) -> DatasetSchema:
    """Convert NetCDF files of one planet into Parquet shards + ``schema.json`` (see the module docstring).

    Args:
        paths: one NetCDF file or several, concatenated along climate time in the given order.
        output_dir: dataset directory to write.
        variables: variables to ingest, each a NetCDF name, a CF standard name or a canonical short name
            (``T``, ``p``, ...); ``None`` takes every gridded data variable (with lat/lon dimensions).
        planet_id: identifier of the planet; defaults to the stem of the first file.
        split_fractions, split_names: contiguous blocks of climate time, in order (each >= 1 step).
        segment_steps: cut every block into segments of at most this many steps (None: one per block).
        geological_time_dim: name of a geological-time dimension, if the files have one under another name.
        gravity, gas_constant, heat_capacity, planet_radius: planet constants in SI (Earth by default).
        series_per_shard: series per Parquet shard.
        units: ``{name: unit}`` overriding a wrong or missing ``units`` attribute (name: NetCDF name, CF standard
            name or canonical short name of a variable), e.g. ``{"T": "degC"}``; recorded in provenance.
        rename: ``{NetCDF or standard name: canonical name}`` for a variable without a CF standard_name,
            e.g. ``{"UWND": "u"}``; recorded in provenance.

    Returns:
        The :class:`DatasetSchema` written to ``output_dir``.
    """
    # 1. open and concatenate along time
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("ingest_netcdf needs at least one NetCDF file")
    opened, time_errors = _open(paths)
    units = dict(units or {})
    rename = dict(rename or {})
    try:
        ds, scalar_coords = _combine(paths, opened, geological_time_dim)
        files_text = ", ".join(os.path.basename(p) for p in paths)
        names = _select_variables(ds, files_text, variables, geological_time_dim)
        # --units / --rename must name variables of the files
        held = {k: v for v in map(str, ds.data_vars) for k in _name_keys(ds, v)}
        for what, mapping in (("units", units), ("rename", rename)):
            unknown = sorted(k for k in mapping if k not in held)
            if unknown:
                raise ValueError(
                    f"{what} override names {unknown}, not a variable of {files_text}; they hold "
                    f"{sorted(map(str, ds.data_vars))} (a NetCDF name, a CF standard name or a canonical short name)"
                )
        dims0 = ds[names[0]].dims
        axes = _Axes()
        for d in dims0:
            kind = _classify_dim(ds, d, geological_time_dim)
            if kind is None:
                raise ValueError(
                    f"variable {names[0]!r} in {files_text} has dimension {d!r} that is neither time, latitude, "
                    "longitude, level nor geological time (recognised by CF axis/standard_name/units or name)"
                )
            if getattr(axes, kind) is not None:
                raise ValueError(f"variable {names[0]!r} has two {kind} dimensions: {getattr(axes, kind)!r} and {d!r}")
            setattr(axes, kind, d)
        for v in names[1:]:
            if set(ds[v].dims) != set(dims0):
                raise ValueError(
                    f"variables {names[0]!r} {dims0} and {v!r} {ds[v].dims} in {files_text} have different "
                    "dimensions; ingest variables on the same grid together"
                )

        # 2. grid coordinates
        step, time_unit, _ = _time_axis(ds, axes.time)
        time_error = next((e for e in time_errors if e), None)
        provenance_time: dict[str, Any] = {}
        if time_error is not None:
            logger.warning(
                "ingest: the time axis of %s cannot be decoded (%s); the climate steps are stored as step indices",
                ", ".join(os.path.basename(p) for p, e in zip(paths, time_errors) if e), time_error,
            )
            provenance_time = {"time_decoding": f"failed: {time_error}; step indices used"}
            step, time_unit = 1.0, "step"
        enc = opened[0][axes.time].encoding if axes.time and axes.time in opened[0].variables else {}
        cf_times, cf_units, cf_calendar = (None, None, None) if time_error else _cf_times(ds, axes.time, enc.get("units"), enc.get("calendar"))
        levels, level_unit, level_order = _level_axis(ds, axes.level, names)
        lat = _degrees(ds, axes.lat, "latitude") if axes.lat else np.zeros(1)
        lon = _degrees(ds, axes.lon, "longitude") if axes.lon else np.zeros(1)
        if np.any(np.abs(lat) > 90):
            raise ValueError(f"latitudes must lie within [-90, 90], got {lat.min()} .. {lat.max()}")
        lat_order = np.argsort(lat)
        if lat.size > 1 and np.any(np.diff(lat[lat_order]) <= 0):
            raise ValueError(f"latitude {axes.lat!r} has repeated values")
        if lat.size > 1 and not (np.all(np.diff(lat) > 0) or np.all(np.diff(lat) < 0)):
            raise ValueError(f"latitude {axes.lat!r} is not monotonic: {lat.tolist()}")
        lon_values, lon_order, lon_global = _order_longitudes(lon, axes.lon)
        if axes.geological_time:
            geo_coord = ds[axes.geological_time] if axes.geological_time in ds.variables else None
            geo_values = (
                np.asarray(geo_coord.values, dtype=np.float64)
                if geo_coord is not None
                else np.arange(ds.sizes[axes.geological_time], dtype=np.float64)
            )
            geo_unit = _attr(geo_coord, "units") if geo_coord is not None else "index"
        else:
            geo_values, geo_unit = np.zeros(1), "index"

        # 3. variables: canonical names, SI units, axes (V, T, Tg, Z, Y, X); masked values counted
        target = [axes.time, axes.geological_time, axes.level, axes.lat, axes.lon]
        fields, var_names, si_units = [], [], {}
        unit_overrides: dict[str, dict[str, str | None]] = {}
        renames: dict[str, str] = {}
        masked: dict[str, dict[str, float]] = {}
        undeclared_fill: dict[str, int] = {}  # cells holding netCDF's default fill value without a declared _FillValue
        for v in names:
            da = ds[v]
            keys = _name_keys(ds, v)
            file_unit = da.attrs.get("units")
            file_unit = None if file_unit is None or str(file_unit).strip() == "" else str(file_unit)
            override = next((units[k] for k in (v, _attr(da, "standard_name"), CF_STANDARD_NAMES.get(_attr(da, "standard_name"))) if k and k in units), None)
            unit = override if override is not None else file_unit
            if unit is None:
                raise ValueError(
                    f"variable {v!r} in {files_text} has no 'units' attribute; every variable needs units "
                    "(e.g. 'K', 'Pa', 'm s-1'; or give one with units={name: unit} / --units NAME=UNIT)"
                )
            name = _canonical_name(ds, v, rename)
            if any(k in rename for k in keys):
                renames[v] = name
                logger.info("ingest: variable %s renamed to %s (rename override)", v, name)
            if override is not None:
                unit_overrides[name] = {"file_units": file_unit, "used": str(override)}
                logger.info("ingest: units of %s overridden: file says %r, using %r", v, file_unit, override)
            std = _attr(da, "standard_name")
            hint = name if name in CF_STANDARD_NAMES.values() else ("temperature" if "temperature" in std else None)
            arr = da.transpose(*[d for d in target if d is not None]).values
            # A file written without a _FillValue attribute still holds netCDF's default fill value (9.97e36 for
            # float32) where nothing was written; xarray only masks declared fill values. CMIP6 files of 14
            # models in esmvaltool-sample-data do this at 1000 hPa (below the surface). They are masked like
            # declared fill values, with a WARNING and a provenance entry (a physical field never reaches 1e36).
            default_fill = _default_fill_value(da)
            if default_fill is not None and np.issubdtype(arr.dtype, np.floating):
                undeclared = np.isclose(arr, default_fill, rtol=1e-6, atol=0.0)
                if undeclared.any():
                    arr = np.where(undeclared, np.nan, arr)
                    undeclared_fill[v] = int(undeclared.sum())
                    logger.warning(
                        "ingest: %s holds netCDF's default fill value %g in %d cells but declares no _FillValue; "
                        "they are masked", v, default_fill, int(undeclared.sum()),
                    )
            n_inf = int(np.isinf(arr).sum())
            if n_inf:
                raise ValueError(f"variable {v!r} in {files_text} has {n_inf} infinite values out of {np.size(arr)}")
            n_nan = int(np.isnan(arr).sum())
            try:
                si, si_unit = to_si(arr, str(unit), hint)
            except ValueError as e:
                raise ValueError(f"variable {v!r} in {files_text}: {e}") from e
            si = si.reshape([ds.sizes[d] if d is not None else 1 for d in target])  # (T, Tg, Z, Y, X)
            if level_order is not None:
                si = si[:, :, level_order]
            si = si[:, :, :, lat_order][:, :, :, :, lon_order]
            if name in var_names:
                raise ValueError(f"two variables map to the name {name!r}; ingest them separately or rename one")
            var_names.append(name)
            si_units[name] = si_unit
            fields.append(si.astype(np.float32))
            if n_nan:
                masked[name] = {"count": n_nan, "fraction": n_nan / arr.size}
                logger.info(
                    "ingest: %s has %d masked (NaN, from _FillValue/missing_value or a mask) values of %d (%.1f %%); "
                    "kept as NaN", v, n_nan, arr.size, 100.0 * n_nan / arr.size,
                )
            logger.info("ingest: %s (%s) -> %s [%s], shape %s", v, std or "no standard_name", name, si_unit, si.shape)
        cube = np.stack(fields)  # (V, T, Tg, Z, Y, X)
        if np.isinf(cube).any():
            raise ValueError(f"values of {var_names} overflow float32 after conversion to SI")
    finally:
        for d in opened:
            d.close()

    # 4. contiguous blocks of climate time -> series
    T = cube.shape[1]
    fracs = np.asarray(split_fractions, dtype=np.float64)
    if len(split_names) != len(fracs) or np.any(fracs <= 0):
        raise ValueError(f"expected one positive fraction per split {list(split_names)}, got {list(split_fractions)}")
    bounds = np.round(np.cumsum(fracs / fracs.sum()) * T).astype(int)
    starts = np.concatenate([[0], bounds[:-1]])
    sizes = bounds - starts
    if np.any(sizes < 1):
        raise ValueError(
            f"{T} climate steps cannot be split into blocks {dict(zip(split_names, fracs.tolist()))} of >= 1 step "
            f"(got {dict(zip(split_names, sizes.tolist()))})"
        )
    if segment_steps is not None and segment_steps < 1:
        raise ValueError(f"segment_steps must be >= 1, got {segment_steps}")
    constants = {"gravity": gravity, "gas_constant": gas_constant, "heat_capacity": heat_capacity, "planet_radius": planet_radius}
    params = np.array([constants[k] for k in PLANET_PARAM_UNITS], dtype=np.float32)
    planet_id = planet_id or Path(paths[0]).stem
    splits: dict[str, list[Series]] = {}
    segment = 0
    for split, a, n in zip(split_names, starts, sizes):
        seg_len = n if segment_steps is None else segment_steps
        splits[split] = []
        for s0 in range(a, a + n, seg_len):
            s1 = min(s0 + seg_len, a + n)
            times = None if cf_times is None else cf_times[s0:s1]
            splits[split].append(
                Series(planet_id, segment, np.ascontiguousarray(cube[:, s0:s1]), params.copy(), dict(constants), times=times)
            )
            segment += 1

    # 5. write
    return write_dataset(
        output_dir,
        splits,
        variable_names=var_names,
        units=si_units,
        level_values=levels.tolist(),
        level_unit=level_unit,
        lat_values=lat[lat_order].tolist(),
        lon_values=lon_values.tolist(),
        climate_time_step=step,
        climate_time_unit=time_unit,
        geological_time_values=geo_values.tolist(),
        geological_time_unit=geo_unit or "index",
        planet_param_names=list(PLANET_PARAM_UNITS),
        planet_param_units=list(PLANET_PARAM_UNITS.values()),
        split_by="time_block",
        source="netcdf: " + ", ".join(os.path.basename(p) for p in paths),
        series_per_shard=series_per_shard,
        climate_time_units=cf_units,
        climate_time_calendar=cf_calendar,
        allow_masked=True,
        extra={
            "ingest": {
                "files": [os.path.basename(p) for p in paths],
                "netcdf_variables": dict(zip(var_names, names)),
                "dimensions": {k: getattr(axes, k) for k in AXES},
                "split_blocks": {s: [int(a), int(a + n)] for s, a, n in zip(split_names, starts, sizes)},
                "segment_steps": segment_steps,
                "unit_overrides": unit_overrides,
                "renames": renames,
                "masked_values": masked,
                **({"undeclared_default_fill": undeclared_fill} if undeclared_fill else {}),
                "longitude_grid": "global" if lon_global else "regional (contiguous, not wrapped)",
                **({"scalar_coordinates": scalar_coords} if scalar_coords else {}),
                **provenance_time,
            }
        },
    )


__all__ = ["CF_STANDARD_NAMES", "EARTH_CONSTANTS", "ingest_netcdf"]
