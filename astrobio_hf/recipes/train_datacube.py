"""Train the 5-D climate datacube U-Net with Accelerate on streamed Parquet shards.

    accelerate launch recipes/train_datacube.py [recipes/configs/datacube/<name>.yaml] [--key value ...]
    astrobio-hf train datacube [...]          # the same code

With no arguments it synthesises the embedded default planets into data/synthetic (once), trains, then
evaluates the EMA weights of the best checkpoint on the held-out test planets against persistence and
climatology, and writes to runs/datacube: config.json, model.safetensors, README.md (model card),
metrics.json, plots/, logs/ (TensorBoard) and checkpoints/.

Order (DESIGN.md section 4): arguments; run start (checks, output-folder lock); data schema; config and model
(+ --init_from weights); optimizer; datasets; the family's loss and validation; the one loop (`fit`: schedule,
EMA, prepare, resume, checkpoints, pushes); test with baselines; save_pretrained; card; end of run.
The evaluation, baselines and card are in astrobio_hf/evaluation/datacube.py.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import DataLoader

from astrobio_hf.data.schema import DatasetSchema, climate_time_kind
from astrobio_hf.data.streaming import build_window_dataset, count_windows
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.evaluation.datacube import collate_with_calendar, compute_climatology, data_notes, evaluate, model_inputs, write_report
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.models.datacube_unet import DatacubeUNetConfig, DatacubeUNetForForecast
from astrobio_hf.physics.constraints import unavailable_reason
from astrobio_hf.training import (
    TrainingArguments,
    create_optimizer,
    ema_weights,
    finish_run,
    fit,
    micro_batches_per_epoch,
    parse_recipe_args,
    start_run,
)
from astrobio_hf.training.args import json_option, resolved_config

logger = logging.getLogger("astrobio_hf.recipes.train_datacube")

DEFAULT_DATA_DIR = "data/synthetic"
RECIPE_DEFAULTS = {"output_dir": "runs/datacube"}
AUTO_PHYSICS_WEIGHTS = {"hydrostatic": 0.05, "ideal_gas": 0.05, "lapse_rate": 0.05}


@dataclass
class DataArguments:
    """Where the shards are and how windows are cut from them."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Shards + schema.json; the embedded default is synthesised here when missing."})
    n_planets: int = field(default=24, metadata={"help": "Planets in the embedded default (only when it is synthesised)."})
    context_steps: int = field(default=4, metadata={"help": "Tc: climate steps seen; the model predicts the next Tc."})
    stride: int = field(default=1, metadata={"help": "Climate steps between consecutive training windows."})
    shuffle_buffer: int = field(default=256, metadata={"help": "Windows in the streaming shuffle buffer (0 = stream order)."})


@dataclass
class ModelArguments:
    """Model sizes and loss terms (written into DatacubeUNetConfig)."""

    base_channels: int = 24
    depth: int = 2
    predict_variance: bool = True
    physics_weights: str = field(
        default="auto",
        metadata={"help": "JSON dict constraint name -> weight (names in astrobio_hf.physics.CONSTRAINT_NAMES; a constraint the "
                          "data cannot support is an error), or 'auto': hydrostatic, ideal_gas and lapse_rate at 0.05 each, "
                          "those the data supports (the others are named in the log and the card)."},
    )
    physics_learnable: bool = field(default=False, metadata={"help": "Learn the physics weights (softplus, with a -log w term)."})
    calendar_conditioning: str = field(
        default="auto", metadata={"help": "Condition on each forecast step's position in the calendar year: 'auto' (when the "
                                          "data has a calendar and a monthly or daily step), 'true' or 'false'."},
    )


ARGUMENT_TYPES = (DataArguments, ModelArguments, TrainingArguments)


# ------------------------------------------------------------------------------------------------------
# Data (the batch -> model mapping, model_inputs, is in astrobio_hf.evaluation.datacube)
# ------------------------------------------------------------------------------------------------------
def physics_weights_for(option: str, schema) -> dict[str, float]:
    """--physics_weights: an explicit JSON dict as given, or 'auto' = AUTO_PHYSICS_WEIGHTS restricted to the
    constraints this dataset supports (each one left out is logged with its reason)."""
    if option.strip() != "auto":
        return json_option("physics_weights", option)
    weights = {}
    for name, weight in AUTO_PHYSICS_WEIGHTS.items():
        reason = unavailable_reason(name, schema.variable_names, schema.level_unit, schema.num_levels, (schema.num_lat, schema.num_lon))
        if reason:
            logger.warning("physics_weights=auto: %s is left out of the loss: it %s", name, reason)
        else:
            weights[name] = weight
    return weights


def calendar_conditioning(schema, option: str = "auto") -> bool:
    """--calendar_conditioning: 'auto' is on when the time axis has CF times with a monthly or daily step; 'true'
    needs CF times with a calendar; 'false' is off."""
    has_calendar = bool(getattr(schema, "climate_time_calendar", None))
    choice = str(option).strip().lower()
    if choice not in ("auto", "true", "false"):
        raise ValueError(f"--calendar_conditioning must be auto, true or false, got {option!r}")
    if choice == "true" and not has_calendar:
        raise ValueError("--calendar_conditioning true needs a time axis with a CF calendar; this dataset has step indices (climate_time_calendar is None)")
    return choice == "true" or (choice == "auto" and has_calendar and climate_time_kind(schema) is not None)


