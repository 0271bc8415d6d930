"""On-disk format of astrobio-hf datacube datasets: Parquet shards plus ``schema.json``.

A dataset directory holds, for every split (``train``, ``val``, ``test``, ...), Parquet shards named
``<split>-00000-of-0000N.parquet`` and one ``schema.json`` that describes them.

Row format: one :class:`Series` per Parquet row.

=================  ==================  ======================================================
column             arrow type          meaning
=================  ==================  ======================================================
planet_id          string              planet (or simulation) identifier
segment            int32               index of the contiguous block of climate time
n_time             int32               number of climate time steps T of this row
fields             list<float32>       flattened cube (V, T, Tg, Z, Y, X), physical SI units
planet_params      list<float32>       (P,) planet parameters, physical units
gravity            float64             [m s-2]
gas_constant       float64             specific gas constant [J kg-1 K-1]
heat_capacity      float64             cp [J kg-1 K-1]
planet_radius      float64             [m]
spectrum           list<float32>       (T, P, W) spectra, one set per climate time step (only in
                                       datasets whose schema has spectra; see below)
planet_regime      int32               class index of the planet's regime in
                                       ``planet_regime_names`` (only in datasets whose schema
                                       has regime labels; see below)
climate_times      list<float64>       (T,) CF times of the steps in ``climate_time_units`` /
                                       ``climate_time_calendar`` (only in datasets whose schema
                                       has them; see below)
=================  ==================  ======================================================

``schema.json`` holds the variable names and units, grid coordinates, axis names, climate and
geological time, planet parameter names and units, split membership (which planet/segment/n_time is
in which shard) and normalisation statistics computed on the train split only:

* ``norm_mean`` / ``norm_std``: (V, Z) mean and standard deviation per variable and level, over time,
  geological time, lat, lon and all train series (unweighted);
* ``planet_param_mean`` / ``planet_param_std``: (P,) over the train series;
* ``tendency_std``: (V, Z) root mean square of the one-step change along climate time (x[t+1] - x[t]),
  the natural scale of what a forecaster must predict (0 -> 1.0 as above; 1.0 when T = 1).

Spectra (optional; all ``spectrum_*`` keys are None in a dataset without spectra, and old schemas
without these keys still load): ``spectrum_wavelengths`` (W,) in micron; ``spectrum_phases`` (P,)
orbital phases in degrees, or None for one disc-averaged spectrum (P = 1); ``spectrum_units`` (e.g.
``"W m-2 um-1"``, or ``"ppm"`` for an eclipse depth Fp/Fs); ``spectrum_mean`` / ``spectrum_std`` (W,)
per wavelength over the train split (all time steps and phases); ``spectrum_model``: one sentence naming
how the spectra were computed. A row then carries ``spectrum``: float32 (T, P, W) flattened, the spectra
an observer would measure at each climate time step of the row.

Regime labels (optional; ``planet_regime_names`` is None in a dataset without labels, and old schemas
without these keys still load): ``planet_regime_names`` (K >= 2 class names, e.g. ``["frozen",
"temperate", "warm"]``) and ``planet_regime_rule``, one sentence stating how a planet's class follows
from its data (e.g. thresholds on its global-mean surface temperature). A row then carries
``planet_regime``: the int32 class index in ``[0, K)`` of its planet.

CF times (optional; None in synthetic datasets, for step indices and in old schemas):
``climate_time_units`` (e.g. ``"days since 0001-01-01 00:00:00"``) and ``climate_time_calendar``
(``"standard"``, ``"360_day"``, ``"noleap"``, ...); a row then carries ``climate_times``.
:func:`calendar_index` maps them to month or day of year, :func:`climate_time_kind` says which applies.

Masked values (optional): NaN in ``fields`` mark masked cells (land in an ocean field, ``_FillValue``);
``masked_values`` counts them per variable over all splits (None without masks and in old schemas).
The statistics above then use valid values only (``tendency_std``: pairs of valid consecutive steps).

Integrity: every shard is written with Parquet page checksums and its sha256 is listed in
``schema.json`` (``ShardInfo.sha256``, None in old schemas); :meth:`DatasetSchema.from_dir` verifies both.

A standard deviation of exactly 0 (a constant variable or parameter, e.g. the planet constants of a
dataset that holds one planet) is stored as 1.0 so that normalising gives ``x - mean``; this is the only
substitution and it is recorded in ``schema.json`` under ``constant_statistics``.

Splits are made by planet (``split_by="planet"``) or, when a dataset holds one planet only, by
contiguous blocks of climate time (``split_by="time_block"``); never by random samples of one planet.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

SCHEMA_FILENAME = "schema.json"
FORMAT_VERSION = 1
AXIS_NAMES = ("variable", "climate_time", "geological_time", "level", "lat", "lon")
CONSTANT_NAMES = ("gravity", "gas_constant", "heat_capacity", "planet_radius")
SPLIT_BY_CHOICES = ("planet", "time_block")
LEVEL_UNITS = ("m", "Pa")

#: Arrow schema of one shard (one row = one Series).
ROW_ARROW_SCHEMA = pa.schema(
    [
        pa.field("planet_id", pa.string()),
        pa.field("segment", pa.int32()),
        pa.field("n_time", pa.int32()),
        pa.field("fields", pa.list_(pa.float32())),
        pa.field("planet_params", pa.list_(pa.float32())),
        pa.field("gravity", pa.float64()),
        pa.field("gas_constant", pa.float64()),
        pa.field("heat_capacity", pa.float64()),
        pa.field("planet_radius", pa.float64()),
    ]
)
ROW_COLUMNS = tuple(ROW_ARROW_SCHEMA.names)
SPECTRUM_COLUMN = "spectrum"
#: Arrow schema of one shard of a dataset with spectra: the row format plus ``spectrum``.
ROW_ARROW_SCHEMA_WITH_SPECTRUM = ROW_ARROW_SCHEMA.append(pa.field(SPECTRUM_COLUMN, pa.list_(pa.float32())))
REGIME_COLUMN = "planet_regime"
TIMES_COLUMN = "climate_times"


def row_arrow_schema(with_spectrum: bool, with_regime: bool = False, with_times: bool = False) -> pa.Schema:
    """Arrow schema of a shard: the row format, plus ``spectrum``, ``planet_regime`` and/or ``climate_times``
    (in that order)."""
    schema = ROW_ARROW_SCHEMA_WITH_SPECTRUM if with_spectrum else ROW_ARROW_SCHEMA
    if with_regime:
        schema = schema.append(pa.field(REGIME_COLUMN, pa.int32()))
    return schema.append(pa.field(TIMES_COLUMN, pa.list_(pa.float64()))) if with_times else schema


def row_columns(with_spectrum: bool, with_regime: bool = False, with_times: bool = False) -> tuple[str, ...]:
    """Column names of a shard, with or without the ``spectrum``, ``planet_regime`` and ``climate_times`` columns."""
    return (
        *ROW_COLUMNS,
        *((SPECTRUM_COLUMN,) if with_spectrum else ()),
        *((REGIME_COLUMN,) if with_regime else ()),
        *((TIMES_COLUMN,) if with_times else ()),
    )


def read_parquet_file(path: str | os.PathLike) -> pq.ParquetFile:
    """Open a shard with Parquet page checksum verification (a corrupted page is an error when read)."""
    return pq.ParquetFile(path, page_checksum_verification=True)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def climate_time_kind(schema: "DatasetSchema") -> str | None:
    """``"month"``, ``"day"`` or None: the kind of the climate-time axis from the median spacing of its CF
    times (``climate_time_step`` in days: 28-31 -> month, 1 -> day); None without CF times
    (``climate_time_units`` None) or for another spacing."""
    if schema.climate_time_units is None or schema.climate_time_unit not in ("day", "days"):
        return None
    step_days = float(schema.climate_time_step)
    if 27.5 <= step_days <= 31.5:
        return "month"
    if 0.9 <= step_days <= 1.1:
        return "day"
    return None


def calendar_index(times, units: str, calendar: str, kind: str) -> np.ndarray:
    """Month of year (0..11, ``kind="month"``) or day of year (0..365, ``kind="day"``) of numeric CF times
    ``times`` in ``units`` (e.g. ``"days since 0001-01-01"``) and ``calendar``, via ``cftime.num2date``."""
    import cftime

    if kind not in ("month", "day"):
        raise ValueError(f"expected kind 'month' or 'day', got {kind!r}")
    t = np.asarray(times, dtype=np.float64)
    dates = cftime.num2date(t.reshape(-1), units, calendar=calendar, only_use_cftime_datetimes=True)
    if kind == "month":
        idx = np.array([d.month - 1 for d in dates], dtype=np.int64)
    else:
        idx = np.array([d.dayofyr - 1 for d in dates], dtype=np.int64)
    return idx.reshape(t.shape)


def year_fraction(times, units: str, calendar: str) -> np.ndarray:
    """Position of numeric CF times within their calendar year, in [0, 1): ``(day of year - 1 + fraction of the
    day) / days in that year`` (360 for ``360_day``, 365 or 366 for the others), via ``cftime.num2date``."""
    import cftime

    t = np.asarray(times, dtype=np.float64)
    dates = cftime.num2date(t.reshape(-1), units, calendar=calendar, only_use_cftime_datetimes=True)
    out = np.empty(len(dates))
    for i, d in enumerate(dates):
        start = cftime.datetime(d.year, 1, 1, calendar=d.calendar)
        end = cftime.datetime(d.year + 1, 1, 1, calendar=d.calendar)
        out[i] = (d - start).total_seconds() / (end - start).total_seconds()
    return out.reshape(t.shape)


@dataclass
class Series:
    """One contiguous block of climate time of one planet.

    Attributes:
        planet_id: planet (or simulation) identifier.
        segment: index of the contiguous block of climate time within the planet.
        fields: float32 array (V, T, Tg, Z, Y, X) in physical SI units.
        planet_params: float32 array (P,) in physical units (see the schema's ``planet_param_units``).
        constants: ``gravity`` [m s-2], ``gas_constant`` [J kg-1 K-1], ``heat_capacity`` [J kg-1 K-1],
            ``planet_radius`` [m].
        spectrum: float32 array (T, P, W) in the schema's ``spectrum_units`` (one set of P phase spectra
            per climate time step), or None for a dataset without spectra.
        planet_regime: class index of the planet's regime in the schema's ``planet_regime_names``, or None
            for a dataset without regime labels.
        times: float64 (T,) CF times of the climate steps in the schema's ``climate_time_units`` /
            ``climate_time_calendar``, or None for a dataset without CF times.
    """

    planet_id: str
    segment: int
    fields: np.ndarray
    planet_params: np.ndarray
    constants: dict[str, float]
    spectrum: np.ndarray | None = None
    planet_regime: int | None = None
    times: np.ndarray | None = None

    @property
    def n_time(self) -> int:
        return int(self.fields.shape[1])


@dataclass
class ShardInfo:
    """Membership of one shard: its file name, per row planet id, segment and number of steps, and the
    sha256 of the file (None in old schemas)."""

    file: str
    planet_ids: list[str]
    segments: list[int]
    n_time: list[int]
    sha256: str | None = None

    @property
    def num_rows(self) -> int:
        return len(self.planet_ids)


@dataclass
class DatasetSchema:
    """Description of a dataset directory (the content of ``schema.json``).

    Attributes:
        variable_names: V canonical short names (``T``, ``p``, ``u``, ...) or the source's names.
        units: SI unit of every variable.
        level_values, level_unit: Z level coordinates, in ``"m"`` (height) or ``"Pa"`` (pressure).
        lat_values: Y latitudes in degrees, ascending. lon_values: X longitudes in degrees, ascending,
            in [0, 360) for a global grid; a regional grid crossing 0 stays contiguous (e.g. 330 .. 400).
        climate_time_step, climate_time_unit: spacing of the climate-time axis.
        geological_time_values, geological_time_unit: Tg geological-time coordinates.
        planet_param_names, planet_param_units: P planet parameters.
        split_by: ``"planet"`` or ``"time_block"``.
        source: free text (``"synthetic"``, the ingested file names, ...).
        splits: split name -> list of :class:`ShardInfo`.
        norm_mean, norm_std: (V, Z) statistics of the train split.
        planet_param_mean, planet_param_std: (P,) statistics of the train split.
        tendency_std: (V, Z) RMS one-step change along climate time on the train split (None in old schemas).
        axis_names: names of the cube axes (V, Tc, Tg, Z, Y, X).
        constant_statistics: names of the statistics whose std was 0 and is stored as 1.0.
        spectrum_wavelengths: W wavelengths [micron], or None (no spectra in this dataset).
        spectrum_phases: P orbital phases [degree], or None for one disc-averaged spectrum (P = 1).
        spectrum_units: unit of the spectra (``"W m-2 um-1"``, ``"ppm"``, ...).
        spectrum_mean, spectrum_std: (W,) statistics of the train split's spectra.
        spectrum_model: one sentence naming how the spectra were computed.
        planet_regime_names: K >= 2 regime class names, or None (no regime labels in this dataset).
        planet_regime_rule: one sentence stating how a planet's regime follows from its data (None without labels).
        climate_time_units, climate_time_calendar: CF units (e.g. ``"days since 0001-01-01 00:00:00"``) and
            calendar (``"standard"``, ``"360_day"``, ``"noleap"``, ...) of the rows' ``climate_times``; None when
            the climate steps are step indices (synthetic data, an undecodable time axis, old schemas).
        masked_values: number of NaN (masked) values per variable over all splits, or None in a dataset
            without masked values (and in old schemas).
        extra: free-form JSON metadata (e.g. ingestion details).
        data_dir: the directory this schema was read from (not serialised).
    """

    variable_names: list[str]
    units: dict[str, str]
    level_values: list[float]
    level_unit: str
    lat_values: list[float]
    lon_values: list[float]
    climate_time_step: float
    climate_time_unit: str
    geological_time_values: list[float]
    geological_time_unit: str
    planet_param_names: list[str]
    planet_param_units: list[str]
    split_by: str
    source: str
    splits: dict[str, list[ShardInfo]]
    norm_mean: list[list[float]]
    norm_std: list[list[float]]
    planet_param_mean: list[float]
    planet_param_std: list[float]
    tendency_std: list[list[float]] | None = None
    axis_names: list[str] = field(default_factory=lambda: list(AXIS_NAMES))
    constant_statistics: list[str] = field(default_factory=list)
    spectrum_wavelengths: list[float] | None = None
    spectrum_phases: list[float] | None = None
    spectrum_units: str | None = None
    spectrum_mean: list[float] | None = None
    spectrum_std: list[float] | None = None
    spectrum_model: str | None = None
    planet_regime_names: list[str] | None = None
    planet_regime_rule: str | None = None
    climate_time_units: str | None = None
    climate_time_calendar: str | None = None
    masked_values: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    data_dir: str | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ shape helpers
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

    @property
    def num_geological_steps(self) -> int:
        return len(self.geological_time_values)

    @property
    def num_planet_params(self) -> int:
        return len(self.planet_param_names)

    @property
    def cube_shape(self) -> tuple[int, int, int, int]:
        """(V, Z, Y, X)."""
        return (self.num_variables, self.num_levels, self.num_lat, self.num_lon)

    def series_shape(self, n_time: int) -> tuple[int, int, int, int, int, int]:
        """(V, T, Tg, Z, Y, X) of a row with ``n_time`` climate steps."""
        return (self.num_variables, int(n_time), self.num_geological_steps, self.num_levels, self.num_lat, self.num_lon)

    def window_shape(self, context_steps: int) -> tuple[int, int, int, int, int, int]:
        """(V, Tc, Tg, Z, Y, X) of one window of ``context_steps`` climate steps."""
        return self.series_shape(context_steps)

    @property
    def has_spectra(self) -> bool:
        """Whether the rows carry a ``spectrum`` column."""
        return self.spectrum_wavelengths is not None

    @property
    def num_wavelengths(self) -> int:
        return len(self.spectrum_wavelengths) if self.spectrum_wavelengths is not None else 0

    @property
    def num_phases(self) -> int:
        """P: 1 for a disc-averaged spectrum (``spectrum_phases`` None), 0 without spectra."""
        if not self.has_spectra:
            return 0
        return 1 if self.spectrum_phases is None else len(self.spectrum_phases)

    @property
    def spectrum_shape(self) -> tuple[int, int]:
        """(P, W) of the spectra of one climate time step (raises for a dataset without spectra)."""
        if not self.has_spectra:
            raise ValueError("this dataset has no spectra (schema.json spectrum_wavelengths is None)")
        return (self.num_phases, self.num_wavelengths)

    @property
    def has_regimes(self) -> bool:
        """Whether the rows carry a ``planet_regime`` class label."""
        return self.planet_regime_names is not None

    @property
    def has_climate_times(self) -> bool:
        """Whether the rows carry a ``climate_times`` column (CF times in ``climate_time_units``)."""
        return self.climate_time_units is not None

    def refuse_masked_values(self, family: str) -> None:
        """One-line error at the start of a run when a family that cannot carry validity masks gets masked data."""
        if self.has_masked_values:
            counts = ", ".join(f"{v}: {n}" for v, n in (self.masked_values or {}).items() if n)
            raise ValueError(
                f"{self.data_dir or 'this dataset'} has masked values ({counts}) and the {family} family does not carry "
                "validity masks; train the datacube U-Net on it (masks through loss and metrics) or fill the cells before ingesting"
            )

    @property
    def has_masked_values(self) -> bool:
        """Whether the fields hold NaN (masked) values: any count in ``masked_values`` > 0."""
        return bool(self.masked_values) and any(int(n) > 0 for n in self.masked_values.values())

    @property
    def num_regimes(self) -> int:
        """K regime classes, 0 without regime labels."""
        return len(self.planet_regime_names) if self.planet_regime_names is not None else 0

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    def shard_files(self, split: str) -> list[str]:
        """Absolute paths of the shards of ``split`` (needs ``data_dir``)."""
        self._check_split(split)
        if self.data_dir is None:
            raise ValueError("this DatasetSchema was not read from a directory (data_dir is None); use DatasetSchema.from_dir")
        return [os.path.join(self.data_dir, s.file) for s in self.splits[split]]

    def series_lengths(self, split: str) -> list[int]:
        """n_time of every series of ``split`` in shard order."""
        self._check_split(split)
        return [n for s in self.splits[split] for n in s.n_time]

    def planet_ids(self, split: str) -> list[str]:
        """Distinct planet ids of ``split`` in shard order."""
        self._check_split(split)
        return list(dict.fromkeys(p for s in self.splits[split] for p in s.planet_ids))

    def num_series(self, split: str) -> int:
        return len(self.series_lengths(split))

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}: this dataset has splits {sorted(self.splits)}")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("data_dir")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetSchema:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)} - {"data_dir"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"schema.json has unknown keys {unknown}; expected keys among {sorted(known)}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"schema.json is missing keys {missing}")
        if d.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"schema.json has format_version {d['format_version']}, expected {FORMAT_VERSION}")
        d["splits"] = {name: [ShardInfo(**s) for s in shards] for name, shards in d["splits"].items()}
        schema = cls(**d)
        schema.validate_metadata()
        return schema

    def validate_metadata(self) -> None:
        """Consistency checks of the metadata alone (no file access)."""
        V, Z, P = self.num_variables, self.num_levels, self.num_planet_params
        if V == 0:
            raise ValueError("schema has no variables (variable_names is empty)")
        if len(set(self.variable_names)) != V:
            raise ValueError(f"variable_names has duplicates: {self.variable_names}")
        missing_units = [v for v in self.variable_names if not self.units.get(v)]
        if missing_units:
            raise ValueError(f"schema has no units for variables {missing_units}")
        if self.level_unit not in LEVEL_UNITS:
            raise ValueError(f"level_unit must be one of {LEVEL_UNITS}, got {self.level_unit!r}")
        if self.split_by not in SPLIT_BY_CHOICES:
            raise ValueError(f"split_by must be one of {SPLIT_BY_CHOICES}, got {self.split_by!r}")
        if min(Z, self.num_lat, self.num_lon, self.num_geological_steps) < 1:
            raise ValueError(
                f"every axis needs at least 1 entry, got Z={Z}, Y={self.num_lat}, X={self.num_lon}, "
                f"Tg={self.num_geological_steps}"
            )
        if len(self.planet_param_units) != P:
            raise ValueError(f"{P} planet_param_names but {len(self.planet_param_units)} planet_param_units")
        for name, arr, shape in (
            ("norm_mean", self.norm_mean, (V, Z)),
            ("norm_std", self.norm_std, (V, Z)),
            ("planet_param_mean", self.planet_param_mean, (P,)),
            ("planet_param_std", self.planet_param_std, (P,)),
            *((("tendency_std", self.tendency_std, (V, Z)),) if self.tendency_std is not None else ()),
        ):
            got = np.asarray(arr, dtype=np.float64).shape
            if P == 0 and shape == (0,) and got in ((0,),):
                continue
            if got != shape:
                raise ValueError(f"schema {name} has shape {got}, expected {shape} (V={V}, Z={Z}, P={P})")
        lon = np.asarray(self.lon_values, dtype=np.float64)
        _check_lon(lon)
        if (self.climate_time_units is None) != (self.climate_time_calendar is None):
            raise ValueError(
                f"schema has climate_time_units {self.climate_time_units!r} and climate_time_calendar "
                f"{self.climate_time_calendar!r}; expected both or neither"
            )
        if self.masked_values is not None:
            unknown = sorted(set(self.masked_values) - set(self.variable_names))
            if unknown:
                raise ValueError(f"schema masked_values names {unknown}, expected variables among {self.variable_names}")
        self._validate_spectrum_metadata()
        self._validate_regime_metadata()
        for split, shards in self.splits.items():
            for s in shards:
                if not (len(s.planet_ids) == len(s.segments) == len(s.n_time)):
                    raise ValueError(f"schema entry for shard {s.file} of split {split!r} has inconsistent row lists")

    def _validate_spectrum_metadata(self) -> None:
        others = {
            "spectrum_phases": self.spectrum_phases,
            "spectrum_units": self.spectrum_units,
            "spectrum_mean": self.spectrum_mean,
            "spectrum_std": self.spectrum_std,
            "spectrum_model": self.spectrum_model,
        }
        if not self.has_spectra:
            given = sorted(k for k, v in others.items() if v is not None)
            if given:
                raise ValueError(f"schema has {given} but no spectrum_wavelengths; expected all spectrum_* keys or none")
            return
        wl = np.asarray(self.spectrum_wavelengths, dtype=np.float64)
        if wl.ndim != 1 or wl.size == 0 or not np.all(np.isfinite(wl)) or np.any(wl <= 0):
            raise ValueError(f"expected spectrum_wavelengths a non-empty list of finite wavelengths > 0 micron, got {self.spectrum_wavelengths}")
        if self.spectrum_phases is not None:
            ph = np.asarray(self.spectrum_phases, dtype=np.float64)
            if ph.ndim != 1 or ph.size == 0 or not np.all(np.isfinite(ph)):
                raise ValueError(f"expected spectrum_phases None or a non-empty list of finite phases in degrees, got {self.spectrum_phases}")
        if not self.spectrum_units:
            raise ValueError("schema has spectra but no spectrum_units; expected e.g. 'W m-2 um-1' or 'ppm'")
        if not self.spectrum_model:
            raise ValueError("schema has spectra but no spectrum_model; expected one sentence naming how they were computed")
        W = wl.size
        for name in ("spectrum_mean", "spectrum_std"):
            arr = getattr(self, name)
            got = None if arr is None else np.asarray(arr, dtype=np.float64).shape
            if got != (W,):
                raise ValueError(f"schema {name} has shape {got}, expected ({W},) (W={W} wavelengths)")

    def _validate_regime_metadata(self) -> None:
        if self.planet_regime_names is None:
            if self.planet_regime_rule is not None:
                raise ValueError("schema has planet_regime_rule but no planet_regime_names; expected both or neither")
            return
        names = self.planet_regime_names
        if (
            not isinstance(names, list)
            or len(names) < 2
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise ValueError(f"expected planet_regime_names a list of >= 2 distinct non-empty names, got {names!r}")
        if not self.planet_regime_rule:
            raise ValueError(
                "schema has planet_regime_names but no planet_regime_rule; expected one sentence stating how a planet's "
                f"regime follows from its data, got {self.planet_regime_rule!r}"
            )

    @classmethod
    def from_dir(cls, data_dir: str | os.PathLike, *, check_shards: bool = True) -> DatasetSchema:
        """Read ``schema.json`` from ``data_dir`` and validate the shards it lists.

        Checks (each failure is a ``ValueError`` naming the file, what was expected and what was found):
        ``schema.json`` missing or unreadable; a listed shard missing, 0 bytes, not a Parquet file
        (corrupted), with 0 rows, with other columns than the row format, with a row count, planet ids,
        segments or ``n_time`` other than the schema lists; a sha256 other than the one listed (corrupted
        bytes); a page whose Parquet checksum fails; and for the first row of every shard, a
        ``fields`` length other than V*T*Tg*Z*Y*X or a ``planet_params`` length other than P.
        (Every row is checked again while streaming.)
        """
        data_dir = os.fspath(data_dir)
        path = os.path.join(data_dir, SCHEMA_FILENAME)
        if not os.path.isdir(data_dir):
            raise ValueError(f"dataset directory {data_dir} does not exist")
        if not os.path.isfile(path):
            raise ValueError(
                f"{path} is missing: a dataset directory needs a schema.json next to its Parquet shards "
                "(write it with astrobio_hf.data.write_dataset, `astrobio-hf data synth` or `astrobio-hf data ingest`)"
            )
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        try:
            schema = cls.from_dict(raw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e
        schema.data_dir = data_dir
        if check_shards:
            for split in schema.splits:
                for info in schema.splits[split]:
                    schema._check_shard(split, info)
        return schema

    def _check_shard(self, split: str, info: ShardInfo) -> None:
        path = os.path.join(self.data_dir, info.file)
        if not os.path.isfile(path):
            raise ValueError(f"shard {path} of split {split!r} is listed in schema.json but missing")
        if os.path.getsize(path) == 0:
            raise ValueError(f"shard {path} of split {split!r} is empty (0 bytes)")
        try:
            pf = read_parquet_file(path)
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for garbage bytes
            raise ValueError(f"shard {path} of split {split!r} is corrupted: not a readable Parquet file ({e})") from e
        if pf.metadata.num_rows == 0:
            raise ValueError(f"shard {path} of split {split!r} has 0 rows, expected {info.num_rows}")
        names = pf.schema_arrow.names
        expected_columns = row_columns(self.has_spectra, self.has_regimes, self.has_climate_times)
        if tuple(names) != expected_columns:
            raise ValueError(f"shard {path} has columns {names}, expected {list(expected_columns)}")
        if pf.metadata.num_rows != info.num_rows:
            raise ValueError(
                f"shard {path} has {pf.metadata.num_rows} rows, schema.json lists {info.num_rows}"
            )
        try:
            small = pf.read(columns=["planet_id", "segment", "n_time", *((REGIME_COLUMN,) if self.has_regimes else ())])
            first = pf.read_row_group(
                0,
                columns=[
                    "n_time", "fields", "planet_params",
                    *((SPECTRUM_COLUMN,) if self.has_spectra else ()),
                    *((TIMES_COLUMN,) if self.has_climate_times else ()),
                ],
            ).slice(0, 1)
        except Exception as e:
            raise ValueError(f"shard {path} of split {split!r} is corrupted: cannot read its rows ({e})") from e
        found = (small["planet_id"].to_pylist(), small["segment"].to_pylist(), small["n_time"].to_pylist())
        if found != (info.planet_ids, info.segments, info.n_time):
            raise ValueError(
                f"shard {path} rows (planet_id, segment, n_time) = {list(zip(*found))} do not match schema.json "
                f"{list(zip(info.planet_ids, info.segments, info.n_time))}"
            )
        n_time = first["n_time"][0].as_py()
        expected = math.prod(self.series_shape(n_time))
        got = len(first["fields"][0])
        if got != expected:
            raise ValueError(
                f"shard {path}: first row has {got} field values, schema.json expects "
                f"(V, T, Tg, Z, Y, X) = {self.series_shape(n_time)} = {expected}"
            )
        if self.has_climate_times and len(first[TIMES_COLUMN][0]) != n_time:
            raise ValueError(
                f"shard {path}: first row has {len(first[TIMES_COLUMN][0])} climate_times, expected n_time = {n_time}"
            )
        got_p = len(first["planet_params"][0])
        if got_p != self.num_planet_params:
            raise ValueError(
                f"shard {path}: first row has {got_p} planet_params, schema.json expects P={self.num_planet_params}"
            )
        if self.has_regimes:
            regimes = small[REGIME_COLUMN].to_pylist()
            bad = [r for r in regimes if r is None or not 0 <= r < self.num_regimes]
            if bad:
                raise ValueError(
                    f"shard {path}: expected planet_regime in [0, {self.num_regimes}) ({self.planet_regime_names}), got {bad}"
                )
        if self.has_spectra:
            got_s = len(first[SPECTRUM_COLUMN][0])
            expected_s = n_time * math.prod(self.spectrum_shape)
            if got_s != expected_s:
                raise ValueError(
                    f"shard {path}: first row has {got_s} spectrum values, schema.json expects "
                    f"(T, P, W) = ({n_time}, {self.num_phases}, {self.num_wavelengths}) = {expected_s}"
                )
        # last: the structural checks above name a truncated or rewritten shard more precisely
        if info.sha256 is not None:
            digest = file_sha256(path)
            if digest != info.sha256:
                raise ValueError(
                    f"shard {info.file} of split {split!r} is corrupted: sha256 {digest} differs from schema.json "
                    f"{info.sha256} ({path})"
                )


def _check_lon(lon: np.ndarray) -> None:
    """Longitudes: ascending, within [-180, 720), spanning less than 360 degrees (a regional grid crossing 0
    is stored contiguous, e.g. 330 .. 400)."""
    if (
        np.any(~np.isfinite(lon))
        or np.any(lon < -180)
        or np.any(lon >= 720)
        or (lon.size > 1 and (np.any(np.diff(lon) <= 0) or lon[-1] - lon[0] >= 360))
    ):
        raise ValueError(f"lon_values must be ascending within [-180, 720) and span less than 360 degrees, got {lon.tolist()}")


# ---------------------------------------------------------------------------- writing
def _flat_list_array(arrays: Sequence[np.ndarray]) -> pa.Array:
    """list<float32> column from 1-D float32 arrays (large offsets cast down when they fit)."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([a.size for a in arrays])
    values = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
    arr = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))
    return arr.cast(pa.list_(pa.float32())) if offsets[-1] < 2**31 else arr


