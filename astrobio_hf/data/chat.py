"""Instruction examples -> token ids and labels with the base model's own chat template; the collators.

Loss on the answer only. TRL's `assistant_only_loss` needs `{% generation %}` markers in the template, which
SmolLM2's (and most) templates lack, so the mask comes from the prompt/answer boundary instead:

    prompt_ids = template(system?, user, add_generation_prompt=True)      "...<|im_start|>assistant\\n"
    full_ids   = template(system?, user, assistant=answer)                 "...<|im_start|>assistant\\n5.51 g/cm^3<|im_end|>\\n"

`full_ids` must start with `prompt_ids` (checked: a template that renders the prompt differently once an answer
follows has no boundary, and is refused by name). The labels are -100 on the prompt and on whatever the template
writes after the answer's end-of-turn token (here the trailing newline), and the token ids elsewhere: the answer
tokens and the end-of-turn token, which the model must learn to emit so that generation stops.

An example longer than `max_length` is an error naming it (truncating would drop answer tokens silently).

Collators: `pad_collate` left-pads to the longest example of the batch (labels -100, attention mask 0, positions from the
mask) and `answer_loss` then runs the LM head on the answer positions only;
`packed_collate` is transformers' `DataCollatorWithFlattening`: the batch becomes one row, with `position_ids`
restarting at every example, from which transformers' masking builds a block-diagonal causal mask, so no token
attends across examples and no compute goes to padding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

IGNORE_INDEX = -100


class ChatEncoder:
    """Token ids, labels and generation prompts of (prompt, answer) pairs under `tokenizer`'s chat template."""

    def __init__(self, tokenizer, max_length: int = 256, system_prompt: str | None = None):
        if max_length < 8:
            raise ValueError(f"expected --max_length >= 8, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.system_prompt = system_prompt or None
        self.end_of_turn = tokenizer.eos_token_id

    def _messages(self, prompt: str, answer: str | None = None) -> list[dict]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": prompt})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return messages

    def _ids(self, text: str) -> list[int]:
        # the template writes every special token itself; the tokenizer must not add a BOS of its own
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_text(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(self._messages(prompt), tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self._ids(self.prompt_text(prompt))

    def encode(self, prompt: str, answer: str, example_id: str = "") -> dict:
        """{"input_ids", "labels"} (lists) for one example; labels cover the answer and its end-of-turn token."""
        prompt_ids = self.prompt_ids(prompt)
        full_ids = self._ids(self.tokenizer.apply_chat_template(self._messages(prompt, answer), tokenize=False))
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError(
                f"expected the chat template to render the prompt of example {example_id!r} identically with and without "
                "its answer (the prompt/answer boundary defines the loss mask), found different token ids"
            )
        end = len(full_ids)
        answer_part = full_ids[len(prompt_ids):]
        if self.end_of_turn is not None and self.end_of_turn in answer_part:
            end = len(prompt_ids) + answer_part.index(self.end_of_turn) + 1
        if end - len(prompt_ids) < 1:
            raise ValueError(f"expected example {example_id!r} to have answer tokens, found none (empty answer?)")
        if len(full_ids) > self.max_length:
            raise ValueError(
                f"expected examples of at most --max_length {self.max_length} tokens, found {len(full_ids)} in example "
                f"{example_id!r}; raise --max_length"
            )
        labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids):end] + [IGNORE_INDEX] * (len(full_ids) - end)
        return {"input_ids": full_ids, "labels": labels}


def pad_collate(features: Sequence[dict], pad_token_id: int) -> dict:
    """Left-pad a list of {"input_ids", "labels"} to the longest: attention mask 0 and labels -100 on padding,
    `position_ids` counting from 0 at each example's first real token (so the positions, and the outputs, are
    those of the unpadded example). Left padding puts every answer at the end of its row, so the loss needs the
    LM head only on the last `logits_to_keep` positions (the longest answer + 1): the head is 20% of SmolLM2's
    compute and most positions are prompt."""
    length = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(features), length), dtype=torch.long)
    keep = 1
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, length - n:] = torch.tensor(f["input_ids"])
        labels[i, length - n:] = torch.tensor(f["labels"])
        mask[i, length - n:] = 1
        answer_start = next(j for j, v in enumerate(f["labels"]) if v != IGNORE_INDEX)
        keep = max(keep, n - answer_start + 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels, "logits_to_keep": keep}


