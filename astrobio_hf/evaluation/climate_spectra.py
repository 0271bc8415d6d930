"""Held-out evaluation of the climate-spectra model (the two cross-modal tasks: spectra emulated from the cube alone,
climate fields retrieved from the spectra alone, beside the train-mean baseline and a ridge regression of the spectra
fitted in the same run; on WASP-43b the chi-squared against the observed phase spectra) and what a climate-spectra run
leaves for a person: metrics.json, plots and the model card."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from astrobio_hf.metrics import LatitudeWeightedRMSE, SSIMPerLevel
from astrobio_hf.metrics.baselines import fit_ridge
from astrobio_hf.models.climate_spectra import ClimateSpectraColumnHead

TASKS = ("climate", "spectrum")


def chi_squared_rows(pred: torch.Tensor, obs: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
    """chi^2 = sum over phases and wavelengths of ((pred - obs) / err)^2 for every sample: (..., P, W) -> (...)."""
    return (((pred.double() - obs) / err) ** 2).sum(dim=(-2, -1))


# ------------------------------------------------------------------------------------------------------
# Batch -> model mapping (what differs between families)
# ------------------------------------------------------------------------------------------------------
def model_inputs(batch: dict, device: torch.device, modalities: str = "both") -> dict:
    """The window's target frames and their spectra: the given modalities as inputs, both as targets."""
    cube = batch["labels"].to(device, non_blocking=True)  # (B, V, Tc, Tg, Z, Y, X)
    spectrum = batch["spectrum"].to(device, non_blocking=True)  # (B, Tc, P, W)
    return {
        "cube": cube if modalities in ("both", "cube") else None,
        "spectrum": spectrum if modalities in ("both", "spectrum") else None,
        "cube_labels": cube,
        "spectrum_labels": spectrum,
    }


# ------------------------------------------------------------------------------------------------------
# Ridge baseline: the spectra of every climate step from the area-weighted global-mean profile of every normalised
# cube channel (the features of a linear column pathway), fitted in closed form on the training windows
# ------------------------------------------------------------------------------------------------------
def profile_features(cube: torch.Tensor, model) -> torch.Tensor:
    """(B, V, Tc, Tg, Z, Y, X) physical cube -> (B*Tc, V*Tg*Z + 1): the global mean of every normalised channel
    (variable, geological step, level) per climate step with the column pathway's area weights, and a constant 1."""
    frames = model.encoder.normalize_cube(cube.double())
    weights = ClimateSpectraColumnHead.area_weights(model.config)[0].to(frames)  # (Y, X), cos(latitude), sum 1
    profile = torch.einsum("bvtgzyx,yx->btvgz", frames, weights).flatten(2).flatten(0, 1)  # (B*Tc, V*Tg*Z)
    return torch.cat([profile, torch.ones(profile.shape[0], 1, dtype=profile.dtype, device=profile.device)], dim=1)


def fit_spectrum_ridge(train_loader, val_loader, model, accelerator) -> dict:
    device = accelerator.device
    return fit_ridge(
        train_loader, val_loader, lambda b: profile_features(b["labels"].to(device), model),
        lambda b: model.encoder.normalize_spectrum(b["spectrum"].to(device).double()).flatten(2).flatten(0, 1),
        accelerator, name="spectrum ridge",
    )


def ridge_spectrum(ridge: dict, cube: torch.Tensor, model) -> torch.Tensor:
    """(B, Tc, P, W) spectra of the ridge baseline, the dataset's spectrum units."""
    config = model.config
    flat = profile_features(cube, model) @ ridge["weights"]  # (B*Tc, P*W), normalised
    spectra = flat.reshape(cube.shape[0], config.context_steps, config.num_phases, config.num_wavelengths)
    return spectra * model.encoder.spectrum_std.double() + model.encoder.spectrum_mean.double()


