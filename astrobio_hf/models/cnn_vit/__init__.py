"""CNN-ViT hybrid: (B, V, Tc, Tg, Z, Y, X) cube window -> planet parameters (mean, log-variance)."""

from .configuration_cnn_vit import PHYSICS_TERMS, CnnVitConfig
from .modeling_cnn_vit import (
    CnnVitForParameterRegression,
    CnnVitModel,
    CnnVitModelOutput,
    CnnVitPreTrainedModel,
    CnnVitRegressionOutput,
    cube_gas_constant,
    cube_gravity,
)

__all__ = [
    "PHYSICS_TERMS",
    "CnnVitConfig",
    "CnnVitForParameterRegression",
    "CnnVitModel",
    "CnnVitModelOutput",
    "CnnVitPreTrainedModel",
    "CnnVitRegressionOutput",
    "cube_gas_constant",
    "cube_gravity",
]
