"""Numeric tables for causal structure learning: any CSV (or DataFrame) -> a checked dataset folder.

A table is ``n`` rows (samples) by ``d`` columns (variables), optionally with a ground-truth graph over the
variables and with the regime (experimental condition) of every row. This module checks it, stores it, and reads it
back as :class:`TableData`; the Sachs et al. (2005) flow-cytometry table shipped inside ``cdt`` is built by
:func:`ensure_sachs_dataset`.

On-disk format (one folder)
---------------------------
``schema.json`` (written last, after every shard; a folder without it is incomplete)::

    {"kind": "table", "format_version": 1,
     "source": "<free text: where the table came from>",
     "variables": [{"name": "p44/42", "unit": "a.u." | null, "transform": "log1p" | "identity"}, ...],
     "edges": [[cause, effect], ...] | null,          # ground truth, null when unknown
     "regimes": [{"name": "...", "targets": [names] | "unknown", "rows": int, "val_rows": int}, ...],
     "splits": {"train": {"rows": n, "files": ["train-00000.parquet", ...], "sha256": [...]},
                "val":   {"rows": m, "files": [...], "sha256": [...]}},
     "rows": N, "val_fraction": f, "seed": s, "notes": ["...", ...]}

Shards ``train-00000.parquet``, ``train-00001.parquet``, ... (and ``val-…``), at most :data:`SHARD_ROWS` rows each,
with page checksums, written to a temporary name and renamed into place. Columns: ``row_id`` (int64, the row's index
in the source table), ``regime`` (int32, index into ``schema["regimes"]``) and one float64 column per variable named
exactly as the variable (names may contain ``/``). Values are stored as given, in the file's units: a variable's
``transform`` (``log1p`` or ``identity``) is declared for the model to apply, never applied here. Rows keep the
source order within a split. ``targets`` lists the variables a regime intervened on: ``[]`` is observational,
``"unknown"`` an intervention whose targets are not known; :attr:`TableData.intervened` is True only where a row's
regime lists the variable.

Validation split: ``round(val_fraction * rows)`` rows of every regime (stratified), drawn with
``numpy.random.default_rng(seed)`` regime by regime in schema order; ``val_fraction=0`` gives an empty val split (no
file, 0 rows).

Checks (each a one-line ``ValueError`` naming what was expected and what was found, raised before anything is
written): duplicate, blank, non-string or reserved (``row_id``, ``regime``) column names; a non-numeric column
(named, with an example value); empty/NaN cells (the columns and how many rows); infinite values; a constant column;
fewer than 2 variables or 10 rows; units, transforms or log1p naming unknown variables; an unknown transform; log1p
on a column with values <= -1; graph edges naming unknown variables (listed with the known ones), self-loops,
repeated edges, a graph CSV without the ``Cause,Effect`` header; a regime column that is missing or has empty cells;
a regime in the data not listed in the targets file, a regime listed twice, targets naming unknown variables; a
val_fraction outside [0, 1). Loading checks the schema (kind, version, keys) and every shard (present, sha256,
Parquet page checksums, row count, columns and dtypes); a failure names the file.

CSV inputs (:func:`ingest_table`)
---------------------------------
* data: a header row of variable names, then one row per sample; every cell a number (the regime column, when
  given, holds regime names and is not a variable);
* graph: header ``Cause,Effect`` (as cdt's ``cyto_full_target.csv``), one edge per row;
* targets: header ``Regime,Targets``; Targets is a ``;``-separated list of variable names, empty for an
  observational regime, or the word ``unknown``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .schema_file import read_schema_json

logger = logging.getLogger(__name__)

SCHEMA_KIND = "table"
FORMAT_VERSION = 1
SCHEMA_FILENAME = "schema.json"
SHARD_ROWS = 100_000
SPLITS = ("train", "val")
TRANSFORMS = ("identity", "log1p")
RESERVED_COLUMNS = ("row_id", "regime")
MIN_ROWS = 10
MIN_VARIABLES = 2
OBSERVATIONAL = "observational"
UNKNOWN = "unknown"

_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})  # cells read as missing (then reported as such)
_SHARD_NAME = re.compile(r"^(train|val)-\d{5}\.parquet$")
_BUILD_HINT = "rebuild it with astrobio_hf.data.table.ingest_table or `astrobio-hf data table`"


@dataclass
class TableData:
    """Rows of one split. ``values`` (n, d) float64 in the file's units (transforms not applied); ``regime`` (n,)
    int64 index into ``schema["regimes"]``; ``row_id`` (n,) int64 row index in the source table; ``intervened``
    (n, d) bool, True where the row's regime intervened on that variable."""

    variables: list[str]
    values: np.ndarray
    regime: np.ndarray
    row_id: np.ndarray
    intervened: np.ndarray

    def __len__(self) -> int:
        return int(self.values.shape[0])


