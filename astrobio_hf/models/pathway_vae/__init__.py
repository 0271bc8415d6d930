"""Pathway VAE: a variational graph auto-encoder over metabolic pathway graphs (torch_geometric encoders)."""

from .configuration_pathway_vae import PathwayVAEConfig
from .modeling_pathway_vae import (
    PathwayVAEModel,
    PathwayVAEOutput,
    PathwayVAEPreTrainedModel,
)

__all__ = ["PathwayVAEConfig", "PathwayVAEModel", "PathwayVAEOutput", "PathwayVAEPreTrainedModel"]