def _series_to_table(
    series: Sequence[Series], with_spectrum: bool = False, with_regime: bool = False, with_times: bool = False
) -> pa.Table:
    flat = [np.ascontiguousarray(s.fields, dtype=np.float32).reshape(-1) for s in series]
    offsets = np.zeros(len(flat) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([a.size for a in flat])
    fields_arr = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(flat)))
    fields_arr = fields_arr.cast(pa.list_(pa.float32())) if offsets[-1] < 2**31 else fields_arr
    params = [np.asarray(s.planet_params, dtype=np.float32).reshape(-1) for s in series]
    p_off = np.zeros(len(params) + 1, dtype=np.int32)
    p_off[1:] = np.cumsum([a.size for a in params])
    params_arr = pa.ListArray.from_arrays(
        pa.array(p_off), pa.array(np.concatenate(params) if params else np.zeros(0, np.float32), type=pa.float32())
    )
    cols = {
        "planet_id": pa.array([str(s.planet_id) for s in series], type=pa.string()),
        "segment": pa.array([int(s.segment) for s in series], type=pa.int32()),
        "n_time": pa.array([s.n_time for s in series], type=pa.int32()),
        "fields": fields_arr,
        "planet_params": params_arr,
    }
    for name in CONSTANT_NAMES:
        cols[name] = pa.array([float(s.constants[name]) for s in series], type=pa.float64())
    if with_spectrum:
        cols[SPECTRUM_COLUMN] = _flat_list_array(
            [np.ascontiguousarray(s.spectrum, dtype=np.float32).reshape(-1) for s in series]
        )
    if with_regime:
        cols[REGIME_COLUMN] = pa.array([int(s.planet_regime) for s in series], type=pa.int32())
    if with_times:
        cols[TIMES_COLUMN] = pa.array([np.asarray(s.times, dtype=np.float64) for s in series], type=pa.list_(pa.float64()))
    return pa.Table.from_pydict(cols, schema=row_arrow_schema(with_spectrum, with_regime, with_times))


