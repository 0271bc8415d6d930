"""Train the climate + spectra multi-task model with Accelerate on streamed Parquet shards with spectra.

    accelerate launch recipes/train_climate_spectra.py [recipes/configs/climate_spectra/<name>.yaml] [--key value ...]

With no arguments it uses the planet population in data/planets (the embedded default of the planet-level families:
96 synthetic planets with spectra and regime labels, 8 climate steps each; synthesised on first use, ~30 s), trains, then evaluates the EMA weights of the best checkpoint on the held-out test
planets and writes to runs/climate_spectra: config.json, model.safetensors, README.md (model card), metrics.json,
plots/ (predicted vs true spectra with error bars, loss curves), logs/ and checkpoints/.

    accelerate launch recipes/train_climate_spectra.py recipes/configs/climate_spectra/wasp43b.yaml

trains on WASP-43b instead: (perturbed GCM cube, phase-resolved Fp/Fs) pairs built into data/wasp43b on first use
by astrobio_hf.data.spectra (nemesispy's GCM and forward model, ~5 s per sample; only this build step and the
unperturbed GCM's cube, gcm_cube.npy, import nemesispy); the test metrics then add chi-squared of the predicted
phase spectra against the observed HST/Spitzer spectra (from the unperturbed GCM's cube and per test sample),
beside the forward model's own, and the card a predicted-vs-observed phase-spectrum plot with error bars.

A sample is Tc consecutive climate frames (B, V, Tc, Tg, Z, Y, X) and their spectra (B, Tc, P, W): the windows of
`build_window_dataset(..., forecast=False)` (every step of a series, also the n_time = 1 WASP-43b samples). Every training
micro-batch gives the model both modalities, or (with probability `modality_dropout`, half each) only the cube or
only the spectra; both heads are always trained. Evaluation measures the two cross-modal tasks: spectra predicted
from the cube alone (emulation of the radiative model: spectral angle, NRMSE, R2) and climate fields retrieved
from the spectra alone (latitude-weighted RMSE, SSIM), against the train-mean baseline.
The best checkpoint is picked on the validation cross-modal loss (normalised MSE of both cross-modal tasks), not on
the multi-task training loss, whose learned uncertainty weights keep lowering it whatever the tasks do.

Order (DESIGN.md section 4): Accelerator; logging; data schema; config and model; EMA; optimizer; dataset; lr
schedule; prepare; resume; loop; save_pretrained; card; end.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    set_seed,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.streaming import (
    build_window_dataset,
    collate_windows,
    count_windows,
)
from astrobio_hf.data.synth import (
    PLANET_POPULATION,
    PLANET_POPULATION_DIR,
    ensure_planet_population,
)
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.hub.training_push import HubPusher
from astrobio_hf.metrics import LatitudeWeightedRMSE, SSIMPerLevel
from astrobio_hf.metrics.baselines import fit_ridge
from astrobio_hf.models.climate_spectra import (
    ClimateSpectraColumnHead,
    ClimateSpectraConfig,
    ClimateSpectraForMultiTask,
)
from astrobio_hf.training import (
    CheckpointManager,
    NonFiniteGuard,
    TrainingArguments,
    TrainingState,
    create_ema,
    create_optimizer,
    ema_weights,
    guarded_optimizer_step,
    parse_recipe_args,
)
from astrobio_hf.training.args import resolved_config
from astrobio_hf.training.optim import micro_batches_per_epoch
from astrobio_hf.training.tracking import (
    LoopTimer,
    init_trackers,
    model_summary,
    setup_logging,
)

logger = logging.getLogger("astrobio_hf.recipes.train_climate_spectra")

DEFAULT_DATA_DIR = PLANET_POPULATION_DIR
TASKS = ("climate", "spectrum")


@dataclass
class DataArguments:
    """Where the shards (with spectra) are and how windows are cut from them."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Shards + schema.json with spectra; the embedded default is (re)synthesised here when it has none."})
    dataset: str = field(default="synthetic", metadata={"help": "synthetic | wasp43b: the builder that makes data_dir on first use (wasp43b: astrobio_hf.data.spectra, nemesispy's GCM + forward model)."})
    n_planets: int = field(default=PLANET_POPULATION["n_planets"], metadata={"help": "Planets of the embedded default (the planet population; used when it is synthesised)."})
    n_climate_steps: int = field(default=PLANET_POPULATION["n_climate_steps"], metadata={"help": "Climate steps per planet of the embedded default."})
    n_samples: int = field(default=40, metadata={"help": "Perturbed GCMs of a WASP-43b dataset built on first use (~5 s each)."})
    context_steps: int = field(default=2, metadata={"help": "Tc: climate steps per sample (the window's target frames)."})
    stride: int = field(default=1, metadata={"help": "Climate steps between consecutive training windows."})
    shuffle_buffer: int = field(default=256, metadata={"help": "Windows in the streaming shuffle buffer (0 = stream order)."})