# ------------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------------
class SpectrumMetrics:
    """Spectral angle, NRMSE and R2 of predicted spectra (B, Tc, P, W), from sums reduced across processes.
    NRMSE and R2 are per wavelength (RMSE / std of the truth; 1 - SSE/SST), then averaged over wavelengths."""

    def __init__(self, num_wavelengths: int, device):
        self.sums = torch.zeros(4, num_wavelengths, dtype=torch.float64, device=device)  # n, sum t, sum t^2, sse
        self.angle = torch.zeros(2, dtype=torch.float64, device=device)  # sum of angles, count

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        p, t = preds.double().flatten(0, -2), target.double().flatten(0, -2)  # (N, W)
        self.sums += torch.stack([torch.ones_like(t).sum(0), t.sum(0), (t * t).sum(0), ((p - t) ** 2).sum(0)])
        cos = (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1)).clamp_min(1e-300)
        self.angle += torch.stack([torch.arccos(cos.clamp(-1, 1)).sum(), torch.tensor(float(len(cos)), device=cos.device, dtype=torch.float64)])

    def compute(self, accelerator) -> dict:
        sums = accelerator.reduce(self.sums, reduction="sum")
        angle = accelerator.reduce(self.angle, reduction="sum")
        n, st, st2, sse = sums
        sst = (st2 - st * st / n).clamp_min(1e-300)
        r2 = 1 - sse / sst
        nrmse = torch.sqrt(sse / sst)
        return {
            "spectral_angle_deg": math.degrees((angle[0] / angle[1]).item()),
            "nrmse": nrmse.mean().item(),
            "r2": r2.mean().item(),
            "r2_per_wavelength": r2.tolist(),
            "rmse_per_wavelength": torch.sqrt(sse / n).tolist(),
        }


