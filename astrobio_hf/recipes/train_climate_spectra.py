"""Train the climate + spectra multi-task model with Accelerate on streamed Parquet shards with spectra.

    accelerate launch recipes/train_climate_spectra.py [recipes/configs/climate_spectra/<name>.yaml] [--key value ...]

With no arguments it uses the planet population in data/planets (the embedded default of the planet-level families:
96 synthetic planets with spectra and regime labels, 8 climate steps each; synthesised on first use, ~30 s), trains, then evaluates the EMA weights of the best checkpoint on the held-out test
planets and writes to runs/climate_spectra: config.json, model.safetensors, README.md (model card), metrics.json,
plots/ (predicted vs true spectra with error bars, loss curves), logs/ and checkpoints/.

    accelerate launch recipes/train_climate_spectra.py recipes/configs/climate_spectra/wasp43b.yaml

trains on WASP-43b instead: (perturbed GCM cube, phase-resolved Fp/Fs) pairs built into data/wasp43b on first use
by astrobio_hf.data.spectra (nemesispy's GCM and forward model, ~5 s per sample; only this build step and the
unperturbed GCM's cube, gcm_cube.npy, import nemesispy); the test metrics then add chi-squared of the predicted
phase spectra against the observed HST/Spitzer spectra (from the unperturbed GCM's cube and per test sample),
beside the forward model's own, and the card a predicted-vs-observed phase-spectrum plot with error bars.

A sample is Tc consecutive climate frames (B, V, Tc, Tg, Z, Y, X) and their spectra (B, Tc, P, W): the windows of
`build_window_dataset(..., forecast=False)` (every step of a series, also the n_time = 1 WASP-43b samples). Every training
micro-batch gives the model both modalities, or (with probability `modality_dropout`, half each) only the cube or
only the spectra; both heads are always trained. Evaluation measures the two cross-modal tasks: spectra predicted
from the cube alone (emulation of the radiative model: spectral angle, NRMSE, R2) and climate fields retrieved
from the spectra alone (latitude-weighted RMSE, SSIM), against the train-mean baseline.
The best checkpoint is picked on the validation cross-modal loss (normalised MSE of both cross-modal tasks), not on
the multi-task training loss, whose learned uncertainty weights keep lowering it whatever the tasks do.

Order (DESIGN.md section 4): Accelerator; logging; data schema; config and model; EMA; optimizer; dataset; lr
schedule; prepare; resume; loop; save_pretrained; card; end.
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
from accelerate.utils import (
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    set_seed,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.spectra import (
    GCM_CUBE_FILE,
    load_wasp43b_reference,
    write_gcm_cube,
)
from astrobio_hf.data.streaming import (
    build_window_dataset,
    collate_windows,
    count_windows,
)
from astrobio_hf.data.synth import (
    PLANET_POPULATION,
    PLANET_POPULATION_DIR,
    ensure_planet_population,
)
from astrobio_hf.evaluation.climate_spectra import (
    TASKS,
    evaluate,
    fit_spectrum_ridge,
    model_inputs,
    write_report,
)
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.hub.training_push import HubPusher
from astrobio_hf.models.climate_spectra import (
    ClimateSpectraConfig,
    ClimateSpectraForMultiTask,
)
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
    init_trackers,
    model_summary,
    setup_logging,
)

logger = logging.getLogger("astrobio_hf.recipes.train_climate_spectra")

DEFAULT_DATA_DIR = PLANET_POPULATION_DIR


@dataclass
class DataArguments:
    """Where the shards (with spectra) are and how windows are cut from them."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Shards + schema.json with spectra; the embedded default is (re)synthesised here when it has none."})
    dataset: str = field(default="synthetic", metadata={"help": "synthetic | wasp43b: the builder that makes data_dir on first use (wasp43b: astrobio_hf.data.spectra, nemesispy's GCM + forward model)."})
    n_planets: int = field(default=PLANET_POPULATION["n_planets"], metadata={"help": "Planets of the embedded default (the planet population; used when it is synthesised)."})
    n_climate_steps: int = field(default=PLANET_POPULATION["n_climate_steps"], metadata={"help": "Climate steps per planet of the embedded default."})
    n_samples: int = field(default=40, metadata={"help": "Perturbed GCMs of a WASP-43b dataset built on first use (~5 s each)."})
    context_steps: int = field(default=2, metadata={"help": "Tc: climate steps per sample (the window's target frames)."})
    stride: int = field(default=1, metadata={"help": "Climate steps between consecutive training windows."})
    shuffle_buffer: int = field(default=256, metadata={"help": "Windows in the streaming shuffle buffer (0 = stream order)."})


