"""Train the conditional climate diffusion model with Accelerate on streamed frames.

    accelerate launch recipes/train_diffusion.py [recipes/configs/diffusion/<name>.yaml] [--key value ...]
    astrobio-hf train diffusion [...]          # the same code
    astrobio-hf eval diffusion runs/diffusion  # sampler x steps x guidance sweep on held-out planets

With no arguments it trains on the embedded default planets (one level, all six variables, conditioned on
the planet parameters and the geological epoch) and writes to runs/diffusion: config.json and
model.safetensors (EMA weights), pipeline/ (a ClimateDiffusionPipeline: model_index.json, denoiser/,
scheduler/), README.md (model card), metrics.json, plots/ (loss curves, sample grids), logs/, checkpoints/.

Same order as every recipe (DESIGN.md section 4), with the noise scheduler and EMA after the model (and after
the --init_from weights); --push_to_hub pushes checkpoints and the final model as the datacube recipe does.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from astrobio_hf.data.frames import build_frame_dataset, collate_frames
from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.streaming import count_windows
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.diffusion.pipeline_climate_diffusion import ClimateDiffusionPipeline
from astrobio_hf.diffusion.schedulers import make_scheduler
from astrobio_hf.diffusion.training import diffusion_step
from astrobio_hf.evaluation.climate_diffusion import plot_sample_grid, validation_loss
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.hub.training_push import HubPusher
from astrobio_hf.models.climate_diffusion import (
    ClimateDiffusionConfig,
    ClimateDiffusionModel,
)
from astrobio_hf.physics.constraints import PhysicsConstraints
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

logger = logging.getLogger("astrobio_hf.recipes.train_diffusion")

DEFAULT_DATA_DIR = "data/synthetic"
RECIPE_DEFAULTS = {
    "output_dir": "runs/diffusion",
    "learning_rate": 1e-3,
    "num_epochs": 24,
    "per_device_batch_size": 8,  # windows; each gives Tg frames (16 frames on the default data)
    "ema_decay": 0.999,
    "eval_every": 0,
    "checkpoint_every": 200,
    "log_every": 20,
    "warmup_ratio": 0.03,
}


@dataclass
class DataArguments:
    """Where the frames come from."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Shards + schema.json; the embedded default is synthesised here when missing."})
    n_planets: int = field(default=24, metadata={"help": "Planets in the embedded default (only when it is synthesised)."})
    levels: str = field(default="0", metadata={"help": "Comma-separated level indices to generate: one gives (V, Y, X) frames, several (V, Z, Y, X)."})
    shuffle_buffer: int = 512


@dataclass
class DiffusionArguments:
    """Denoiser size, noise schedule, guidance and loss (written into ClimateDiffusionConfig where they belong)."""

    block_out_channels: str = field(default="32,64,128", metadata={"help": "Comma-separated UNet widths; the grid must divide by 2**(len-1)."})
    layers_per_block: int = 2
    prediction_type: str = field(default="v_prediction", metadata={"help": "epsilon, sample or v_prediction."})
    zero_terminal_snr: bool = field(default=True, metadata={"help": "rescale_betas_zero_snr + trailing spacing (not with epsilon)."})
    num_train_timesteps: int = 1000
    condition_dropout: float = field(default=0.1, metadata={"help": "Per-example probability of the learned null condition (CFG)."})
    use_class_labels: bool = field(default=True, metadata={"help": "Condition on the geological epoch as a class label."})
    min_snr_gamma: float = field(default=5.0, metadata={"help": "Min-SNR-gamma loss weighting (0 = off)."})
    physics_weights: str = field(default="{}", metadata={"help": "JSON dict: physics terms on the predicted clean sample."})
    sample_every: int = field(default=0, metadata={"help": "Optimizer steps between logged sample grids (0 = at each validation)."})
    sample_steps: int = field(default=20, metadata={"help": "DPM-Solver++ steps for the logged sample grids."})
    eval_after_training: bool = field(
        default=True,
        metadata={"help": "Score DPM-Solver++ and UniPC (20 steps, guidance 1 and 2) on the test planets and put the table in the card."},
    )


