"""Datacube U-Net forecaster: (B, V, Tc, Tg, Z, Y, X) cube -> next Tc steps (mean, log-variance)."""

from .configuration_datacube_unet import DatacubeUNetConfig
from .modeling_datacube_unet import (
    DatacubeForecastOutput,
    DatacubeUNetForForecast,
    DatacubeUNetModel,
    DatacubeUNetModelOutput,
    DatacubeUNetPreTrainedModel,
    build_physics_constraints,
)


__all__ = [
    "DatacubeUNetConfig",
    "DatacubeForecastOutput",
    "DatacubeUNetForForecast",
    "DatacubeUNetModel",
    "DatacubeUNetModelOutput",
    "DatacubeUNetPreTrainedModel",
    "build_physics_constraints",
]
