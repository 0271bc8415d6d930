"""The pipeline's integration phase (issue 16): a projector from a frozen planet encoder into a frozen language model.

    accelerate launch recipes/train_planet_projector.py --encoder runs/cnn_vit [config.yaml] [--key value ...]
    astrobio-hf train planet-projector --encoder runs/cnn_vit [...]          # the same code

LLaVA's first stage: the CNN-ViT encoder (a run or release folder, frozen) reads each window of the planet
population and its [CLS] embedding is projected into `num_soft_tokens` soft tokens before the language model's
text (the language-model family's base, frozen; its chat template); only the projector trains, on the planet's
description from its stated parameters and regime (`astrobio_hf.data.planet_text`). The encoder runs once per
window before training (it is frozen), so the loop trains on (embedding, description) pairs.

Writes the projector (`PlanetProjector`: config with the encoder and base-model references, model.safetensors),
metrics.json and a card to `output_dir`. The test: the held-out planets' description loss with the projector's
tokens against the same model given the soft tokens of the mean training embedding (the same tokens for every
planet: no planet information), computed in the same run. Same order as every recipe (DESIGN.md section 4).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.chat import ChatEncoder
from astrobio_hf.data.planet_text import describe, encode_windows
from astrobio_hf.evaluation.planet_assistant import collate_rows, rows_loss, to_device
from astrobio_hf.models.language_model import DEFAULT_BASE_MODEL, load_base_model, load_tokenizer, resolve_base_model, trainable_state_only
from astrobio_hf.models.planet_projector import PlanetProjector, PlanetProjectorConfig, SoftTokenLanguageModel
from astrobio_hf.training import TrainingArguments, create_optimizer, finish_run, fit, parse_recipe_args, start_run
from astrobio_hf.training.args import resolved_config

logger = logging.getLogger("astrobio_hf.recipes.train_planet_projector")

RECIPE_DEFAULTS = {
    "output_dir": "runs/planet_projector", "learning_rate": 1e-3, "weight_decay": 0.0, "max_steps": 200,
    "per_device_batch_size": 8, "ema_decay": 0.0, "eval_every": 50, "checkpoint_every": 50, "log_every": 10,
}
PROMPT = "Describe this planet."


@dataclass
class DataArguments:
    data_dir: str = field(default="data/planets", metadata={"help": "The encoder's datacube dataset (shards + schema.json)."})
    encoder: str = field(default="", metadata={"help": "The frozen CNN-ViT: a run or release folder (required)."})
    max_length: int = field(default=256, metadata={"help": "Longest example in tokens."})


@dataclass
class ModelArguments:
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "The frozen language model (as the language-model family's --base_model)."})
    num_soft_tokens: int = field(default=4, metadata={"help": "Soft tokens per planet before the text."})
    projector_hidden_size: int = field(default=0, metadata={"help": "The projector MLP's hidden size (0 = the LM's hidden size)."})
    system_prompt: str = field(default="Describe planets in one sentence.", metadata={"help": "System message of every example."})


ARGUMENT_TYPES = (DataArguments, ModelArguments, TrainingArguments)


def description_rows(windows: list[dict], units: dict, chat: ChatEncoder) -> list[dict]:
    """One row per window: the frozen encoder's embedding and the chat-encoded description."""
    return [{"embedding": w["embedding"], **chat.encode(PROMPT, describe(w["facts"], units), f"{w['facts'].planet_id}/{w['facts'].start}")}
            for w in windows]