# ------------------------------------------------------------------------------------------------ helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _short(items, limit: int = 12) -> str:
    items = list(items)
    if len(items) <= limit:
        return repr(items)
    return repr(items[:limit])[:-1] + f", ... ({len(items)} in all)]"


def _repeated(names) -> list:
    """The names that occur more than once, in order of their first repeat."""
    seen, dups = set(), []
    for c in names:
        if c in seen and c not in dups:
            dups.append(c)
        seen.add(c)
    return dups


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ------------------------------------------------------------------------------------------------ checks
def _check_frame(frame) -> tuple[list[str], np.ndarray]:
    """Column names and the (n, d) float64 values of ``frame``, or a ValueError naming the problem."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    names = list(frame.columns)
    bad = [c for c in names if not isinstance(c, str)]
    if bad:
        raise ValueError(f"expected string column names, got {_short(bad)}")
    blank = [i for i, c in enumerate(names) if not c.strip()]
    if blank:
        raise ValueError(f"expected a name for every column, got blank name(s) at column position(s) {blank}")
    dups = _repeated(names)
    if dups:
        raise ValueError(f"expected unique column names, got duplicate(s) {_short(dups)}")
    reserved = [c for c in names if c in RESERVED_COLUMNS]
    if reserved:
        raise ValueError(f"expected variable names other than the reserved shard columns {list(RESERVED_COLUMNS)}, got {reserved}")
    if len(names) < MIN_VARIABLES:
        raise ValueError(f"expected at least {MIN_VARIABLES} variables (columns), got {len(names)}: {names}")
    if len(frame) < MIN_ROWS:
        raise ValueError(f"expected at least {MIN_ROWS} rows, got {len(frame)}")
    for c in names:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            example = next((v for v in col.tolist() if not isinstance(v, (int, float)) or isinstance(v, bool)), col.iloc[0])
            raise ValueError(
                f"expected a numeric column, got column {c!r} of dtype {col.dtype} (e.g. value {example!r})"
            )
    values = frame.to_numpy(dtype=np.float64, copy=True)
    missing = np.isnan(values)
    if missing.any():
        per = {names[j]: int(missing[:, j].sum()) for j in np.flatnonzero(missing.any(axis=0))}
        detail = ", ".join(f"{k!r} ({_plural(v, 'row')})" for k, v in per.items())
        raise ValueError(
            f"expected a number in every cell, got empty/NaN cells in column(s) {detail}; "
            f"{_plural(int(missing.any(axis=1).sum()), 'row')} affected"
        )
    inf = np.isinf(values)
    if inf.any():
        per = {names[j]: int(inf[:, j].sum()) for j in np.flatnonzero(inf.any(axis=0))}
        raise ValueError(f"expected finite values, got infinite values in column(s) {per}")
    constant = [names[j] for j in range(values.shape[1]) if np.ptp(values[:, j]) == 0]
    if constant:
        raise ValueError(f"expected every variable to vary, got constant column(s) {constant}")
    return names, values


def _check_names(what: str, given, variables: list[str]) -> None:
    unknown = [k for k in given if k not in variables]
    if unknown:
        raise ValueError(f"expected {what} to name known variables, got unknown {unknown}; known: {variables}")


def _check_edges(edges, variables: list[str]) -> list[list[str]] | None:
    if edges is None:
        return None
    out, seen = [], set()
    for e in edges:
        if isinstance(e, str) or len(e) != 2:
            raise ValueError(f"expected edges as (cause, effect) pairs, got {e!r}")
        out.append([str(e[0]), str(e[1])])
    unknown = sorted({n for e in out for n in e if n not in variables})
    if unknown:
        raise ValueError(f"expected graph edges between known variables, got unknown name(s) {unknown}; known: {variables}")
    loops = [e for e in out if e[0] == e[1]]
    if loops:
        raise ValueError(f"expected no self-loops in the graph, got {[tuple(e) for e in loops]}")
    repeated = []
    for e in out:
        if tuple(e) in seen:
            repeated.append(tuple(e))
        seen.add(tuple(e))
    if repeated:
        raise ValueError(f"expected each graph edge once, got repeated edge(s) {repeated}")
    return out


def _check_regimes(regimes, regime_targets, variables: list[str], n: int):
    """(regime table for the schema, per-row regime index, notes)."""
    if regimes is None:
        if regime_targets is not None:
            raise ValueError("expected regimes (one name per row) together with regime_targets, got regime_targets only")
        return [{"name": OBSERVATIONAL, "targets": []}], np.zeros(n, dtype=np.int64), []
    labels = [r for r in regimes]
    if len(labels) != n:
        raise ValueError(f"expected one regime name per row ({n}), got {len(labels)}")
    bad = [r for r in labels if not isinstance(r, str) or not r.strip()]
    if bad:
        raise ValueError(f"expected a non-empty regime name for every row, got {len(bad)} empty or non-string value(s), e.g. {bad[0]!r}")
    if regime_targets is None:
        raise ValueError(
            "expected regime_targets (regime name -> intervened variables, [] observational, 'unknown') with regimes, got None"
        )
    order: list[str] = []
    index: dict[str, int] = {}
    for r in labels:
        if r not in index:
            index[r] = len(order)
            order.append(r)
    missing = [r for r in order if r not in regime_targets]
    if missing:
        raise ValueError(
            f"expected every regime in the data to be listed in the targets, got unlisted regime(s) {missing}; "
            f"listed: {list(regime_targets)}"
        )
    table = []
    for name in order:
        t = regime_targets[name]
        if isinstance(t, str):
            if t.strip().lower() != UNKNOWN:
                raise ValueError(f"expected targets of regime {name!r} as a list of variable names or 'unknown', got {t!r}")
            targets: list[str] | str = UNKNOWN
        else:
            targets = [str(v) for v in t]
            _check_names(f"the targets of regime {name!r}", targets, variables)
            if len(set(targets)) != len(targets):
                raise ValueError(f"expected each target of regime {name!r} once, got {targets}")
        table.append({"name": name, "targets": targets})
    absent = [r for r in regime_targets if r not in index]
    notes = []
    if absent:
        notes.append(f"regime(s) listed in the targets but absent from the data, not stored: {absent}")
        logger.warning("table: %s", notes[-1])
    return table, np.array([index[r] for r in labels], dtype=np.int64), notes


def _val_rows(regime: np.ndarray, n_regimes: int, val_fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    is_val = np.zeros(regime.shape[0], dtype=bool)
    for k in range(n_regimes):
        rows = np.flatnonzero(regime == k)
        n_val = int(np.floor(val_fraction * rows.size + 0.5))
        if n_val:
            is_val[rng.permutation(rows)[:n_val]] = True
    return is_val


# ------------------------------------------------------------------------------------------------ writing
def write_table_dataset(
    output_dir: str | os.PathLike,
    frame,
    *,
    units: dict[str, str] | None = None,
    transforms: dict[str, str] | None = None,
    edges: list[tuple[str, str]] | None = None,
    regimes: Sequence[str] | None = None,
    regime_targets: dict[str, list[str] | str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    source: str = "",
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Check ``frame`` (one numeric column per variable) and write it as a table dataset into ``output_dir``.

    ``units``: variable -> unit string (others null); ``transforms``: variable -> ``"log1p"``/``"identity"``
    (default identity; declared, not applied); ``edges``: ground-truth (cause, effect) pairs or None;
    ``regimes``: one regime name per row (None: one regime ``"observational"`` with targets ``[]``);
    ``regime_targets``: regime -> intervened variables (``[]`` observational, ``"unknown"``). Returns the schema.
    Every check of the module docstring runs before anything is written."""
    return _write(output_dir, frame, units=units, transforms=transforms, edges=edges, regimes=regimes,
                  regime_targets=regime_targets, val_fraction=val_fraction, seed=seed, source=source, notes=notes)


