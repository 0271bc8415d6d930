"""Normalisation statistics as tensors, shared by the families whose configs carry them."""

from __future__ import annotations

import torch


def statistics_table(values, shape: tuple[int, ...], fill: float) -> torch.Tensor:
    """A config table as float32, or `fill` everywhere when the config holds none."""
    return torch.full(shape, fill) if values is None else torch.tensor(values, dtype=torch.float32)


def normalisation_tensors(config) -> dict[str, torch.Tensor]:
    """Per variable and level mean/std (V x Z) and per planet parameter mean/std (P,) from a config with
    `norm_mean`, `norm_std`, `planet_param_mean`, `planet_param_std`; identity (0, 1) where it holds none."""
    V, Z, P = config.num_variables, config.num_levels, config.num_planet_params
    return {
        "norm_mean": statistics_table(config.norm_mean, (V, Z), 0.0),
        "norm_std": statistics_table(config.norm_std, (V, Z), 1.0),
        "planet_mean": statistics_table(config.planet_param_mean, (P,), 0.0),
        "planet_std": statistics_table(config.planet_param_std, (P,), 1.0),
    }
