"""Held-out evaluation of the CNN-ViT (R2 / RMSE per planet parameter, calibration of the predicted uncertainty and,
with regime labels, accuracy / macro-F1 / confusion matrix), the baselines fitted in the same run (a ridge regression
and a logistic regression on pooled cube features, the majority class) and what a CNN-ViT run leaves for a person:
metrics.json, parity plots and the model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import gather_object

from astrobio_hf.evaluation.common import duration, machine, write_metrics_json
from astrobio_hf.hub import build_model_card, markdown_table
from astrobio_hf.hub.init_from import describe_origin
from astrobio_hf.hub.plots import plot_loss_curves
from astrobio_hf.metrics.baselines import fit_ridge as fit_ridge_baseline
from astrobio_hf.models.cnn_vit import CnnVitConfig
from astrobio_hf.models.cnn_vit.modeling_cnn_vit import log_statistics

logger = logging.getLogger(__name__)

BEST_METRICS = {"nrmse": "model/nrmse_mean", "loss": "loss"}
LOGISTIC_L2 = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # L2 penalties of the logistic-regression regime baseline
REGIME_SYSTEMS = ("model", "majority", "logistic")


# ------------------------------------------------------------------------------------------------------
# Batch -> model mapping (what differs between families): the cube window in, the planet parameters (and, where the
# dataset has them, the regime labels) out
# ------------------------------------------------------------------------------------------------------
def model_inputs(batch: dict, device: torch.device) -> dict:
    inputs = {"inputs": batch["inputs"].to(device, non_blocking=True), "labels": batch["planet_params"].to(device, non_blocking=True)}
    if "planet_regime" in batch:
        inputs["regime_labels"] = batch["planet_regime"].to(device, non_blocking=True)
    return inputs


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
# Report: metrics.json, parity plots, model card
# ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _collect(model, loader, ridge, device):
    """True, predicted (mean, std) and ridge parameters of every test window, physical units (numpy)."""
    truth, mean, std, base = [], [], [], []
    for batch in loader:
        inputs = batch["inputs"].to(device)
        out = model(inputs=inputs)
        truth.append(batch["planet_params"].numpy())
        mean.append(out.mean.float().cpu().numpy())
        std.append(torch.exp(0.5 * out.log_variance.float()).cpu().numpy() if out.log_variance is not None else np.zeros_like(mean[-1]))
        base.append(ridge_predict(ridge, inputs, model.config).float().cpu().numpy())
    return np.concatenate(truth), np.concatenate(mean), np.concatenate(std), np.concatenate(base)


def plot_parity(config, truth, mean, std, ridge, test, path: Path) -> None:
    """One panel per parameter: predicted vs true with 1-sigma error bars (model) and the ridge baseline."""
    names = config.planet_param_names
    units = config.planet_param_units or [""] * len(names)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes[j // cols, j % cols]
        ax.errorbar(truth[:, j], mean[:, j], yerr=std[:, j], fmt="o", ms=3, alpha=0.6, label="CNN-ViT (1 sigma)")
        ax.plot(truth[:, j], ridge[:, j], "x", ms=4, alpha=0.6, color="tab:orange", label="ridge")
        lo = float(min(truth[:, j].min(), mean[:, j].min(), ridge[:, j].min()))
        hi = float(max(truth[:, j].max(), mean[:, j].max(), ridge[:, j].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_title(
            f"{name} [{units[j]}]\nR2 {test.get(f'model/r2/{name}', float('nan')):.2f} (ridge {test.get(f'ridge/r2/{name}', float('nan')):.2f})",
            fontsize=9,
        )
        ax.set_xlabel("true", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
        if j == 0:
            ax.legend(fontsize=7)
    for k in range(len(names), rows * cols):
        axes[k // cols, k % cols].axis("off")
    fig.suptitle("Held-out test planets: parity of planet parameters")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def regime_section(test: dict, schema) -> str | None:
    """Card section of the regime classification (None when the test has none): accuracy and macro-F1 of the model
    beside the majority-class and logistic-regression baselines, the rule and the model's confusion matrix."""
    if "regime/model/accuracy" not in test:
        return None
    names = test["regime/names"]
    labels = {"model": "CNN-ViT", "majority": "majority class of the training windows", "logistic": "logistic regression on pooled cube features"}
    rows = [
        [label, test[f"regime/{system}/accuracy"], test[f"regime/{system}/macro_f1"]]
        for system, label in labels.items()
        if f"regime/{system}/accuracy" in test
    ]
    table = markdown_table(["system", "accuracy", "macro-F1"], rows)
    matrix = markdown_table(
        ["true \\ predicted", *names], [[n, *[int(v) for v in row]] for n, row in zip(names, test["regime/model/confusion_matrix"])]
    )
    rule = getattr(schema, "planet_regime_rule", None) or ""
    counts = test.get("regime/train_counts")
    return (
        f"Planet regimes {', '.join(names)}. {rule} Accuracy over the held-out test windows; macro-F1 averaged over the "
        "classes present in the truth or the predictions. Baselines fitted in the same run on the same training windows"
        + (f" (windows per class {counts})" if counts else "")
        + (f"; logistic regression L2 {test['regime/logistic/l2']:g}, chosen on validation" if "regime/logistic/l2" in test else "")
        + ".\n\n" + table + "\n\nConfusion matrix of the CNN-ViT (test windows):\n\n" + matrix
    )