def _check_series(
    s: Series, split: str, V: int, Tg: int, Z: int, Y: int, X: int, P: int, variable_names, allow_masked: bool = False
) -> np.ndarray:
    """Checks one series; returns its number of NaN per variable (V,) (all 0 unless ``allow_masked``)."""
    f = np.asarray(s.fields)
    if f.ndim != 6:
        raise ValueError(
            f"series {s.planet_id}/{s.segment} of split {split!r}: expected fields (V, T, Tg, Z, Y, X), got shape {f.shape}"
        )
    if (f.shape[0], f.shape[2], f.shape[3], f.shape[4], f.shape[5]) != (V, Tg, Z, Y, X):
        raise ValueError(
            f"series {s.planet_id}/{s.segment} of split {split!r}: expected fields (V, T, Tg, Z, Y, X) with "
            f"V={V}, Tg={Tg}, Z={Z}, Y={Y}, X={X}, got {f.shape}"
        )
    if f.shape[1] < 1:
        raise ValueError(f"series {s.planet_id}/{s.segment} of split {split!r} has no climate time steps")
    nan_per_var = np.isnan(f).reshape(V, -1).sum(axis=1)
    bad = np.isinf(f) if allow_masked else ~np.isfinite(f)
    if bad.any():
        per_var = bad.reshape(V, -1).sum(axis=1)
        detail = ", ".join(f"{variable_names[i]}: {int(n)}" for i, n in enumerate(per_var) if n)
        what = "infinite (Inf) values" if allow_masked else "non-finite (NaN/Inf) values"
        hint = "" if allow_masked else " (NaN as masked values are written only with allow_masked=True)"
        raise ValueError(f"series {s.planet_id}/{s.segment} of split {split!r} has {what}: {detail}{hint}")
    p = np.asarray(s.planet_params).reshape(-1)
    if p.size != P:
        raise ValueError(f"series {s.planet_id}/{s.segment}: expected {P} planet_params, got {p.size}")
    if not np.isfinite(p).all():
        raise ValueError(f"series {s.planet_id}/{s.segment}: planet_params contain NaN/Inf: {p.tolist()}")
    missing = [c for c in CONSTANT_NAMES if c not in s.constants]
    if missing:
        raise ValueError(f"series {s.planet_id}/{s.segment}: constants miss {missing}; expected {list(CONSTANT_NAMES)}")
    for c in CONSTANT_NAMES:
        val = float(s.constants[c])
        if not (math.isfinite(val) and val > 0):
            raise ValueError(f"series {s.planet_id}/{s.segment}: constant {c} must be finite and > 0, got {val}")
    return nan_per_var


