"""Train the CNN-ViT hybrid to infer planet parameters from climate datacube windows, with Accelerate.

    accelerate launch recipes/train_cnn_vit.py [recipes/configs/cnn_vit/<name>.yaml] [--key value ...]

With no arguments it uses the planet population in data/planets (the embedded default of the planet-level families:
96 synthetic planets, 8 climate steps each; synthesised on first use, ~30 s), trains,
and evaluates the EMA weights of the best checkpoint on the held-out test planets: R2 and RMSE per parameter and
the calibration of the predicted uncertainty, beside a ridge regression on pooled cube features fitted in the same
run on the same training windows. When the dataset has planet regime labels (the schema's `planet_regime_names`; the
planet population has frozen / temperate / warm by global-mean surface temperature), the model also classifies the
regime (cross-entropy x `regime_loss_weight` in the loss) and the test reports accuracy, macro-F1 and a confusion
matrix beside two baselines fitted in the same run: the majority class of the training windows and a multinomial
logistic regression on the ridge's pooled cube features. Writes to runs/cnn_vit: config.json, model.safetensors, README.md (card with
parity plots), metrics.json, plots/, logs/ and checkpoints/.

Defaults that matter on the 16 training planets of the embedded default (see the card for the numbers): log channels
of T, p, rho and q beside the linear ones (gas constant and gravity become differences), no GroupNorm in the stem
(it removed the spatial means that carry the planet parameters), the input's global levels projected into [CLS],
a random longitude roll of each training batch, the best checkpoint chosen by validation NRMSE (the NLL rises
early from over-confident variances), and the predicted variances rescaled at test time by their mean z^2 on the
validation planets (both calibrations are reported).

Order (DESIGN.md section 4): Accelerator; logging; data schema; config and model (+ --init_from); EMA; optimizer
(separate learning rates for the CNN and the ViT parts, no decay on biases, norms and token embeddings); dataset;
lr schedule (warmup + cosine per optimizer step); prepare; resume; loop; save_pretrained; card; end; push.
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
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
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
from astrobio_hf.metrics.baselines import fit_ridge as fit_ridge_baseline
from astrobio_hf.models.cnn_vit import CnnVitConfig, CnnVitForParameterRegression
from astrobio_hf.models.cnn_vit.modeling_cnn_vit import log_statistics
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
    device_memory,
    init_trackers,
    model_summary,
    setup_logging,
)

logger = logging.getLogger("astrobio_hf.recipes.train_cnn_vit")

DEFAULT_DATA_DIR = PLANET_POPULATION_DIR
NO_DECAY_NAMES = ("cls_token", "position_embeddings")
BEST_METRICS = {"nrmse": "model/nrmse_mean", "loss": "loss"}
LOGISTIC_L2 = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # L2 penalties of the logistic-regression regime baseline
REGIME_SYSTEMS = ("model", "majority", "logistic")


@dataclass
class DataArguments:
    """Where the shards are and how windows are cut from them."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Shards + schema.json; the embedded default is synthesised here when missing."})
    n_planets: int = field(default=PLANET_POPULATION["n_planets"], metadata={"help": "Planets of the embedded default (the planet population; used when it is synthesised)."})
    n_climate_steps: int = field(default=PLANET_POPULATION["n_climate_steps"], metadata={"help": "Climate steps per planet of the embedded default."})
    context_steps: int = field(default=4, metadata={"help": "Tc: climate steps in each input window."})
    stride: int = field(default=1, metadata={"help": "Climate steps between consecutive training windows."})
    shuffle_buffer: int = field(default=256, metadata={"help": "Windows in the streaming shuffle buffer (0 = stream order)."})
    lon_roll: bool = field(default=True, metadata={"help": "Augment training batches with a random circular shift in longitude (the origin of longitude is arbitrary)."})


