"""Causal world model: a neural structural causal model learned under DAGMA's acyclicity path."""

from .configuration_causal_world_model import CausalWorldModelConfig
from .modeling_causal_world_model import (
    CausalWorldModel,
    CausalWorldModelOutput,
    CausalWorldModelPreTrainedModel,
    parent_pvalues,
    transformed_statistics,
)

__all__ = [
    "CausalWorldModel",
    "CausalWorldModelConfig",
    "CausalWorldModelOutput",
    "CausalWorldModelPreTrainedModel",
    "parent_pvalues",
    "transformed_statistics",
]