def _check_spectrum(s: Series, split: str, spectrum_shape: tuple[int, int] | None) -> None:
    """The series' spectrum against the dataset's (P, W), or its absence when the dataset has none."""
    name = f"series {s.planet_id}/{s.segment} of split {split!r}"
    if spectrum_shape is None:
        if s.spectrum is not None:
            raise ValueError(f"{name} has a spectrum but write_dataset got no spectrum_wavelengths; pass them (and spectrum_units, spectrum_model)")
        return
    if s.spectrum is None:
        raise ValueError(f"{name} has no spectrum; expected one of shape (T, P, W) = ({s.n_time}, {spectrum_shape[0]}, {spectrum_shape[1]})")
    spec = np.asarray(s.spectrum)
    expected = (s.n_time, *spectrum_shape)
    if spec.shape != expected:
        raise ValueError(f"{name}: expected spectrum (T, P, W) = {expected}, got {spec.shape}")
    if not np.isfinite(spec).all():
        raise ValueError(f"{name} has non-finite (NaN/Inf) spectrum values: {int((~np.isfinite(spec)).sum())}")


def _check_regime(s: Series, split: str, regime_names: Sequence[str] | None) -> None:
    """The series' regime label against the dataset's classes, or its absence when the dataset has none."""
    name = f"series {s.planet_id}/{s.segment} of split {split!r}"
    if regime_names is None:
        if s.planet_regime is not None:
            raise ValueError(f"{name} has a planet_regime but write_dataset got no planet_regime_names; pass them (and planet_regime_rule)")
        return
    r = s.planet_regime
    if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)) or not 0 <= int(r) < len(regime_names):
        raise ValueError(f"{name}: expected planet_regime an integer in [0, {len(regime_names)}) ({list(regime_names)}), got {r!r}")