@torch.no_grad()
def evaluate(model, loader, accelerator, with_ssim=False, max_batches=0, observations=None, ridge=None) -> dict:
    """Cross-modal evaluation: spectra from the cube alone, cube from the spectra alone (+ train-mean baselines,
    and the spectra of the `ridge` baseline when given)."""
    model.eval()
    config = model.config
    device = accelerator.device
    W = config.num_wavelengths
    emulation, baseline_spec, ridge_spec = (SpectrumMetrics(W, device) for _ in range(3))
    rmse = {k: LatitudeWeightedRMSE(config.lat_values, config.variable_names).to(device) for k in ("model", "baseline")}
    data_range = {v: 6.0 * float(torch.tensor(s).mean()) for v, s in zip(config.variable_names, config.norm_std)}
    kernel = min(7, config.num_lat - 1)
    kernel -= 1 - kernel % 2  # odd and smaller than Y
    ssim = SSIMPerLevel(config.variable_names, data_range, config.num_levels, kernel_size=kernel).to(device) if with_ssim else None
    # loss, samples, per-task losses, cross-modal losses (spectra from the cube, cube from the spectra; normalised MSE)
    sums = torch.zeros(5 + len(TASKS), device=device, dtype=torch.float64)
    chi2 = torch.zeros(4, device=device, dtype=torch.float64)  # sums over samples of chi2 (predicted, true, ridge), count
    if observations is not None:
        obs, err = observations["spectrum"].to(device), observations["error"].to(device)
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        full = model_inputs(batch, device)
        n = full["cube_labels"].shape[0]
        out = model(**full)
        sums[: 2 + len(TASKS)] += torch.stack([out.loss.double() * n, torch.tensor(float(n), device=device, dtype=torch.float64),
                             *(out.task_losses[t].double() * n for t in TASKS)])
        from_cube = model(cube=full["cube_labels"])  # spectra from the climate fields alone
        from_spectrum = model(spectrum=full["spectrum_labels"])  # climate fields retrieved from the spectra alone
        target_spec, target_cube = full["spectrum_labels"].float(), full["cube_labels"].float()
        enc = model.encoder
        sums[-3:] += n * torch.stack([
            F.mse_loss(enc.normalize_spectrum(from_cube.spectrum.float()), enc.normalize_spectrum(target_spec)).double(),
            F.mse_loss(enc.normalize_cube(from_spectrum.cube.float()), enc.normalize_cube(target_cube)).double(),
            enc.normalize_spectrum(target_spec).double().square().mean(),  # the train-mean spectrum's normalised MSE
        ])
        emulation.update(from_cube.spectrum.float(), target_spec)
        ridge_pred = ridge_spectrum(ridge, full["cube_labels"], model) if ridge is not None else None
        if ridge_pred is not None:
            ridge_spec.update(ridge_pred.float(), target_spec)
        if observations is not None:  # each sample's predicted and forward-model phase spectra vs the observations
            c_pred, c_true = chi_squared_rows(from_cube.spectrum, obs, err), chi_squared_rows(target_spec, obs, err)
            c_ridge = chi_squared_rows(ridge_pred, obs, err) if ridge_pred is not None else torch.zeros_like(c_pred)
            chi2 += torch.stack([c_pred.sum(), c_true.sum(), c_ridge.sum(), torch.tensor(float(c_pred.numel()), device=device, dtype=torch.float64)])
        baseline_spec.update(model.encoder.spectrum_mean.expand_as(target_spec), target_spec)
        retrieved = from_spectrum.cube.float()
        clim = (model.encoder.norm_mean[None, :, None, None, :, None, None]).expand_as(target_cube)
        rmse["model"].update(retrieved, target_cube)
        rmse["baseline"].update(clim, target_cube)
        if ssim is not None:
            ssim.update(retrieved, target_cube)
    sums = accelerator.reduce(sums, reduction="sum")
    result = {"loss": (sums[0] / sums[1]).item(), "samples": int(sums[1].item())}
    if observations is not None:
        result.update(gcm_chi_squared(model, observations, device))
        chi2 = accelerator.reduce(chi2, reduction="sum")
        result["wasp43b/chi2_test_predicted_mean"] = (chi2[0] / chi2[3]).item()
        result["wasp43b/chi2_test_forward_model_mean"] = (chi2[1] / chi2[3]).item()
        if ridge is not None:
            result["wasp43b/chi2_test_ridge_mean"] = (chi2[2] / chi2[3]).item()
    result.update({f"task_loss/{t}": (sums[2 + j] / sums[1]).item() for j, t in enumerate(TASKS)})
    result["cross_modal/spectrum_from_cube"] = (sums[-3] / sums[1]).item()
    result["cross_modal/climate_from_spectrum"] = (sums[-2] / sums[1]).item()
    # skill of the emulated spectra against the train-mean spectrum: 1 - MSE / MSE(train mean), in units of the
    # train std per wavelength (unlike R2, independent of how much the few test planets differ from each other)
    result["spectrum/skill_vs_train_mean"] = 1.0 - (sums[-3] / sums[-1]).item()
    result["cross_modal_loss"] = result["cross_modal/spectrum_from_cube"] + result["cross_modal/climate_from_spectrum"]
    result.update({f"spectrum/{k}": v for k, v in emulation.compute(accelerator).items()})
    result.update({f"baseline_spectrum/{k}": v for k, v in baseline_spec.compute(accelerator).items()})
    if ridge is not None:
        result.update({f"ridge_spectrum/{k}": v for k, v in ridge_spec.compute(accelerator).items()})
        result["ridge_spectrum/alpha"] = ridge["alpha"]
    for name, metric in rmse.items():
        for k, v in metric.compute().items():
            result[f"{'climate' if name == 'model' else 'baseline_climate'}/{k}"] = v.item()
    if ssim is not None:
        result.update({f"climate/{k}": v.item() for k, v in ssim.compute().items() if k.count("/") <= 1})
    model.train()
    return result


@torch.no_grad()
def gcm_chi_squared(model, observations: dict, device) -> dict:
    """Phase spectra predicted from the unperturbed GCM's cube: chi-squared against the observations (and
    against the forward model's spectrum of the same cube), beside the forward model's own chi-squared."""
    config = model.config
    cube = observations["gcm_cube"].to(device)  # (V, 1, 1, Z, Y, X): one climate step
    cube = cube.expand(config.num_variables, config.context_steps, *cube.shape[2:])[None]  # (1, V, Tc, Tg, Z, Y, X)
    pred = model(cube=cube).spectrum[0, 0].double()  # (P, W)
    obs, err = observations["spectrum"].to(device), observations["error"].to(device)
    n = observations["n_points"]
    return {
        "wasp43b/chi2_gcm_predicted": chi_squared_rows(pred, obs, err).item(),
        "wasp43b/chi2_gcm_forward_model": observations["gcm_chi_squared"],
        "wasp43b/chi2_gcm_predicted_vs_forward_model": chi_squared_rows(pred, observations["gcm_spectrum"].to(device), err).item(),
        "wasp43b/n_points": n,
        "wasp43b/gcm_predicted_spectrum": pred.cpu().tolist(),
    }