@dataclass
class ModelArguments:
    """Model sizes, loss terms and the per-part learning rates (written into CnnVitConfig / the optimizer)."""

    stem_channels: int = 32
    stem_norm: str = field(default="none", metadata={"help": "Stem normalisation: none, or group (GroupNorm per sample over space, which removes the global levels that carry the planet parameters)."})
    global_token: bool = field(default=True, metadata={"help": "Project the input's global levels (stem input averaged over lat/lon) into the [CLS] token."})
    stem_downsample: int = 1
    patch_size: int = 2
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.0
    log_variables: str = field(default="T,p,rho,q", metadata={"help": "Comma-separated positive variables also fed as log channels ('' = none)."})
    predict_variance: bool = True
    regime_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of the regime cross-entropy in the loss (datasets with planet regime labels only)."}
    )
    physics_weights: str = field(
        default='{"cross_scale": 0.1, "ideal_gas": 0.05, "hydrostatic": 0.05}',
        metadata={"help": "JSON dict term -> weight (terms: cross_scale, ideal_gas, hydrostatic)."},
    )
    cnn_lr_multiplier: float = field(default=1.0, metadata={"help": "Learning rate of the CNN part (stem + CNN head) / learning_rate."})
    vit_lr_multiplier: float = field(default=0.5, metadata={"help": "Learning rate of the ViT part (tokens + encoder) / learning_rate."})
    gradient_checkpointing: bool = False
    best_metric: str = field(
        default="nrmse",
        metadata={"help": "Validation metric that picks the best checkpoint (lower is better): nrmse (RMSE / training "
                  "std, averaged over the parameters) or loss (Gaussian NLL + physics; it rises as soon as the predicted "
                  "variances shrink on the few training planets, long before the means stop improving)."},
    )


# ------------------------------------------------------------------------------------------------------
# Batch -> model mapping (what differs between families): the cube window in, the planet parameters (and, where the
# dataset has them, the regime labels) out
# ------------------------------------------------------------------------------------------------------
def model_inputs(batch: dict, device: torch.device) -> dict:
    inputs = {"inputs": batch["inputs"].to(device, non_blocking=True), "labels": batch["planet_params"].to(device, non_blocking=True)}
    if "planet_regime" in batch:
        inputs["regime_labels"] = batch["planet_regime"].to(device, non_blocking=True)
    return inputs


def ensure_dataset(data_args: DataArguments) -> None:
    """Synthesise the planet population (the embedded default of the planet-level families) on first use, and again
    when it was written by an older version or with other settings (main process only); other data_dirs as they are."""
    if data_args.data_dir == DEFAULT_DATA_DIR:
        ensure_planet_population(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, n_climate_steps=data_args.n_climate_steps)


def roll_longitude(inputs: dict) -> dict:
    """Training augmentation: the cube shifted circularly in longitude by a random number of columns (the global
    torch generator, whose state the checkpoints carry); the planet parameters do not depend on the origin."""
    shift = int(torch.randint(inputs["inputs"].shape[-1], ()))
    return {**inputs, "inputs": torch.roll(inputs["inputs"], shifts=shift, dims=-1)}


def lr_multipliers(model_args: ModelArguments) -> dict[str, float]:
    """Module-name prefixes -> learning-rate factors: the CNN part and the ViT part (the ViT head follows the ViT)."""
    return {
        "cnn_vit.stem": model_args.cnn_lr_multiplier,
        "cnn_head": model_args.cnn_lr_multiplier,
        "cnn_vit.embeddings": model_args.vit_lr_multiplier,
        "cnn_vit.layers": model_args.vit_lr_multiplier,
        "cnn_vit.final_norm": model_args.vit_lr_multiplier,
        "vit_head": model_args.vit_lr_multiplier,
        "regime_head": model_args.vit_lr_multiplier,  # reads the ViT's [CLS] token, like vit_head
    }