@dataclass
class ModelArguments:
    """Model sizes and loss terms (written into ClimateSpectraConfig)."""

    cube_channels: int = 16
    hidden_size: int = 128
    num_fusion_layers: int = 2
    norm_groups: int = 4
    column_pathway: bool = field(default=True, metadata={"help": "Per-column emission network from the cube straight to the spectra, summed over the disc."})
    column_hidden_size: int = field(default=128, metadata={"help": "Hidden width of the column network (0: linear in the area-weighted mean profiles)."})
    loss_mode: str = field(default="uncertainty", metadata={"help": "fixed | uncertainty | adaptive"})
    task_weights: str = field(default='{"climate": 1.0, "spectrum": 1.0}', metadata={"help": "JSON dict task -> initial weight."})
    adaptive_temperature: float = 2.0
    adaptive_warmup_steps: int = 20
    cross_modal_weight: float = field(default=1.0, metadata={"help": "Weight of the cross-modal losses (each modality's latent alone decoded into the other) on batches with both modalities."})
    consistency_weight: float = 0.1
    smoothness_weight: float = 0.01
    physics_warmup_steps: int = 50
    modality_dropout: float = field(default=0.6, metadata={"help": "Probability that a training batch gives one modality only."})
    selection_metric: str = field(default="cross_modal_loss", metadata={"help": "Validation metric that picks the best checkpoint: cross_modal_loss (normalised MSE of spectra from the cube + cube from the spectra: the evaluated tasks, independent of the loss weights) | loss (the multi-task training loss with both modalities)."})


# ------------------------------------------------------------------------------------------------------
# Data on first use
# ------------------------------------------------------------------------------------------------------
def ensure_dataset(data_args: DataArguments) -> None:
    """Build data_dir on first use (main process only): the embedded default (synthetic planets with spectra), or
    a WASP-43b dataset with nemesispy's forward model plus the unperturbed GCM's cube (gcm_cube.npy)."""
    path = Path(data_args.data_dir) / "schema.json"
    if data_args.dataset == "wasp43b":
        if not path.is_file():
            from astrobio_hf.data.spectra import build_spectra_dataset

            logger.info("building the WASP-43b dataset (%d perturbed GCMs, ~5 s each) into %s", data_args.n_samples, data_args.data_dir)
            build_spectra_dataset(data_args.data_dir, n_samples=data_args.n_samples, seed=0)
        if not (Path(data_args.data_dir) / GCM_CUBE_FILE).is_file():
            write_gcm_cube(data_args.data_dir)
    elif data_args.data_dir == DEFAULT_DATA_DIR:
        ensure_planet_population(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, n_climate_steps=data_args.n_climate_steps)


GCM_CUBE_FILE = "gcm_cube.npy"


def write_gcm_cube(data_dir) -> None:
    """The unperturbed WASP-43b GCM as one cube (V, 1, 1, Z, Y, X) in the dataset's layout, from nemesispy's GCM
    arrays (no opacities, no forward model): the input of the chi-squared of the model's phase spectra."""
    import numpy as np
    from nemesispy.data.gcm import process_gcm as g

    from astrobio_hf.data import spectra

    schema = DatasetSchema.from_dir(data_dir)
    p = np.asarray(g.pv, dtype=np.float64)
    lo = int(np.nonzero(p >= spectra.P_BOTTOM_PA)[0][-1])
    hi = int(np.nonzero(p <= spectra.P_TOP_PA)[0][0])
    level_slice = slice(lo, hi + 1)  # as spectra.Wasp43bModel
    lon = -180.0 + 360.0 / len(g.xlon) * (np.arange(len(g.xlon)) + 0.5)
    lon_order = np.argsort(np.mod(lon, 360.0))
    if not np.allclose(p[level_slice], schema.level_values, rtol=1e-6) or not np.allclose(np.mod(lon, 360.0)[lon_order], schema.lon_values):
        raise ValueError(f"expected the GCM grid of {data_dir}/schema.json, got other levels or longitudes from nemesispy")

    class _Grid:
        pass

    grid = _Grid()
    grid.level_slice = level_slice
    cube = spectra._cube(grid, np.asarray(g.tmap, dtype=np.float64), np.asarray(g.vmrmap, dtype=np.float64), lon_order)
    np.save(Path(data_dir) / GCM_CUBE_FILE, cube)


