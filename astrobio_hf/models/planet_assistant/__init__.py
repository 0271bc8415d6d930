"""The planet assistant: a language model with LoRA that answers questions about a planet from its cube (issue 16)."""

from .configuration_planet_assistant import PlanetAssistantConfig
from .modeling_planet_assistant import PlanetAssistant

__all__ = ["PlanetAssistant", "PlanetAssistantConfig"]