def frame_loader(data_dir, split, schema, data_args, train_args, accelerator, level_indices, shuffle: bool) -> DataLoader:
    dataset = build_frame_dataset(
        data_dir, split, shuffle_buffer=data_args.shuffle_buffer if shuffle else 0, seed=train_args.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes, schema=schema,
    )
    return DataLoader(
        dataset, batch_size=train_args.per_device_batch_size, num_workers=train_args.num_workers,
        collate_fn=partial(collate_frames, level_indices=level_indices),
    )


def main(argv: list[str] | None = None) -> dict:
    data_args, diff_args, train_args = parse_recipe_args(
        (DataArguments, DiffusionArguments, TrainingArguments), sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS
    )
    output_dir = Path(train_args.output_dir)
    report_to = [n for n in train_args.report_to.split(",") if n and n != "none"]
    level_indices = [int(i) for i in data_args.levels.split(",")]

    # 1. Accelerator and logging.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,  # the schedule below counts global optimizer steps
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
            synthesize_planets(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, seed=0)
        schema = DatasetSchema.from_dir(data_args.data_dir)

    # 3. Config and model; grid, variables and normalisation from the schema.
    config = ClimateDiffusionConfig.from_schema(
        schema,
        level_indices=level_indices,
        block_out_channels=[int(c) for c in diff_args.block_out_channels.split(",")],
        layers_per_block=diff_args.layers_per_block,
        num_class_labels=len(schema.geological_time_values) if diff_args.use_class_labels else 0,
        condition_dropout=diff_args.condition_dropout,
        prediction_type=diff_args.prediction_type,
    )
    model = ClimateDiffusionModel(config)
    init_origin = None
    if train_args.init_from:  # weights only, before EMA and optimizer see the parameters; every process calls it
        init_origin = init_weights_from(model, train_args.init_from, accelerator)
    logger.info("model summary\n%s", model_summary(model))

    # 4. Noise scheduler (DDPM, diffusers) and EMA (diffusers, with warmup).
    noise_scheduler = make_scheduler(
        "ddpm", prediction_type=diff_args.prediction_type, zero_terminal_snr=diff_args.zero_terminal_snr,
        num_train_timesteps=diff_args.num_train_timesteps,
    )
    ema = create_ema(model, train_args.ema_decay)
    physics_weights = json.loads(diff_args.physics_weights)
    physics = None
    if physics_weights:
        physics = PhysicsConstraints(
            config.variable_names, physics_weights, lat_deg=config.lat_values, lon_deg=config.lon_values,
            levels=config.level_values, level_unit=config.level_unit,
        ).to(accelerator.device)

    # 5. Optimizer.
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))

    # 6. Datasets (frames of windows with context 1; each window row gives Tg frames).
    with accelerator.main_process_first():
        train_loader = frame_loader(data_args.data_dir, "train", schema, data_args, train_args, accelerator, level_indices, shuffle=True)
        val_loader = frame_loader(data_args.data_dir, "validation", schema, data_args, train_args, accelerator, level_indices, shuffle=False)

    # 7. LR schedule from the real number of optimizer steps.
    per_rank = [count_windows(schema, "train", 1, 1, rank=r, world_size=accelerator.num_processes) for r in range(accelerator.num_processes)]
    micro_per_epoch = micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps)
    steps_per_epoch = micro_per_epoch // train_args.gradient_accumulation_steps
    total_steps = train_args.max_steps or steps_per_epoch * train_args.num_epochs
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(train_args.warmup_ratio * total_steps), total_steps)
    logger.info("%d micro-batches/epoch/process, %d optimizer steps in all", micro_per_epoch, total_steps)

    # 8. prepare, register state, trackers.
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    checkpoints = CheckpointManager(accelerator, output_dir, keep=train_args.keep_checkpoints)
    guard = NonFiniteGuard(accelerator, train_args.max_nonfinite_steps)
    pusher = HubPusher.from_args(accelerator, train_args, config)  # creates the repo now: a bad token fails before training
    init_trackers(accelerator, "diffusion", ",".join(report_to), resolved_config(data_args, diff_args, train_args), str(output_dir))

    # 9. Resume.
    resume_from = checkpoints.resolve_resume(train_args.resume)
    if resume_from is not None:
        checkpoints.load(resume_from)

    # 10. The loop.
    sampler = make_scheduler("dpmsolver++", prediction_type=diff_args.prediction_type, zero_terminal_snr=diff_args.zero_terminal_snr,
                             num_train_timesteps=diff_args.num_train_timesteps)
    val_batch = next(iter(val_loader))
    progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_main_process, desc="train")
    timer = LoopTimer(skip_steps=2)
    running = torch.zeros(2, device=accelerator.device)
    stop = state.global_step >= total_steps
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
                loss, _, physics_terms = diffusion_step(model, noise_scheduler, batch, accelerator.device, diff_args, physics)
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

            if ema is not None:
                ema.step([p for p in unwrapped.parameters() if p.requires_grad])
            state.global_step += 1
            timer.step(samples=batch["fields"].shape[0] * accelerator.num_processes * train_args.gradient_accumulation_steps)
            progress.update(1)
            if state.global_step % train_args.log_every == 0 or state.global_step == total_steps:
                mean_loss = accelerator.reduce(running[0] / running[1], reduction="mean").item()
                running.zero_()
                accelerator.log({
                    "train/loss": mean_loss, "train/lr": lr_scheduler.get_last_lr()[0], "train/grad_norm": float(grad_norm),
                    "train/skipped_steps": state.skipped_steps,
                    **{f"physics/{k}": v.detach().float().item() for k, v in physics_terms.items()},
                    **device_memory(accelerator.device),
                }, step=state.global_step)
                state.history.append({"step": state.global_step, "train/loss": mean_loss})
                progress.set_postfix(loss=f"{mean_loss:.4f}")

            end_of_epoch = state.batches_in_epoch >= micro_per_epoch
            do_eval = (train_args.eval_every and state.global_step % train_args.eval_every == 0) or end_of_epoch or state.global_step == total_steps
            is_best = False
            if do_eval:
                timer.pause()
                with ema_weights(ema, unwrapped):
                    metric = validation_loss(unwrapped, noise_scheduler, val_loader, accelerator.device, diff_args, seed=train_args.seed)
                    if accelerator.is_main_process and (diff_args.sample_every == 0 or state.global_step % diff_args.sample_every == 0):
                        pipe = ClimateDiffusionPipeline(denoiser=unwrapped, scheduler=sampler)
                        pipe.set_progress_bar_config(disable=True)
                        (output_dir / "plots").mkdir(parents=True, exist_ok=True)
                        plot_sample_grid(pipe, val_batch, output_dir / "plots" / "samples_latest.png", diff_args, train_args.seed, diff_args.sample_steps)
                        tracker = accelerator.get_tracker("tensorboard") if "tensorboard" in report_to else None
                        if tracker is not None:
                            import matplotlib.image as mpimg

                            image = mpimg.imread(output_dir / "plots" / "samples_latest.png")[..., :3]
                            tracker.log_images({"samples": image}, step=state.global_step, dataformats="HWC")
                is_best = state.record_validation(metric)
                accelerator.log({"val/loss": metric}, step=state.global_step)
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

    # 11. Release the EMA weights of the best checkpoint: the model, and a pipeline with a fast sampler.
    checkpoints.restore_best_weights(state)  # weights + EMA of the best validation step, this run's history
    result = {"global_step": state.global_step, "best_val_loss": state.best_metric, "train_throughput": timer.summary(), "init_from": init_origin}
    with ema_weights(ema, unwrapped):
        if accelerator.is_main_process:
            unwrapped.save_pretrained(output_dir, safe_serialization=True)
            ClimateDiffusionPipeline(denoiser=unwrapped, scheduler=sampler).save_pretrained(output_dir / "pipeline")
            from astrobio_hf.evaluation.climate_diffusion import write_training_report

            write_training_report(output_dir, unwrapped, state, result, time.perf_counter() - started,
                                  resolved_config(data_args, diff_args, train_args))
    accelerator.wait_for_everyone()
    if diff_args.eval_after_training and accelerator.is_main_process:
        from astrobio_hf.evaluation.climate_diffusion import evaluate_and_report

        result["evaluation"] = evaluate_and_report(
            output_dir, samplers=("dpmsolver++", "unipc"), steps=(diff_args.sample_steps,), guidance_scales=(1.0, 2.0)
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()  # trackers flushed before the push, which may fail
    pusher.on_end()  # main process only: model, card (with the evaluation) and pipeline files; then wait for every upload
    pusher.wait()
    return result


if __name__ == "__main__":
    main()