def make_loader(data_dir, split, schema, data_args, train_args, accelerator, shuffle: bool, calendar: bool = False,
                in_memory: bool = False) -> DataLoader:
    """A split's windows, streamed and split across processes; `in_memory` (the training split under --dp): every
    window of the split in a list on every process, for Opacus' Poisson sampling by index (it shards the sampling)."""
    dataset = build_window_dataset(
        data_dir,
        split,
        context_steps=data_args.context_steps,
        # train: every `stride` steps; validation: non-overlapping windows (cheap, run often);
        # test: every other start step (each window a genuine forecast; more of them, steadier numbers)
        stride={"train": data_args.stride, "validation": data_args.context_steps}.get(split, 2),
        shuffle_buffer=data_args.shuffle_buffer if shuffle and not in_memory else 0,
        seed=train_args.seed,
        rank=0 if in_memory else accelerator.process_index,
        world_size=1 if in_memory else accelerator.num_processes,
        schema=schema,
    )
    if in_memory:
        dataset = list(dataset)
    # masked data: validity masks in every batch; a monthly/daily calendar: the target steps' year phase
    collate = partial(collate_with_calendar, masked=schema.has_masked_values,
                      units=schema.climate_time_units if calendar else None, calendar=schema.climate_time_calendar if calendar else None)
    return DataLoader(dataset, batch_size=train_args.per_device_batch_size, collate_fn=collate, num_workers=train_args.num_workers)


def batches_per_epoch(schema, data_args, train_args, accelerator) -> int:
    """Micro-batches every process runs per epoch (see `micro_batches_per_epoch`)."""
    per_rank = [
        count_windows(schema, "train", data_args.context_steps, data_args.stride, rank=r, world_size=accelerator.num_processes)
        for r in range(accelerator.num_processes)
    ]
    return micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps)


# ------------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, model_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, model_args, train_args)

    # 1. The run: checks, the output-folder lock, Accelerator (hardware and precision from the accelerate config).
    accelerator = start_run(train_args)
    started = time.perf_counter()

    # 2. Data schema (the embedded default is synthesised on first use, by one process).
    with accelerator.main_process_first():
        missing = data_args.data_dir == DEFAULT_DATA_DIR and not (Path(DEFAULT_DATA_DIR) / "schema.json").is_file()
        if missing and accelerator.is_main_process:
            logger.info("synthesising the embedded default (%d planets) into %s", data_args.n_planets, DEFAULT_DATA_DIR)
            synthesize_planets(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, seed=0)
        schema = DatasetSchema.from_dir(data_args.data_dir)

    # 3. Config and model; sizes, grid and normalisation come from the schema.
    physics_weights = physics_weights_for(model_args.physics_weights, schema)
    calendar_on = calendar_conditioning(schema, model_args.calendar_conditioning)
    config = DatacubeUNetConfig.from_schema(
        schema, context_steps=data_args.context_steps, base_channels=model_args.base_channels, depth=model_args.depth,
        predict_variance=model_args.predict_variance, physics_weights=physics_weights, physics_learnable=model_args.physics_learnable,
        calendar_conditioning=calendar_on,
    )
    model = DatacubeUNetForForecast(config)
    init_origin = init_weights_from(model, train_args.init_from, accelerator) if train_args.init_from else None

    # 4. Optimizer: no decay on biases and norms; fused AdamW where supported.
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))

    # 5. Datasets, streamed and split across processes without duplication; the climatology baseline.
    def loader(split, shuffle=False, in_memory=False):
        return make_loader(data_args.data_dir, split, schema, data_args, train_args, accelerator, shuffle=shuffle, calendar=calendar_on,
                           in_memory=in_memory)

    with accelerator.main_process_first():
        train_loader, val_loader, test_loader = loader("train", shuffle=True, in_memory=train_args.dp), loader("validation"), loader("test")
    climatology = compute_climatology(loader("train"), accelerator, schema)  # baselines and ACC reference
    for note in data_notes(config, schema, climatology):  # padding, masks, skipped constraints, overrides
        logger.info("data: %s", note)

    # 6. The family's part: loss (Gaussian NLL + physics, computed by the model) and validation.
    def compute_loss(model, batch, state):
        out = model(**model_inputs(batch, accelerator.device))
        return out.loss, {"nll": out.nll, "physics_loss": out.physics_loss,
                          **{f"physics/{k}": v for k, v in out.physics_terms.items()}}

    def validate(model, state):
        return evaluate(model, val_loader, accelerator, climatology, masked=schema.has_masked_values)

    # 7. The loop.
    result = fit(
        accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
        micro_batches_per_epoch=batches_per_epoch(schema, data_args, train_args, accelerator),  # (--dp: fit counts the Poisson draws)
        run_config=run_config, project="datacube", hooks=hooks,
    )

    # 8. Final model = EMA weights of the best checkpoint; test on held-out planets with baselines; card.
    with ema_weights(result.ema, result.model) as final:
        test = evaluate(final, test_loader, accelerator, climatology=climatology, with_baselines=True, masked=schema.has_masked_values)
        if accelerator.is_main_process:
            final.save_pretrained(output_dir, safe_serialization=True)
            write_report(
                output_dir, final, test, result.state, schema, sample_loader=loader("test"), climatology=climatology,
                device=accelerator.device, train_seconds=time.perf_counter() - started, throughput=result.throughput,
                run_config=run_config, init_origin=init_origin,
            )
    finish_run(result, test)
    return test


if __name__ == "__main__":
    main()
