"""Utility against privacy: the same recipe trained without DP and at several target epsilons, from one command,
with a loss-threshold membership-inference attack on each model.

    astrobio-hf privacy datacube|cnn-vit|language-model [config.yaml] --epsilons 1,3,8 [--output-root runs/privacy] [--key value ...]

Each setting is an ordinary run of the family's recipe (`--dp true --target_epsilon E` added, delta 1/N by
default), written to `<output-root>/<setting>/`. The report (`<output-root>/privacy_report.json`, `.md`,
`privacy_utility.png`) gives per setting: the epsilon actually spent, the test metric, and the attack's AUC.

The attack (Yeom et al. 2018): the model's per-example loss on the training examples (members: every window; for
the language model 256 rows) and on as many held-out test examples (non-members); a lower loss says "member". Its
ROC AUC is 0.5 when the model's losses do not tell the two apart, above it when the model remembers its training
examples. Written here: it needs only the model's own loss, one example at a time. The test examples come from
held-out planets (host stars), so the AUC also carries the generalisation gap, which is what this attack measures.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

def _window_losses(model, data_dir: str, split: str, context_steps: int, stride: int, model_inputs) -> np.ndarray:
    """The model's own loss on every window of `split`, one window at a time."""
    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.data.streaming import build_window_dataset, collate_windows

    schema = DatasetSchema.from_dir(data_dir)
    windows = build_window_dataset(data_dir, split, context_steps=context_steps, stride=stride, shuffle_buffer=0, seed=0, rank=0,
                                   world_size=1, schema=schema)
    model.eval()
    with torch.no_grad():
        return np.asarray([float(model(**model_inputs(collate_windows([w]), torch.device("cpu"))).loss) for w in windows])


def _datacube_losses(run_dir: Path, data_args, model_args, split: str) -> np.ndarray:
    from astrobio_hf.evaluation.datacube import model_inputs
    from astrobio_hf.models.datacube_unet import DatacubeUNetForForecast

    return _window_losses(DatacubeUNetForForecast.from_pretrained(run_dir), data_args.data_dir, split, data_args.context_steps,
                          data_args.stride, model_inputs)


def _cnn_vit_losses(run_dir: Path, data_args, model_args, split: str) -> np.ndarray:
    from astrobio_hf.evaluation.cnn_vit import model_inputs
    from astrobio_hf.models.cnn_vit import CnnVitForParameterRegression

    return _window_losses(CnnVitForParameterRegression.from_pretrained(run_dir), data_args.data_dir, split, data_args.context_steps,
                          data_args.stride, model_inputs)


def _language_model_losses(run_dir: Path, data_args, model_args, split: str, limit: int = 256) -> np.ndarray:
    """Each example's mean answer-token loss (the training objective under --dp), for up to `limit` rows of `split`
    (seeded choice): the adapter release on its base."""
    from astrobio_hf.data.chat import ChatEncoder, InstructionCollator, answer_loss
    from astrobio_hf.data.instructions import load_instruction_split
    from astrobio_hf.models.language_model import load_adapter_release

    model, tokenizer = load_adapter_release(run_dir)
    collate = InstructionCollator(ChatEncoder(tokenizer, data_args.max_length, model_args.system_prompt))
    rows = load_instruction_split(data_args.data_dir, split, streaming=False)
    if data_args.tasks:
        keep = {t.strip() for t in data_args.tasks.split(",") if t.strip()}
        rows = rows.filter(lambda row: row["task"] in keep)
    rows = rows.shuffle(seed=0).select(range(min(limit, len(rows))))
    model.eval()
    with torch.no_grad():
        return np.asarray([float(answer_loss(model, collate([row]), per_example=True)[0]) for row in rows])