@dataclass
class ModelArguments:
    """Model sizes and loss terms (written into ClimateSpectraConfig)."""

    cube_channels: int = 16
    hidden_size: int = 128
    num_fusion_layers: int = 2
    norm_groups: int = 4
    column_pathway: bool = field(default=True, metadata={"help": "Per-column emission network from the cube straight to the spectra, summed over the disc."})
    column_hidden_size: int = field(default=128, metadata={"help": "Hidden width of the column network (0: linear in the area-weighted mean profiles)."})
    loss_mode: str = field(default="uncertainty", metadata={"help": "fixed | uncertainty | adaptive"})
    task_weights: str = field(default='{"climate": 1.0, "spectrum": 1.0}', metadata={"help": "JSON dict task -> initial weight."})
    adaptive_temperature: float = 2.0
    adaptive_warmup_steps: int = 20
    cross_modal_weight: float = field(default=1.0, metadata={"help": "Weight of the cross-modal losses (each modality's latent alone decoded into the other) on batches with both modalities."})
    consistency_weight: float = 0.1
    smoothness_weight: float = 0.01
    physics_warmup_steps: int = 50
    modality_dropout: float = field(default=0.6, metadata={"help": "Probability that a training batch gives one modality only."})
    selection_metric: str = field(default="cross_modal_loss", metadata={"help": "Validation metric that picks the best checkpoint: cross_modal_loss (normalised MSE of spectra from the cube + cube from the spectra: the evaluated tasks, independent of the loss weights) | loss (the multi-task training loss with both modalities)."})


# ------------------------------------------------------------------------------------------------------
# Data on first use
# ------------------------------------------------------------------------------------------------------
def ensure_dataset(data_args: DataArguments) -> None:
    """Build data_dir on first use (main process only): the embedded default (synthetic planets with spectra), or
    a WASP-43b dataset with nemesispy's forward model plus the unperturbed GCM's cube (gcm_cube.npy)."""
    path = Path(data_args.data_dir) / "schema.json"
    if data_args.dataset == "wasp43b":
        if not path.is_file():
            from astrobio_hf.data.spectra import build_spectra_dataset

            logger.info("building the WASP-43b dataset (%d perturbed GCMs, ~5 s each) into %s", data_args.n_samples, data_args.data_dir)
            build_spectra_dataset(data_args.data_dir, n_samples=data_args.n_samples, seed=0)
        if not (Path(data_args.data_dir) / GCM_CUBE_FILE).is_file():
            write_gcm_cube(data_args.data_dir)
    elif data_args.data_dir == DEFAULT_DATA_DIR:
        ensure_planet_population(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, n_climate_steps=data_args.n_climate_steps)


# ------------------------------------------------------------------------------------------------------
# Modalities and data (the batch -> model mapping, model_inputs, and the evaluation are in
# astrobio_hf.evaluation.climate_spectra)
# ------------------------------------------------------------------------------------------------------
def draw_modalities(probability: float, device) -> str:
    """Seeded by the global torch RNG (restored on resume): both, or cube / spectrum only."""
    r = float(torch.rand(()))
    if r < probability / 2:
        return "cube"
    if r < probability:
        return "spectrum"
    return "both"


def make_loader(data_dir, split, schema, data_args, train_args, accelerator, shuffle: bool) -> DataLoader:
    dataset = build_window_dataset(
        data_dir, split, context_steps=data_args.context_steps,
        stride={"train": data_args.stride}.get(split, data_args.context_steps),
        shuffle_buffer=data_args.shuffle_buffer if shuffle else 0, seed=train_args.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes, schema=schema, forecast=False,
    )
    return DataLoader(dataset, batch_size=train_args.per_device_batch_size, collate_fn=collate_windows, num_workers=train_args.num_workers)


