"""Classifier-free guidance (Ho & Salimans 2022): condition dropout in training, guided combination in sampling."""

from __future__ import annotations

import torch


def condition_dropout_mask(
    batch_size: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-example condition dropout for classifier-free guidance training.

    Each example independently keeps its condition with probability `1 - p`: the mask is
    `torch.rand(batch_size, generator=generator) >= p`, one draw per example (never one draw for the whole batch).
    Pass it as `condition_mask` to the denoiser: True keeps the condition, False uses the learned null embedding.

    Args:
        batch_size: number of examples.
        p: probability of dropping an example's condition, in [0, 1].
        generator: random generator (on `device`, or on the CPU when `device` is None); the global one when None.
        device: where the mask is made (the generator's device when None).

    Returns:
        `torch.BoolTensor` of shape `(batch_size,)`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be a non-negative integer, got {batch_size!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p (the condition dropout probability) must be in [0, 1], got {p!r}")
    if device is None and generator is not None:
        device = generator.device
    draws = torch.rand(batch_size, generator=generator, device=device)  # one uniform draw per example
    return draws >= p


def cfg_combine(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    rescale: float = 0.0,
) -> torch.Tensor:
    """Guided prediction `uncond + scale * (cond - uncond)`, optionally rescaled (Lin et al. 2023, Sec. 3.4).

    With `rescale > 0` the guided prediction is scaled to the per-example standard deviation of the conditional one
    and mixed with the unscaled guided prediction: `rescale * guided * std(cond) / std(guided) + (1 - rescale) *
    guided`, the standard deviation taken over all axes but the batch; this is what diffusers' `rescale_noise_cfg`
    computes. `scale = 1` gives `cond`, `scale = 0` gives `uncond`.
    """
    if cond.shape != uncond.shape:
        raise ValueError(f"cond and uncond: expected the same shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}")
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale (guidance_rescale) must be in [0, 1], got {rescale}")
    guided = uncond + scale * (cond - uncond)
    if rescale == 0.0:
        return guided
    dims = list(range(1, cond.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True)
    rescaled = guided * (std_cond / std_guided)
    return rescale * rescaled + (1.0 - rescale) * guided


__all__ = ["cfg_combine", "condition_dropout_mask"]
