"""Held-out evaluation of the datacube U-Net (forecast metrics of the model beside persistence and climatology,
reduced across processes) and what a datacube run leaves for a person: metrics.json, plots and the model card."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from astrobio_hf.evaluation.common import duration, machine, write_metrics_json
from astrobio_hf.hub import build_model_card, markdown_table
from astrobio_hf.hub.init_from import describe_origin
from astrobio_hf.hub.plots import plot_loss_curves
from astrobio_hf.metrics import ForecastMetrics
from astrobio_hf.models.datacube_unet import build_physics_constraints
from astrobio_hf.physics.grid import cell_area_weights

logger = logging.getLogger(__name__)

CONSTANT_KEYS = ("gravity", "gas_constant", "heat_capacity", "planet_radius")


# ------------------------------------------------------------------------------------------------------
# Batch -> model mapping (what differs between families)
# ------------------------------------------------------------------------------------------------------
def model_inputs(batch: dict, device: torch.device) -> dict:
    """Move a collated batch to the device and name the model's keyword inputs (physical units; with masked
    data also the validity masks; with calendar conditioning the year phase of the target steps)."""
    keys = ("inputs", "labels", "planet_params", *CONSTANT_KEYS, *(k for k in (*MASK_KEYS, "label_phase") if k in batch))
    return {k: batch[k].to(device, non_blocking=True) for k in keys}


MASK_KEYS = ("inputs_valid", "labels_valid")


def collate_with_calendar(examples, *, masked: bool, units: str | None = None, calendar: str | None = None) -> dict:
    """`collate_windows` plus, when ``units``/``calendar`` are given, ``label_phase`` (B, Tc) float32: the year
    fraction of every target step (the model's calendar conditioning)."""
    from astrobio_hf.data.schema import year_fraction
    from astrobio_hf.data.streaming import collate_windows

    batch = collate_windows(examples, masked=masked)
    if units and calendar:
        batch["label_phase"] = torch.from_numpy(year_fraction(batch["label_times"].numpy(), units, calendar)).float()
    return batch


# ------------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------------
@dataclass
class Climatology:
    """The climatology baselines of a run, computed from the training windows' targets.

    ``mean_field`` (V, 1, 1, Z, Y, X): the mean target per cell over all training windows (the training-mean
    field). ``by_period`` (K, V, Z, Y, X): when the time axis has a calendar and a monthly or daily step, the mean
    per calendar month (K = 12) or day of year (K = 366) of the training block, as WeatherBench2 computes its
    climatology; None otherwise. ``kind`` is "month", "day" or None; ``units``/``calendar`` are the CF time
    units and calendar used to place each target step in its period; ``empty_periods`` lists the periods no
    training step fell in (they use the mean field). With masked data both are means over valid values only
    (0 where a cell was never valid; such cells enter no metric).
    """

    mean_field: torch.Tensor
    by_period: torch.Tensor | None = None
    kind: str | None = None
    units: str | None = None
    calendar: str | None = None
    empty_periods: list[int] = field(default_factory=list)

    @property
    def calendar_aware(self) -> bool:
        return self.by_period is not None

    def periods(self, label_times: torch.Tensor) -> torch.Tensor:
        """(B, Tc) period index of every target step."""
        from astrobio_hf.data.schema import calendar_index

        idx = calendar_index(label_times.detach().cpu().numpy(), self.units, self.calendar, self.kind)
        return torch.as_tensor(np.asarray(idx), dtype=torch.long)

    def for_targets(self, batch: dict, like: torch.Tensor) -> torch.Tensor:
        """The climatology forecast of a batch's targets, ``like``'s shape (B, V, Tc, Tg, Z, Y, X)."""
        if self.by_period is None:
            return self.mean_field.unsqueeze(0).expand_as(like)
        k = self.periods(batch["label_times"]).to(self.by_period.device)  # (B, Tc)
        clim = self.by_period[k]  # (B, Tc, V, Z, Y, X)
        return clim.permute(0, 2, 1, 3, 4, 5).unsqueeze(3).expand_as(like)

    def mean_for_targets(self, like: torch.Tensor) -> torch.Tensor:
        return self.mean_field.unsqueeze(0).expand_as(like)

    def describe(self) -> str:
        if self.by_period is None:
            return "climatology is the training-mean field (the time axis has no calendar with a monthly or daily step)"
        what = "calendar month" if self.kind == "month" else "day of year"
        text = f"climatology is the training block's mean per {what} ({self.calendar} calendar), as WeatherBench2"
        if self.empty_periods:
            text += f"; {len(self.empty_periods)} {what}s without a training step use the training-mean field"
        return text + "; `train_mean` is the training-mean field"


@torch.no_grad()
def compute_climatology(loader, accelerator, schema=None) -> Climatology:
    """Climatology baselines from the training windows' targets (see :class:`Climatology`), reduced exactly
    across processes. ``schema`` gives the time axis (units, calendar, step): with a calendar and a monthly or
    daily step the climatology is per calendar month or day of year."""
    kind = None
    if schema is not None and getattr(schema, "climate_time_calendar", None):
        from astrobio_hf.data.schema import climate_time_kind

        kind = climate_time_kind(schema)
    n_periods = {"month": 12, "day": 366}.get(kind, 0)
    device = accelerator.device
    total = count = p_total = p_count = None
    climatology = Climatology(torch.zeros(0), kind=kind, units=getattr(schema, "climate_time_units", None),
                              calendar=getattr(schema, "climate_time_calendar", None))
    for batch in loader:
        labels = batch["labels"].to(device, dtype=torch.float64)  # (B, V, Tc, Tg, Z, Y, X)
        valid = batch["labels_valid"].to(device) if "labels_valid" in batch else torch.ones_like(labels, dtype=torch.bool)
        values = torch.where(valid, labels, 0.0)
        s, c = values.sum(dim=(0, 2, 3)), valid.sum(dim=(0, 2, 3)).double()  # (V, Z, Y, X)
        total, count = (s, c) if total is None else (total + s, count + c)
        if n_periods:
            k = climatology.periods(batch["label_times"]).to(device)  # (B, Tc)
            per_step = values.sum(dim=3).permute(0, 2, 1, 3, 4, 5).flatten(0, 1)  # (B*Tc, V, Z, Y, X)
            per_count = valid.sum(dim=3).permute(0, 2, 1, 3, 4, 5).flatten(0, 1).double()
            if p_total is None:
                p_total = torch.zeros((n_periods, *per_step.shape[1:]), dtype=torch.float64, device=device)
                p_count = torch.zeros_like(p_total)
            p_total.index_add_(0, k.flatten(), per_step)
            p_count.index_add_(0, k.flatten(), per_count)
    total = accelerator.reduce(total, reduction="sum")
    count = accelerator.reduce(count, reduction="sum")
    mean = torch.where(count > 0, total / count.clamp_min(1), 0.0)  # never-valid cells: 0, masked in every metric
    climatology.mean_field = mean.float()[:, None, None]  # (V, 1, 1, Z, Y, X): broadcasts over Tc, Tg
    if n_periods:
        p_total = accelerator.reduce(p_total, reduction="sum")
        p_count = accelerator.reduce(p_count, reduction="sum")
        seen = p_count.flatten(1).sum(1) > 0
        by_period = torch.where(p_count > 0, p_total / p_count.clamp_min(1), mean.unsqueeze(0))
        climatology.by_period = by_period.float()
        climatology.empty_periods = [int(i) for i in torch.nonzero(~seen).flatten()]
        if kind == "day":  # day 366 exists only in leap years; not worth a warning
            climatology.empty_periods = [i for i in climatology.empty_periods if i != 365]
        logger.info("%s", climatology.describe())
    return climatology


def ssim_unavailable(config, masked: bool) -> str | None:
    """Why SSIM is not computed on this grid (masked maps, a regional grid, a grid smaller than the window)."""
    if masked:
        return "the maps have masked cells"
    if not config.periodic_lon:
        return "the grid is regional (SSIM here wraps in longitude)"
    if config.num_lat <= 3 or config.num_lon < 3:
        return f"the grid ({config.num_lat} x {config.num_lon}) is smaller than the 7-point SSIM window"
    return None


@torch.no_grad()
def evaluate(model, loader, accelerator, climatology: Climatology, with_baselines=False, max_batches=0, masked=False) -> dict:
    """Validation/test pass with the unwrapped model (no DDP collectives inside, so per-rank batch
    counts may differ). Returns the mean loss terms and every forecast metric, reduced over processes.
    ``masked``: the batches carry validity masks; every metric and residual uses valid target values only."""
    model.eval()
    config = model.config
    physics = build_physics_constraints(config, weights={}).to(accelerator.device)  # residuals of every system
    # SSIM compares (Y, X) maps of one level; its data range per variable is 6 within-level standard
    # deviations (from the normalisation statistics), i.e. roughly the span of the values in one map.
    data_range = {v: 6.0 * float(torch.tensor(std).mean()) for v, std in zip(config.variable_names, config.norm_std)}
    ssim_ok = ssim_unavailable(config, masked) is None
    physics_names = physics.available() or None

    def make(include_ssim: bool) -> ForecastMetrics:
        return ForecastMetrics(
            config.lat_values, config.variable_names, data_range, len(config.level_values),
            physics_names=physics_names, include_ssim=include_ssim and ssim_ok,
        ).to(accelerator.device)

    # SSIM only in the final test (it dominates evaluation time); the truth needs its physics residuals only.
    systems = {"model": make(include_ssim=with_baselines)}
    if with_baselines:
        systems.update(persistence=make(True), climatology=make(True), truth=make(False))
        if climatology.calendar_aware:
            systems["train_mean"] = make(True)
    sums = torch.zeros(3, device=accelerator.device, dtype=torch.float64)  # loss, nll, samples
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        inputs = model_inputs(batch, accelerator.device)
        with accelerator.autocast():
            out = model(**inputs)
        n = inputs["inputs"].shape[0]
        sums += torch.stack([out.loss.double() * n, out.nll.double() * n, torch.tensor(n, device=sums.device, dtype=torch.float64)])
        target = inputs["labels"]
        valid = inputs.get("labels_valid")
        constants = {k: inputs[k] for k in CONSTANT_KEYS}
        clim = climatology.for_targets(batch, target).to(target.device)  # the ACC reference, per target step
        forecasts = {"model": out.mean.float()}
        if with_baselines:
            forecasts["persistence"] = inputs["inputs"][:, :, -1:].expand_as(target)  # the last context frame
            forecasts["climatology"] = clim
            forecasts["truth"] = target
            if climatology.calendar_aware:
                forecasts["train_mean"] = climatology.mean_for_targets(target).to(target.device)
        for system, forecast in forecasts.items():
            residuals = None
            if physics_names:
                residuals = {k: v.float() for k, v in physics.residuals(forecast, **constants, valid=valid).items()}
            systems[system].update(forecast, target, clim, physics_residuals=residuals, valid=valid)
    sums = accelerator.reduce(sums, reduction="sum")
    result = {"loss": (sums[0] / sums[2]).item(), "nll": (sums[1] / sums[2]).item(), "samples": int(sums[2].item())}
    for system, metric in systems.items():
        for key, value in metric.compute().items():
            result[f"{system}/{key}"] = value
    model.train()
    return result


# ------------------------------------------------------------------------------------------------------
# Report: metrics.json, plots, model card
# ------------------------------------------------------------------------------------------------------
SYSTEMS = ("model", "persistence", "climatology", "train_mean")


def _metric(test: dict, system: str, name: str, variable: str) -> float:
    return float(test.get(f"{system}/{name}/{variable}", float("nan")))


def plot_maps(config, inputs, truth, pred, path: Path, level: int = 0, lead: int = -1, valid=None) -> None:
    """True / predicted / error maps of one level for every variable (sample 0, geological epoch 0); masked
    cells (``valid`` False) are left blank."""
    if valid is not None:
        truth = torch.where(valid, truth, float("nan"))
        pred = torch.where(valid, pred, float("nan"))
    names = config.variable_names
    units = config.variable_units or [""] * len(names)
    lon, lat = np.asarray(config.lon_values), np.asarray(config.lat_values)
    fig, axes = plt.subplots(len(names), 3, figsize=(12, 2.4 * len(names)), squeeze=False)
    for v, name in enumerate(names):
        t = truth[0, v, lead, 0, level].cpu().numpy()
        p = pred[0, v, lead, 0, level].cpu().numpy()
        lo, hi = float(min(np.nanmin(t), np.nanmin(p))), float(max(np.nanmax(t), np.nanmax(p)))
        for col, (values, title, cmap, vmin, vmax) in enumerate(
            [(t, "true", "viridis", lo, hi), (p, "predicted", "viridis", lo, hi)]
        ):
            im = axes[v, col].pcolormesh(lon, lat, values, cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest")
            axes[v, col].set_title(f"{name} [{units[v]}] {title}", fontsize=9)
            fig.colorbar(im, ax=axes[v, col], fraction=0.046)
        err = p - t
        m = float(np.nanmax(np.abs(err))) or 1.0
        im = axes[v, 2].pcolormesh(lon, lat, err, cmap="RdBu_r", vmin=-m, vmax=m, shading="nearest")
        axes[v, 2].set_title(f"{name} error (pred - true)", fontsize=9)
        fig.colorbar(im, ax=axes[v, 2], fraction=0.046)
        for ax in axes[v]:
            ax.set_ylabel("lat [deg]", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("lon [deg]", fontsize=8)
    level_value = config.level_values[level]
    fig.suptitle(f"Test window, level {level_value:g} {config.level_unit}, lead step {lead % config.context_steps + 1}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_temperature_profile(
    config, inputs, truth, pred, path: Path, lapse_rates: dict | None = None, lead: int = -1, valid=None
) -> None:
    """Left: the temperature profile of one column (the valid column nearest the equator): truth, model,
    persistence. Right: the error of the area-weighted mean profile over valid cells, model and persistence.
    The title gives the mean lapse rate (K/km) of the true and forecast fields."""
    if "T" not in config.variable_names or config.num_levels < 2:  # a profile needs levels
        return
    v = config.variable_names.index("T")
    lat = torch.tensor(config.lat_values, dtype=torch.float64)
    ok = valid[0, v, lead, 0].all(dim=0) if valid is not None else torch.ones(len(lat), len(config.lon_values), dtype=torch.bool)
    if not bool(ok.any()):
        return
    w = torch.from_numpy(cell_area_weights(config.lat_values))[:, None] * ok  # (Y, X)
    distance = torch.where(ok, lat.abs()[:, None].expand_as(ok), torch.inf)
    j, i = divmod(int(torch.argmin(distance)), ok.shape[1])

    def global_mean(x):  # (Z, Y, X) -> (Z,)
        return (torch.where(ok, x.double(), 0.0) * w).sum(dim=(-1, -2)).numpy() / float(w.sum())

    z = np.asarray(config.level_values)
    t, p, pers = truth[0, v, lead, 0], pred[0, v, lead, 0], inputs[0, v, -1, 0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.8), sharey=True)
    left.plot(t[:, j, i].numpy(), z, "k-o", label="truth")
    left.plot(p[:, j, i].numpy(), z, "C0--s", label="model")
    left.plot(pers[:, j, i].numpy(), z, "C1:^", label="persistence")
    left.set_xlabel(f"T [K] at lat {config.lat_values[j]:.1f}, lon {config.lon_values[i]:.0f}")
    left.set_ylabel(f"level [{config.level_unit}]")
    left.legend()
    right.axvline(0, color="k", lw=0.8)
    right.plot(global_mean(p) - global_mean(t), z, "C0--s", label="model - truth")
    right.plot(global_mean(pers) - global_mean(t), z, "C1:^", label="persistence - truth")
    right.set_xlabel(f"{'global' if config.periodic_lon else 'area'}-mean T error [K]")
    right.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if config.level_unit == "Pa":
            ax.invert_yaxis()
    title = "Temperature profile, test window"
    if lapse_rates:
        title += f" (mean lapse rate: truth {lapse_rates['truth']:.2f} K/km, model {lapse_rates['model']:.2f} K/km)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean_lapse_rates(model, batch, pred) -> dict | None:
    """Mean lapse rate (K/km) of the true and the forecast fields of the plotted batch (valid cells only)."""
    physics = build_physics_constraints(model.config, weights={})
    if "lapse_rate" not in physics.available():
        return None
    constants = {k: batch[k] for k in ("gravity", "gas_constant", "heat_capacity", "planet_radius")}
    valid = batch.get("labels_valid")
    key = "mean_lapse_rate_K_per_km"
    return {
        "truth": float(physics.diagnostics(batch["labels"], **constants, valid=valid)[key][0]),
        "model": float(physics.diagnostics(pred, **constants, valid=valid)[key][0]),
    }


def data_notes(config, schema, climatology: Climatology | None = None) -> list[str]:
    """What was done to the data on its way to the model, one sentence each, for the log and the card: grid
    padding, longitude wrap, masked values, constraints that cannot be computed, unit overrides and renames,
    the time axis, the climatology baseline."""
    from astrobio_hf.physics.constraints import CONSTRAINT_NAMES, unavailable_reason

    notes = []
    (Yp, Xp), Y, X = config.padded_shape, config.num_lat, config.num_lon
    if (Yp, Xp) != (Y, X):
        notes.append(
            f"The {Y} x {X} grid is padded to {Yp} x {Xp} inside the network (a multiple of 2**depth = {2**config.depth}; "
            f"latitude by edge replication, longitude by {'wrapping around' if config.periodic_lon else 'edge replication'}) "
            "and cropped back before the output: no padded cell enters the loss or a metric."
        )
    lat = config.lat_values
    if abs(abs(lat[0]) - 90) < 1e-6 or abs(abs(lat[-1]) - 90) < 1e-6:
        notes.append("The grid includes the poles: area weights are cell areas (the pole rows are polar caps) and the zonal metric there is its finite cell-area form.")
    if not config.periodic_lon:
        notes.append(f"The grid is regional (longitudes {config.lon_values[0]:g} .. {config.lon_values[-1]:g}): convolutions and zonal derivatives do not wrap around.")
    masked = getattr(schema, "masked_values", None) or {}
    if any(masked.values()):
        per_var = ", ".join(f"{v}: {n}" for v, n in masked.items() if n)
        notes.append(
            f"Masked values (NaN from a mask or _FillValue) are carried as a validity mask ({per_var} values): the model "
            "sees the per-level mean there, and the NLL, the physics terms and every metric use valid values only; SSIM is not computed."
        )
    skipped = {}
    for name in CONSTRAINT_NAMES:
        reason = unavailable_reason(name, config.variable_names, config.level_unit, config.num_levels, (config.num_lat, config.num_lon))
        if reason:
            skipped[name] = reason
    if skipped:
        notes.append("Constraints not computed on this data: " + "; ".join(f"`{n}` {r}" for n, r in skipped.items()) + ".")
    ingest = (getattr(schema, "extra", None) or {}).get("ingest", {})
    for var, change in (ingest.get("unit_overrides") or {}).items():
        notes.append(f"Units of `{var}` overridden at ingest: the files said {change.get('file_units')!r}, {change.get('used')!r} was used.")
    for old, new in (ingest.get("renames") or {}).items():
        notes.append(f"Variable `{old}` was renamed `{new}` at ingest.")
    if str(ingest.get("time_decoding", "")).startswith("failed"):
        notes.append(f"The time axis could not be decoded ({ingest['time_decoding']}).")
    scalar = ingest.get("scalar_coordinates") or {}
    if scalar:
        per_var = ", ".join(f"{var} at {', '.join(f'{c} {v}' for c, v in coords.items())}" for var, coords in scalar.items())
        notes.append(
            f"Surface fields at different heights were merged onto one level ({per_var}); the level axis holds "
            f"{config.level_values[0]:g} {config.level_unit}, the heights are in schema.json (extra.ingest.scalar_coordinates)."
        )
    if climatology is not None:
        notes.append(climatology.describe()[0].upper() + climatology.describe()[1:] + ".")
    if getattr(config, "calendar_conditioning", False):
        notes.append(f"The model is told the position in the {schema.climate_time_calendar} calendar year of every forecast step (FiLM conditioning on its sine and cosine).")
    return notes


def write_report(
    output_dir, model, test, state, schema, *, sample_loader, climatology, device, train_seconds, throughput, run_config, init_origin=None
):
    output_dir = Path(output_dir)
    plots = output_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    config = model.config
    names = config.variable_names

    # 1. metrics.json: everything the test pass computed, plus run facts and what was done to the data.
    write_metrics_json(
        output_dir, test, state, train_seconds=train_seconds, throughput=throughput, run_config=run_config,
        init_origin=init_origin, data_notes=data_notes(config, schema, climatology),
    )

    # 2. Plots.
    plot_loss_curves(state.history, plots / "loss_curves.png", title="Datacube U-Net training", ylabel="loss (Gaussian NLL + physics)")
    batch = next(iter(sample_loader))
    with torch.no_grad():
        out = model(**model_inputs(batch, device))
    valid = batch.get("labels_valid")
    plot_maps(config, batch["inputs"], batch["labels"], out.mean.float().cpu(), plots / "maps_level0.png", valid=valid)
    lapse = _mean_lapse_rates(model, batch, out.mean.float().cpu())
    (plots / "temperature_profile.png").unlink(missing_ok=True)  # not drawn without T on 2+ levels: no stale copy
    plot_temperature_profile(
        config, batch["inputs"], batch["labels"], out.mean.float().cpu(), plots / "temperature_profile.png", lapse, valid=valid
    )

    # 3. Model card with the test metrics table.
    systems = [s for s in SYSTEMS if f"{s}/rmse" in test]
    quality = [m for m in ("acc", "r2", "nrmse", "ssim") if f"model/{m}" in test]
    rows = []
    for v in names:
        rows.append([v] + [_metric(test, s, "rmse", v) for s in systems] + [_metric(test, "model", m, v) for m in quality])
    table = markdown_table(
        ["variable", *(f"RMSE {s.replace('_', ' ')}" for s in systems), *(m.upper() if m != "r2" else "R2" for m in quality)], rows
    )
    beats = {v: _metric(test, "model", "rmse", v) < min(_metric(test, s, "rmse", v) for s in systems if s != "model") for v in names}
    notes = data_notes(config, schema, climatology)
    physics_names = sorted({k.split("/", 2)[2] for k in test if k.startswith("model/physics/")})  # model/physics/<name>
    physics_rows = [[n, float(test.get(f"truth/physics/{n}", float("nan"))), float(test[f"model/physics/{n}"])] for n in physics_names]
    physics_table = markdown_table(["constraint (dimensionless mean square)", "ground truth", "model"], physics_rows)
    units = dict(zip(names, config.variable_units or [""] * len(names)))
    card = build_model_card(
        model_name="datacube-unet",
        summary=(
            "A 5-D climate datacube U-Net (`DatacubeUNetForForecast`, astrobio-hf) that forecasts the next "
            f"{config.context_steps} climate steps of {', '.join(names)} on {len(config.level_values)} levels x "
            f"{len(config.lat_values)} lat x {len(config.lon_values)} lon for {config.geological_steps} geological epochs, "
            "conditioned on planet parameters, with a Gaussian mean and log-variance per variable."
        ),
        sections={
            "Test metrics": (
                (
                    f"Held-out test planets ({test.get('samples', 0)} windows)"
                    if getattr(schema, "split_by", "planet") == "planet"
                    else f"Held-out test block, later in time than the training and validation blocks ({test.get('samples', 0)} windows)"
                )
                + ", EMA weights of the best validation checkpoint. "
                "Latitude-weighted RMSE (WeatherBench2 area weights) in physical units "
                + ", ".join(f"{v} [{units[v]}]" for v in names)
                + "; persistence repeats the last context frame; "
                + (climatology.describe() if climatology is not None else "climatology is the training-set mean field")
                + ".\n\n"
                + table
                + f"\n\nThe model beats every baseline on: {', '.join(v for v, b in beats.items() if b) or 'none'}"
                + (f"; not on: {', '.join(v for v, b in beats.items() if not b)}." if not all(beats.values()) else ".")
            ),
            "Physics residuals": (
                "Residuals of the named constraints (astrobio_hf.physics), dimensionless mean squares, on the model's "
                "forecasts beside those of the true fields:\n\n" + physics_table
                + (
                    f"\n\nMean lapse rate of the plotted test window: truth {lapse['truth']:.2f} K/km, model "
                    f"{lapse['model']:.2f} K/km."
                    if lapse else ""
                )
            ),
            "Data": "\n".join(f"- {n}" for n in notes) if notes else "The data needed no padding, masking or conversion.",
            "Training": (
                f"{state.global_step} optimizer steps in {duration(train_seconds)} on {machine()}; data `{run_config.get('data_dir')}` "
                f"({schema.source if hasattr(schema, 'source') else ''}); loss = Gaussian NLL + weighted physics terms "
                f"{json.dumps(config.physics_weights)}. "
                + (describe_origin(init_origin) + " " if init_origin else "")
                + "Full configuration in `metrics.json`."
            ),
            "How to use": (
                "```python\nimport astrobio_hf  # registers the Auto classes\nfrom transformers import AutoModel\n"
                f"model = AutoModel.from_pretrained(\"{output_dir}\")\n"
                "out = model(inputs=cube, planet_params=params)  # cube: (B, V, Tc, Tg, Z, Y, X) in SI units\n"
                "out.mean, out.log_variance\n```"
            ),
            "Plots": "\n\n".join(
                f"![{alt}](plots/{name})" for alt, name in
                (("loss", "loss_curves.png"), ("maps", "maps_level0.png"), ("profile", "temperature_profile.png"))
                if (plots / name).is_file()
            ),
            "Limitations": (
                (
                    "Trained on a synthetic planet ensemble (seasonal cycle, travelling wave, weather noise; hydrostatic and "
                    "ideal-gas consistent by construction). It has not seen GCM output; fine-tune on ingested NetCDF before "
                    "using it on a real model's climate."
                )
                if "synth" in str(getattr(schema, "source", ""))
                else (
                    f"Trained on one source ({getattr(schema, 'source', '')}); the test block is later in time than the "
                    "training block of the same run, so it measures forecasts within that model's climate, not transfer to "
                    "another model or to observations."
                )
            ),
        },
        eval_results=[("rmse", f"lat-weighted RMSE {v}", _metric(test, "model", "rmse", v)) for v in names],
        tags=["climate", "datacube", "exoplanets"],
    )
    card.save(str(output_dir / "README.md"))
    logger.info("wrote %s, metrics.json and plots/", output_dir / "README.md")
