"""The planet projector: a frozen planet encoder's embedding as soft tokens before a language model's text (LLaVA's
first stage, issue 16). Only the projector's weights belong to this model; the encoder and the language model are
references in its config (`encoder`, `base_model`), loaded and frozen by whoever uses it.

`soft_token_batch` builds the language model's inputs: `inputs_embeds = [soft tokens; token embeddings]`, the
attention mask extended with ones and the labels with -100 (no loss on the soft tokens), position ids from 0.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from ..loading import ClearLoadingErrorsMixin
from .configuration_planet_projector import PlanetProjectorConfig

IGNORE_INDEX = -100


class PlanetProjector(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = PlanetProjectorConfig
    config: PlanetProjectorConfig
    base_model_prefix = "planet_projector"
    main_input_name = "planet_embedding"

    def __init__(self, config: PlanetProjectorConfig):
        super().__init__(config)
        hidden = config.projector_hidden_size or config.lm_hidden_size
        self.fc1 = nn.Linear(config.encoder_hidden_size, hidden)
        self.fc2 = nn.Linear(hidden, config.num_soft_tokens * config.lm_hidden_size)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)

    def forward(self, planet_embedding: torch.Tensor) -> torch.Tensor:
        """`(B, encoder_hidden_size)` -> soft tokens `(B, num_soft_tokens, lm_hidden_size)`, each of norm
        `embedding_scale` (the base model's mean token-embedding norm)."""
        c = self.config
        if planet_embedding.ndim != 2 or planet_embedding.shape[1] != c.encoder_hidden_size:
            raise ValueError(f"expected a planet embedding of shape (B, {c.encoder_hidden_size}), got {tuple(planet_embedding.shape)}")
        tokens = self.fc2(nn.functional.gelu(self.fc1(planet_embedding))).view(-1, c.num_soft_tokens, c.lm_hidden_size)
        return c.embedding_scale * tokens / tokens.norm(dim=-1, keepdim=True).clamp(min=1e-6)


def soft_token_batch(language_model, soft_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor | None = None) -> dict:
    """The language model's keyword inputs with `soft_tokens` `(B, K, D)` before each row's text. Rows are
    left-padded (the language-model family's collators): the soft tokens go right before each row's first real
    token, so padding stays on the left and positions count from the first soft token."""
    embed = language_model.get_input_embeddings()
    text = embed(input_ids)  # (B, T, D)
    B = input_ids.shape[0]
    K = soft_tokens.shape[1]
    if soft_tokens.shape[0] != B or soft_tokens.shape[2] != text.shape[2]:
        raise ValueError(f"expected soft tokens of shape ({B}, K, {text.shape[2]}), got {tuple(soft_tokens.shape)}")
    pad = [int(p) for p in (attention_mask == 0).sum(dim=1)]  # left padding of each row
    ones = torch.ones(K, dtype=attention_mask.dtype, device=attention_mask.device)
    # per row: its padding, the soft tokens, its text
    inputs_embeds = torch.stack([torch.cat([text[b, :p], soft_tokens[b].to(text.dtype), text[b, p:]]) for b, p in enumerate(pad)])
    mask = torch.stack([torch.cat([attention_mask[b, :p], ones, attention_mask[b, p:]]) for b, p in enumerate(pad)])  # (B, K + T)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = {"inputs_embeds": inputs_embeds, "attention_mask": mask, "position_ids": positions}
    if labels is not None:
        ignore = torch.full((K,), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        out["labels"] = torch.stack([torch.cat([labels[b, :p], ignore, labels[b, p:]]) for b, p in enumerate(pad)])
    return out


__all__ = ["PlanetProjector", "soft_token_batch"]