# ------------------------------------------------------------------------------------------------------
# Report: metrics.json, plots, model card
# ------------------------------------------------------------------------------------------------------
def plot_phase_spectra(path: Path, observations: dict, test: dict, config) -> None:
    """One panel per orbital phase: observed Fp/Fs with 1-sigma error bars, the unperturbed GCM's forward model and
    this model's prediction from the GCM cube."""
    import matplotlib.pyplot as plt

    phases, wl = observations["phases"], observations["wavelengths"]
    obs, err, gcm = observations["spectrum"], observations["error"], observations["gcm_spectrum"]
    pred = torch.tensor(test["wasp43b/gcm_predicted_spectrum"])
    cols = min(5, len(phases))
    rows = math.ceil(len(phases) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharex=True)
    for k, ax in enumerate(axes.flat):
        if k >= len(phases):
            ax.axis("off")
            continue
        ax.errorbar(wl, obs[k], yerr=err[k], fmt="o", ms=2.5, color="k", capsize=1.5, label="observed (HST/Spitzer)")
        ax.plot(wl, gcm[k], "s", ms=3, mfc="none", color="tab:blue", label="GCM forward model")
        ax.plot(wl, pred[k], "x", ms=4, color="tab:red", label="model, from the GCM cube")
        ax.set_title(f"phase {phases[k]:.1f} deg", fontsize=9)
        if k % cols == 0:
            ax.set_ylabel(f"Fp/Fs [{observations['units']}]", fontsize=8)
        if k >= (rows - 1) * cols:
            ax.set_xlabel("wavelength [micron]", fontsize=8)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(output_dir: Path, model, test: dict, state, schema, sample_loader, device, train_seconds, run_config,
                 observations: dict | None = None, throughput: dict | None = None) -> None:
    """metrics.json, plots (predicted vs true spectra with error bars, loss curve) and README.md (model card)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = output_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(
        {"test": test, "global_step": state.global_step, "train_seconds": train_seconds, "train_throughput": throughput,
         "history": state.history, "config": run_config},
        indent=2, default=float,
    ))
    config = model.config
    wl = torch.tensor(config.spectrum_wavelengths)
    samples = {}  # the first window of up to 3 different test planets: (cube, true spectra)
    for batch in sample_loader:
        for k, planet in enumerate(batch["planet_id"]):
            if len(samples) < 3 and planet not in samples:
                samples[planet] = (batch["labels"][k], batch["spectrum"][k])
        if len(samples) == 3:
            break
    cubes = torch.stack([cube for cube, _ in samples.values()])
    with torch.no_grad():
        pred = model(cube=cubes.to(device)).spectrum.float().cpu()  # (N, Tc, P, W)
    err = torch.tensor(test["spectrum/rmse_per_wavelength"])
    fig, axes = plt.subplots(1, len(samples), figsize=(13, 4), squeeze=False)
    for k, (ax, (planet, (_, true))) in enumerate(zip(axes[0], samples.items())):
        ax.plot(wl, true[0, 0], "k-", label="true (radiative model)")
        ax.errorbar(wl, pred[k, 0, 0], yerr=err, fmt="o", ms=3, capsize=2, label="predicted from the cube (+-test RMSE)")
        ax.set_xlabel("wavelength [micron]")
        ax.set_ylabel(f"spectrum [{config.spectrum_units}]")
        ax.set_title(str(planet))
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plots / "spectra_pred_vs_true.png", dpi=110)
    plt.close(fig)
    train_history = [h for h in state.history if "train/loss" in h]
    if train_history:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([h["step"] for h in train_history], [h["train/loss"] for h in train_history])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        fig.savefig(plots / "loss_curve.png", dpi=110)
        plt.close(fig)
    nan = float("nan")
    rows = [
        *((f"spectra from the cube: {label}", test[f"spectrum/{key}"], test[f"baseline_spectrum/{key}"], test.get(f"ridge_spectrum/{key}", nan))
          for label, key in (("spectral angle [deg]", "spectral_angle_deg"), ("NRMSE", "nrmse"), ("R2", "r2"))),
        ("spectra from the cube: skill vs the train-mean spectrum (1 - MSE/MSE_baseline)", test["spectrum/skill_vs_train_mean"], 0.0, nan),
        *((f"climate from the spectra: lat-weighted RMSE {v}", test[f"climate/rmse/{v}"], test[f"baseline_climate/rmse/{v}"], nan) for v in config.variable_names),
    ]
    if "climate/ssim" in test:
        rows.append(("climate from the spectra: SSIM (mean)", test["climate/ssim"], nan, nan))
    def cell(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.4g}"

    table = "\n".join(f"| {name} | {cell(m)} | {cell(b)} | {cell(r)} |" for name, m, b, r in rows)
    wasp = ""
    if observations is not None:
        plot_phase_spectra(plots / "phase_spectra_vs_observed.png", observations, test, config)
        n = test["wasp43b/n_points"]
        wasp = f"""