def load_wasp43b_reference(data_dir, schema) -> dict:
    """observations.json (observed Fp/Fs, errors, the unperturbed GCM's forward-model spectrum and chi-squared) and
    the GCM's cube as tensors. Numpy + json only: the training stack does not import nemesispy."""
    import numpy as np

    path = Path(data_dir) / "observations.json"
    if not path.is_file():
        raise ValueError(f"expected {path} (written by `astrobio-hf data spectra`), got no such file")
    obs = json.loads(path.read_text())
    P, W = schema.spectrum_shape
    ref = {k: torch.tensor(obs[k], dtype=torch.float64) for k in ("spectrum", "error", "gcm_spectrum")}
    for k, v in ref.items():
        if tuple(v.shape) != (P, W):
            raise ValueError(f"expected observations.json {k} of shape (P, W) = {(P, W)}, got {tuple(v.shape)}")
    cube = torch.from_numpy(np.load(Path(data_dir) / GCM_CUBE_FILE)).float()
    return {**ref, "gcm_cube": cube, "gcm_chi_squared": float(obs["gcm_chi_squared"]), "n_points": int(obs["n_points"]),
            "phases": obs["phases"], "wavelengths": obs["wavelengths"], "units": obs["units"]}


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


def draw_modalities(probability: float, device) -> str:
    """Seeded by the global torch RNG (restored on resume): both, or cube / spectrum only."""
    r = float(torch.rand(()))
    if r < probability / 2:
        return "cube"
    if r < probability:
        return "spectrum"
    return "both"


def make_loader(data_dir, split, schema, data_args, train_args, accelerator, shuffle: bool) -> DataLoader:
    dataset = build_window_dataset(
        data_dir, split, context_steps=data_args.context_steps,
        stride={"train": data_args.stride}.get(split, data_args.context_steps),
        shuffle_buffer=data_args.shuffle_buffer if shuffle else 0, seed=train_args.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes, schema=schema, forecast=False,
    )
    return DataLoader(dataset, batch_size=train_args.per_device_batch_size, collate_fn=collate_windows, num_workers=train_args.num_workers)


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


