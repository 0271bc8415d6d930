"""Parameter groups and the optimizer."""

from __future__ import annotations

import inspect

import torch
from torch import nn

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm3d)


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    lr_multipliers: dict[str, float] | None = None,
    no_decay_names: tuple[str, ...] = (),
) -> list[dict]:
    """Split trainable parameters into groups: weight decay on weights only, none on biases and norms.

    `no_decay_names` lists parameter-name suffixes that get no decay either (e.g. ``"cls_token"``,
    ``"position_embeddings"`` of a ViT).

    `lr_multipliers` maps a module-name prefix (e.g. ``"physics"``) to a factor on the learning rate of
    the parameters under it; the longest matching prefix wins. Each group carries `lr_scale`, which
    `create_optimizer` turns into its learning rate.
    """
    lr_multipliers = lr_multipliers or {}
    no_decay: set[str] = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            is_norm = isinstance(module, _NORM_TYPES) or "norm" in module_name.split(".")[-1]
            if is_norm or param_name.endswith("bias") or full.endswith(tuple(no_decay_names)):
                no_decay.add(full)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        matches = [p for p in lr_multipliers if name.startswith(p)]
        scale = lr_multipliers[max(matches, key=len)] if matches else 1.0
        groups.setdefault((name in no_decay, scale), []).append(param)
    return [
        {"params": params, "weight_decay": 0.0 if is_no_decay else weight_decay, "lr_scale": scale}
        for (is_no_decay, scale), params in groups.items()
    ]


def create_optimizer(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    lr_multipliers: dict[str, float] | None = None,
    no_decay_names: tuple[str, ...] = (),
) -> torch.optim.AdamW:
    """AdamW over `parameter_groups`, fused where every parameter's device supports it (CUDA, and CPU on
    recent torch), else the foreach implementation."""
    groups = parameter_groups(model, weight_decay, lr_multipliers, no_decay_names)
    for group in groups:
        group["lr"] = learning_rate * group.pop("lr_scale")
    devices = {p.device.type for g in groups for p in g["params"]}
    fused_ok = "fused" in inspect.signature(torch.optim.AdamW).parameters and devices <= {"cuda", "cpu"}
    fused_ok = fused_ok and all(p.dtype.is_floating_point for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=True if fused_ok else None)


def micro_batches_per_epoch(per_rank_examples: list[int], batch_size: int, gradient_accumulation_steps: int) -> int:
    """Micro-batches every process runs per epoch: the smallest per-process count (so DDP ranks stay in
    step; a streamed split may give ranks a few examples more or less), rounded down to whole
    accumulation cycles so that every epoch ends on an optimizer step."""
    n = min(per_rank_examples) // batch_size
    n -= n % gradient_accumulation_steps
    if n == 0:
        raise ValueError(
            f"expected at least {batch_size * gradient_accumulation_steps} training examples per process "
            f"(batch {batch_size} x accumulation {gradient_accumulation_steps}), found {min(per_rank_examples)} "
            f"(per process: {per_rank_examples}); use more data or a smaller batch"
        )
    return n
