"""Held-out evaluation of the datacube U-Net (forecast metrics of the model beside persistence and climatology,
reduced across processes) and what a datacube run leaves for a person: metrics.json, plots and the model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from astrobio_hf.hub import build_model_card, markdown_table
from astrobio_hf.hub.init_from import describe_origin
from astrobio_hf.hub.plots import plot_loss_curves
from astrobio_hf.metrics import ForecastMetrics
from astrobio_hf.models.datacube_unet import build_physics_constraints

logger = logging.getLogger(__name__)

CONSTANT_KEYS = ("gravity", "gas_constant", "heat_capacity", "planet_radius")


# ------------------------------------------------------------------------------------------------------
# Batch -> model mapping (what differs between families)
# ------------------------------------------------------------------------------------------------------
def model_inputs(batch: dict, device: torch.device) -> dict:
    """Move a collated batch to the device and name the model's keyword inputs (physical units)."""
    keys = ("inputs", "labels", "planet_params", *CONSTANT_KEYS)
    return {k: batch[k].to(device, non_blocking=True) for k in keys}


# ------------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def compute_climatology(loader, accelerator) -> torch.Tensor:
    """Mean target field per (variable, level, lat, lon) over the training windows: the climatology
    baseline and the reference for the anomaly correlation. Reduced exactly across processes."""
    total, count = None, torch.zeros((), device=accelerator.device, dtype=torch.float64)
    for batch in loader:
        labels = batch["labels"].to(accelerator.device, dtype=torch.float64)  # (B, V, Tc, Tg, Z, Y, X)
        s = labels.sum(dim=(0, 2, 3))  # (V, Z, Y, X)
        total = s if total is None else total + s
        count += labels.shape[0] * labels.shape[2] * labels.shape[3]
    total = accelerator.reduce(total, reduction="sum")
    count = accelerator.reduce(count, reduction="sum")
    return (total / count).float()[:, None, None]  # (V, 1, 1, Z, Y, X): broadcasts over Tc, Tg


@torch.no_grad()
def evaluate(model, loader, accelerator, climatology, with_baselines=False, max_batches=0) -> dict:
    """Validation/test pass with the unwrapped model (no DDP collectives inside, so per-rank batch
    counts may differ). Returns the mean loss terms and every forecast metric, reduced over processes."""
    model.eval()
    config = model.config
    physics = build_physics_constraints(config, weights={}).to(accelerator.device)  # residuals of every system
    # SSIM compares (Y, X) maps of one level; its data range per variable is 6 within-level standard
    # deviations (from the normalisation statistics), i.e. roughly the span of the values in one map.
    data_range = {v: 6.0 * float(torch.tensor(std).mean()) for v, std in zip(config.variable_names, config.norm_std)}
    def make(include_ssim: bool) -> ForecastMetrics:
        return ForecastMetrics(
            config.lat_values, config.variable_names, data_range, len(config.level_values),
            physics_names=physics.available(), include_ssim=include_ssim,
        ).to(accelerator.device)

    # SSIM only in the final test (it dominates evaluation time); the truth needs its physics residuals only.
    systems = {"model": make(include_ssim=with_baselines)}
    if with_baselines:
        systems.update(persistence=make(True), climatology=make(True), truth=make(False))
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
        constants = {k: inputs[k] for k in CONSTANT_KEYS}
        clim = climatology.unsqueeze(0).expand_as(target)
        forecasts = {"model": out.mean.float()}
        if with_baselines:
            forecasts["persistence"] = inputs["inputs"][:, :, -1:].expand_as(target)  # the last context frame
            forecasts["climatology"] = clim
            forecasts["truth"] = target
        for system, forecast in forecasts.items():
            residuals = {k: v.float() for k, v in physics.residuals(forecast, **constants).items()}
            systems[system].update(forecast, target, clim, physics_residuals=residuals)
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
SYSTEMS = ("model", "persistence", "climatology")


def _metric(test: dict, system: str, name: str, variable: str) -> float:
    return float(test.get(f"{system}/{name}/{variable}", float("nan")))