def _write(output_dir, frame, *, units, transforms, edges, regimes, regime_targets, val_fraction, seed, source, notes,
           extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    variables, values = _check_frame(frame)
    n = values.shape[0]
    units = dict(units or {})
    _check_names("units", units, variables)
    bad_units = {k: v for k, v in units.items() if not isinstance(v, str) or not v.strip()}
    if bad_units:
        raise ValueError(f"expected non-empty unit strings, got {bad_units}")
    transforms = dict(transforms or {})
    _check_names("transforms", transforms, variables)
    bad_t = {k: v for k, v in transforms.items() if v not in TRANSFORMS}
    if bad_t:
        raise ValueError(f"expected transforms among {list(TRANSFORMS)}, got {bad_t}")
    lows = {name: float(values[:, variables.index(name)].min()) for name, t in transforms.items() if t == "log1p"}
    below = {name: float(f"{low:.6g}") for name, low in lows.items() if low <= -1}
    if below:
        raise ValueError(f"expected values > -1 in every log1p column (log1p undefined at <= -1), got minima {below}")
    edge_list = _check_edges(edges, variables)
    regime_table, regime, regime_notes = _check_regimes(regimes, regime_targets, variables, n)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"expected val_fraction in [0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"expected a non-negative integer seed, got {seed!r}")
    if isinstance(notes, str):
        notes = [notes]
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"expected an output directory, got the file {out}")

    is_val = _val_rows(regime, len(regime_table), float(val_fraction), int(seed))
    for k, entry in enumerate(regime_table):
        entry["rows"] = int((regime == k).sum())
        entry["val_rows"] = int(((regime == k) & is_val).sum())

    out.mkdir(parents=True, exist_ok=True)
    (out / SCHEMA_FILENAME).unlink(missing_ok=True)  # the folder is incomplete until the new schema is written
    arrow_schema = pa.schema(
        [pa.field("row_id", pa.int64()), pa.field("regime", pa.int32())] + [pa.field(v, pa.float64()) for v in variables]
    )
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        rows = np.flatnonzero(is_val if split == "val" else ~is_val)
        files, digests = [], []
        for i, start in enumerate(range(0, rows.size, SHARD_ROWS)):
            part = rows[start:start + SHARD_ROWS]
            columns = [pa.array(part.astype(np.int64)), pa.array(regime[part].astype(np.int32))]
            columns += [pa.array(values[part, j]) for j in range(len(variables))]
            name = f"{split}-{i:05d}.parquet"
            tmp = out / (name + ".tmp")
            pq.write_table(pa.Table.from_arrays(columns, schema=arrow_schema), tmp, write_page_checksum=True)
            os.replace(tmp, out / name)
            files.append(name)
            digests.append(_sha256(out / name))
        splits[split] = {"rows": int(rows.size), "files": files, "sha256": digests}
    listed = {f for s in splits.values() for f in s["files"]}
    stale = sorted(f.name for f in out.iterdir() if _SHARD_NAME.match(f.name) and f.name not in listed)
    for name in stale:
        (out / name).unlink()
    if stale:
        logger.info("table: removed %d shard file(s) of an earlier build from %s: %s", len(stale), out, ", ".join(stale))

    schema: dict[str, Any] = {
        "kind": SCHEMA_KIND,
        "format_version": FORMAT_VERSION,
        "source": str(source),
        "variables": [
            {"name": v, "unit": units.get(v), "transform": transforms.get(v, "identity")} for v in variables
        ],
        "edges": edge_list,
        "regimes": regime_table,
        "splits": splits,
        "rows": int(n),
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "notes": [str(x) for x in notes] + regime_notes,
    }
    if extra:
        schema.update(extra)
    tmp = out / (SCHEMA_FILENAME + ".tmp")
    tmp.write_text(json.dumps(schema, indent=2, allow_nan=False), encoding="utf-8")
    os.replace(tmp, out / SCHEMA_FILENAME)
    logger.info(
        "table written to %s: %d rows (%d train / %d val), %d variables, %d regimes, %s edges", out, n,
        splits["train"]["rows"], splits["val"]["rows"], len(variables), len(regime_table),
        "no" if edge_list is None else len(edge_list),
    )
    return schema


