"""The planet assistant: the pipeline's LLM-guided model (issue 16). A language model with LoRA adapters answers
questions about a planet from its cube: the frozen CNN-ViT encoder reads the cube, the projector turns its [CLS]
embedding into soft tokens before the question (LLaVA's second stage: projector and adapters trained together).

A release folder holds:

    config.json, model.safetensors   this model: the config (base model, question types, labels, terciles) and the
                                     projector's weights (`projector.*`)
    adapter/                         the language model's PEFT LoRA adapter (+ tokenizer, base_model.json)
    encoder/                         the frozen CNN-ViT (its own save_pretrained folder)

`PlanetAssistant.from_pretrained(folder)` (or `AutoModel`) loads the projector; the encoder and the language model
(the base named in `adapter/base_model.json`, resolved as the language-model family resolves `--base_model`, with the
adapter; the config's `base_model` records the same name for the card) load the first time `ask` or
`answer_embeddings` runs, on the projector's device (or `components(device)`), and stay outside the module tree (they
are not this model's weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel

from ..loading import ClearLoadingErrorsMixin
from ..planet_projector import PlanetProjector, PlanetProjectorConfig, generate_with_soft_tokens
from .configuration_planet_assistant import PlanetAssistantConfig


@dataclass
class AssistantComponents:
    encoder: torch.nn.Module
    language_model: torch.nn.Module
    chat: object  # ChatEncoder
    device: torch.device


class PlanetAssistant(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = PlanetAssistantConfig
    config: PlanetAssistantConfig
    base_model_prefix = "planet_assistant"
    main_input_name = "planet_embedding"

    def __init__(self, config: PlanetAssistantConfig):
        super().__init__(config)
        self.projector = PlanetProjector(PlanetProjectorConfig(**config.projector))
        self.post_init()

    def _init_weights(self, module):  # the projector initialises itself
        pass

    def forward(self, planet_embedding: torch.Tensor) -> torch.Tensor:
        """The soft tokens `(B, K, D)` of encoder embeddings `(B, H)`."""
        return self.projector(planet_embedding)

    # ------------------------------------------------------------------------------------------- the components
    def _folder(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else Path(self.config.name_or_path or ".") / path

    def components(self, device: torch.device | str | None = None) -> AssistantComponents:
        """The frozen encoder, the language model with its adapter and the chat encoder (loaded once)."""
        from astrobio_hf.data.chat import ChatEncoder
        from astrobio_hf.models.cnn_vit import CnnVitForParameterRegression
        from astrobio_hf.models.language_model import load_adapter_release

        loaded = self.__dict__.get("_components")
        device = torch.device(device) if device is not None else self.device  # moved with .to(): loaded again there
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if loaded is None or loaded.device != device:
            encoder_dir, adapter_dir = self._folder(self.config.encoder), self._folder(self.config.adapter)
            for what, folder in (("encoder", encoder_dir), ("adapter", adapter_dir)):
                if not folder.is_dir():
                    raise FileNotFoundError(f"expected the planet assistant's {what} folder at {folder} (config {what}="
                                            f"{getattr(self.config, what)!r}, relative to {self.config.name_or_path!r}), found none; "
                                            "from the Hub, load the downloaded snapshot: from_pretrained(snapshot_download(repo_id, revision=...))")
            encoder = CnnVitForParameterRegression.from_pretrained(encoder_dir).to(device).eval()
            language_model, tokenizer = load_adapter_release(adapter_dir, device=device)
            loaded = AssistantComponents(encoder, language_model, ChatEncoder(tokenizer, 512, self.config.system_prompt), device)
            object.__setattr__(self, "_components", loaded)  # outside the module tree: not this model's weights
            self.to(device)
        return loaded

    # --------------------------------------------------------------------------------------------- answering
    @torch.no_grad()
    def embed(self, cube: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's [CLS] embeddings `(B, H)` of physical cubes `(B, V, Tc, Tg, Z, Y, X)` (the CNN-ViT's
        input; a `collate_windows` batch's `inputs`)."""
        parts = self.components()
        return parts.encoder.cnn_vit(cube.to(parts.device)).last_hidden_state[:, 0].float()

    @torch.no_grad()
    def answer_embeddings(self, embeddings: torch.Tensor | None, prompts: list[str], *, batch_size: int = 32) -> list[str]:
        """Greedy answer texts to `prompts[i]` with the soft tokens of `embeddings[i]` before it (None: no soft tokens)."""
        parts = self.components()
        soft = None if embeddings is None else self.projector(embeddings.to(parts.device, self.dtype))
        return generate_with_soft_tokens(parts.language_model, parts.chat, soft, prompts, batch_size=batch_size,
                                         max_new_tokens=self.config.max_new_tokens, device=parts.device)

    @torch.no_grad()
    def ask(self, cube: torch.Tensor, question_types: list[str] | None = None) -> list[dict]:
        """Every question type (or `question_types`) about each planet of `cube` `(B, V, Tc, Tg, Z, Y, X)`: per planet
        `{type: {"answer": one of the allowed answers or None (the text named none or several), "text": ...}}`."""
        from astrobio_hf.data.planet_text import answer_choices, question_text
        from astrobio_hf.evaluation.planet_assistant import parse_choice

        kinds = list(question_types or self.config.question_types)
        unknown = [k for k in kinds if k not in self.config.question_types]
        if unknown:
            raise ValueError(f"expected question types this assistant was trained on ({self.config.question_types}), got {unknown}")
        embeddings = self.embed(cube)
        out = [{} for _ in range(embeddings.shape[0])]
        terciles = tuple(self.config.flux_terciles) if self.config.flux_terciles else None
        for kind in kinds:
            prompt = question_text(kind, self.config.regime_names, terciles)
            texts = self.answer_embeddings(embeddings, [prompt] * embeddings.shape[0])
            for row, text in zip(out, texts):
                row[kind] = {"answer": parse_choice(text, answer_choices(kind, self.config.regime_names)), "text": text}
        return out


__all__ = ["AssistantComponents", "PlanetAssistant"]
