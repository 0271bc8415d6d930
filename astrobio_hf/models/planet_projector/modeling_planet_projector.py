"""The planet projector: a frozen planet encoder's embedding as soft tokens before a language model's text (LLaVA's
first stage, issue 16). Only the projector's weights belong to this model; the encoder and the language model are
references in its config (`encoder`, `base_model`), loaded and frozen by whoever uses it.

`soft_token_batch` builds the language model's inputs: `inputs_embeds = [soft tokens; token embeddings]`, the
attention mask extended with ones and the labels with -100 (no loss on the soft tokens), position ids from 0.
`SoftTokenLanguageModel` is the projector and a language model as one module (what the pipeline's integration and
LLM-guided phases train); `generate_with_soft_tokens` answers prompts greedily with soft tokens before each.
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


class SoftTokenLanguageModel(nn.Module):
    """A projector and a causal language model as one module: the projector's soft tokens before each row's text,
    the loss on the answer tokens only (`answer_loss`: with a left-padded batch's `logits_to_keep`, the LM head runs
    on the answer positions alone; the soft tokens come before the text, so those positions do not move). Which
    parameters train is the caller's choice: the projector alone with the LM frozen (the integration phase), or the
    projector and the LM's LoRA adapters (the LLM-guided phase)."""

    def __init__(self, projector: PlanetProjector, language_model: nn.Module):
        super().__init__()
        self.projector = projector
        self.language_model = language_model

    def forward(self, embedding, input_ids, attention_mask, labels, logits_to_keep: int | None = None):
        """(mean answer-token cross-entropy, number of answer tokens)."""
        from astrobio_hf.data.chat import answer_loss

        batch = soft_token_batch(self.language_model, self.projector(embedding), input_ids, attention_mask, labels)
        if logits_to_keep is not None:
            batch["logits_to_keep"] = int(logits_to_keep)
        return answer_loss(self.language_model, batch)


@torch.no_grad()
def generate_with_soft_tokens(language_model, chat, soft_tokens: torch.Tensor | None, prompts, *, batch_size: int = 32,
                              max_new_tokens: int = 8, device="cpu") -> list[str]:
    """Greedy answers to `prompts` under `chat`'s template (a `ChatEncoder`), with `soft_tokens[i]` `(K, D)` before
    prompt i (None: the prompts alone); decoded without special tokens, in the prompts' order."""
    from astrobio_hf.data.chat import left_padded_prompts

    was_training = language_model.training
    language_model.eval()
    tokenizer = chat.tokenizer
    texts = []
    for start in range(0, len(prompts), batch_size):
        inputs = {k: v.to(device) for k, v in left_padded_prompts(chat, list(prompts[start:start + batch_size])).items()}
        if soft_tokens is not None:
            inputs = soft_token_batch(language_model, soft_tokens[start:start + batch_size].to(device), inputs["input_ids"], inputs["attention_mask"])
            inputs.pop("position_ids")  # generate derives them from the attention mask, step by step
        generated = language_model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                            pad_token_id=tokenizer.pad_token_id, eos_token_id=chat.end_of_turn,
                                            temperature=None, top_p=None, top_k=None)
        if soft_tokens is None:  # generate returns prompt + answer for ids, the answer alone for embeddings
            generated = generated[:, inputs["input_ids"].shape[1]:]
        texts += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in generated]
    language_model.train(was_training)
    return texts


__all__ = ["PlanetProjector", "SoftTokenLanguageModel", "generate_with_soft_tokens", "soft_token_batch"]
