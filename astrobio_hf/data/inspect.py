"""Human-readable description of a dataset directory (what ``astrobio-hf data inspect DIR`` prints)."""

from __future__ import annotations

import logging
import os

import numpy as np

from .schema import DatasetSchema, read_parquet_file

logger = logging.getLogger(__name__)


def dataset_statistics(data_dir: str | os.PathLike, *, schema: DatasetSchema | None = None) -> dict[str, dict[str, float]]:
    """min/max/mean/std of every variable over all rows of all shards of all splits (float64 accumulation).

    Reads one row group (one series) at a time, so memory stays at one series, with Parquet page checksum
    verification (a corrupted page is a ``ValueError`` naming the shard). Masked (NaN) values are left out;
    ``count`` is the number of valid values and ``masked`` the number of NaN.
    Returns ``{variable: {"min", "max", "mean", "std", "count", "masked"}}``.
    """
    schema = schema or DatasetSchema.from_dir(data_dir)
    V = schema.num_variables
    vmin = np.full(V, np.inf)
    vmax = np.full(V, -np.inf)
    s1 = np.zeros(V)
    s2 = np.zeros(V)
    count = np.zeros(V)
    masked = np.zeros(V)
    for split in schema.splits:
        for path in schema.shard_files(split):
            try:
                pf = read_parquet_file(path)
            except Exception as e:
                raise ValueError(f"shard {path} of split {split!r} is corrupted: {e}") from e
            for g in range(pf.num_row_groups):
                try:
                    table = pf.read_row_group(g, columns=["n_time", "fields"])
                except Exception as e:  # a failed page checksum, truncated bytes
                    raise ValueError(f"shard {path} of split {split!r} is corrupted: cannot read row group {g} ({e})") from e
                values = table.column("fields").combine_chunks()
                flat = values.values.to_numpy(zero_copy_only=False)
                offsets = values.offsets.to_numpy()
                for i, n_time in enumerate(table.column("n_time").to_numpy()):
                    shape = schema.series_shape(int(n_time))
                    row = flat[offsets[i] : offsets[i + 1]]
                    if row.size != int(np.prod(shape)):
                        raise ValueError(
                            f"shard {path}: a row has {row.size} field values, schema.json expects {shape}"
                        )
                    per_var = row.reshape(V, -1).astype(np.float64)
                    valid = ~np.isnan(per_var)
                    vmin = np.minimum(vmin, np.where(valid, per_var, np.inf).min(axis=1))
                    vmax = np.maximum(vmax, np.where(valid, per_var, -np.inf).max(axis=1))
                    v0 = np.where(valid, per_var, 0.0)
                    s1 += v0.sum(axis=1)
                    s2 += (v0 * v0).sum(axis=1)
                    count += valid.sum(axis=1)
                    masked += (~valid).sum(axis=1)
    mean = s1 / np.maximum(count, 1)
    std = np.sqrt(np.maximum(s2 / np.maximum(count, 1) - mean * mean, 0.0))
    return {
        v: {"min": float(vmin[i]), "max": float(vmax[i]), "mean": float(mean[i]), "std": float(std[i]), "count": int(count[i]), "masked": int(masked[i])}
        for i, v in enumerate(schema.variable_names)
    }


def _fmt_values(values, unit: str, max_items: int = 4) -> str:
    values = list(values)
    if len(values) <= max_items:
        body = ", ".join(f"{x:g}" for x in values)
    else:
        body = ", ".join(f"{x:g}" for x in values[:2]) + ", ..., " + ", ".join(f"{x:g}" for x in values[-2:])
    return f"[{body}] {unit} ({len(values)})"


def describe_dataset(data_dir: str | os.PathLike) -> str:
    """The schema (shape, axes, grid, time, planet parameters, splits, normalisation) and per-variable
    statistics over the shards, as text. The schema and shards are validated first."""
    schema = DatasetSchema.from_dir(data_dir)
    stats = dataset_statistics(data_dir, schema=schema)
    V, Z, Y, X = schema.cube_shape
    lines = [
        f"dataset: {os.fspath(data_dir)}",
        f"source: {schema.source}",
        f"format_version: {schema.format_version}",
        f"axes: ({', '.join(schema.axis_names)})",
        f"shape: V={V}, T=per series, Tg={schema.num_geological_steps}, Z={Z}, Y={Y}, X={X}",
        f"variables: {', '.join(f'{v} [{schema.units[v]}]' for v in schema.variable_names)}",
        f"levels: {_fmt_values(schema.level_values, schema.level_unit)}",
        f"lat: {_fmt_values(schema.lat_values, 'deg')}",
        f"lon: {_fmt_values(schema.lon_values, 'deg')}",
        f"climate time step: {schema.climate_time_step:g} {schema.climate_time_unit}",
        "climate times: "
        + (f"{schema.climate_time_units} ({schema.climate_time_calendar} calendar)" if schema.has_climate_times else "step indices"),
        "masked values: "
        + (", ".join(f"{v}: {n}" for v, n in schema.masked_values.items()) if schema.has_masked_values else "none"),
        f"geological time: {_fmt_values(schema.geological_time_values, schema.geological_time_unit)}",
        "planet parameters: "
        + (", ".join(f"{n} [{u}]" for n, u in zip(schema.planet_param_names, schema.planet_param_units)) or "none"),
        "planet regimes: "
        + (f"{', '.join(schema.planet_regime_names)} ({schema.planet_regime_rule})" if schema.has_regimes else "none"),
        f"split by: {schema.split_by}",
        "splits:",
    ]
    for split in schema.splits:
        lengths = schema.series_lengths(split)
        planets = schema.planet_ids(split)
        shown = ", ".join(planets[:6]) + (", ..." if len(planets) > 6 else "")
        lines.append(
            f"  {split}: {len(schema.splits[split])} shards, {len(lengths)} series, {len(planets)} planets "
            f"({shown}), {sum(lengths)} climate steps (n_time {min(lengths)}..{max(lengths)})"
        )
    lines.append("normalisation (train split; mean/std over levels):")
    for i, v in enumerate(schema.variable_names):
        mean = np.asarray(schema.norm_mean[i])
        std = np.asarray(schema.norm_std[i])
        lines.append(
            f"  {v}: mean {mean.min():.6g}..{mean.max():.6g}, std {std.min():.6g}..{std.max():.6g} {schema.units[v]}"
        )
    if schema.constant_statistics:
        lines.append(f"constant statistics (std stored as 1): {', '.join(schema.constant_statistics)}")
    lines.append("statistics over all shards:")
    lines.append(f"  {'variable':<12}{'unit':<12}{'min':>14}{'max':>14}{'mean':>14}{'std':>14}")
    for v, s in stats.items():
        lines.append(
            f"  {v:<12}{schema.units[v]:<12}{s['min']:>14.6g}{s['max']:>14.6g}{s['mean']:>14.6g}{s['std']:>14.6g}"
        )
    return "\n".join(lines)


__all__ = ["dataset_statistics", "describe_dataset"]