def write_report(
    output_dir, model, test, state, *, ridge, report_loader, device, train_seconds, throughput, run_config, schema, init_origin=None
):
    output_dir = Path(output_dir)
    plots = output_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    config = model.config
    names = config.planet_param_names
    write_metrics_json(
        output_dir, test, state, train_seconds=train_seconds, throughput=throughput, run_config=run_config, init_origin=init_origin
    )

    plot_loss_curves(state.history, plots / "loss_curves.png", title="CNN-ViT training", ylabel="loss (Gaussian NLL + physics)")
    truth, mean, std, base = _collect(model, report_loader, ridge, device)
    plot_parity(config, truth, mean, std, base, test, plots / "parity.png")

    units = config.planet_param_units or [""] * len(names)
    rows = [
        [f"{n} [{u}]", test[f"model/r2/{n}"], test[f"ridge/r2/{n}"], test[f"model/rmse/{n}"], test[f"ridge/rmse/{n}"]]
        for n, u in zip(names, units)
    ]
    table = markdown_table(["parameter", "R2 CNN-ViT", "R2 ridge", "RMSE CNN-ViT", "RMSE ridge"], rows)
    better = [n for n in names if test[f"model/r2/{n}"] > test[f"ridge/r2/{n}"]]
    calibration_rows = [["as predicted", test["calibration/coverage_1sigma"], test["calibration/coverage_2sigma"],
                         test["calibration/mean_z2"], test["calibration/error"]]]
    if "calibration_rescaled/variance_scale" in test:  # variances x (mean z^2 on the validation planets)
        calibration_rows.append([
            f"variance x {test['calibration_rescaled/variance_scale']:.3g} (fitted on validation)",
            test["calibration_rescaled/coverage_1sigma"], test["calibration_rescaled/coverage_2sigma"],
            test["calibration_rescaled/mean_z2"], test["calibration_rescaled/error"],
        ])
    calibration = markdown_table(
        ["variance", "coverage 1 sigma (Gaussian 0.683)", "coverage 2 sigma (0.954)", "mean z^2 (1)", "calibration error"],
        calibration_rows,
    )
    regimes = regime_section(test, schema)
    card = build_model_card(
        model_name="cnn-vit",
        summary=(
            "A CNN-ViT hybrid (`CnnVitForParameterRegression`, astrobio-hf) that infers the planet parameters "
            f"{', '.join(names)} with a Gaussian uncertainty from a {config.context_steps}-step climate datacube window of "
            f"{', '.join(config.variable_names)} on {config.num_levels} levels x {config.num_lat} lat x {config.num_lon} lon: "
            "a convolutional stem, patch tokens into a ViT encoder, and a coarse-scale CNN head tied to the ViT head by a "
            "cross-scale consistency term."
        ),
        sections={
            "Test metrics": (
                f"Held-out test planets ({test.get('samples', 0)} windows), EMA weights of the best validation checkpoint, "
                f"beside a ridge regression (alpha {ridge['alpha']:g}, chosen on validation) on pooled cube features "
                "(per variable and level mean and standard deviation) fitted in the same run on the same training windows. "
                "R2 over the test windows; RMSE in physical units.\n\n" + table
                + f"\n\nMean R2: CNN-ViT {test['model/r2_mean']:.3f}, ridge {test['ridge/r2_mean']:.3f}. CNN-ViT better than ridge on: "
                + (", ".join(better) or "none") + "."
            ),
            "Calibration of the predicted uncertainty": calibration,
            **({"Planet regime classification": regimes} if regimes else {}),
            "Training": (
                f"{state.global_step} optimizer steps in {duration(train_seconds)} on {machine()}; data `{run_config.get('data_dir')}` "
                f"({getattr(schema, 'source', '')}); loss = Gaussian NLL + physics terms {json.dumps(config.physics_weights)}"
                + (f" + {config.regime_loss_weight:g} x regime cross-entropy" if config.num_regimes else "") + "; "
                f"learning rate {run_config.get('learning_rate')} x {run_config.get('cnn_lr_multiplier')} (CNN) / "
                f"x {run_config.get('vit_lr_multiplier')} (ViT), warmup + cosine per step. "
                + (describe_origin(init_origin) + " " if init_origin else "")
                + "Full configuration in `metrics.json`."
            ),
            "How to use": (
                "```python\nimport astrobio_hf  # registers the Auto classes\nfrom transformers import AutoModel\n"
                f"model = AutoModel.from_pretrained(\"{output_dir}\")\n"
                "out = model(inputs=cube)  # cube: (B, V, Tc, Tg, Z, Y, X) in SI units\nout.mean, out.log_variance  # (B, P)\n"
                + ("out.regime_logits  # (B, K): " + ", ".join(config.regime_names) + "\n" if config.num_regimes else "")
                + "```"
            ),
            "Plots": "![parity](plots/parity.png)\n\n![loss](plots/loss_curves.png)",
            "Limitations": (
                "Trained on a small synthetic planet ensemble: few distinct planets, so parameters that leave a weak trace in "
                "the cube (orbital and rotation period over a short window) are poorly constrained and R2 over a handful of "
                "held-out planets is noisy."
            ),
        },
        eval_results=[("r2", f"R2 {n}", test[f"model/r2/{n}"]) for n in names]
        + ([("accuracy", "regime accuracy", test["regime/model/accuracy"]), ("f1", "regime macro-F1", test["regime/model/macro_f1"])] if regimes else []),
        task_type="tabular-regression",
        tags=["climate", "datacube", "exoplanets", "vit"],
    )
    card.save(str(output_dir / "README.md"))
    logger.info("wrote %s, metrics.json and plots/", output_dir / "README.md")