# ------------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, train_args = parse_recipe_args(
        (DataArguments, ModelArguments, TrainingArguments), sys.argv[1:] if argv is None else argv,
        defaults={"output_dir": "runs/climate_spectra", "num_epochs": 40},
    )
    output_dir = Path(train_args.output_dir)
    report_to = [n for n in train_args.report_to.split(",") if n and n != "none"]

    # 1. Accelerator and logging.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # a one-modality micro-batch leaves the other encoder without gradient: DDP must not wait for it
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    setup_logging(accelerator)
    set_seed(train_args.seed)
    started = time.perf_counter()

    # 2. Data schema (the embedded default is (re)synthesised with spectra on first use, by one process).
    if model_args.selection_metric not in ("cross_modal_loss", "loss"):
        raise ValueError(f"expected selection_metric 'cross_modal_loss' or 'loss', got {model_args.selection_metric!r}")
    if data_args.dataset not in ("synthetic", "wasp43b"):
        raise ValueError(f"expected dataset 'synthetic' or 'wasp43b', got {data_args.dataset!r}")
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_dataset(data_args)
        schema = DatasetSchema.from_dir(data_args.data_dir)
    if not schema.has_spectra:
        raise ValueError(f"expected a dataset with spectra in {data_args.data_dir}, got a schema without spectrum_wavelengths")
    observations = load_wasp43b_reference(data_args.data_dir, schema) if data_args.dataset == "wasp43b" else None

    # 3. Config and model; sizes come from the schema.
    config = ClimateSpectraConfig.from_schema(
        schema, context_steps=data_args.context_steps, cube_channels=model_args.cube_channels,
        hidden_size=model_args.hidden_size, num_fusion_layers=model_args.num_fusion_layers, norm_groups=model_args.norm_groups,
        column_pathway=model_args.column_pathway, column_hidden_size=model_args.column_hidden_size,
        loss_mode=model_args.loss_mode, task_weights=json.loads(model_args.task_weights),
        adaptive_temperature=model_args.adaptive_temperature, adaptive_warmup_steps=model_args.adaptive_warmup_steps,
        cross_modal_weight=model_args.cross_modal_weight, consistency_weight=model_args.consistency_weight, smoothness_weight=model_args.smoothness_weight,
        physics_warmup_steps=model_args.physics_warmup_steps,
    )
    model = ClimateSpectraForMultiTask(config)
    if train_args.init_from:
        init_weights_from(model, train_args.init_from, accelerator)
    logger.info("model summary\n%s", model_summary(model))

    # 4. EMA.  5. Optimizer (no decay on biases and norms).
    ema = create_ema(model, train_args.ema_decay)
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))

    # 6. Datasets.
    with accelerator.main_process_first():
        train_loader = make_loader(data_args.data_dir, "train", schema, data_args, train_args, accelerator, shuffle=True)
        val_split = "validation" if "validation" in schema.splits else "val"  # synthesize_planets / the WASP-43b builder
        val_loader = make_loader(data_args.data_dir, val_split, schema, data_args, train_args, accelerator, shuffle=False)
        test_loader = make_loader(data_args.data_dir, "test", schema, data_args, train_args, accelerator, shuffle=False)

    # 7. LR schedule from the real number of optimizer steps.
    per_rank = [count_windows(schema, "train", data_args.context_steps, data_args.stride, rank=r, world_size=accelerator.num_processes, forecast=False)
                for r in range(accelerator.num_processes)]
    micro_per_epoch = micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps)
    steps_per_epoch = micro_per_epoch // train_args.gradient_accumulation_steps
    total_steps = train_args.max_steps or steps_per_epoch * train_args.num_epochs
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(train_args.warmup_ratio * total_steps), num_training_steps=total_steps
    )

    # 8. prepare.
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    checkpoints = CheckpointManager(accelerator, output_dir, keep=train_args.keep_checkpoints)
    guard = NonFiniteGuard(accelerator, train_args.max_nonfinite_steps)
    pusher = HubPusher.from_args(accelerator, train_args, config)
    init_trackers(accelerator, "climate_spectra", ",".join(report_to), resolved_config(data_args, model_args, train_args), str(output_dir))

    # 9. Resume.
    resume_from = checkpoints.resolve_resume(train_args.resume)
    if resume_from is not None:
        checkpoints.load(resume_from)
        logger.info("resuming at step %d (epoch %d, batch %d)", state.global_step, state.epoch, state.batches_in_epoch)

    # 10. The loop. Task losses and weights accumulate as tensors; one sync per logging step.
    progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_main_process, desc="train")
    running = torch.zeros(2 + 2 * len(TASKS) + 3, device=accelerator.device)  # loss, count, task losses, weights, consistency, smoothness, cross-modal
    stop = state.global_step >= total_steps
    timer = LoopTimer(skip_steps=2)
    model.train()
    while not stop:
        train_loader.dataset.set_epoch(state.epoch)
        batches = iter(train_loader)
        for _ in range(state.batches_in_epoch):
            next(batches)
        while state.batches_in_epoch < micro_per_epoch:
            batch = next(batches)
            state.batches_in_epoch += 1
            modalities = draw_modalities(model_args.modality_dropout, accelerator.device)
            with accelerator.accumulate(model):
                out = model(**model_inputs(batch, accelerator.device, modalities), training_step=state.global_step)
                loss = out.loss
                accelerator.backward(loss)
                grad_norm, step_ok = guarded_optimizer_step(accelerator, model, optimizer, lr_scheduler, guard, loss, train_args.max_grad_norm)
            running += torch.stack([
                loss.detach().float(), torch.ones((), device=running.device),
                *(out.task_losses[t].float() for t in TASKS), *(out.task_weights[t].float() for t in TASKS),
                out.consistency_loss.float(), out.smoothness_loss.float(), out.cross_modal_loss.float(),
            ])
            if not accelerator.sync_gradients:
                continue
            if not step_ok:
                state.skipped_steps += 1
                continue
            if ema is not None:
                ema.step([p for p in unwrapped.parameters() if p.requires_grad])
            state.global_step += 1
            timer.step(samples=train_args.per_device_batch_size * accelerator.num_processes * train_args.gradient_accumulation_steps)
            progress.update(1)
            if state.global_step % train_args.log_every == 0 or state.global_step == total_steps:
                means = (accelerator.reduce(running, reduction="mean") / running[1].clamp_min(1)).tolist()
                running.zero_()
                logs = {"train/loss": means[0], "train/lr": lr_scheduler.get_last_lr()[0], "train/grad_norm": float(grad_norm),
                        "train/consistency": means[-3], "train/smoothness": means[-2], "train/cross_modal": means[-1],
                        "train/smoothness_weight": float(out.smoothness_weight)}
                logs.update({f"train/loss_{t}": means[2 + j] for j, t in enumerate(TASKS)})
                logs.update({f"train/weight_{t}": means[2 + len(TASKS) + j] for j, t in enumerate(TASKS)})
                accelerator.log(logs, step=state.global_step)
                state.history.append({"step": state.global_step, "train/loss": means[0]})
                progress.set_postfix(loss=f"{means[0]:.4f}")
            end_of_epoch = state.batches_in_epoch >= micro_per_epoch
            do_eval = (train_args.eval_every and state.global_step % train_args.eval_every == 0) or end_of_epoch or state.global_step == total_steps
            is_best = False
            if do_eval:
                timer.pause()  # evaluation and checkpoints are not training throughput
                with ema_weights(ema, unwrapped):
                    val = evaluate(unwrapped, val_loader, accelerator)
                is_best = state.record_validation(val[model_args.selection_metric])
                accelerator.log({"val/loss": val["loss"], "val/cross_modal_loss": val["cross_modal_loss"], "val/spectrum_r2": val["spectrum/r2"],
                                 "val/spectral_angle_deg": val["spectrum/spectral_angle_deg"]}, step=state.global_step)
                logger.info("step %d: val loss %.4f, cross-modal %.4f, spectrum R2 %.3f%s", state.global_step, val["loss"],
                            val["cross_modal_loss"], val["spectrum/r2"], " (best)" if is_best else "")
            stop = state.global_step >= total_steps or state.patience_exhausted(train_args.early_stopping_patience)
            if end_of_epoch:
                state.epoch += 1
                state.batches_in_epoch = 0
            if state.global_step % train_args.checkpoint_every == 0 or is_best or stop or end_of_epoch:
                timer.pause()
                saved = checkpoints.save(state.global_step, metric=state.best_metric if is_best else None, is_best=is_best)
                pusher.on_checkpoint(state.global_step, saved)
            if stop or end_of_epoch:
                break
    progress.close()

    # 11. Final model = EMA weights of the best checkpoint; test on held-out planets beside the ridge baseline
    # (fitted on the same training windows; it uses only the fixed normalisation statistics of the model).
    checkpoints.restore_best_weights(state)
    ridge = fit_spectrum_ridge(
        make_loader(data_args.data_dir, "train", schema, data_args, train_args, accelerator, shuffle=False), val_loader, unwrapped, accelerator
    )
    with ema_weights(ema, unwrapped):
        test = evaluate(unwrapped, test_loader, accelerator, with_ssim=True, observations=observations, ridge=ridge)
        if accelerator.is_main_process:
            unwrapped.save_pretrained(output_dir, safe_serialization=True)
            write_report(output_dir, unwrapped, test, state, schema,
                         make_loader(data_args.data_dir, "test", schema, data_args, train_args, accelerator, shuffle=False),
                         accelerator.device, time.perf_counter() - started, resolved_config(data_args, model_args, train_args),
                         observations, throughput=timer.summary())
    logger.info("test: %s", {k: v for k, v in test.items() if isinstance(v, float)})
    accelerator.log({f"test/{k}": v for k, v in test.items() if isinstance(v, (int, float))}, step=state.global_step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    pusher.on_end()
    pusher.wait()
    return test


if __name__ == "__main__":
    main()