def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, model_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    if not data_args.encoder:
        raise ValueError("--encoder: expected the frozen CNN-ViT's run or release folder (e.g. runs/cnn_vit), got none")
    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.models.cnn_vit import CnnVitForParameterRegression

    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, model_args, train_args)

    # 1. The run; checkpoints hold the projector only.
    accelerator = start_run(train_args)
    trainable_state_only(accelerator)
    started = time.perf_counter()

    # 2. The frozen encoder, the frozen language model and its tokenizer; the texts, encoded once.
    encoder = CnnVitForParameterRegression.from_pretrained(data_args.encoder).to(accelerator.device).eval()
    schema = DatasetSchema.from_dir(data_args.data_dir)
    with accelerator.main_process_first():
        base_path = resolve_base_model(model_args.base_model)
    tokenizer = load_tokenizer(base_path)
    chat = ChatEncoder(tokenizer, data_args.max_length, model_args.system_prompt)
    language_model = load_base_model(base_path, device=accelerator.device)
    units = dict(zip(schema.planet_param_names, schema.planet_param_units or []))
    splits = {s: description_rows(encode_windows(encoder, data_args.data_dir, s, schema, accelerator.device), units, chat)
              for s in ("train", "validation", "test")}
    del encoder
    logger.info("windows: %s", {s: len(r) for s, r in splits.items()})

    # 3. The projector (references to the encoder and base model in its config) and the optimizer over it.
    embed = language_model.get_input_embeddings().weight
    config = PlanetProjectorConfig(
        encoder_hidden_size=int(splits["train"][0]["embedding"].numel()), lm_hidden_size=int(embed.shape[1]),
        num_soft_tokens=model_args.num_soft_tokens, projector_hidden_size=model_args.projector_hidden_size,
        encoder=data_args.encoder, base_model=model_args.base_model, embedding_scale=float(embed.detach().norm(dim=1).mean()),
    )
    model = SoftTokenLanguageModel(PlanetProjector(config), language_model)  # the LM is frozen (load_base_model)
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))
    pad_id = tokenizer.pad_token_id
    train_loader = DataLoader(splits["train"], batch_size=train_args.per_device_batch_size, shuffle=True,
                              collate_fn=lambda rows: collate_rows(rows, pad_id), generator=torch.Generator().manual_seed(train_args.seed))

    def compute_loss(model, batch, state):
        loss, _ = model(**to_device(batch, accelerator.device))
        return loss, {}

    def validate(model, state):
        return {"loss": rows_loss(model, splits["validation"], pad_id, accelerator.device)}

    # 4. The loop.
    result = fit(accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
                 micro_batches_per_epoch=-(-len(train_loader) // accelerator.num_processes), run_config=run_config,
                 project="planet_projector", hooks=hooks, find_unused_parameters=False)

    # 5. Test: the projector's tokens against the mean training embedding's (no planet information); the release.
    final = result.model
    mean_embedding = torch.stack([r["embedding"] for r in splits["train"]]).mean(dim=0, keepdim=True)
    test = {
        "projector/description_loss": rows_loss(final, splits["test"], pad_id, accelerator.device),
        "mean_embedding/description_loss": rows_loss(final, splits["test"], pad_id, accelerator.device, mean_embedding),
        "test_windows": len(splits["test"]),
    }
    logger.info("test description loss: projector %.4f, mean embedding %.4f", test["projector/description_loss"],
                test["mean_embedding/description_loss"])
    if accelerator.is_main_process:
        final.projector.save_pretrained(output_dir, safe_serialization=True)
        metrics = {"global_step": result.state.global_step, "best_val_loss": result.state.best_metric, "test": test,
                   "train_seconds": round(time.perf_counter() - started, 1), "throughput": result.throughput, "config": run_config}
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        (output_dir / "README.md").write_text(
            f"# Planet projector\n\nA projector from the frozen CNN-ViT `{data_args.encoder}` into `{model_args.base_model}` as "
            f"{config.num_soft_tokens} soft tokens (LLaVA's first stage), trained {result.state.global_step} steps on the planet "
            f"descriptions of `{data_args.data_dir}` ({len(splits['train'])} training windows).\n\n"
            f"| held-out planets ({len(splits['test'])} windows) | description loss |\n|---|---|\n"
            f"| projector tokens | {test['projector/description_loss']:.4f} |\n"
            f"| mean training embedding's tokens (no planet information) | {test['mean_embedding/description_loss']:.4f} |\n"
        )
    finish_run(result, test)
    return test


if __name__ == "__main__":
    main()