def make_loader(data_dir, split, schema, data_args, train_args, shuffle: bool, rank: int, world_size: int) -> DataLoader:
    dataset = build_window_dataset(
        data_dir,
        split,
        context_steps=data_args.context_steps,
        stride={"train": data_args.stride, "validation": data_args.context_steps}.get(split, 2),
        shuffle_buffer=data_args.shuffle_buffer if shuffle else 0,
        seed=train_args.seed,
        rank=rank,
        world_size=world_size,
        schema=schema,
    )
    return DataLoader(dataset, batch_size=train_args.per_device_batch_size, collate_fn=collate_windows, num_workers=train_args.num_workers)


# ------------------------------------------------------------------------------------------------------
# Ridge baseline on pooled cube features (fitted from sums reduced across processes: exact under DDP)
# ------------------------------------------------------------------------------------------------------
def pooled_features(inputs: torch.Tensor, config: CnnVitConfig) -> torch.Tensor:
    """(B, V, Tc, Tg, Z, Y, X) physical cube -> (B, 2*(V+L)*Z + 1): per variable and level the mean and standard
    deviation over time, latitude and longitude of the normalised cube and of the model's L log channels
    (`config.log_variables`, the same input representation as the network), and a constant 1."""
    mean = torch.tensor(config.norm_mean, dtype=torch.float64, device=inputs.device)[None, :, None, None, :, None, None]
    std = torch.tensor(config.norm_std, dtype=torch.float64, device=inputs.device)[None, :, None, None, :, None, None]
    x = (inputs.double() - mean) / std  # (B, V, Tc, Tg, Z, Y, X)
    if config.log_variables:
        stats = log_statistics(config)
        log_mean = stats["log_mean"].double().to(inputs.device)[None, :, None, None, :, None, None]
        log_std = stats["log_std"].double().to(inputs.device)[None, :, None, None, :, None, None]
        logs = (inputs[:, stats["log_index"].to(inputs.device)].double().clamp_min(1e-30).log() - log_mean) / log_std
        x = torch.cat([x, logs], dim=1)
    x = x.transpose(2, 4).flatten(3)  # (B, V+L, Z, Tg*Tc*Y*X)
    ones = torch.ones(inputs.shape[0], 1, dtype=torch.float64, device=inputs.device)
    return torch.cat([x.mean(-1).flatten(1), x.std(-1).flatten(1), ones], dim=1)


def _normalised_targets(params: torch.Tensor, config: CnnVitConfig) -> torch.Tensor:
    mean = torch.tensor(config.planet_param_mean, dtype=torch.float64, device=params.device)
    std = torch.tensor(config.planet_param_std, dtype=torch.float64, device=params.device)
    return (params.double() - mean) / std


def fit_ridge(train_loader, val_loader, config, accelerator) -> dict:
    """Ridge regression of the normalised planet parameters on `pooled_features`; alpha chosen on validation."""
    device = accelerator.device
    return fit_ridge_baseline(
        train_loader, val_loader, lambda b: pooled_features(b["inputs"].to(device), config),
        lambda b: _normalised_targets(b["planet_params"].to(device), config), accelerator,
    )


def ridge_predict(ridge: dict, inputs: torch.Tensor, config: CnnVitConfig) -> torch.Tensor:
    """Physical planet parameters (B, P) from the ridge baseline."""
    std = torch.tensor(config.planet_param_std, dtype=torch.float64, device=inputs.device)
    mean = torch.tensor(config.planet_param_mean, dtype=torch.float64, device=inputs.device)
    return (pooled_features(inputs, config) @ ridge["weights"]) * std + mean


