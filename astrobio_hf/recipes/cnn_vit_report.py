"""What a CNN-ViT run leaves for a person: metrics.json, parity plots and the model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from astrobio_hf.hub import build_model_card, markdown_table
from astrobio_hf.hub.init_from import describe_origin
from astrobio_hf.hub.plots import plot_loss_curves
from astrobio_hf.recipes.datacube_report import _duration, _machine

logger = logging.getLogger(__name__)


@torch.no_grad()
def _collect(model, loader, ridge, device):
    """True, predicted (mean, std) and ridge parameters of every test window, physical units (numpy)."""
    from astrobio_hf.recipes.train_cnn_vit import ridge_predict

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
    payload = {
        "test": test,
        "global_step": state.global_step,
        "train_seconds": train_seconds,
        "train_throughput": throughput,
        "skipped_steps": state.skipped_steps,
        "history": state.history,
        "config": run_config,
        "init_from": init_origin,
    }
    (output_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))

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
                f"{state.global_step} optimizer steps in {_duration(train_seconds)} on {_machine()}; data `{run_config.get('data_dir')}` "
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