def answer_loss(model, batch: dict, per_example: bool = False):
    """(mean cross-entropy over the answer tokens, number of those tokens): the model's own loss for a packed
    batch; for a padded one, the LM head runs on the last `logits_to_keep` positions only (see `pad_collate`).
    `per_example` (DP-SGD): the mean over the examples of each example's mean answer-token loss, so that an
    example's gradient does not depend on the answer lengths of the others in its batch (the per-sample clipping
    bound needs that); a padded batch only."""
    inputs = {k: batch[k] for k in ("input_ids", "inputs_embeds", "attention_mask", "position_ids") if k in batch}
    labels = batch["labels"]
    if "logits_to_keep" not in batch:
        if per_example:
            raise ValueError("expected a padded batch for a per-example answer loss (--dp), got a packed one (--packing true)")
        out = model(**inputs, labels=labels, use_cache=False)
        return out.loss, int((labels[:, 1:] != IGNORE_INDEX).sum())
    keep = int(batch["logits_to_keep"])
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits  # (B, keep, V)
    targets = labels[:, -keep + 1:]  # position t predicts token t + 1
    if per_example:
        token_losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                                         reduction="none")  # (B, keep - 1)
        counts = (targets != IGNORE_INDEX).sum(dim=1)
        return (token_losses.sum(dim=1) / counts.clamp(min=1)).mean(), int(counts.sum())
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    return loss, int((targets != IGNORE_INDEX).sum())


def packed_collate(features: Sequence[dict]) -> dict:
    """The batch as one row (transformers' `DataCollatorWithFlattening`): `position_ids` restart per example."""
    from transformers import DataCollatorWithFlattening

    batch = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])
    return {k: v for k, v in batch.items() if k in ("input_ids", "labels", "position_ids")}


class InstructionCollator:
    """DataLoader collate_fn over instruction rows (dicts with id, prompt, answer): encode, then pad or pack."""

    def __init__(self, encoder: ChatEncoder, packing: bool = False):
        self.encoder = encoder
        self.packing = packing
        self.pad_token_id = encoder.tokenizer.pad_token_id

    def __call__(self, rows: Sequence[dict]) -> dict:
        features = [self.encoder.encode(r["prompt"], r["answer"], r.get("id", "")) for r in rows]
        batch = packed_collate(features) if self.packing else pad_collate(features, self.pad_token_id)
        batch["num_examples"] = len(rows)
        return batch


def left_padded_prompts(encoder: ChatEncoder, prompts: Sequence[str]) -> dict:
    """Generation inputs: the prompts under the chat template, left-padded (so generation continues every row)."""
    ids = [encoder.prompt_ids(p) for p in prompts]
    length = max(len(x) for x in ids)
    pad = encoder.tokenizer.pad_token_id
    input_ids = torch.full((len(ids), length), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, length - len(x):] = torch.tensor(x)
        mask[i, length - len(x):] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def select_tasks(schema: dict, tasks: str | Sequence[str] = "") -> dict:
    """The schema restricted to `tasks` (a comma list or names; empty = all), with an error naming unknown ones."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        return schema
    unknown = [t for t in names if t not in schema["tasks"]]
    if unknown:
        raise ValueError(f"expected --tasks among {list(schema['tasks'])}, got unknown {unknown}")
    return {**schema, "tasks": {t: schema["tasks"][t] for t in schema["tasks"] if t in names}}


def _task_counts(data_dir, shard: dict, tasks) -> int:
    import pyarrow.parquet as pq

    column = pq.read_table(os.path.join(str(data_dir), shard["file"]), columns=["task"]).column("task").to_pylist()
    return sum(t in tasks for t in column)


def rows_per_rank(schema: dict, split: str, world_size: int, data_dir=None, tasks: Sequence[str] | None = None) -> list[int]:
    """Rows each of `world_size` processes reads from `split` (whole shards when the shard count is a multiple of
    the processes, as `datasets.distributed.split_dataset_by_node` does; else every world_size-th row). With
    `tasks`, only rows of those tasks count (read from the shards' task column)."""
    shards = schema["shards"][split]
    counts = [s["rows"] if tasks is None else _task_counts(data_dir, s, set(tasks)) for s in shards]
    if len(shards) % world_size == 0:
        return [sum(counts[r::world_size]) for r in range(world_size)]
    if tasks is not None:
        raise ValueError(f"--tasks needs a shard count ({len(shards)}) that is a multiple of the processes ({world_size})")
    total = sum(counts)
    return [(total - r + world_size - 1) // world_size for r in range(world_size)]


def instruction_stream(data_dir, split: str, *, seed: int, rank: int = 0, world_size: int = 1, shuffle_buffer: int = 0,
                       tasks: Sequence[str] | None = None):
    """The rows of `split` streamed with `datasets`, this process's share, in a seeded order per epoch
    (`set_epoch`): the shard order and a buffer of `shuffle_buffer` rows are permuted from (seed, epoch), so a
    resumed run replays the same order (the loop skips what was consumed). `tasks`: only rows of these tasks."""
    from datasets.distributed import split_dataset_by_node

    from .instructions import load_instruction_split

    if shuffle_buffer < 0:
        raise ValueError(f"expected --shuffle_buffer >= 0, got {shuffle_buffer}")
    ds = split_dataset_by_node(load_instruction_split(data_dir, split, streaming=True), rank=rank, world_size=world_size)
    if tasks is not None:
        keep = set(tasks)
        ds = ds.filter(lambda row: row["task"] in keep)
    if shuffle_buffer:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return ds