# ------------------------------------------------------------------------------------------------------
# Regime baselines: majority class of the training windows, multinomial logistic regression on pooled cube features
# (every process gathers all features, so every process fits the same baseline)
# ------------------------------------------------------------------------------------------------------
def _gather_features(loader, config, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) pooled features and (N,) regime labels of every window of `loader` on all processes (CPU, float64)."""
    xs, ys = [], []
    for batch in loader:
        xs.append(pooled_features(batch["inputs"].to(accelerator.device), config).cpu())
        ys.append(batch["planet_regime"].cpu())
    local = [(torch.cat(xs), torch.cat(ys))] if xs else []
    parts = gather_object(local) if accelerator.num_processes > 1 else local
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float) -> torch.Tensor:
    """Weights (F, K) of a multinomial logistic regression (mean cross-entropy + l2/2 |W|^2, the intercept column
    unpenalised) on standardised features, fitted with full-batch L-BFGS in float64."""
    weights = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    penalised = torch.ones(x.shape[1], 1, dtype=torch.float64)
    penalised[-1] = 0.0  # pooled_features ends with the constant 1
    optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weights, y) + 0.5 * l2 * (penalised * weights**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


def _standardise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return torch.cat([(x[:, :-1] - mean) / std, x[:, -1:]], dim=1)


@torch.no_grad()
def fit_regime_baselines(train_loader, val_loader, config, accelerator) -> dict:
    """Majority class of the training windows, and a logistic regression on `pooled_features` (standardised with the
    training windows' statistics; the L2 penalty among `LOGISTIC_L2` chosen by the validation cross-entropy)."""
    K = config.num_regimes
    x_train, y_train = _gather_features(train_loader, config, accelerator)
    x_val, y_val = _gather_features(val_loader, config, accelerator)
    counts = torch.bincount(y_train, minlength=K)
    mean, std = x_train[:, :-1].mean(0), x_train[:, :-1].std(0).clamp_min(1e-12)
    x_train, x_val = _standardise(x_train, mean, std), _standardise(x_val, mean, std)
    with torch.enable_grad():
        weights = {l2: _fit_logistic(x_train, y_train, K, l2) for l2 in LOGISTIC_L2}
    val_ce = {l2: F.cross_entropy(x_val @ w, y_val).item() for l2, w in weights.items()}
    best = min(LOGISTIC_L2, key=lambda l2: val_ce[l2])
    logger.info(
        "regime baselines: train windows per class %s (majority %r); logistic regression L2 %g (validation cross-entropy %s)",
        counts.tolist(), config.regime_names[int(counts.argmax())], best, [f"{v:.3g}" for v in val_ce.values()],
    )
    return {
        "majority": int(counts.argmax()),
        "train_counts": counts.tolist(),
        "l2": best,
        "weights": weights[best].to(accelerator.device),
        "feature_mean": mean.to(accelerator.device),
        "feature_std": std.to(accelerator.device),
    }


def logistic_predict(baselines: dict, inputs: torch.Tensor, config: CnnVitConfig) -> torch.Tensor:
    """(B,) regime classes from the logistic-regression baseline."""
    x = _standardise(pooled_features(inputs, config), baselines["feature_mean"], baselines["feature_std"])
    return (x @ baselines["weights"]).argmax(dim=1)


def _regime_metrics(num_classes: int, device) -> dict:
    """Per system: accuracy (over windows), macro-F1 (over the classes present in the truth or the predictions) and
    the confusion matrix (rows true, columns predicted); torchmetrics, reduced across processes on compute()."""
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassConfusionMatrix,
        MulticlassF1Score,
    )

    return {
        system: {
            "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro").to(device),
            "macro_f1": MulticlassF1Score(num_classes=num_classes, average="macro").to(device),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes=num_classes).to(device),
        }
        for system in REGIME_SYSTEMS
    }


