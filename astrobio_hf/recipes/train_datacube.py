"""Train the 5-D climate datacube U-Net with Accelerate on streamed Parquet shards.

    accelerate launch recipes/train_datacube.py [recipes/configs/datacube/<name>.yaml] [--key value ...]
    astrobio-hf train datacube [...]          # the same code

With no arguments it synthesises the embedded default planets into data/synthetic (once), trains, then
evaluates the EMA weights of the best checkpoint on the held-out test planets against persistence and
climatology, and writes to runs/datacube: config.json, model.safetensors, README.md (model card),
metrics.json, plots/, logs/ (TensorBoard) and checkpoints/.

Order (DESIGN.md section 4): Accelerator; logging; data schema; config and model (+ --init_from weights); EMA;
optimizer; dataset; lr schedule from the real number of optimizer steps; prepare (+ the Hub pusher); resume
(a path or a Hub repo id); loop (each checkpoint may be pushed); save_pretrained; card; end; push.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.streaming import (
    build_window_dataset,
    collate_windows,
    count_windows,
)
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.evaluation.datacube import (
    compute_climatology,
    evaluate,
    model_inputs,
)
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.hub.training_push import HubPusher
from astrobio_hf.models.datacube_unet import DatacubeUNetConfig, DatacubeUNetForForecast
from astrobio_hf.training import (
    CheckpointManager,
    NonFiniteGuard,
    TrainingArguments,
    TrainingState,
    create_ema,
    create_optimizer,
    ema_weights,
    guarded_optimizer_step,
    parse_recipe_args,
)
from astrobio_hf.training.args import resolved_config
from astrobio_hf.training.optim import micro_batches_per_epoch
from astrobio_hf.training.tracking import (
    LoopTimer,
    device_memory,
    init_trackers,
    model_summary,
    setup_logging,
)

logger = logging.getLogger("astrobio_hf.recipes.train_datacube")

DEFAULT_DATA_DIR = "data/synthetic"


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
        default='{"hydrostatic": 0.05, "ideal_gas": 0.05, "lapse_rate": 0.05}',
        metadata={"help": "JSON dict constraint name -> weight (names in astrobio_hf.physics.CONSTRAINT_NAMES)."},
    )
    physics_learnable: bool = field(default=False, metadata={"help": "Learn the physics weights (softplus, with a -log w term)."})
    gradient_checkpointing: bool = False
    channels_last: bool = field(default=False, metadata={"help": "Use torch.channels_last_3d memory format."})


# ------------------------------------------------------------------------------------------------------
# Data (the batch -> model mapping, model_inputs, is in astrobio_hf.evaluation.datacube)
# ------------------------------------------------------------------------------------------------------
def make_loader(data_dir, split, schema, data_args, train_args, accelerator, shuffle: bool) -> DataLoader:
    dataset = build_window_dataset(
        data_dir,
        split,
        context_steps=data_args.context_steps,
        # train: every `stride` steps; validation: non-overlapping windows (cheap, run often);
        # test: every other start step (each window a genuine forecast; more of them, steadier numbers)
        stride={"train": data_args.stride, "validation": data_args.context_steps}.get(split, 2),
        shuffle_buffer=data_args.shuffle_buffer if shuffle else 0,
        seed=train_args.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        schema=schema,
    )
    return DataLoader(
        dataset,
        batch_size=train_args.per_device_batch_size,
        collate_fn=collate_windows,
        num_workers=train_args.num_workers,
    )


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
def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, train_args = parse_recipe_args(
        (DataArguments, ModelArguments, TrainingArguments), sys.argv[1:] if argv is None else argv,
        defaults={"output_dir": "runs/datacube"},
    )
    output_dir = Path(train_args.output_dir)
    report_to = [n for n in train_args.report_to.split(",") if n and n != "none"]

    # 1. Accelerator (hardware and mixed precision come from the accelerate config) and logging.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        # total_steps below already counts global optimizer steps: step the schedule once per step.
        step_scheduler_with_optimizer=False,
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    setup_logging(accelerator)
    set_seed(train_args.seed)
    started = time.perf_counter()

    # 2. Data schema (the embedded default is synthesised on first use, by one process).
    with accelerator.main_process_first():
        missing = data_args.data_dir == DEFAULT_DATA_DIR and not (Path(DEFAULT_DATA_DIR) / "schema.json").is_file()
        if missing and accelerator.is_main_process:
            logger.info("synthesising the embedded default (%d planets) into %s", data_args.n_planets, DEFAULT_DATA_DIR)
            synthesize_planets(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, seed=0)
        schema = DatasetSchema.from_dir(data_args.data_dir)

    # 3. Config and model; sizes, grid and normalisation come from the schema.
    config = DatacubeUNetConfig.from_schema(
        schema,
        context_steps=data_args.context_steps,
        base_channels=model_args.base_channels,
        depth=model_args.depth,
        predict_variance=model_args.predict_variance,
        physics_weights=json.loads(model_args.physics_weights),
        physics_learnable=model_args.physics_learnable,
    )
    model = DatacubeUNetForForecast(config)
    init_origin = None
    if train_args.init_from:  # weights only, before EMA and optimizer see the parameters; every process calls it
        init_origin = init_weights_from(model, train_args.init_from, accelerator)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if model_args.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    logger.info("model summary\n%s", model_summary(model))

    # 4. EMA (diffusers), registered for checkpointing below.
    ema = create_ema(model, train_args.ema_decay)

    # 5. Optimizer: no decay on biases and norms; fused AdamW where supported.
    optimizer = create_optimizer(
        model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2)
    )

    # 6. Datasets, streamed and split across processes without duplication.
    with accelerator.main_process_first():
        train_loader = make_loader(data_args.data_dir, "train", schema, data_args, train_args, accelerator, shuffle=True)
        val_loader = make_loader(data_args.data_dir, "validation", schema, data_args, train_args, accelerator, shuffle=False)
        test_loader = make_loader(data_args.data_dir, "test", schema, data_args, train_args, accelerator, shuffle=False)

    climatology = compute_climatology(
        make_loader(data_args.data_dir, "train", schema, data_args, train_args, accelerator, shuffle=False), accelerator
    )  # (V, 1, 1, Z, Y, X): the climatology baseline and the ACC reference

    # 7. LR schedule from the real number of optimizer steps.
    micro_per_epoch = batches_per_epoch(schema, data_args, train_args, accelerator)
    steps_per_epoch = micro_per_epoch // train_args.gradient_accumulation_steps
    total_steps = train_args.max_steps or steps_per_epoch * train_args.num_epochs
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(train_args.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    logger.info(
        "%d training windows, %d micro-batches/epoch/process, %d optimizer steps in all (global batch %d)",
        count_windows(schema, "train", data_args.context_steps, data_args.stride),
        micro_per_epoch, total_steps,
        train_args.per_device_batch_size * accelerator.num_processes * train_args.gradient_accumulation_steps,
    )

    # 8. prepare (the streamed loaders are already split by node, so they are not prepared).
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    if train_args.torch_compile:
        model = torch.compile(model)
    unwrapped = accelerator.unwrap_model(model)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    checkpoints = CheckpointManager(accelerator, output_dir, keep=train_args.keep_checkpoints)
    guard = NonFiniteGuard(accelerator, train_args.max_nonfinite_steps)
    pusher = HubPusher.from_args(accelerator, train_args, config)  # creates the repo now: a bad token fails before training
    init_trackers(accelerator, "datacube", ",".join(report_to), resolved_config(data_args, model_args, train_args), str(output_dir))
    if accelerator.is_main_process:
        (output_dir / "run_info.txt").write_text(
            f"distributed_type={accelerator.distributed_type} num_processes={accelerator.num_processes} "
            f"device={accelerator.device} mixed_precision={accelerator.mixed_precision}\n"
        )

    # 9. Resume: weights, optimizer, scheduler, EMA, RNG and the data position.
    resume_from = checkpoints.resolve_resume(train_args.resume)
    if resume_from is not None:
        checkpoints.load(resume_from)
        logger.info("resuming at step %d (epoch %d, batch %d)", state.global_step, state.epoch, state.batches_in_epoch)

    # 10. The loop.
    progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_main_process, desc="train")
    running = torch.zeros(2, device=accelerator.device)  # loss sum, micro-batches since the last log
    stop = state.global_step >= total_steps
    timer = LoopTimer(skip_steps=2)  # training-loop throughput, without evaluation and checkpoint time
    model.train()
    while not stop:
        train_loader.dataset.set_epoch(state.epoch)
        batches = iter(train_loader)
        for _ in range(state.batches_in_epoch):  # replay the seeded stream up to the saved position
            next(batches)
        while state.batches_in_epoch < micro_per_epoch:
            batch = next(batches)
            state.batches_in_epoch += 1
            with accelerator.accumulate(model):
                out = model(**model_inputs(batch, accelerator.device))
                loss = out.loss
                accelerator.backward(loss)
                grad_norm, step_ok = guarded_optimizer_step(
                    accelerator, model, optimizer, lr_scheduler, guard, loss, train_args.max_grad_norm
                )
            running += torch.stack([loss.detach().float(), torch.ones((), device=running.device)])
            if not accelerator.sync_gradients:
                continue
            if not step_ok:
                state.skipped_steps += 1
                continue

            # Only on optimizer steps: EMA, counting, logging, validation, checkpoints.
            if ema is not None:
                ema.step([p for p in unwrapped.parameters() if p.requires_grad])
            state.global_step += 1
            timer.step(samples=train_args.per_device_batch_size * accelerator.num_processes * train_args.gradient_accumulation_steps)
            progress.update(1)
            if state.global_step % train_args.log_every == 0 or state.global_step == total_steps:
                mean_loss = accelerator.reduce(running[0] / running[1], reduction="mean").item()
                running.zero_()
                logs = {
                    "train/loss": mean_loss,
                    "train/nll": out.nll.detach().float().item(),
                    "train/physics_loss": out.physics_loss.detach().float().item(),
                    "train/lr": lr_scheduler.get_last_lr()[0],
                    "train/grad_norm": float(grad_norm),
                    "train/skipped_steps": state.skipped_steps,
                    "train/epoch": state.epoch + state.batches_in_epoch / micro_per_epoch,
                    **{f"physics/{k}": v.detach().float().item() for k, v in out.physics_terms.items()},
                    **device_memory(accelerator.device),
                }
                accelerator.log(logs, step=state.global_step)
                state.history.append({"step": state.global_step, "train/loss": mean_loss})
                progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{logs['train/lr']:.2e}")

            end_of_epoch = state.batches_in_epoch >= micro_per_epoch
            do_eval = (train_args.eval_every and state.global_step % train_args.eval_every == 0) or end_of_epoch or state.global_step == total_steps
            is_best = False
            if do_eval:
                timer.pause()
                with ema_weights(ema, unwrapped):
                    val = evaluate(unwrapped, val_loader, accelerator, climatology)
                metric = val["loss"]
                is_best = state.record_validation(metric)
                accelerator.log(
                    {"val/loss": metric, "val/nrmse": val["model/nrmse"], **{f"val/rmse/{v}": val[f"model/rmse/{v}"] for v in config.variable_names}},
                    step=state.global_step,
                )
                logger.info("step %d: val loss %.4f%s", state.global_step, metric, " (best)" if is_best else "")
            stop = state.global_step >= total_steps or state.patience_exhausted(train_args.early_stopping_patience)
            if end_of_epoch:
                state.epoch += 1
                state.batches_in_epoch = 0
            if state.global_step % train_args.checkpoint_every == 0 or is_best or stop or end_of_epoch:
                timer.pause()
                saved = checkpoints.save(state.global_step, metric=state.best_metric if is_best else None, is_best=is_best)
                pusher.on_checkpoint(state.global_step, saved)
            if stop or end_of_epoch:
                break
    progress.close()
    if state.patience_exhausted(train_args.early_stopping_patience):
        logger.info("early stopping: %d validations without improvement", state.evals_without_improvement)

    # 11. Final model = EMA weights of the best checkpoint; test on held-out planets with baselines.
    checkpoints.restore_best_weights(state)  # weights + EMA of the best validation step, this run's history
    with ema_weights(ema, unwrapped):
        test = evaluate(unwrapped, test_loader, accelerator, climatology=climatology, with_baselines=True)
        if accelerator.is_main_process:
            unwrapped.save_pretrained(output_dir, safe_serialization=True)
            from astrobio_hf.evaluation.datacube import write_report

            write_report(
                output_dir, unwrapped, test, state, schema,
                sample_loader=make_loader(data_args.data_dir, "test", schema, data_args, train_args, accelerator, shuffle=False),
                climatology=climatology, device=accelerator.device,
                train_seconds=time.perf_counter() - started, throughput=timer.summary(), run_config=resolved_config(data_args, model_args, train_args),
                init_origin=init_origin,
            )
    accelerator.log({f"test/{k}": v for k, v in test.items() if isinstance(v, (int, float))}, step=state.global_step)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # trackers flushed before the push, which may fail
    pusher.on_end()  # main process only: the final model and card; then wait for every upload
    pusher.wait()
    return test


if __name__ == "__main__":
    main()