# family -> (recipe module, default test metric, per-example losses of a run on a split)
FAMILIES = {
    "datacube": ("astrobio_hf.recipes.train_datacube", "model/nrmse", _datacube_losses),
    "cnn-vit": ("astrobio_hf.recipes.train_cnn_vit", "model/nrmse_mean", _cnn_vit_losses),
    "language-model": ("astrobio_hf.recipes.train_language_model", "fine_tuned/heldout_loss", _language_model_losses),
}


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
    import importlib

    from astrobio_hf.training.args import parse_recipe_args

    module, default_metric, losses = FAMILIES[family]
    recipe = importlib.import_module(module)
    metric = metric or default_metric
    data_args, model_args, _ = parse_recipe_args(recipe.ARGUMENT_TYPES, list(recipe_argv), defaults=recipe.RECIPE_DEFAULTS)  # checked first
    root = Path(output_root)
    rows = []
    for eps in [None, *epsilons]:
        name = "no_dp" if eps is None else f"epsilon_{eps:g}"
        out = root / name
        argv = [*recipe_argv, "--output_dir", str(out), "--report_to", "none"]
        if eps is not None:
            argv += ["--dp", "true", "--target_epsilon", str(eps)]
        logger.info("privacy report: %s", name)
        recipe.main(argv)
        metrics = json.loads((out / "metrics.json").read_text())
        if metric not in metrics["test"]:
            raise KeyError(f"--metric: expected a test metric of metrics.json, got {metric!r} (it has {sorted(metrics['test'])[:12]}, ...)")
        attack = membership_auc(losses(out, data_args, model_args, "train"), losses(out, data_args, model_args, "test"))
        rows.append({"setting": name, "target_epsilon": eps, "privacy": metrics.get("privacy"), "metric": metric,
                     "test_metric": metrics["test"][metric], "attack": attack})
    report = {"family": family, "recipe_args": recipe_argv, "rows": rows, "verdict": _verdict(rows)}
    (root / "privacy_report.json").write_text(json.dumps(report, indent=2))
    _write_markdown(report, root / "privacy_report.md")
    _plot(report, root / "privacy_utility.png")
    return report


def _verdict(rows: list[dict]) -> str:
    """Whether the attack stands above chance without DP and falls toward 0.5 as epsilon falls, in words, against
    the AUC's standard error under no signal (Hanley & McNeil: sqrt((n1 + n2 + 1) / (12 n1 n2)))."""
    base = next(r for r in rows if not r["privacy"])["attack"]
    private = sorted((r for r in rows if r["privacy"]), key=lambda r: r["privacy"]["epsilon"])
    n = base["members"]
    se = math.sqrt((2 * n + 1) / (12 * n * n))
    aucs = [r["attack"]["auc"] for r in private]
    base_text = f"without DP the attack's AUC is {base['auc']:.3f}, " + (
        f"above chance ({(base['auc'] - 0.5) / se:.1f} standard errors of {se:.3f} at {n} members and {n} non-members)"
        if base["auc"] - 0.5 > 2 * se else f"not clearly above chance (standard error {se:.3f} at {n} per side)")
    dp_text = "with DP it is " + ", ".join(f"{a:.3f} at epsilon {r['privacy']['epsilon']:.3g}" for a, r in zip(aucs, private))
    if len(aucs) > 1 and aucs[-1] - aucs[0] > 2 * se:
        trend = "falling toward 0.5 as epsilon falls"
    elif len(aucs) > 1 and aucs[0] - aucs[-1] > 2 * se:
        trend = "rising as epsilon falls (not what DP should do)"
    else:
        trend = "no trend across these epsilons beyond the noise"
    below = all(base["auc"] - a > 2 * se for a in aucs)
    closest = abs(aucs[0] - 0.5) <= 2 * se
    return (f"{base_text}; {dp_text}: {trend}, {'every one clearly below' if below else 'not all clearly below'} the no-DP AUC, and the "
            f"smallest epsilon's {'within' if closest else 'beyond'} two standard errors of 0.5")


def _write_markdown(report: dict, path: Path) -> None:
    lines = ["| setting | epsilon spent (delta) | noise multiplier | " + report["rows"][0]["metric"] + " (test) | membership-attack AUC |",
             "|---|---|---|---|---|"]
    for r in report["rows"]:
        p = r["privacy"]
        spent = f"{p['epsilon']:.3g} ({p['delta']:.2g})" if p else "∞ (no DP)"
        noise = f"{p['noise_multiplier']:.3g}" if p else "–"
        lines.append(f"| {r['setting']} | {spent} | {noise} | {r['test_metric']:.4g} | {r['attack']['auc']:.3f} |")
    path.write_text("\n".join(lines) + "\n\n" + report["verdict"] + ".\n")


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
