"""Utility against privacy: the same recipe trained without DP and at several target epsilons, from one command,
with a loss-threshold membership-inference attack on each model.

    astrobio-hf privacy datacube [config.yaml] --epsilons 1,3,8 [--output-root runs/privacy] [--key value ...]

Each setting is an ordinary run of the family's recipe (`--dp true --target_epsilon E` added, delta 1/N by
default), written to `<output-root>/<setting>/`. The report (`<output-root>/privacy_report.json`, `.md`,
`privacy_utility.png`) gives per setting: the epsilon actually spent, the test metric, and the attack's AUC.

The attack (Yeom et al. 2018): the model's per-example loss on every training window (members) and on as many
held-out test windows (non-members); a lower loss says "member". Its ROC AUC is 0.5 when the model's losses do
not tell the two apart, above it when the model remembers its training examples. Written here: it needs only the
model's own loss, one window at a time.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

FAMILIES = ("datacube",)
DEFAULT_METRIC = {"datacube": "model/nrmse"}


def _datacube_losses(run_dir: Path, data_dir: str, split: str, context_steps: int, stride: int, limit: int | None) -> np.ndarray:
    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.data.streaming import build_window_dataset, collate_windows
    from astrobio_hf.evaluation.datacube import model_inputs
    from astrobio_hf.models.datacube_unet import DatacubeUNetForForecast

    model = DatacubeUNetForForecast.from_pretrained(run_dir).eval()
    schema = DatasetSchema.from_dir(data_dir)
    windows = build_window_dataset(data_dir, split, context_steps=context_steps, stride=stride, shuffle_buffer=0, seed=0, rank=0,
                                   world_size=1, schema=schema)
    losses = []
    with torch.no_grad():
        for window in windows:
            losses.append(float(model(**model_inputs(collate_windows([window]), torch.device("cpu"))).loss))
            if limit and len(losses) >= limit:
                break
    return np.asarray(losses)


def membership_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray, seed: int = 0) -> dict:
    """ROC AUC of the loss-threshold attack on balanced sets (the larger set subsampled, seeded)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = min(len(member_losses), len(nonmember_losses))
    if n < 2:
        raise ValueError(f"membership attack: expected at least 2 members and 2 non-members, got {len(member_losses)} and {len(nonmember_losses)}")
    m = rng.choice(member_losses, n, replace=False)
    o = rng.choice(nonmember_losses, n, replace=False)
    auc = roc_auc_score(np.r_[np.ones(n), np.zeros(n)], -np.r_[m, o])
    return {"auc": float(auc), "members": int(n), "nonmembers": int(n), "member_loss": float(m.mean()), "nonmember_loss": float(o.mean())}


def run_privacy_report(family: str, recipe_argv: list[str], epsilons: list[float], output_root: str, metric: str | None = None) -> dict:
    if family not in FAMILIES:
        raise ValueError(f"expected a family with DP support and a membership attack, one of {list(FAMILIES)}, got {family!r}")
    if not epsilons or any(not (e > 0 and math.isfinite(e)) for e in epsilons):
        raise ValueError(f"--epsilons: expected positive budgets, got {epsilons}")
    from astrobio_hf.recipes.train_datacube import ARGUMENT_TYPES, RECIPE_DEFAULTS, main
    from astrobio_hf.training.args import parse_recipe_args

    metric = metric or DEFAULT_METRIC[family]
    data_args, _, _ = parse_recipe_args(ARGUMENT_TYPES, list(recipe_argv), defaults=RECIPE_DEFAULTS)  # checked before any run
    root = Path(output_root)
    rows = []
    for eps in [None, *epsilons]:
        name = "no_dp" if eps is None else f"epsilon_{eps:g}"
        out = root / name
        argv = [*recipe_argv, "--output_dir", str(out), "--report_to", "none"]
        if eps is not None:
            argv += ["--dp", "true", "--target_epsilon", str(eps)]
        logger.info("privacy report: %s", name)
        main(argv)
        metrics = json.loads((out / "metrics.json").read_text())
        members = _datacube_losses(out, data_args.data_dir, "train", data_args.context_steps, data_args.stride, None)
        others = _datacube_losses(out, data_args.data_dir, "test", data_args.context_steps, data_args.stride, None)
        rows.append({"setting": name, "target_epsilon": eps, "privacy": metrics.get("privacy"), "metric": metric,
                     "test_metric": metrics["test"].get(metric), "attack": membership_auc(members, others)})
    report = {"family": family, "recipe_args": recipe_argv, "rows": rows}
    (root / "privacy_report.json").write_text(json.dumps(report, indent=2))
    _write_markdown(report, root / "privacy_report.md")
    _plot(report, root / "privacy_utility.png")
    return report


def _write_markdown(report: dict, path: Path) -> None:
    lines = ["| setting | epsilon spent (delta) | noise multiplier | " + report["rows"][0]["metric"] + " (test) | membership-attack AUC |",
             "|---|---|---|---|---|"]
    for r in report["rows"]:
        p = r["privacy"]
        spent = f"{p['epsilon']:.3g} ({p['delta']:.2g})" if p else "∞ (no DP)"
        noise = f"{p['noise_multiplier']:.3g}" if p else "–"
        lines.append(f"| {r['setting']} | {spent} | {noise} | {r['test_metric']:.4g} | {r['attack']['auc']:.3f} |")
    path.write_text("\n".join(lines) + "\n")


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    private = [r for r in rows if r["privacy"]]
    base = next(r for r in rows if not r["privacy"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    eps = [r["privacy"]["epsilon"] for r in private]
    axes[0].plot(eps, [r["test_metric"] for r in private], "o-", label="DP-SGD")
    axes[0].axhline(base["test_metric"], color="k", ls="--", label="no DP")
    axes[0].set(xscale="log", xlabel="epsilon spent", ylabel=f"test {base['metric']}", title="utility")
    axes[1].plot(eps, [r["attack"]["auc"] for r in private], "o-", label="DP-SGD")
    axes[1].axhline(base["attack"]["auc"], color="k", ls="--", label="no DP")
    axes[1].axhline(0.5, color="grey", ls=":", label="chance")
    axes[1].set(xscale="log", xlabel="epsilon spent", ylabel="membership-attack AUC", title="privacy")
    for ax in axes:
        ax.set_xticks(eps, [f"{e:.2g}" for e in eps])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