## WASP-43b: phase spectra against the HST/WFC3 + Spitzer observations (Stevenson et al. 2017)

chi-squared = sum over {len(observations['phases'])} phases x {len(observations['wavelengths'])} wavelengths ({n} points) of
((spectrum - observed) / error)^2.

| spectra | chi-squared | reduced (/ {n}) |
|---|---|---|
| forward model of the unperturbed GCM (observations.json) | {test['wasp43b/chi2_gcm_forward_model']:.1f} | {test['wasp43b/chi2_gcm_forward_model'] / n:.2f} |
| this model's prediction from the unperturbed GCM cube | {test['wasp43b/chi2_gcm_predicted']:.1f} | {test['wasp43b/chi2_gcm_predicted'] / n:.2f} |
| test samples (perturbed GCMs): forward model, mean | {test['wasp43b/chi2_test_forward_model_mean']:.1f} | {test['wasp43b/chi2_test_forward_model_mean'] / n:.2f} |
| test samples: this model's prediction from the cube, mean | {test['wasp43b/chi2_test_predicted_mean']:.1f} | {test['wasp43b/chi2_test_predicted_mean'] / n:.2f} |
| test samples: the ridge baseline's prediction from the cube, mean | {test.get('wasp43b/chi2_test_ridge_mean', nan):.1f} | {test.get('wasp43b/chi2_test_ridge_mean', nan) / n:.2f} |

The prediction from the unperturbed GCM cube differs from that cube's forward-model spectrum by chi-squared
{test['wasp43b/chi2_gcm_predicted_vs_forward_model']:.1f} (same errors): the emulation error in units of the observational errors.

![phase spectra](plots/phase_spectra_vs_observed.png)
"""
    card = f"""---
library_name: transformers
tags: [astrobiology, exoplanets, spectra, multi-task]
---
# climate-spectra

Multi-task model (`ClimateSpectraForMultiTask`): a cube encoder and a spectrum encoder share a fused latent per
climate step; heads predict the climate fields ({', '.join(config.variable_names)}) and the spectra
({config.num_phases} phase(s) x {config.num_wavelengths} wavelengths, {config.spectrum_units}). Column pathway:
{f"per-column emission network ({config.column_hidden_size} wide) summed over the disc" if config.column_pathway else "off"}.
Loss: task losses combined in mode `{config.loss_mode}`, + {config.cross_modal_weight:g} x cross-modal losses,
+ {config.consistency_weight:g} x consistency, + {config.smoothness_weight:g} x smoothness.

Data: `{schema.source}`; spectra: {schema.spectrum_model}

## Test results (held-out planets, {test['samples']} samples, EMA weights of the best checkpoint)

| metric | model | train-mean baseline | ridge baseline |
|---|---|---|---|
{table}

Ridge baseline: the spectra of every climate step regressed in closed form on the cos(latitude)-weighted global-mean
profile of every normalised cube channel, on the same training windows (penalty chosen on validation:
{test.get('ridge_spectrum/alpha', nan):g} x mean diagonal of X^T X).

Trained {state.global_step} optimizer steps in {train_seconds:.0f} s.

![spectra](plots/spectra_pred_vs_true.png)
{wasp}"""
    (output_dir / "README.md").write_text(card)
