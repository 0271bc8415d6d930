"""Single climate frames for generative models: (V, Y, X) at one level, or (V, Z, Y, X) on several.

Frames are the inputs of forecasting windows with ``context_steps=1`` (see ``streaming``), unfolded over
geological time: each (series, climate step, geological epoch) gives one frame, conditioned on the planet
parameters and labelled with its geological epoch index.
"""

from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange

from .streaming import build_window_dataset, collate_windows

CONSTANT_KEYS = ("gravity", "gas_constant", "heat_capacity", "planet_radius")


def build_frame_dataset(data_dir, split: str, **kwargs):
    """Streaming dataset whose rows each hold one climate step (collate with `collate_frames`).

    `kwargs` are those of `build_window_dataset` except `context_steps` (fixed to 1)."""
    return build_window_dataset(data_dir, split, context_steps=1, **kwargs)


def collate_frames(examples: list[dict], level_indices: Sequence[int] | None = None) -> dict:
    """Collate rows of `build_frame_dataset` into frames.

    Returns `fields` (N, V, Y, X) when one level is selected, else (N, V, Z', Y, X), in physical units,
    with N = B * Tg; `planet_params` (N, P); `class_labels` (N,) the geological epoch index; the planet
    constants (N,); `planet_id` (list of N).
    """
    batch = collate_windows(examples)
    inputs = batch["inputs"]  # (B, V, 1, Tg, Z, Y, X)
    z = inputs.shape[4]
    levels = list(range(z)) if level_indices is None else list(level_indices)
    if not levels or min(levels) < 0 or max(levels) >= z:
        raise ValueError(f"expected level indices in [0, {z}), got {list(level_indices or [])}")
    tg = inputs.shape[3]
    cube = inputs[:, :, 0][:, :, :, levels]  # (B, V, Tg, Z', Y, X)
    fields = rearrange(cube, "b v tg z y x -> (b tg) v z y x")
    if len(levels) == 1:
        fields = fields[:, :, 0]  # (N, V, Y, X)
    out = {
        "fields": fields.contiguous(),
        "planet_params": torch.repeat_interleave(batch["planet_params"], tg, dim=0),
        "class_labels": torch.arange(tg).repeat(inputs.shape[0]),
        "planet_id": [pid for pid in batch["planet_id"] for _ in range(tg)],
    }
    for key in CONSTANT_KEYS:
        out[key] = torch.repeat_interleave(batch[key], tg, dim=0)
    return out
