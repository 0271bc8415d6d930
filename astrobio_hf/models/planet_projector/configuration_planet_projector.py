"""Configuration of the planet projector (`model_type = "planet_projector"`): the pipeline's integration piece
(issue 16) that turns a frozen planet encoder's embedding into a few soft tokens in a language model's input
space (LLaVA's first stage). Torch-free."""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig

from ..config_checks import reject_unknown_keys


class PlanetProjectorConfig(PreTrainedConfig):
    r"""
    Configuration of [`PlanetProjector`]: a two-layer MLP from the encoder's [CLS] embedding `(B, encoder_hidden_size)`
    to `num_soft_tokens` vectors of the language model's hidden size `(B, num_soft_tokens, lm_hidden_size)`, scaled
    to the language model's token-embedding norm.

    Args:
        encoder_hidden_size (`int`, defaults to 64): the planet encoder's embedding size (the CNN-ViT's hidden size).
        lm_hidden_size (`int`, defaults to 576): the language model's hidden size (SmolLM2-135M: 576).
        num_soft_tokens (`int`, defaults to 4): soft tokens per planet, put before the text.
        projector_hidden_size (`int`, defaults to 0): the MLP's hidden size (0 = `lm_hidden_size`).
        encoder (`str`, defaults to `""`): where the frozen encoder comes from (a run or release folder, a Hub id):
            a reference, its weights are not part of this model.
        base_model (`str`, defaults to `""`): the language model the soft tokens are for (the language-model
            family's `--base_model`): a reference, likewise.
        embedding_scale (`float`, defaults to 1.0): the mean norm of the base model's token embeddings; the soft
            tokens are normalised to it, so that they enter the model at the scale of real tokens.
    """

    model_type = "planet_projector"

    encoder_hidden_size: int = 64
    lm_hidden_size: int = 576
    num_soft_tokens: int = 4
    projector_hidden_size: int = 0
    encoder: str = ""
    base_model: str = ""
    embedding_scale: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        reject_unknown_keys(PlanetProjectorConfig, kwargs)
        super().__post_init__(**kwargs)
        for name in ("encoder_hidden_size", "lm_hidden_size", "num_soft_tokens"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"PlanetProjectorConfig: expected {name} a positive integer, got {value!r}")
        if not (isinstance(self.projector_hidden_size, int) and self.projector_hidden_size >= 0):
            raise ValueError(f"PlanetProjectorConfig: expected projector_hidden_size >= 0 (0 = lm_hidden_size), got {self.projector_hidden_size!r}")
        if not self.embedding_scale > 0:
            raise ValueError(f"PlanetProjectorConfig: expected embedding_scale > 0, got {self.embedding_scale!r}")