def write_dataset(
    output_dir: str | os.PathLike,
    splits: Mapping[str, Sequence[Series]],
    *,
    variable_names: Sequence[str],
    units: Mapping[str, str],
    level_values: Sequence[float],
    level_unit: str,
    lat_values: Sequence[float],
    lon_values: Sequence[float],
    climate_time_step: float,
    climate_time_unit: str,
    geological_time_values: Sequence[float],
    geological_time_unit: str,
    planet_param_names: Sequence[str],
    planet_param_units: Sequence[str],
    split_by: str,
    source: str,
    series_per_shard: int = 4,
    extra: Mapping[str, Any] | None = None,
    spectrum_wavelengths: Sequence[float] | None = None,
    spectrum_phases: Sequence[float] | None = None,
    spectrum_units: str | None = None,
    spectrum_model: str | None = None,
    planet_regime_names: Sequence[str] | None = None,
    planet_regime_rule: str | None = None,
    climate_time_units: str | None = None,
    climate_time_calendar: str | None = None,
    allow_masked: bool = False,
) -> DatasetSchema:
    """Write ``splits`` as Parquet shards plus ``schema.json`` into ``output_dir`` and return the schema.

    Every split gets ``ceil(n_series / series_per_shard)`` shards ``<split>-0000i-of-0000N.parquet``
    (one row group per series). Normalisation statistics are computed on the ``train`` split only (the
    first split if there is no ``train``). Non-finite values, wrong shapes, missing units or constants
    raise ``ValueError``; existing shards of these splits in ``output_dir`` are replaced.

    Spectra: with ``spectrum_wavelengths`` (W,) [micron] given, every series needs ``spectrum`` of shape
    (T, P, W) (P = ``len(spectrum_phases)``, or 1 when ``spectrum_phases`` is None) and ``spectrum_units``
    and ``spectrum_model`` are required; the shards then carry a ``spectrum`` column and the schema the
    per-wavelength train statistics ``spectrum_mean`` / ``spectrum_std``.

    Regime labels: with ``planet_regime_names`` (K >= 2 names) given, every series needs ``planet_regime`` in
    ``[0, K)`` and ``planet_regime_rule`` (one sentence) is required; the shards then carry a ``planet_regime``
    column.

    CF times: with ``climate_time_units`` and ``climate_time_calendar`` given, every series needs ``times``
    (T,) float64 in those units; the shards then carry a ``climate_times`` column.

    Masked values: with ``allow_masked=True`` NaN (masked cells) are stored as NaN and counted per variable
    in the schema's ``masked_values``; the statistics then use valid values only (``tendency_std`` pairs of
    valid consecutive steps only) and a (variable, level) with no valid value is an error. Inf is always an
    error. Every shard is written with Parquet page checksums and its sha256 is stored in the schema.
    """
    # 1. validate the metadata
    variable_names = [str(v) for v in variable_names]
    V, Z, Y, X = len(variable_names), len(level_values), len(lat_values), len(lon_values)
    Tg, P = len(geological_time_values), len(planet_param_names)
    if series_per_shard < 1:
        raise ValueError(f"series_per_shard must be >= 1, got {series_per_shard}")
    if not splits or all(len(v) == 0 for v in splits.values()):
        raise ValueError("write_dataset needs at least one series in at least one split")
    empty = [k for k, v in splits.items() if len(v) == 0]
    if empty:
        raise ValueError(f"splits {empty} have no series; drop them or give them at least one series")
    for name in splits:
        if not name or "/" in name or "-" in name:
            raise ValueError(f"split names must be non-empty without '/' or '-', got {name!r}")
    missing_units = [v for v in variable_names if not units.get(v)]
    if missing_units:
        raise ValueError(f"no units given for variables {missing_units}; every variable needs an SI unit")
    if level_unit not in LEVEL_UNITS:
        raise ValueError(f"level_unit must be one of {LEVEL_UNITS}, got {level_unit!r}")
    if split_by not in SPLIT_BY_CHOICES:
        raise ValueError(f"split_by must be one of {SPLIT_BY_CHOICES}, got {split_by!r}")
    lat = np.asarray(lat_values, dtype=np.float64)
    if np.any(np.abs(lat) > 90) or (lat.size > 1 and np.any(np.diff(lat) <= 0)):
        raise ValueError(f"lat_values must be ascending within [-90, 90], got {lat.tolist()}")
    lon = np.asarray(lon_values, dtype=np.float64)
    _check_lon(lon)

    with_spectrum = spectrum_wavelengths is not None
    spectrum_shape = None
    if with_spectrum:
        if not spectrum_units or not spectrum_model:
            raise ValueError(
                f"spectra need spectrum_units and spectrum_model (one sentence), got {spectrum_units!r} and {spectrum_model!r}"
            )
        spectrum_shape = (1 if spectrum_phases is None else len(spectrum_phases), len(spectrum_wavelengths))
    elif spectrum_phases is not None or spectrum_units is not None or spectrum_model is not None:
        raise ValueError("spectrum_phases, spectrum_units or spectrum_model given without spectrum_wavelengths")

    with_regime = planet_regime_names is not None
    if with_regime:
        planet_regime_names = [str(n) for n in planet_regime_names]
        if len(planet_regime_names) < 2 or len(set(planet_regime_names)) != len(planet_regime_names) or not all(planet_regime_names):
            raise ValueError(f"expected planet_regime_names >= 2 distinct non-empty names, got {planet_regime_names}")
        if not planet_regime_rule:
            raise ValueError(f"planet_regime_names need planet_regime_rule (one sentence), got {planet_regime_rule!r}")
    elif planet_regime_rule is not None:
        raise ValueError("planet_regime_rule given without planet_regime_names")

    with_times = climate_time_units is not None
    if with_times != (climate_time_calendar is not None):
        raise ValueError(
            f"expected climate_time_units and climate_time_calendar both or neither, got {climate_time_units!r} "
            f"and {climate_time_calendar!r}"
        )

    # 2. validate every series
    nan_counts = np.zeros(V, dtype=np.int64)
    for split, series in splits.items():
        for s in series:
            nan_counts += _check_series(s, split, V, Tg, Z, Y, X, P, variable_names, allow_masked)
            _check_spectrum(s, split, spectrum_shape)
            _check_regime(s, split, planet_regime_names)
            name = f"series {s.planet_id}/{s.segment} of split {split!r}"
            if with_times:
                t = None if s.times is None else np.asarray(s.times, dtype=np.float64)
                if t is None or t.shape != (s.n_time,) or not np.isfinite(t).all():
                    raise ValueError(
                        f"{name}: expected times (T,) = ({s.n_time},) finite values in {climate_time_units!r}, "
                        f"got {None if t is None else t.shape}"
                    )
            elif s.times is not None:
                raise ValueError(f"{name} has times but write_dataset got no climate_time_units / climate_time_calendar")

    # 3. normalisation statistics on the train split (float64 accumulation)
    stat_split = "train" if "train" in splits else next(iter(splits))
    s1 = np.zeros((V, Z))
    s2 = np.zeros((V, Z))
    d2 = np.zeros((V, Z))
    count = d_count = 0
    count = np.zeros((V, Z))
    d_count = np.zeros((V, Z))
    any_steps = False
    for s in splits[stat_split]:  # valid (non-NaN) values only; pairs of valid consecutive steps only
        f = np.asarray(s.fields, dtype=np.float64)  # (V, T, Tg, Z, Y, X)
        valid = ~np.isnan(f)
        f0 = np.where(valid, f, 0.0)
        s1 += f0.sum(axis=(1, 2, 4, 5))
        s2 += (f0 * f0).sum(axis=(1, 2, 4, 5))
        count += valid.sum(axis=(1, 2, 4, 5))
        d = np.diff(f, axis=1)  # (V, T-1, Tg, Z, Y, X): one-step changes, NaN where a step is masked
        d_valid = ~np.isnan(d)
        d0 = np.where(d_valid, d, 0.0)
        d2 += (d0 * d0).sum(axis=(1, 2, 4, 5))
        d_count += d_valid.sum(axis=(1, 2, 4, 5))
        any_steps = any_steps or d.shape[1] > 0
    empty_stats = [f"{variable_names[i]} level {k}" for i in range(V) for k in range(Z) if count[i, k] == 0]
    if empty_stats:
        raise ValueError(
            f"no valid (non-masked) value in split {stat_split!r} for {empty_stats}; the statistics need at least one"
        )
    if any_steps:
        tendency = np.sqrt(np.divide(d2, d_count, out=np.zeros((V, Z)), where=d_count > 0))
        tendency[d_count == 0] = 1.0
    else:
        tendency = np.ones((V, Z))
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean * mean, 0.0))
    params = np.stack([np.asarray(s.planet_params, dtype=np.float64).reshape(-1) for s in splits[stat_split]])
    p_mean = params.mean(axis=0) if P else np.zeros(0)
    p_std = params.std(axis=0) if P else np.zeros(0)
    constant_stats: list[str] = []
    tol = 1e-6
    for i in range(V):
        for k in range(Z):
            if std[i, k] <= tol * max(1.0, abs(mean[i, k])):
                constant_stats.append(f"norm_std[{variable_names[i]}][{k}]")
                std[i, k] = 1.0
            if tendency[i, k] <= tol * max(1.0, abs(mean[i, k])):
                constant_stats.append(f"tendency_std[{variable_names[i]}][{k}]")
                tendency[i, k] = 1.0
    for j in range(P):
        if p_std[j] <= tol * max(1.0, abs(p_mean[j])):
            constant_stats.append(f"planet_param_std[{planet_param_names[j]}]")
            p_std[j] = 1.0
    spec_mean = spec_std = None
    if with_spectrum:
        W = spectrum_shape[1]
        spectra = np.concatenate(
            [np.asarray(s.spectrum, dtype=np.float64).reshape(-1, W) for s in splits[stat_split]]
        )  # (sum of T * P, W)
        spec_mean, spec_std = spectra.mean(axis=0), spectra.std(axis=0)
        for w in range(W):
            if spec_std[w] <= tol * abs(spec_mean[w]) or spec_std[w] == 0.0:
                constant_stats.append(f"spectrum_std[{w}]")
                spec_std[w] = 1.0

    # 4. write shards (atomically: write to a temporary name, then rename)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):
        if old.name.split("-")[0] in splits:
            old.unlink()
    shard_infos: dict[str, list[ShardInfo]] = {}
    for split, series in splits.items():
        n_shards = math.ceil(len(series) / series_per_shard)
        infos = []
        for i in range(n_shards):
            chunk = list(series[i * series_per_shard : (i + 1) * series_per_shard])
            name = f"{split}-{i:05d}-of-{n_shards:05d}.parquet"
            tmp = out / (name + ".tmp")
            pq.write_table(
                _series_to_table(chunk, with_spectrum, with_regime, with_times),
                tmp, row_group_size=1, compression="snappy", write_page_checksum=True,
            )
            digest = file_sha256(tmp)
            os.replace(tmp, out / name)
            infos.append(
                ShardInfo(
                    file=name,
                    planet_ids=[str(s.planet_id) for s in chunk],
                    segments=[int(s.segment) for s in chunk],
                    n_time=[s.n_time for s in chunk],
                    sha256=digest,
                )
            )
        shard_infos[split] = infos
        logger.info("wrote %d series of split %r into %d shards in %s", len(series), split, n_shards, out)

    # 5. schema.json
    schema = DatasetSchema(
        variable_names=variable_names,
        units={v: str(units[v]) for v in variable_names if v in units},
        level_values=[float(x) for x in level_values],
        level_unit=str(level_unit),
        lat_values=lat.tolist(),
        lon_values=lon.tolist(),
        climate_time_step=float(climate_time_step),
        climate_time_unit=str(climate_time_unit),
        geological_time_values=[float(x) for x in geological_time_values],
        geological_time_unit=str(geological_time_unit),
        planet_param_names=[str(x) for x in planet_param_names],
        planet_param_units=[str(x) for x in planet_param_units],
        split_by=str(split_by),
        source=str(source),
        splits=shard_infos,
        norm_mean=mean.tolist(),
        norm_std=std.tolist(),
        planet_param_mean=p_mean.tolist(),
        planet_param_std=p_std.tolist(),
        tendency_std=tendency.tolist(),
        constant_statistics=constant_stats,
        spectrum_wavelengths=[float(w) for w in spectrum_wavelengths] if with_spectrum else None,
        spectrum_phases=[float(x) for x in spectrum_phases] if spectrum_phases is not None else None,
        spectrum_units=str(spectrum_units) if with_spectrum else None,
        spectrum_mean=spec_mean.tolist() if with_spectrum else None,
        spectrum_std=spec_std.tolist() if with_spectrum else None,
        spectrum_model=str(spectrum_model) if with_spectrum else None,
        planet_regime_names=planet_regime_names if with_regime else None,
        planet_regime_rule=str(planet_regime_rule) if with_regime else None,
        climate_time_units=str(climate_time_units) if with_times else None,
        climate_time_calendar=str(climate_time_calendar) if with_times else None,
        masked_values={v: int(n) for v, n in zip(variable_names, nan_counts)} if nan_counts.any() else None,
        extra=dict(extra or {}),
    )
    schema.validate_metadata()
    tmp = out / (SCHEMA_FILENAME + ".tmp")
    tmp.write_text(schema.to_json(), encoding="utf-8")
    os.replace(tmp, out / SCHEMA_FILENAME)
    schema.data_dir = os.fspath(out)
    return schema


__all__ = [
    "AXIS_NAMES",
    "CONSTANT_NAMES",
    "REGIME_COLUMN",
    "ROW_ARROW_SCHEMA",
    "ROW_ARROW_SCHEMA_WITH_SPECTRUM",
    "SCHEMA_FILENAME",
    "SPECTRUM_COLUMN",
    "TIMES_COLUMN",
    "DatasetSchema",
    "Series",
    "ShardInfo",
    "calendar_index",
    "climate_time_kind",
    "file_sha256",
    "read_parquet_file",
    "row_arrow_schema",
    "row_columns",
    "write_dataset",
]