# ------------------------------------------------------------------------------------------------------
# Evaluation: R2 / RMSE per parameter, calibration, the ridge baseline (all reduced across processes)
# ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, loader, accelerator, ridge=None, max_batches=0, variance_scale: float = 1.0, regime_baselines=None) -> dict:
    """Metrics over `loader` (reduced across processes). `variance_scale` multiplies the predicted variances for the
    `calibration_rescaled/*` coverages (a scale fitted on validation: the mean z^2 there). With regime labels in the
    batches and a regime head: `regime/<system>/{accuracy,macro_f1,confusion_matrix}` for the model and, with
    `regime_baselines`, the majority-class and logistic-regression baselines."""
    model.eval()
    config = model.config
    P = config.num_planet_params
    dev = accelerator.device
    # rows: n, sum y, sum y^2, SSE model, SSE ridge, |z| < 1, |z| < 2, sum z^2, then |z| < 1, |z| < 2 with the
    # rescaled variance (per parameter); scalars: loss, nll, n
    stats = torch.zeros(10, P, dtype=torch.float64, device=dev)
    scalars = torch.zeros(3, dtype=torch.float64, device=dev)
    regime_loss_sum = torch.zeros(2, dtype=torch.float64, device=dev)  # sum of cross-entropy x n, n
    regimes = _regime_metrics(config.num_regimes, dev) if config.num_regimes else None
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        inputs = model_inputs(batch, dev)
        with accelerator.autocast():
            out = model(**inputs)
        y, mu = inputs["labels"].double(), out.mean.double()
        n = y.shape[0]
        ridge_sse = ((ridge_predict(ridge, inputs["inputs"], config) - y) ** 2).sum(0) if ridge else torch.zeros(P, dtype=torch.float64, device=dev)
        if out.log_variance is not None:
            z = (y - mu) / torch.exp(0.5 * out.log_variance.double())
        else:
            z = (y - mu) / torch.tensor(config.planet_param_std, dtype=torch.float64, device=dev)
        stats += torch.stack([
            torch.full((P,), float(n), dtype=torch.float64, device=dev), y.sum(0), (y**2).sum(0), ((mu - y) ** 2).sum(0),
            ridge_sse, (z.abs() < 1).double().sum(0), (z.abs() < 2).double().sum(0), (z**2).sum(0),
            (z.abs() < variance_scale**0.5).double().sum(0), (z.abs() < 2 * variance_scale**0.5).double().sum(0),
        ])
        scalars += torch.stack([out.loss.double() * n, out.nll.double() * n, torch.tensor(float(n), dtype=torch.float64, device=dev)])
        if regimes is not None and "regime_labels" in inputs:
            truth = inputs["regime_labels"]
            predictions = {"model": out.regime_logits.argmax(dim=1)}
            if regime_baselines is not None:
                predictions["majority"] = torch.full_like(truth, regime_baselines["majority"])
                predictions["logistic"] = logistic_predict(regime_baselines, inputs["inputs"], config)
            for system, predicted in predictions.items():
                for metric in regimes[system].values():
                    metric.update(predicted, truth)
            regime_loss_sum += torch.stack([out.regime_loss.double() * n, torch.tensor(float(n), dtype=torch.float64, device=dev)])
    stats = accelerator.reduce(stats, reduction="sum")
    scalars = accelerator.reduce(scalars, reduction="sum")
    n = stats[0]
    variance = (stats[2] - stats[1] ** 2 / n).clamp_min(1e-300)  # n * var(y)
    result = {"loss": (scalars[0] / scalars[2]).item(), "nll": (scalars[1] / scalars[2]).item(), "samples": int(scalars[2].item())}
    r2_model = 1 - stats[3] / variance
    r2_ridge = 1 - stats[4] / variance
    std = torch.tensor(config.planet_param_std, dtype=torch.float64, device=dev)
    for j, name in enumerate(config.planet_param_names):
        result[f"model/r2/{name}"] = r2_model[j].item()
        result[f"model/rmse/{name}"] = (stats[3, j] / n[j]).sqrt().item()
        if ridge:
            result[f"ridge/r2/{name}"] = r2_ridge[j].item()
            result[f"ridge/rmse/{name}"] = (stats[4, j] / n[j]).sqrt().item()
    result["model/r2_mean"] = r2_model.mean().item()
    result["model/nrmse_mean"] = ((stats[3] / n).sqrt() / std).mean().item()  # RMSE / train-set std, averaged
    if ridge:
        result["ridge/r2_mean"] = r2_ridge.mean().item()
        result["ridge/nrmse_mean"] = ((stats[4] / n).sqrt() / std).mean().item()
        result["ridge/alpha"] = ridge["alpha"]
    # calibration: coverage of the 1- and 2-sigma intervals (Gaussian: 0.683, 0.954) and the mean z^2 (1)
    result["calibration/coverage_1sigma"] = (stats[5].sum() / n.sum()).item()
    result["calibration/coverage_2sigma"] = (stats[6].sum() / n.sum()).item()
    result["calibration/mean_z2"] = (stats[7].sum() / n.sum()).item()
    result["calibration/error"] = 0.5 * (abs(result["calibration/coverage_1sigma"] - 0.6827) + abs(result["calibration/coverage_2sigma"] - 0.9545))
    if variance_scale != 1.0:
        result["calibration_rescaled/variance_scale"] = float(variance_scale)
        result["calibration_rescaled/coverage_1sigma"] = (stats[8].sum() / n.sum()).item()
        result["calibration_rescaled/coverage_2sigma"] = (stats[9].sum() / n.sum()).item()
        result["calibration_rescaled/mean_z2"] = result["calibration/mean_z2"] / variance_scale
        result["calibration_rescaled/error"] = 0.5 * (
            abs(result["calibration_rescaled/coverage_1sigma"] - 0.6827) + abs(result["calibration_rescaled/coverage_2sigma"] - 0.9545)
        )
    if regimes is not None:
        regime_loss_sum = accelerator.reduce(regime_loss_sum, reduction="sum")
        if regime_loss_sum[1] > 0:
            result["regime/loss"] = (regime_loss_sum[0] / regime_loss_sum[1]).item()
            result["regime/names"] = list(config.regime_names)
            for system in REGIME_SYSTEMS if regime_baselines is not None else ("model",):
                metrics = regimes[system]
                result[f"regime/{system}/accuracy"] = metrics["accuracy"].compute().item()
                result[f"regime/{system}/macro_f1"] = metrics["macro_f1"].compute().item()
                result[f"regime/{system}/confusion_matrix"] = metrics["confusion_matrix"].compute().tolist()
            if regime_baselines is not None:
                result["regime/logistic/l2"] = regime_baselines["l2"]
                result["regime/train_counts"] = regime_baselines["train_counts"]
    model.train()
    return result


