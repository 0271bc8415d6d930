"""Evaluation of the pipeline's soft-token phases (issue 16): losses over (embedding, text) rows, answers read out
of generated text, and the scores of each question type beside baselines computed in the same run.

- `collate_rows` / `rows_loss`: a batch of rows (a planet encoder's embedding, chat-encoded text) for a
  `SoftTokenLanguageModel`, and the token-weighted mean answer loss over rows (optionally with one embedding for
  every row: the mean training embedding, which carries no planet information).
- `parse_choice`: which of a question's allowed answers a generated text gives: the one label it names as a whole
  word (case-insensitive, `_` read as a space); a text naming none or several is unparsed (None, scored wrong).
- `score_choices`: accuracy, balanced accuracy (the mean per-class recall: always answering the majority class
  scores 1/K), the share parsed and n.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from astrobio_hf.data.chat import pad_collate


def collate_rows(rows: Sequence[dict], pad_token_id: int) -> dict:
    """`{"embedding" (B, H), "input_ids", "attention_mask", "labels", "logits_to_keep"}` of left-padded rows (the soft
    tokens' positions are computed by `soft_token_batch`, so the collator's `position_ids` are dropped)."""
    batch = pad_collate([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows], pad_token_id)
    batch.pop("position_ids")
    batch["embedding"] = torch.stack([r["embedding"] for r in rows])
    return batch


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def rows_loss(model, rows: Sequence[dict], pad_token_id: int, device, embedding: torch.Tensor | None = None,
              batch_size: int = 16) -> float:
    """Token-weighted mean answer loss of a `SoftTokenLanguageModel` over `rows`; `embedding` `(1, H)`: the same
    embedding for every row instead of each row's own."""
    total = count = 0.0
    was_training = model.training
    model.eval()
    for i in range(0, len(rows), batch_size):
        batch = collate_rows(rows[i:i + batch_size], pad_token_id)
        if embedding is not None:
            batch["embedding"] = embedding.expand_as(batch["embedding"])
        loss, tokens = model(**to_device(batch, device))
        total += float(loss) * tokens
        count += tokens
    model.train(was_training)
    return total / max(count, 1)


def _words(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower().replace("_", " ")) + " "


def parse_choice(text: str, labels: Sequence[str]) -> str | None:
    """The one label of `labels` that `text` names as whole words, else None (none or several named)."""
    words = _words(text)
    named = [label for label in labels if _words(label) in words]
    return named[0] if len(named) == 1 else None


def score_choices(truth: Sequence[str], pred: Sequence[str | None]) -> dict:
    """accuracy, balanced accuracy (mean per-class recall over the classes present in `truth`), parsed share, n."""
    n = len(truth)
    if not n:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "parsed": float("nan"), "n": 0}
    recalls = [np.mean([p == label for t, p in zip(truth, pred) if t == label]) for label in sorted(set(truth))]
    return {"accuracy": float(np.mean([p == t for t, p in zip(truth, pred)])), "balanced_accuracy": float(np.mean(recalls)),
            "parsed": float(np.mean([p is not None for p in pred])), "n": n}


def majority_answer(answers: Sequence[str]) -> str:
    """The most common answer (ties: the first in sorted order, so the choice does not depend on row order)."""
    counts = Counter(answers)
    best = max(counts.values())
    return sorted(a for a, c in counts.items() if c == best)[0]


__all__ = ["collate_rows", "majority_answer", "parse_choice", "rows_loss", "score_choices", "to_device"]