# ------------------------------------------------------------------------------------------------ loading
def load_table_schema(data_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``schema.json`` of a table dataset folder (``FileNotFoundError`` when missing, ``ValueError``
    for unreadable JSON, another kind or version, or missing keys)."""
    path, schema = read_schema_json(data_dir, SCHEMA_FILENAME, kind=SCHEMA_KIND, what="a table dataset", hint=_BUILD_HINT,
                                    version_key="format_version", version=FORMAT_VERSION)
    missing = [k for k in ("variables", "edges", "regimes", "splits", "rows") if k not in schema]
    if missing:
        raise ValueError(f"{path}: expected keys {missing} (missing), found {sorted(schema)}")
    splits = schema["splits"]
    if not isinstance(splits, dict) or sorted(splits) != sorted(SPLITS):
        raise ValueError(f"{path}: expected splits {list(SPLITS)}, got {sorted(splits) if isinstance(splits, dict) else splits!r}")
    return schema


def _read_shard(path: Path, digest: str | None, rows: int | None, names: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(f"{path} is listed in {path.parent / SCHEMA_FILENAME} but missing; {_BUILD_HINT}")
    if digest is not None and _sha256(path) != digest:
        raise ValueError(f"{path} is corrupted: expected sha256 {digest} (schema.json), got {_sha256(path)}; {_BUILD_HINT}")
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path} is truncated or corrupted: expected a complete Parquet shard ({e}); {_BUILD_HINT}") from e
    expected = ["row_id", "regime", *names]
    if table.column_names != expected:
        raise ValueError(f"{path}: expected columns {expected}, got {table.column_names}")
    if rows is not None and table.num_rows != rows:
        raise ValueError(f"{path}: expected {rows} rows, got {table.num_rows}")
    return table


def load_table(data_dir: str | os.PathLike, split: str) -> TableData:
    """Rows of ``split`` (``"train"``, ``"val"`` or ``"all"``, the last in source-row order) as :class:`TableData`.
    Every shard is checked (present, sha256, page checksums, columns, row count) and a failure names the file."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"expected split 'train', 'val' or 'all', got {split!r}")
    schema = load_table_schema(data_dir)
    names = [v["name"] for v in schema["variables"]]
    d = len(names)
    parts_v, parts_r, parts_id = [], [], []
    for s in (SPLITS if split == "all" else (split,)):
        info = schema["splits"][s]
        digests = info.get("sha256") or [None] * len(info["files"])
        got = 0
        for name, digest in zip(info["files"], digests):
            table = _read_shard(Path(data_dir) / name, digest, None, names)
            got += table.num_rows
            parts_id.append(table.column("row_id").to_numpy().astype(np.int64))
            parts_r.append(table.column("regime").to_numpy().astype(np.int64))
            parts_v.append(np.stack([table.column(v).to_numpy().astype(np.float64) for v in names], axis=1)
                           if table.num_rows else np.zeros((0, d)))
        if got != info["rows"]:
            raise ValueError(f"{Path(data_dir)}: expected {info['rows']} {s} rows (schema.json), got {got} in its shards")
    values = np.concatenate(parts_v) if parts_v else np.zeros((0, d), dtype=np.float64)
    regime = np.concatenate(parts_r) if parts_r else np.zeros(0, dtype=np.int64)
    row_id = np.concatenate(parts_id) if parts_id else np.zeros(0, dtype=np.int64)
    if split == "all":
        order = np.argsort(row_id, kind="stable")
        values, regime, row_id = values[order], regime[order], row_id[order]
    n_regimes = len(schema["regimes"])
    if regime.size and (regime.min() < 0 or regime.max() >= n_regimes):
        raise ValueError(f"{data_dir}: expected regime indices in [0, {n_regimes}), got range [{regime.min()}, {regime.max()}]")
    mask = np.zeros((n_regimes, d), dtype=bool)
    for k, entry in enumerate(schema["regimes"]):
        if isinstance(entry["targets"], list):
            for t in entry["targets"]:
                mask[k, names.index(t)] = True
    return TableData(variables=names, values=np.ascontiguousarray(values, dtype=np.float64), regime=regime,
                     row_id=row_id, intervened=mask[regime])


# ------------------------------------------------------------------------------------------------ CSV ingestion
def _csv_rows(path: Path, what: str) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"expected a {what} CSV file, got {path} (no such file)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"expected a readable {what} CSV at {path}, got {type(e).__name__}: {e}") from e


def _read_data_csv(path: Path, regime_column: str | None):
    """(frame of float64 variables, regime labels or None), with the checks that need the raw text."""
    import pandas as pd

    rows = _csv_rows(path, "data")
    if not rows:
        raise ValueError(f"expected a header row and data rows in {path}, got an empty file")
    header = [c.strip() for c in rows[0]]
    dups = _repeated(header)
    if dups:
        raise ValueError(f"expected unique column names in {path}, got duplicate(s) {dups}")
    if regime_column is not None and regime_column not in header:
        raise ValueError(f"expected the regime column {regime_column!r} in {path}, found columns {header}")
    bad_len = [i for i, r in enumerate(rows[1:], start=2) if len(r) != len(header)]
    if bad_len:
        raise ValueError(
            f"expected {len(header)} fields per row in {path} (as the header), got {len(rows[bad_len[0] - 1])} on line {bad_len[0]}"
            + (f" and {len(bad_len) - 1} more line(s)" if len(bad_len) > 1 else "")
        )
    raw = pd.DataFrame([[c.strip() for c in r] for r in rows[1:]], columns=header, dtype=object)
    labels = None
    if regime_column is not None:
        labels = raw.pop(regime_column).tolist()
        empty = [i for i, v in enumerate(labels) if not v]
        if empty:
            raise ValueError(f"expected a regime name in every row of column {regime_column!r}, got {len(empty)} empty cell(s), first on line {empty[0] + 2}")
    columns = {}
    for c in raw.columns:
        values, bad = [], []
        for i, cell in enumerate(raw[c].tolist()):
            if cell.lower() in _MISSING:
                values.append(np.nan)
                continue
            try:  # Python's float() parses exactly (pandas' fast parser is off by an ulp on some inputs)
                values.append(float(cell) if "_" not in cell else float("x"))
            except ValueError:
                values.append(np.nan)
                bad.append(i)
        if bad:
            raise ValueError(
                f"expected numbers in column {c!r} of {path}, got {len(bad)} non-numeric value(s), "
                f"e.g. {raw[c].iloc[bad[0]]!r} on line {bad[0] + 2}"
            )
        columns[c] = np.array(values, dtype=np.float64)
    return pd.DataFrame(columns, columns=list(raw.columns)), labels


def _read_graph_csv(path: Path) -> list[tuple[str, str]]:
    rows = _csv_rows(path, "graph")
    if not rows or [c.strip().lower() for c in rows[0]] != ["cause", "effect"]:
        raise ValueError(f"expected a graph CSV with header 'Cause,Effect' at {path}, got header {rows[0] if rows else 'none (empty file)'}")
    edges = []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != 2 or not r[0].strip() or not r[1].strip():
            raise ValueError(f"expected 'cause,effect' on every row of {path}, got {r} on line {i}")
        edges.append((r[0].strip(), r[1].strip()))
    return edges


def _read_targets_csv(path: Path) -> dict[str, list[str] | str]:
    rows = _csv_rows(path, "targets")
    if not rows or [c.strip().lower() for c in rows[0]] != ["regime", "targets"]:
        raise ValueError(f"expected a targets CSV with header 'Regime,Targets' at {path}, got header {rows[0] if rows else 'none (empty file)'}")
    out: dict[str, list[str] | str] = {}
    for i, r in enumerate(rows[1:], start=2):
        if len(r) not in (1, 2) or not r[0].strip():
            raise ValueError(f"expected 'regime,target;target...' on every row of {path}, got {r} on line {i}")
        name, text = r[0].strip(), (r[1].strip() if len(r) == 2 else "")
        if name in out:
            raise ValueError(f"expected each regime once in {path}, got {name!r} again on line {i}")
        out[name] = UNKNOWN if text.lower() == UNKNOWN else [t.strip() for t in text.split(";") if t.strip()]
    return out


def ingest_table(
    csv_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    graph=None,
    regime_column: str | None = None,
    targets=None,
    units: dict[str, str] | None = None,
    log1p=None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Ingest a numeric CSV (header of variable names) into ``output_dir``; returns the schema.

    ``graph``: a ``Cause,Effect`` CSV (or a list of pairs); ``regime_column`` + ``targets`` (a ``Regime,Targets``
    CSV, or a dict regime -> list / "unknown"): the rows' regimes; ``units``: name -> unit; ``log1p``: column
    names or ``"all"`` to declare the log1p transform. All checks run before anything is written."""
    path = Path(csv_path)
    if (regime_column is None) != (targets is None):
        raise ValueError(
            "expected regime_column and targets together (a regime column needs a Regime,Targets file), got "
            f"regime_column={regime_column!r}, targets={None if targets is None else str(targets)!r}"
        )
    frame, labels = _read_data_csv(path, regime_column)
    variables = list(frame.columns)
    notes = [f"ingested from {path.name}"]
    edges = None
    if graph is not None:
        if isinstance(graph, (str, os.PathLike)):
            edges = _read_graph_csv(Path(graph))
            notes.append(f"edges from {Path(graph).name} (sha256 {_sha256(Path(graph))})")
        else:
            edges = [tuple(e) for e in graph]
    regime_targets = None
    if targets is not None:
        if isinstance(targets, Mapping):
            regime_targets = dict(targets)
        else:
            regime_targets = _read_targets_csv(Path(targets))
            notes.append(f"regime column {regime_column!r}, targets from {Path(targets).name}")
    transforms = None
    if log1p is not None:
        names = list(variables) if isinstance(log1p, str) and log1p.strip().lower() == "all" else (
            [log1p] if isinstance(log1p, str) else list(log1p))
        _check_names("log1p", names, variables)
        transforms = {n: "log1p" for n in names}
    source = f"{path.resolve()} (sha256 {_sha256(path)})"
    return _write(output_dir, frame, units=units, transforms=transforms, edges=edges, regimes=labels,
                  regime_targets=regime_targets, val_fraction=val_fraction, seed=seed, source=source, notes=notes)


# ------------------------------------------------------------------------------------------------ Sachs et al. 2005
SACHS_UNIT = "fluorescence intensity (a.u.)"
SACHS_ROWS = 7466
# (condition, rows, intervened variables): the nine condition files of the release, in release order
SACHS_BLOCKS: tuple[tuple[str, int, list[str]], ...] = (
    ("CD3/CD28", 853, []),
    ("CD3/CD28+ICAM-2", 902, []),
    ("CD3/CD28+AKT inhibitor", 911, ["pakts473"]),
    ("CD3/CD28+G06976", 723, ["PKC"]),
    ("CD3/CD28+psitectorigenin", 810, ["PIP2"]),
    ("CD3/CD28+U0126", 799, ["pmek"]),
    ("CD3/CD28+LY294002", 848, ["PIP3"]),
    ("PMA", 913, ["PKC"]),
    ("beta2-cAMP", 707, ["PKA"]),
)
SACHS_SUBSETS = ("observational", "full")
_SACHS_SOURCE = (
    "Sachs K, Perez O, Pe'er D, Lauffenburger DA, Nolan GP (2005) Causal protein-signaling networks derived from "
    "multiparameter single-cell data. Science 308:523-529; table as shipped by cdt 0.6.0 "
    "(cdt/data/resources/cyto_full_data.csv, graph cyto_full_target.csv)"
)


def _cdt_resource(name: str) -> Path:
    spec = importlib.util.find_spec("cdt")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / "data" / "resources" / name if locations else None
    if path is None or not path.is_file():
        raise ValueError(
            f"expected the Sachs et al. (2005) table shipped by cdt ({name}), got "
            f"{'no cdt package' if path is None else f'no file {path}'}; install it with `pip install --no-deps cdt==0.6.0`"
        )
    return path


def sachs_consensus_edges() -> list[tuple[str, str]]:
    """The 18-edge consensus graph of cdt's ``cyto_full_target.csv`` as (cause, effect) pairs."""
    path = _cdt_resource("cyto_full_target.csv")
    edges = _read_graph_csv(path)
    if len(edges) != 18:
        raise ValueError(f"expected 18 consensus edges in {path}, got {len(edges)}")
    return edges


def _sachs_build(subset: str, data_path: Path) -> dict[str, Any]:
    return {"dataset": "sachs2005", "subset": subset, "data_sha256": _sha256(data_path)}


def ensure_sachs_dataset(data_dir: str | os.PathLike, subset: str = "observational") -> dict[str, Any]:
    """Build the Sachs et al. (2005) table into ``data_dir`` once (later calls load its schema) and return the schema.

    ``subset="observational"``: the 853 CD3/CD28 rows (one regime, targets []); ``"full"``: all 7,466 rows with
    the nine conditions as regimes. A folder holding another dataset or subset is a ``ValueError``."""
    if subset not in SACHS_SUBSETS:
        raise ValueError(f"expected subset one of {list(SACHS_SUBSETS)}, got {subset!r}")
    data_path = _cdt_resource("cyto_full_data.csv")
    build = _sachs_build(subset, data_path)
    if (Path(data_dir) / SCHEMA_FILENAME).is_file():
        schema = load_table_schema(data_dir)
        if schema.get("build") != build:
            raise ValueError(
                f"expected the Sachs {subset!r} table ({build}) in {data_dir}, got a dataset built as {schema.get('build')}; "
                "use another directory or delete this one"
            )
        return schema
    frame, _ = _read_data_csv(data_path, None)
    sizes = [b[1] for b in SACHS_BLOCKS]
    if len(frame) != SACHS_ROWS or sum(sizes) != len(frame):
        raise ValueError(
            f"expected {SACHS_ROWS} rows in {data_path} = the condition blocks {sizes} (sum {sum(sizes)}), got {len(frame)}"
        )
    labels = [name for name, rows, _ in SACHS_BLOCKS for _ in range(rows)]
    targets = {name: list(t) for name, _, t in SACHS_BLOCKS}
    if subset == "observational":
        frame, labels = frame.iloc[: SACHS_BLOCKS[0][1]].reset_index(drop=True), labels[: SACHS_BLOCKS[0][1]]
        targets = {SACHS_BLOCKS[0][0]: []}
    notes = [
        "rows: the nine condition files of the original release stacked in release order without labels; regimes are "
        "assigned by position: " + ", ".join(f"{n} {r}" for n, r, _ in SACHS_BLOCKS) + f" (sum {sum(sizes)} checked); "
        "the block boundaries coincide with jumps of the per-block mean log1p values",
        "CD3/CD28 (anti-CD3/CD28) and CD3/CD28+ICAM-2 are general stimuli of the pathway, not targeted interventions: "
        "both are stored as observational (targets [])",
        "targets (Sachs et al. 2005): AKT inhibitor -> pakts473, G06976 -> PKC, psitectorigenin -> PIP2, U0126 -> pmek, "
        "LY294002 -> PIP3 (it inhibits PI3K, not measured; seen through its product PIP3), PMA -> PKC (activator), "
        "beta2-cAMP -> PKA (activator); most are inhibitors of a protein's activity, so the measured target itself "
        "need not shift",
        "transform log1p on every variable (the standard preprocessing: log1p, then standardised by the model)",
        "val_fraction 0: the published structure-learning comparisons fit on all rows",
        "edges: the 18-edge consensus graph of cdt's cyto_full_target.csv",
    ]
    if subset == "observational":
        notes.insert(1, "subset 'observational': only the first block (CD3/CD28, 853 rows)")
    variables = list(frame.columns)
    return _write(
        data_dir, frame, units={v: SACHS_UNIT for v in variables}, transforms={v: "log1p" for v in variables},
        edges=sachs_consensus_edges(), regimes=labels, regime_targets=targets, val_fraction=0.0, seed=0,
        source=_SACHS_SOURCE, notes=notes, extra={"build": build},
    )
