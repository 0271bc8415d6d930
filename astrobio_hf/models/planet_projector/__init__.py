"""The planet projector: a frozen planet encoder's embedding as soft tokens in a language model (issue 16)."""

from .configuration_planet_projector import PlanetProjectorConfig
from .modeling_planet_projector import PlanetProjector, SoftTokenLanguageModel, generate_with_soft_tokens, soft_token_batch

__all__ = ["PlanetProjector", "PlanetProjectorConfig", "SoftTokenLanguageModel", "generate_with_soft_tokens", "soft_token_batch"]
