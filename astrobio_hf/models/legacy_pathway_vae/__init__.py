"""Legacy pathway VAE: the converted MLP VAE of the old system over zero-padded 6 x 6 adjacency matrices."""

from .configuration_legacy_pathway_vae import LegacyPathwayVAEConfig
from .modeling_legacy_pathway_vae import (
    LegacyPathwayVAEModel,
    LegacyPathwayVAEOutput,
    LegacyPathwayVAEPreTrainedModel,
)

__all__ = [
    "LegacyPathwayVAEConfig",
    "LegacyPathwayVAEModel",
    "LegacyPathwayVAEOutput",
    "LegacyPathwayVAEPreTrainedModel",
]