def plot_maps(config, inputs, truth, pred, path: Path, level: int = 0, lead: int = -1) -> None:
    """True / predicted / error maps of one level for every variable (sample 0, geological epoch 0)."""
    names = config.variable_names
    units = config.variable_units or [""] * len(names)
    lon, lat = np.asarray(config.lon_values), np.asarray(config.lat_values)
    fig, axes = plt.subplots(len(names), 3, figsize=(12, 2.4 * len(names)), squeeze=False)
    for v, name in enumerate(names):
        t = truth[0, v, lead, 0, level].cpu().numpy()
        p = pred[0, v, lead, 0, level].cpu().numpy()
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        for col, (field, title, cmap, vmin, vmax) in enumerate(
            [(t, "true", "viridis", lo, hi), (p, "predicted", "viridis", lo, hi)]
        ):
            im = axes[v, col].pcolormesh(lon, lat, field, cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest")
            axes[v, col].set_title(f"{name} [{units[v]}] {title}", fontsize=9)
            fig.colorbar(im, ax=axes[v, col], fraction=0.046)
        err = p - t
        m = float(np.abs(err).max()) or 1.0
        im = axes[v, 2].pcolormesh(lon, lat, err, cmap="RdBu_r", vmin=-m, vmax=m, shading="nearest")
        axes[v, 2].set_title(f"{name} error (pred - true)", fontsize=9)
        fig.colorbar(im, ax=axes[v, 2], fraction=0.046)
        for ax in axes[v]:
            ax.set_ylabel("lat [deg]", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("lon [deg]", fontsize=8)
    level_value = config.level_values[level]
    fig.suptitle(f"Test planet, level {level_value:g} {config.level_unit}, lead step {lead % config.context_steps + 1}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_temperature_profile(config, inputs, truth, pred, path: Path, lapse_rates: dict | None = None, lead: int = -1) -> None:
    """Left: the temperature profile of one column (equator, first longitude): truth, model, persistence.
    Right: the error of the area-weighted global-mean profile, model and persistence. The title gives the
    mean lapse rate (K/km) of the true and forecast fields."""
    if "T" not in config.variable_names:
        return
    v = config.variable_names.index("T")
    lat = torch.tensor(config.lat_values, dtype=torch.float64)
    w = torch.cos(torch.deg2rad(lat))[:, None]
    w = w / w.mean()
    j = int(torch.argmin(lat.abs()))

    def global_mean(x):  # (Z, Y, X) -> (Z,)
        return (x.double() * w).mean(dim=(-1, -2)).numpy()

    z = np.asarray(config.level_values)
    t, p, pers = truth[0, v, lead, 0], pred[0, v, lead, 0], inputs[0, v, -1, 0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4.8), sharey=True)
    left.plot(t[:, j, 0].numpy(), z, "k-o", label="truth")
    left.plot(p[:, j, 0].numpy(), z, "C0--s", label="model")
    left.plot(pers[:, j, 0].numpy(), z, "C1:^", label="persistence")
    left.set_xlabel(f"T [K] at lat {config.lat_values[j]:.1f}, lon {config.lon_values[0]:.0f}")
    left.set_ylabel(f"level [{config.level_unit}]")
    left.legend()
    right.axvline(0, color="k", lw=0.8)
    right.plot(global_mean(p) - global_mean(t), z, "C0--s", label="model - truth")
    right.plot(global_mean(pers) - global_mean(t), z, "C1:^", label="persistence - truth")
    right.set_xlabel("global-mean T error [K]")
    right.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if config.level_unit == "Pa":
            ax.invert_yaxis()
    title = "Temperature profile, test planet"
    if lapse_rates:
        title += f" (mean lapse rate: truth {lapse_rates['truth']:.2f} K/km, model {lapse_rates['model']:.2f} K/km)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _machine() -> str:
    """The hardware a run trained on, for the card: GPU name or CPU model and core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, CPU only)"


def _mean_lapse_rates(model, batch, pred) -> dict | None:
    """Mean lapse rate (K/km) of the true and the forecast fields of the plotted batch."""
    physics = build_physics_constraints(model.config, weights={})
    if "lapse_rate" not in physics.available():
        return None
    constants = {k: batch[k] for k in ("gravity", "gas_constant", "heat_capacity", "planet_radius")}
    key = "mean_lapse_rate_K_per_km"
    return {
        "truth": float(physics.diagnostics(batch["labels"], **constants)[key][0]),
        "model": float(physics.diagnostics(pred, **constants)[key][0]),
    }


def write_report(
    output_dir, model, test, state, schema, *, sample_loader, climatology, device, train_seconds, throughput, run_config, init_origin=None
):
    output_dir = Path(output_dir)
    plots = output_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    config = model.config
    names = config.variable_names

    # 1. metrics.json: everything the test pass computed, plus run facts.
    payload = {
        "test": test,
        "global_step": state.global_step,
        "train_seconds": train_seconds,
        "train_throughput": throughput,
        "skipped_steps": state.skipped_steps,
        "history": state.history,
        "config": run_config,
        "init_from": init_origin,  # where the starting weights came from (--init_from), or null
    }
    (output_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))

    # 2. Plots.
    plot_loss_curves(state.history, plots / "loss_curves.png", title="Datacube U-Net training", ylabel="loss (Gaussian NLL + physics)")
    batch = next(iter(sample_loader))
    with torch.no_grad():
        keys = ("inputs", "labels", "planet_params", "gravity", "gas_constant", "heat_capacity", "planet_radius")
        out = model(**{k: batch[k].to(device) for k in keys})
    plot_maps(config, batch["inputs"], batch["labels"], out.mean.float().cpu(), plots / "maps_level0.png")
    lapse = _mean_lapse_rates(model, batch, out.mean.float().cpu())
    plot_temperature_profile(config, batch["inputs"], batch["labels"], out.mean.float().cpu(), plots / "temperature_profile.png", lapse)

    # 3. Model card with the test metrics table.
    rows = []
    for v in names:
        rows.append([v] + [_metric(test, s, "rmse", v) for s in SYSTEMS] + [_metric(test, "model", m, v) for m in ("acc", "r2", "nrmse", "ssim")])
    table = markdown_table(
        ["variable", "RMSE model", "RMSE persistence", "RMSE climatology", "ACC", "R2", "NRMSE", "SSIM"], rows
    )
    beats = {
        v: _metric(test, "model", "rmse", v) < min(_metric(test, "persistence", "rmse", v), _metric(test, "climatology", "rmse", v))
        for v in names
    }
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
                f"Held-out test planets ({test.get('samples', 0)} windows), EMA weights of the best validation checkpoint. "
                "Latitude-weighted RMSE (WeatherBench2 area weights) in physical units "
                + ", ".join(f"{v} [{units[v]}]" for v in names)
                + "; persistence repeats the last context frame, climatology is the training-set mean field.\n\n"
                + table
                + f"\n\nThe model beats both baselines on: {', '.join(v for v, b in beats.items() if b) or 'none'}"
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
            "Training": (
                f"{state.global_step} optimizer steps in {_duration(train_seconds)} on {_machine()}; data `{run_config.get('data_dir')}` "
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
            "Plots": "![loss](plots/loss_curves.png)\n\n![maps](plots/maps_level0.png)\n\n![profile](plots/temperature_profile.png)",
            "Limitations": (
                "Trained on a synthetic planet ensemble (seasonal cycle, travelling wave, weather noise; hydrostatic and "
                "ideal-gas consistent by construction). It has not seen GCM output; fine-tune on ingested NetCDF before "
                "using it on a real model's climate."
            ),
        },
        eval_results=[("rmse", f"lat-weighted RMSE {v}", _metric(test, "model", "rmse", v)) for v in names],
        tags=["climate", "datacube", "exoplanets"],
    )
    card.save(str(output_dir / "README.md"))
    logger.info("wrote %s, metrics.json and plots/", output_dir / "README.md")