# ------------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, train_args = parse_recipe_args(
        (DataArguments, ModelArguments, TrainingArguments), sys.argv[1:] if argv is None else argv,
        defaults={"output_dir": "runs/cnn_vit", "num_epochs": 60},
    )
    output_dir = Path(train_args.output_dir)
    if model_args.best_metric not in BEST_METRICS:
        raise ValueError(f"--best_metric must be one of {sorted(BEST_METRICS)}, got {model_args.best_metric!r}")
    report_to = [n for n in train_args.report_to.split(",") if n and n != "none"]

    # 1. Accelerator and logging.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    setup_logging(accelerator)
    set_seed(train_args.seed)
    started = time.perf_counter()
    rank, world = accelerator.process_index, accelerator.num_processes

    # 2. Data schema (the embedded default is synthesised on first use, by one process).
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_dataset(data_args)
        schema = DatasetSchema.from_dir(data_args.data_dir)

    # 3. Config and model; sizes, grid, targets and normalisation come from the schema.
    config = CnnVitConfig.from_schema(
        schema,
        context_steps=data_args.context_steps,
        stem_channels=model_args.stem_channels,
        stem_norm=model_args.stem_norm,
        global_token=model_args.global_token,
        stem_downsample=model_args.stem_downsample,
        patch_size=model_args.patch_size,
        hidden_size=model_args.hidden_size,
        num_layers=model_args.num_layers,
        num_heads=model_args.num_heads,
        dropout=model_args.dropout,
        log_variables=[n.strip() for n in model_args.log_variables.split(",") if n.strip()],
        predict_variance=model_args.predict_variance,
        physics_weights=json.loads(model_args.physics_weights),
        regime_loss_weight=model_args.regime_loss_weight,
    )
    model = CnnVitForParameterRegression(config)
    init_origin = None
    if train_args.init_from:
        init_origin = init_weights_from(model, train_args.init_from, accelerator)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    logger.info("model summary\n%s", model_summary(model))

    # 4. EMA.
    ema = create_ema(model, train_args.ema_decay)

    # 5. Optimizer: CNN and ViT parts at their own learning rates; no decay on biases, norms, [CLS] and positions.
    optimizer = create_optimizer(
        model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2),
        lr_multipliers=lr_multipliers(model_args), no_decay_names=NO_DECAY_NAMES,
    )

    # 6. Datasets, streamed and split across processes; the ridge baseline on the same training windows.
    with accelerator.main_process_first():
        train_loader = make_loader(data_args.data_dir, "train", schema, data_args, train_args, True, rank, world)
        val_loader = make_loader(data_args.data_dir, "validation", schema, data_args, train_args, False, rank, world)
        test_loader = make_loader(data_args.data_dir, "test", schema, data_args, train_args, False, rank, world)
    ridge = fit_ridge(
        make_loader(data_args.data_dir, "train", schema, data_args, train_args, False, rank, world), val_loader, config, accelerator
    )
    regime_baselines = None
    if config.num_regimes:
        regime_baselines = fit_regime_baselines(
            make_loader(data_args.data_dir, "train", schema, data_args, train_args, False, rank, world), val_loader, config, accelerator
        )

    # 7. LR schedule (warmup + cosine, per optimizer step) from the real number of optimizer steps.
    per_rank = [count_windows(schema, "train", data_args.context_steps, data_args.stride, rank=r, world_size=world) for r in range(world)]
    micro_per_epoch = micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps)
    steps_per_epoch = micro_per_epoch // train_args.gradient_accumulation_steps
    total_steps = train_args.max_steps or steps_per_epoch * train_args.num_epochs
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(train_args.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    logger.info("%d training windows, %d micro-batches/epoch/process, %d optimizer steps", sum(per_rank), micro_per_epoch, total_steps)

    # 8. prepare.
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    if train_args.torch_compile:
        model = torch.compile(model)
    unwrapped = accelerator.unwrap_model(model)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    checkpoints = CheckpointManager(accelerator, output_dir, keep=train_args.keep_checkpoints)
    guard = NonFiniteGuard(accelerator, train_args.max_nonfinite_steps)
    pusher = HubPusher.from_args(accelerator, train_args, config)
    init_trackers(accelerator, "cnn_vit", ",".join(report_to), resolved_config(data_args, model_args, train_args), str(output_dir))
    if accelerator.is_main_process:
        (output_dir / "run_info.txt").write_text(
            f"distributed_type={accelerator.distributed_type} num_processes={world} "
            f"device={accelerator.device} mixed_precision={accelerator.mixed_precision}\n"
        )

    # 9. Resume.
    resume_from = checkpoints.resolve_resume(train_args.resume)
    if resume_from is not None:
        checkpoints.load(resume_from)
        logger.info("resuming at step %d (epoch %d, batch %d)", state.global_step, state.epoch, state.batches_in_epoch)

    # 10. The loop.
    progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_main_process, desc="train")
    running = torch.zeros(2, device=accelerator.device)
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
            inputs = model_inputs(batch, accelerator.device)
            if data_args.lon_roll:
                inputs = roll_longitude(inputs)
            with accelerator.accumulate(model):
                out = model(**inputs)
                loss = out.loss
                accelerator.backward(loss)
                grad_norm, step_ok = guarded_optimizer_step(
                    accelerator, model, optimizer, lr_scheduler, guard, loss, train_args.max_grad_norm
                )
            running += torch.stack([loss.detach().float(), torch.ones((), device=running.device)])
            if not accelerator.sync_gradients:
                continue
            if not step_ok:
                state.skipped_steps += 1
                continue

            if ema is not None:
                ema.step([p for p in unwrapped.parameters() if p.requires_grad])
            state.global_step += 1
            timer.step(samples=train_args.per_device_batch_size * world * train_args.gradient_accumulation_steps)
            progress.update(1)
            if state.global_step % train_args.log_every == 0 or state.global_step == total_steps:
                mean_loss = accelerator.reduce(running[0] / running[1], reduction="mean").item()
                running.zero_()
                lrs = lr_scheduler.get_last_lr()
                logs = {
                    "train/loss": mean_loss,
                    "train/nll": out.nll.detach().float().item(),
                    "train/physics_loss": out.physics_loss.detach().float().item(),
                    "train/lr_max": max(lrs),
                    "train/lr_min": min(lrs),
                    "train/grad_norm": float(grad_norm),
                    "train/skipped_steps": state.skipped_steps,
                    "train/epoch": state.epoch + state.batches_in_epoch / micro_per_epoch,
                    **{f"physics/{k}": v.detach().float().item() for k, v in out.physics_terms.items()},
                    **({"train/regime_loss": out.regime_loss.detach().float().item()} if out.regime_loss is not None else {}),
                    **device_memory(accelerator.device),
                }
                accelerator.log(logs, step=state.global_step)
                state.history.append({"step": state.global_step, "train/loss": mean_loss})
                progress.set_postfix(loss=f"{mean_loss:.4f}")

            end_of_epoch = state.batches_in_epoch >= micro_per_epoch
            do_eval = (train_args.eval_every and state.global_step % train_args.eval_every == 0) or end_of_epoch or state.global_step == total_steps
            is_best = False
            if do_eval:
                timer.pause()
                with ema_weights(ema, unwrapped):
                    val = evaluate(unwrapped, val_loader, accelerator)
                is_best = state.record_validation(val[BEST_METRICS[model_args.best_metric]])
                state.history[-1].update({"val/loss": val["loss"], "val/nrmse_mean": val["model/nrmse_mean"]})
                accelerator.log({"val/loss": val["loss"], "val/r2_mean": val["model/r2_mean"], "val/calibration_error": val["calibration/error"]}, step=state.global_step)
                if "regime/model/accuracy" in val:
                    accelerator.log({"val/regime_accuracy": val["regime/model/accuracy"], "val/regime_macro_f1": val["regime/model/macro_f1"]}, step=state.global_step)
                logger.info(
                    "step %d: val loss %.4f, nrmse %.3f, mean R2 %.3f%s", state.global_step, val["loss"], val["model/nrmse_mean"],
                    val["model/r2_mean"], " (best)" if is_best else "",
                )
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
    if state.patience_exhausted(train_args.early_stopping_patience):
        logger.info("early stopping: %d validations without improvement", state.evals_without_improvement)

    # 11. Final model = EMA weights of the best checkpoint; test on held-out planets beside the ridge baseline.
    checkpoints.restore_best_weights(state)
    with ema_weights(ema, unwrapped):
        # the predicted variances, fitted on the training planets, are rescaled by their mean z^2 on validation
        scale = evaluate(unwrapped, val_loader, accelerator)["calibration/mean_z2"] if config.predict_variance else 1.0
        test = evaluate(unwrapped, test_loader, accelerator, ridge=ridge, variance_scale=scale, regime_baselines=regime_baselines)
        if accelerator.is_main_process:
            unwrapped.save_pretrained(output_dir, safe_serialization=True)
            from astrobio_hf.recipes.cnn_vit_report import write_report

            write_report(
                output_dir, unwrapped, test, state, ridge=ridge,
                report_loader=make_loader(data_args.data_dir, "test", schema, data_args, train_args, False, 0, 1),
                device=accelerator.device, train_seconds=time.perf_counter() - started, throughput=timer.summary(),
                run_config=resolved_config(data_args, model_args, train_args), schema=schema, init_origin=init_origin,
            )
    accelerator.log({f"test/{k}": v for k, v in test.items() if isinstance(v, (int, float))}, step=state.global_step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    pusher.on_end()
    pusher.wait()
    return test


if __name__ == "__main__":
    main()
