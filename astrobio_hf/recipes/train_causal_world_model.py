"""Train a causal world model (a neural structural causal model) with Accelerate on a numeric table.

    accelerate launch recipes/train_causal_world_model.py [recipes/configs/causal_world_model/<name>.yaml] [--key value ...]
    astrobio-hf train causal-world-model [...]          # the same code

`--dataset` picks the data: `sachs` (default: the 853 observational rows of Sachs et al. 2005, built from cdt's
files into data/sachs_observational), `sachs-full` (all 7,466 rows with the nine conditions as regimes),
`planet-world` (synthetic planets with the stated graph and exact counterfactual truth, data/planet_world), or
`table` (`--data_dir` holds any folder written by `astrobio-hf data table`). It writes to runs/causal_world_model:
config.json, model.safetensors (the finalized SCM: graph, mechanisms, noise), README.md (model card),
metrics.json (graph metrics against the truth when the table has one, beside the peers PC, GES, DirectLiNGAM,
NOTEARS, DAGMA, GIES, CD-NOD, the empty graph and random DAGs run on the same standardised rows; on the planet
world the interventional and counterfactual errors beside a non-causal regression baseline), graph.csv, plots/,
logs/ and checkpoints/.

Same order as every recipe (DESIGN.md section 4). The rows are few and small, so the data is an in-memory
map-style dataset of (values, intervened) rows that `accelerate.prepare` shards across processes; the default
batch holds every row (the score is full-batch, as in DAGMA). After the loop the main process finalizes the graph
(threshold, cycles, CAM pruning, refit) on the training rows, and every process receives the finalized buffers.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list
from torch.utils.data import DataLoader, Dataset

from astrobio_hf.data.table import ensure_sachs_dataset, load_table, load_table_schema
from astrobio_hf.evaluation.causal_world_model import evaluate_and_report, validation_objective
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.models.causal_world_model import CausalWorldModel, CausalWorldModelConfig
from astrobio_hf.models.causal_world_model.modeling_causal_world_model import transformed_statistics
from astrobio_hf.training import TrainingArguments, create_optimizer, finish_run, fit, parse_recipe_args, start_run
from astrobio_hf.training.args import json_option, resolved_config

logger = logging.getLogger("astrobio_hf.recipes.train_causal_world_model")

DATASETS = ("sachs", "sachs-full", "planet-world", "table")
DEFAULT_DATA_DIRS = {"sachs": "data/sachs_observational", "sachs-full": "data/sachs_full", "planet-world": "data/planet_world"}
RECIPE_DEFAULTS = {
    "output_dir": "runs/causal_world_model", "learning_rate": 2e-3, "max_steps": 6000, "per_device_batch_size": 65536,
    "weight_decay": 0.0, "warmup_ratio": 0.0, "ema_decay": 0.0, "max_grad_norm": 0.0, "eval_every": 500,
    "checkpoint_every": 1000, "log_every": 100, "adam_beta1": 0.99,
}


@dataclass
class DataArguments:
    """Which table (built on first use for the embedded ones) and which peers to run beside the model."""

    dataset: str = field(default="sachs", metadata={"help": f"One of {list(DATASETS)}; 'table' reads --data_dir as given."})
    data_dir: str = field(default="", metadata={"help": "Dataset folder; default data/<dataset> for the embedded ones."})
    use_regimes: bool = field(default=True, metadata={"help": "Mask each intervened variable's rows out of its mechanism's score (False pools every row as observational)."})
    peers: str = field(default="auto", metadata={"help": "Comma list of peer methods, 'auto' (every one that applies) or 'none'."})
    peer_mlp_iterations: int = field(default=20000, metadata={"help": "Warm-up iterations of the DAGMA-MLP peer (its package default, 50k + 80k, takes hours here; 20k gives the same Sachs graph as 10k and 15k)."})


@dataclass
class ModelArguments:
    """The SCM and its acyclicity path (written into CausalWorldModelConfig)."""

    mechanism: str = field(default="mlp", metadata={"help": "mlp (DAGMA-MLP-style) or linear."})
    hidden_size: int = 10
    num_hidden_layers: int = 0
    lambda1: float = 0.02
    lambda2: float = 0.005
    mu_init: float = 1.0
    mu_factor: float = 0.1
    num_stages: int = 4
    edge_threshold: float = 0.3
    pruning: str = "cam"
    prune_alpha: float = 0.001
    refit_steps: int = 200
    noise_distribution: str = "empirical"
    structure_search: str = field(default="cam_hill_climb", metadata={"help": "After thresholding: cam_hill_climb (greedy add/remove/reverse on CAM's additive BIC score, from the trained graph) or none."})
    search_penalty: float = field(default=1.0, metadata={"help": "BIC multiplier of the structure search's score."})
    search_within_regimes: bool = field(default=False, metadata={"help": "Search and prune on each regime's rows standardised on their own (stimuli that shift every variable)."})
    forbidden_edges: str = field(default="[]", metadata={"help": 'JSON list of [cause, effect] pairs that may never appear.'})
    required_edges: str = field(default="[]", metadata={"help": 'JSON list of [cause, effect] pairs that always appear.'})
    tiers: str = field(default="[]", metadata={"help": 'JSON list of lists of names: a later tier never causes an earlier one.'})


ARGUMENT_TYPES = (DataArguments, ModelArguments, TrainingArguments)


class TableRows(Dataset):
    """(values, intervened) rows in memory; a batch is gathered by one index operation (`__getitems__`) rather
    than row by row and collated, which at a batch of every row would cost more than the step itself."""

    def __init__(self, values: torch.Tensor, intervened: torch.Tensor):
        self.values, self.intervened = values, intervened

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index):
        return self.values[index], self.intervened[index]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices)
        return self.values[index], self.intervened[index]


def keep_batch(batch):
    return batch


def prepare_dataset(data_args: DataArguments) -> str:
    """The dataset folder, built for the embedded datasets when missing (call on the main process first)."""
    data_dir = data_args.data_dir or DEFAULT_DATA_DIRS[data_args.dataset]
    if data_args.dataset in ("sachs", "sachs-full"):
        ensure_sachs_dataset(data_dir, "observational" if data_args.dataset == "sachs" else "full")
    elif data_args.dataset == "planet-world" and not (Path(data_dir) / "schema.json").is_file():
        from astrobio_hf.data.planet_world import write_planet_world_dataset

        write_planet_world_dataset(data_dir)
    return data_dir


def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, model_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, model_args, train_args)
    knowledge = {k: json_option(k, getattr(model_args, k), list) for k in ("forbidden_edges", "required_edges", "tiers")}
    if data_args.dataset not in DATASETS:  # before any folder is locked or written
        raise ValueError(f"expected --dataset one of {list(DATASETS)}, got {data_args.dataset!r}")
    if data_args.dataset == "table" and not data_args.data_dir:
        raise ValueError("expected --data_dir (a folder written by `astrobio-hf data table`) with --dataset table, got none")

    # 1. The run (a seedable sampler: a resumed run replays the order).
    accelerator = start_run(train_args, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    started = time.perf_counter()

    # 2. Data: the table in memory (rows are few), built on first use by one process.
    with accelerator.main_process_first():
        data_dir = data_args.data_dir or DEFAULT_DATA_DIRS[data_args.dataset]
        if accelerator.is_main_process:
            prepare_dataset(data_args)
        schema = load_table_schema(data_dir)
        train = load_table(data_dir, "train")
        val = load_table(data_dir, "val")
    intervened = train.intervened if data_args.use_regimes else train.intervened & False
    if not data_args.use_regimes and train.intervened.any():
        logger.warning("--use_regimes false: %d intervened entries are pooled as observational", int(train.intervened.sum()))

    # 3. Config (standardisation from the transformed training rows) and model. Background knowledge is checked
    # against the schema's variables here, before training.
    mean, std = transformed_statistics(train.values, [v.get("transform") or "identity" for v in schema["variables"]])
    config = CausalWorldModelConfig.from_schema(
        schema, mean, std, mechanism=model_args.mechanism, hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers, lambda1=model_args.lambda1, lambda2=model_args.lambda2,
        mu_init=model_args.mu_init, mu_factor=model_args.mu_factor, num_stages=model_args.num_stages,
        edge_threshold=model_args.edge_threshold, pruning=model_args.pruning, prune_alpha=model_args.prune_alpha,
        refit_steps=model_args.refit_steps, noise_distribution=model_args.noise_distribution,
        structure_search=model_args.structure_search, search_penalty=model_args.search_penalty,
        search_within_regimes=model_args.search_within_regimes, **knowledge,
    )
    batch = min(train_args.per_device_batch_size, len(train))
    train_args.per_device_batch_size = batch  # the loop's log and samples count say the real batch
    micro_per_epoch = math.ceil(math.ceil(len(train) / batch) / accelerator.num_processes)
    total_steps = train_args.max_steps or max(1, micro_per_epoch // train_args.gradient_accumulation_steps) * train_args.num_epochs
    config.path_steps = total_steps
    model = CausalWorldModel(config)
    init_origin = init_weights_from(model, train_args.init_from, accelerator) if train_args.init_from else None

    # 4. Optimizer (the L1/L2 terms are the model's own, so AdamW's decay defaults to 0); 5. in-memory rows.
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))
    rows = TableRows(torch.as_tensor(train.values, dtype=torch.float32), torch.as_tensor(intervened))
    train_loader = DataLoader(rows, batch_size=batch, shuffle=True, collate_fn=keep_batch, num_workers=train_args.num_workers)
    check = val if len(val) else train
    logger.info(
        "%d training rows x %d variables (%d regimes, %d intervened entries), validation on %s (%d rows); "
        "path of %d stages over %d steps",
        len(train), config.num_variables, len(schema.get("regimes") or []), int(intervened.sum()),
        "the val split" if len(val) else "the training rows (the table has no val split)", len(check), config.num_stages, total_steps,
    )

    # 6. The family's part: the path objective at this step; validation scores the last stage's objective (the
    # same mu for every step, so checkpoints compare) on held-out rows.
    def compute_loss(model, batch, state):
        values, mask = (t.to(accelerator.device) for t in batch)
        out = model(values, mask if data_args.use_regimes else None, training_step=state.global_step)
        return out.loss, {"score": out.score, "h": out.h, "l1": out.l1, "mu": out.mu}

    def validate(model, state):
        return validation_objective(model, check, use_regimes=data_args.use_regimes, device=accelerator.device)

    # 7. The loop.
    result = fit(
        accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
        micro_batches_per_epoch=micro_per_epoch, run_config=run_config, project="causal_world_model",
        history_keys=("h", "score"), hooks=hooks, samples_in=lambda b: int(b[0].shape[0]), checkpoint_at_epoch_end=False,
        eval_every_epochs=10**9,  # an epoch is often one full-batch step: validate every --eval_every steps and at the end
    )

    # 8. Finalize on the main process (threshold, cycles, pruning, refit), share the buffers, test beside the
    # peers, save, card.
    final = result.model
    summary: dict = {"global_step": result.state.global_step, "best_val_loss": result.state.best_metric, "train_throughput": result.throughput}
    report = [None]
    if accelerator.is_main_process:
        final.to(torch.float64)
        report = [final.finalize(train.values, intervened, regimes=train.regime)]
        final.to(torch.float32)
    report = broadcast_object_list(report) if accelerator.num_processes > 1 else report
    if accelerator.num_processes > 1:
        for tensor in [*final.parameters(), *final.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)
    if accelerator.is_main_process:
        final.save_pretrained(output_dir, safe_serialization=True)
        summary.update(evaluate_and_report(
            output_dir, final, train, val, schema, data_dir, result.state, finalize_report=report[0],
            dataset=data_args.dataset, use_regimes=data_args.use_regimes, peers=data_args.peers,
            peer_mlp_iterations=data_args.peer_mlp_iterations, seed=train_args.seed,
            train_seconds=time.perf_counter() - started, run_config=run_config, throughput=result.throughput, init_origin=init_origin,
        ))
    finish_run(result, summary.get("test"))
    return summary


if __name__ == "__main__":
    main()
