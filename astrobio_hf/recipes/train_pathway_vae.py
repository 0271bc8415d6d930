"""Train the metabolic-pathway graph VAE with Accelerate on real metabolic networks.

    accelerate launch recipes/train_pathway_vae.py [recipes/configs/pathway_vae/<name>.yaml] [--key value ...]
    astrobio-hf train pathway-vae [...]          # the same code

With no arguments it builds the metabolic-network dataset from cobra's offline models into data/metabolic
(once: E. coli core and iJO1366 by subsystem for training, Salmonella LT2 as the held-out organism), trains on
the E. coli graphs' training edges, and writes to runs/pathway_vae: config.json, model.safetensors (EMA weights
of the best validation step), README.md (model card), metrics.json, plots/, logs/ and checkpoints/. The test
compares the model, PyG's plain VGAE trained in the same run for the same number of steps, and (when
`../shared/reference/trained_pathway_vae.pth` is present) the converted legacy model, on held-out E. coli edges
and on the held-out organism.

Same order as every recipe (DESIGN.md section 4), with `--init_from` and `--push_to_hub` as in the others. Graphs are small and few, so the data is a map-style list of
PyG `Data` objects, batched by `collate_graphs` through a DataLoader that `accelerator.prepare` shards across
processes (with a seedable sampler, so a resumed run replays the same order).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader

from astrobio_hf.data.metabolic import collate_graphs, ensure_metabolic_dataset, load_graphs, load_metabolic_schema
from astrobio_hf.evaluation.pathway_vae import evaluate_and_report, evaluate_link_prediction
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.models.pathway_vae import PathwayVAEConfig, PathwayVAEModel
from astrobio_hf.training import (
    TrainingArguments,
    create_optimizer,
    ema_weights,
    finish_run,
    fit,
    parse_recipe_args,
    start_run,
    steps_per_run,
)
from astrobio_hf.training.args import resolved_config

logger = logging.getLogger("astrobio_hf.recipes.train_pathway_vae")

DEFAULT_DATA_DIR = "data/metabolic"
RECIPE_DEFAULTS = {
    "output_dir": "runs/pathway_vae", "learning_rate": 2e-3, "num_epochs": 240, "per_device_batch_size": 8,
    "eval_every": 0, "checkpoint_every": 200, "log_every": 10, "ema_decay": 0.99,
}


@dataclass
class DataArguments:
    """Where the metabolic-network dataset is (built from cobra's offline models when missing)."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "graphs.parquet + schema.json; built here from cobra when missing."})


@dataclass
class ModelArguments:
    """Model sizes and loss terms (written into PathwayVAEConfig)."""

    encoder_type: str = field(default="transformer", metadata={"help": "transformer (TransformerConv) or gps (GPSConv)."})
    hidden_size: int = 64
    latent_size: int = 16
    num_layers: int = 4
    num_heads: int = 4
    dropout: float = 0.1
    feature_loss_weight: float = 1.0
    kl_weight_max: float = field(default=0.01, metadata={"help": "KL weight after the warm-up (per node, summed over the latent)."})
    kl_warmup_steps: int = field(default=-1, metadata={"help": "Optimizer steps of linear KL warm-up; -1 = the first 30% of training."})
    negative_sampling_ratio: float = 1.0
    train_vgae_baseline: bool = field(default=True, metadata={"help": "Train PyG's plain VGAE for the same steps and compare on the test."})


ARGUMENT_TYPES = (DataArguments, ModelArguments, TrainingArguments)


def model_inputs(batch, device, step: int | None = None) -> dict:
    """A collated `Batch` -> the model's keyword inputs (the loss comes from the graph itself)."""
    batch = batch.to(device)
    return {"x": batch.x, "edge_index": batch.edge_index, "batch": batch.batch, "training_step": step}


def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, model_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, model_args, train_args)

    # 1. The run: checks, the output-folder lock, Accelerator (a seedable sampler: a resumed run replays the order).
    accelerator = start_run(train_args, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    started = time.perf_counter()

    # 2. Data (built from cobra on first use, by one process).
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_metabolic_dataset(data_args.data_dir)
        schema = load_metabolic_schema(data_args.data_dir)
        train_graphs = load_graphs(data_args.data_dir, "train")
        heldout_graphs = load_graphs(data_args.data_dir, "heldout_organism")

    # 3. Config and model. `accelerate.prepare` shards the loader into ceil(batches / processes) batches per process
    # (even_batches), which sets the schedule's length and the KL warm-up.
    micro_per_epoch = math.ceil(math.ceil(len(train_graphs) / train_args.per_device_batch_size) / accelerator.num_processes)
    total_steps = steps_per_run(micro_per_epoch, train_args)
    warmup = model_args.kl_warmup_steps if model_args.kl_warmup_steps >= 0 else int(0.3 * total_steps)
    config = PathwayVAEConfig.from_schema(
        schema, encoder_type=model_args.encoder_type, hidden_size=model_args.hidden_size, latent_size=model_args.latent_size,
        num_layers=model_args.num_layers, num_heads=model_args.num_heads, dropout=model_args.dropout,
        feature_loss_weight=model_args.feature_loss_weight, kl_weight_max=model_args.kl_weight_max, kl_warmup_steps=warmup,
        negative_sampling_ratio=model_args.negative_sampling_ratio,
    )
    model = PathwayVAEModel(config)
    init_origin = init_weights_from(model, train_args.init_from, accelerator) if train_args.init_from else None

    # 4. Optimizer (no decay on biases and norms); 5. a map-style list of graphs, sharded across processes by accelerate.
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))
    train_loader = DataLoader(train_graphs, batch_size=train_args.per_device_batch_size, shuffle=True, collate_fn=collate_graphs,
                              num_workers=train_args.num_workers)
    logger.info(
        "%d training graphs (%d nodes), %d held-out-organism graphs; KL weight 0 -> %.3g over %d steps",
        len(train_graphs), sum(int(g.num_nodes) for g in train_graphs), len(heldout_graphs), config.kl_weight_max, warmup,
    )

    # 6. The family's part. The model draws negatives (Python's `random`, inside PyG) and reparameterisation noise
    # (torch) on every batch; seeding them from the data position makes each step a function of (seed, epoch, batch,
    # rank) alone, so a resumed run is bit-identical (a fresh DataLoader iterator draws from the global torch RNG and
    # would otherwise shift every later draw). The loss is the model's own: edge BCE + feature MSE + annealed KL.
    def compute_loss(model, batch, state):
        set_seed((train_args.seed * 1_000_003 + state.epoch * 10_007 + state.batches_in_epoch) * 64 + accelerator.process_index)
        out = model(**model_inputs(batch, accelerator.device, state.global_step))
        return out.loss, {"edge_loss": out.edge_loss, "feature_loss": out.feature_loss, "kl": out.kl, "kl_weight": float(out.kl_weight)}

    def validate(model, state):  # every process scores the same few validation edges (no collectives, identical numbers)
        return evaluate_link_prediction(model, train_graphs, "val", accelerator.device)

    # 7. The loop: validation about 12 times per run, checkpoints every checkpoint_every steps and at the best.
    result = fit(
        accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
        micro_batches_per_epoch=micro_per_epoch, run_config=run_config, project="pathway_vae", history_keys=("auc", "ap"),
        hooks=hooks, samples_in=lambda batch: int(batch.num_graphs), eval_every_epochs=max(1, train_args.num_epochs // 12),
        checkpoint_at_epoch_end=False, compile_kwargs={"dynamic": True},  # graph sizes vary from batch to batch
    )

    # 8. Final model = EMA weights of the best checkpoint; test with the baselines (main process); card.
    summary: dict = {"global_step": result.state.global_step, "best_val_loss": result.state.best_metric, "train_throughput": result.throughput}
    with ema_weights(result.ema, result.model) as final:
        if accelerator.is_main_process:
            final.save_pretrained(output_dir, safe_serialization=True)
            summary.update(evaluate_and_report(
                output_dir, final, train_graphs, heldout_graphs, schema, result.state,
                steps=result.state.global_step, batch_size=train_args.per_device_batch_size, device=accelerator.device,
                train_vgae_baseline=model_args.train_vgae_baseline, seed=train_args.seed,
                train_seconds=time.perf_counter() - started, run_config=run_config, throughput=result.throughput, init_origin=init_origin,
            ))
    finish_run(result)
    return summary


if __name__ == "__main__":
    main()
