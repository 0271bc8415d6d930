"""Climate + spectra multi-task family: cube and spectrum encoders, fused latent, climate and spectrum heads."""

from .configuration_climate_spectra import ClimateSpectraConfig
from .modeling_climate_spectra import (
    ClimateSpectraColumnHead,
    ClimateSpectraForMultiTask,
    ClimateSpectraLossCombiner,
    ClimateSpectraModel,
    ClimateSpectraModelOutput,
    ClimateSpectraOutput,
    ClimateSpectraPreTrainedModel,
    physics_weight_schedule,
    smoothness_penalty,
)

__all__ = [
    "ClimateSpectraColumnHead",
    "ClimateSpectraConfig",
    "ClimateSpectraForMultiTask",
    "ClimateSpectraLossCombiner",
    "ClimateSpectraModel",
    "ClimateSpectraModelOutput",
    "ClimateSpectraOutput",
    "ClimateSpectraPreTrainedModel",
    "physics_weight_schedule",
    "smoothness_penalty",
]