# ------------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, train_args = parse_recipe_args(
        (DataArguments, ModelArguments, TrainingArguments), sys.argv[1:] if argv is None else argv,
        defaults={"output_dir": "runs/climate_spectra", "num_epochs": 40},
    )
    output_dir = Path(train_args.output_dir)
    report_to = [n for n in train_args.report_to.split(",") if n and n != "none"]

    # 1. Accelerator and logging.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # a one-modality micro-batch leaves the other encoder without gradient: DDP must not wait for it
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    setup_logging(accelerator)
    set_seed(train_args.seed)
    started = time.perf_counter()

    # 2. Data schema (the embedded default is (re)synthesised with spectra on first use, by one process).
    if model_args.selection_metric not in ("cross_modal_loss", "loss"):
        raise ValueError(f"expected selection_metric 'cross_modal_loss' or 'loss', got {model_args.selection_metric!r}")
    if data_args.dataset not in ("synthetic", "wasp43b"):
        raise ValueError(f"expected dataset 'synthetic' or 'wasp43b', got {data_args.dataset!r}")
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_dataset(data_args)
        schema = DatasetSchema.from_dir(data_args.data_dir)
    if not schema.has_spectra:
        raise ValueError(f"expected a dataset with spectra in {data_args.data_dir}, got a schema without spectrum_wavelengths")
    observations = load_wasp43b_reference(data_args.data_dir, schema) if data_args.dataset == "wasp43b" else None

    # 3. Config and model; sizes come from the schema.
    config = ClimateSpectraConfig.from_schema(
        schema, context_steps=data_args.context_steps, cube_channels=model_args.cube_channels,
        hidden_size=model_args.hidden_size, num_fusion_layers=model_args.num_fusion_layers, norm_groups=model_args.norm_groups,
        column_pathway=model_args.column_pathway, column_hidden_size=model_args.column_hidden_size,
        loss_mode=model_args.loss_mode, task_weights=json.loads(model_args.task_weights),
        adaptive_temperature=model_args.adaptive_temperature, adaptive_warmup_steps=model_args.adaptive_warmup_steps,
        cross_modal_weight=model_args.cross_modal_weight, consistency_weight=model_args.consistency_weight, smoothness_weight=model_args.smoothness_weight,
        physics_warmup_steps=model_args.physics_warmup_steps,
    )
    model = ClimateSpectraForMultiTask(config)
    if train_args.init_from:
        init_weights_from(model, train_args.init_from, accelerator)
    logger.info("model summary\n%s", model_summary(model))

    # 4. EMA.  5. Optimizer (no decay on biases and norms).
    ema = create_ema(model, train_args.ema_decay)
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))

    # 6. Datasets.
    with accelerator.main_process_first():
        train_loader = make_loader(data_args.data_dir, "train", schema, data_args, train_args, accelerator, shuffle=True)
        val_split = "validation" if "validation" in schema.splits else "val"  # synthesize_planets / the WASP-43b builder
        val_loader = make_loader(data_args.data_dir, val_split, schema, data_args, train_args, accelerator, shuffle=False)
        test_loader = make_loader(data_args.data_dir, "test", schema, data_args, train_args, accelerator, shuffle=False)

    # 7. LR schedule from the real number of optimizer steps.
    per_rank = [count_windows(schema, "train", data_args.context_steps, data_args.stride, rank=r, world_size=accelerator.num_processes, forecast=False)
                for r in range(accelerator.num_processes)]
    micro_per_epoch = micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps)
    steps_per_epoch = micro_per_epoch // train_args.gradient_accumulation_steps
    total_steps = train_args.max_steps or steps_per_epoch * train_args.num_epochs
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(train_args.warmup_ratio * total_steps), num_training_steps=total_steps
    )

    # 8. prepare.
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    unwrapped = accelerator.unwrap_model(model)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    checkpoints = CheckpointManager(accelerator, output_dir, keep=train_args.keep_checkpoints)
    guard = NonFiniteGuard(accelerator, train_args.max_nonfinite_steps)
    pusher = HubPusher.from_args(accelerator, train_args, config)
    init_trackers(accelerator, "climate_spectra", ",".join(report_to), resolved_config(data_args, model_args, train_args), str(output_dir))

    # 9. Resume.
    resume_from = checkpoints.resolve_resume(train_args.resume)
    if resume_from is not None:
        checkpoints.load(resume_from)
        logger.info("resuming at step %d (epoch %d, batch %d)", state.global_step, state.epoch, state.batches_in_epoch)

    # 10. The loop. Task losses and weights accumulate as tensors; one sync per logging step.
    progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_main_process, desc="train")
    running = torch.zeros(2 + 2 * len(TASKS) + 3, device=accelerator.device)  # loss, count, task losses, weights, consistency, smoothness, cross-modal
    stop = state.global_step >= total_steps
    timer = LoopTimer(skip_steps=2)
    model.train()
    while not stop:
        train_loader.dataset.set_epoch(state.epoch)
        batches = iter(train_loader)
        for _ in range(state.batches_in_epoch):
            next(batches)
        while state.batches_in_epoch < micro_per_epoch:
            batch = next(batches)
            state.batches_in_epoch += 1
            modalities = draw_modalities(model_args.modality_dropout, accelerator.device)
            with accelerator.accumulate(model):
                out = model(**model_inputs(batch, accelerator.device, modalities), training_step=state.global_step)
                loss = out.loss
                accelerator.backward(loss)
                grad_norm, step_ok = guarded_optimizer_step(accelerator, model, optimizer, lr_scheduler, guard, loss, train_args.max_grad_norm)
            running += torch.stack([
                loss.detach().float(), torch.ones((), device=running.device),
                *(out.task_losses[t].float() for t in TASKS), *(out.task_weights[t].float() for t in TASKS),
                out.consistency_loss.float(), out.smoothness_loss.float(), out.cross_modal_loss.float(),
            ])
            if not accelerator.sync_gradients:
                continue
            if not step_ok:
                state.skipped_steps += 1
                continue
            if ema is not None:
                ema.step([p for p in unwrapped.parameters() if p.requires_grad])
            state.global_step += 1
            timer.step(samples=train_args.per_device_batch_size * accelerator.num_processes * train_args.gradient_accumulation_steps)
            progress.update(1)
            if state.global_step % train_args.log_every == 0 or state.global_step == total_steps:
                means = (accelerator.reduce(running, reduction="mean") / running[1].clamp_min(1)).tolist()
                running.zero_()
                logs = {"train/loss": means[0], "train/lr": lr_scheduler.get_last_lr()[0], "train/grad_norm": float(grad_norm),
                        "train/consistency": means[-3], "train/smoothness": means[-2], "train/cross_modal": means[-1],
                        "train/smoothness_weight": float(out.smoothness_weight)}
                logs.update({f"train/loss_{t}": means[2 + j] for j, t in enumerate(TASKS)})
                logs.update({f"train/weight_{t}": means[2 + len(TASKS) + j] for j, t in enumerate(TASKS)})
                accelerator.log(logs, step=state.global_step)
                state.history.append({"step": state.global_step, "train/loss": means[0]})
                progress.set_postfix(loss=f"{means[0]:.4f}")
            end_of_epoch = state.batches_in_epoch >= micro_per_epoch
            do_eval = (train_args.eval_every and state.global_step % train_args.eval_every == 0) or end_of_epoch or state.global_step == total_steps
            is_best = False
            if do_eval:
                timer.pause()  # evaluation and checkpoints are not training throughput
                with ema_weights(ema, unwrapped):
                    val = evaluate(unwrapped, val_loader, accelerator)
                is_best = state.record_validation(val[model_args.selection_metric])
                accelerator.log({"val/loss": val["loss"], "val/cross_modal_loss": val["cross_modal_loss"], "val/spectrum_r2": val["spectrum/r2"],
                                 "val/spectral_angle_deg": val["spectrum/spectral_angle_deg"]}, step=state.global_step)
                logger.info("step %d: val loss %.4f, cross-modal %.4f, spectrum R2 %.3f%s", state.global_step, val["loss"],
                            val["cross_modal_loss"], val["spectrum/r2"], " (best)" if is_best else "")
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

    # 11. Final model = EMA weights of the best checkpoint; test on held-out planets beside the ridge baseline
    # (fitted on the same training windows; it uses only the fixed normalisation statistics of the model).
    checkpoints.restore_best_weights(state)
    ridge = fit_spectrum_ridge(
        make_loader(data_args.data_dir, "train", schema, data_args, train_args, accelerator, shuffle=False), val_loader, unwrapped, accelerator
    )
    with ema_weights(ema, unwrapped):
        test = evaluate(unwrapped, test_loader, accelerator, with_ssim=True, observations=observations, ridge=ridge)
        if accelerator.is_main_process:
            unwrapped.save_pretrained(output_dir, safe_serialization=True)
            write_report(output_dir, unwrapped, test, state, schema,
                         make_loader(data_args.data_dir, "test", schema, data_args, train_args, accelerator, shuffle=False),
                         accelerator.device, time.perf_counter() - started, resolved_config(data_args, model_args, train_args),
                         observations, throughput=timer.summary())
    logger.info("test: %s", {k: v for k, v in test.items() if isinstance(v, float)})
    accelerator.log({f"test/{k}": v for k, v in test.items() if isinstance(v, (int, float))}, step=state.global_step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    pusher.on_end()
    pusher.wait()
    return test


if __name__ == "__main__":
    main()
