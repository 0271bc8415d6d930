"""Climate diffusion denoiser: noisy (V, Y, X) or (V, Z, Y, X) fields + planet parameters -> diffusion prediction."""

from .configuration_climate_diffusion import ClimateDiffusionConfig
from .modeling_climate_diffusion import (
    ClimateDiffusionConditionEmbedding,
    ClimateDiffusionModel,
    ClimateDiffusionOutput,
    ClimateDiffusionPreTrainedModel,
)


__all__ = [
    "ClimateDiffusionConfig",
    "ClimateDiffusionConditionEmbedding",
    "ClimateDiffusionModel",
    "ClimateDiffusionOutput",
    "ClimateDiffusionPreTrainedModel",
]
