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

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from torch.utils.data import DataLoader

from astrobio_hf.data.frames import build_frame_dataset, collate_frames
from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.streaming import count_windows
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.diffusion.pipeline_climate_diffusion import ClimateDiffusionPipeline
from astrobio_hf.diffusion.schedulers import make_scheduler
from astrobio_hf.diffusion.training import diffusion_step
from astrobio_hf.evaluation.climate_diffusion import evaluate_and_report, plot_sample_grid, validation_loss, write_training_report
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.models.climate_diffusion import ClimateDiffusionConfig, ClimateDiffusionModel
from astrobio_hf.physics.constraints import PhysicsConstraints
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
from astrobio_hf.training.tracking import log_images

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


ARGUMENT_TYPES = (DataArguments, DiffusionArguments, TrainingArguments)


def frame_loader(data_dir, split, schema, data_args, train_args, accelerator, level_indices, shuffle: bool) -> DataLoader:
    dataset = build_frame_dataset(
        data_dir, split, shuffle_buffer=data_args.shuffle_buffer if shuffle else 0, seed=train_args.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes, schema=schema,
    )
    return DataLoader(
        dataset, batch_size=train_args.per_device_batch_size, num_workers=train_args.num_workers,
        collate_fn=partial(collate_frames, level_indices=level_indices),
    )


def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, diff_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    physics_weights = json_option("physics_weights", diff_args.physics_weights)
    try:
        level_indices = [int(i) for i in data_args.levels.split(",")]
    except ValueError:
        raise ValueError(f"expected --levels a comma list of level indices (e.g. 0,1,2), got {data_args.levels!r}") from None
    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, diff_args, train_args)

    # 1. The run: checks, the output-folder lock, Accelerator.
    accelerator = start_run(train_args)
    started = time.perf_counter()

    # 2. Data schema (the embedded default is synthesised on first use, by one process).
    with accelerator.main_process_first():
        missing = data_args.data_dir == DEFAULT_DATA_DIR and not (Path(DEFAULT_DATA_DIR) / "schema.json").is_file()
        if missing and accelerator.is_main_process:
            synthesize_planets(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, seed=0)
        schema = DatasetSchema.from_dir(data_args.data_dir)
        schema.refuse_masked_values("climate diffusion")

    # 3. Config and model; grid, variables and normalisation from the schema.
    config = ClimateDiffusionConfig.from_schema(
        schema, level_indices=level_indices, block_out_channels=[int(c) for c in diff_args.block_out_channels.split(",")],
        layers_per_block=diff_args.layers_per_block,
        num_class_labels=len(schema.geological_time_values) if diff_args.use_class_labels else 0,
        condition_dropout=diff_args.condition_dropout, prediction_type=diff_args.prediction_type,
    )
    model = ClimateDiffusionModel(config)
    init_origin = init_weights_from(model, train_args.init_from, accelerator) if train_args.init_from else None

    # 4. Noise scheduler (DDPM, diffusers), the sampler of the logged grids, optional physics on the clean sample.
    schedule = {"prediction_type": diff_args.prediction_type, "zero_terminal_snr": diff_args.zero_terminal_snr,
                "num_train_timesteps": diff_args.num_train_timesteps}
    noise_scheduler, sampler = make_scheduler("ddpm", **schedule), make_scheduler("dpmsolver++", **schedule)
    physics = None
    if physics_weights:
        physics = PhysicsConstraints(
            config.variable_names, physics_weights, lat_deg=config.lat_values, lon_deg=config.lon_values,
            levels=config.level_values, level_unit=config.level_unit,
        ).to(accelerator.device)

    # 5. Optimizer; datasets (frames of windows with context 1; each window row gives Tg frames).
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))
    with accelerator.main_process_first():
        train_loader = frame_loader(data_args.data_dir, "train", schema, data_args, train_args, accelerator, level_indices, shuffle=True)
        val_loader = frame_loader(data_args.data_dir, "validation", schema, data_args, train_args, accelerator, level_indices, shuffle=False)
    per_rank = [count_windows(schema, "train", 1, 1, rank=r, world_size=accelerator.num_processes) for r in range(accelerator.num_processes)]
    val_batch = next(iter(val_loader))

    # 6. The family's part: the denoising loss (min-SNR weights, per-example condition dropout) and validation,
    # which also draws a grid of samples for held-out conditions and sends it to the trackers.
    def compute_loss(model, batch, state):
        loss, _, physics_terms = diffusion_step(model, noise_scheduler, batch, accelerator.device, diff_args, physics)
        return loss, {f"physics/{k}": v for k, v in physics_terms.items()}

    def validate(model, state):
        loss = validation_loss(model, noise_scheduler, val_loader, accelerator.device, diff_args, seed=train_args.seed)
        if accelerator.is_main_process and (diff_args.sample_every == 0 or state.global_step % diff_args.sample_every == 0):
            pipe = ClimateDiffusionPipeline(denoiser=model, scheduler=sampler)
            pipe.set_progress_bar_config(disable=True)
            grid = output_dir / "plots" / "samples_latest.png"
            grid.parent.mkdir(parents=True, exist_ok=True)
            plot_sample_grid(pipe, val_batch, grid, diff_args, train_args.seed, diff_args.sample_steps)
            log_images(accelerator, {"samples": grid}, step=state.global_step)
        return {"loss": loss}

    # 7. The loop.
    result = fit(
        accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
        micro_batches_per_epoch=micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps),
        run_config=run_config, project="diffusion", hooks=hooks, samples_in=lambda batch: batch["fields"].shape[0],
    )

    # 8. Release the EMA weights of the best checkpoint: the model, and a pipeline with a fast sampler.
    summary = {"global_step": result.state.global_step, "best_val_loss": result.state.best_metric,
               "train_throughput": result.throughput, "init_from": init_origin}
    with ema_weights(result.ema, result.model) as final:
        if accelerator.is_main_process:
            final.save_pretrained(output_dir, safe_serialization=True)
            ClimateDiffusionPipeline(denoiser=final, scheduler=sampler).save_pretrained(output_dir / "pipeline")
            write_training_report(output_dir, final, result.state, summary, time.perf_counter() - started, run_config)
    accelerator.wait_for_everyone()
    if diff_args.eval_after_training and accelerator.is_main_process:
        summary["evaluation"] = evaluate_and_report(
            output_dir, samplers=("dpmsolver++", "unipc"), steps=(diff_args.sample_steps,), guidance_scales=(1.0, 2.0)
        )
    finish_run(result)  # the final model, card (with the evaluation) and pipeline files are pushed here
    return summary


if __name__ == "__main__":
    main()
