"""Exponential moving average of the weights, from diffusers (`EMAModel`), for any `PreTrainedModel`.

diffusers' `EMAModel.save_pretrained` expects a diffusers `ModelMixin` (`from_config`), so for
transformers models we swap the EMA weights in around evaluation and `save_pretrained` instead.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from diffusers.training_utils import EMAModel
from torch import nn


def create_ema(model: nn.Module, decay: float, use_warmup: bool = True, power: float = 3 / 4) -> EMAModel | None:
    """diffusers EMA over the trainable parameters; None when `decay` is 0.

    With warmup the decay ramps as 1 - (1 + step)^-power up to `decay`, so short runs are not dominated by
    the random initial weights. It must be registered with `accelerator.register_for_checkpointing`.
    """
    if decay <= 0:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    return EMAModel(params, decay=decay, use_ema_warmup=use_warmup, power=power, foreach=True)


@contextlib.contextmanager
def ema_weights(ema: EMAModel | None, model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily load the EMA weights into `model` (no-op without EMA); the training weights come back after."""
    if ema is None:
        yield model
        return
    params = [p for p in model.parameters() if p.requires_grad]
    ema.store(params)
    ema.copy_to(params)
    try:
        yield model
    finally:
        ema.restore(params)
