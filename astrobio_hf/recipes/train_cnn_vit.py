"""Train the CNN-ViT hybrid to infer planet parameters from climate datacube windows, with Accelerate.

    accelerate launch recipes/train_cnn_vit.py [recipes/configs/cnn_vit/<name>.yaml] [--key value ...]

With no arguments it uses the planet population in data/planets (the embedded default of the planet-level families:
96 synthetic planets, 8 climate steps each; synthesised on first use, ~30 s), trains,
and evaluates the EMA weights of the best checkpoint on the held-out test planets: R2 and RMSE per parameter and
the calibration of the predicted uncertainty, beside a ridge regression on pooled cube features fitted in the same
run on the same training windows. When the dataset has planet regime labels (the schema's `planet_regime_names`; the
planet population has frozen / temperate / warm by global-mean surface temperature), the model also classifies the
regime (cross-entropy x `regime_loss_weight` in the loss) and the test reports accuracy, macro-F1 and a confusion
matrix beside two baselines fitted in the same run: the majority class of the training windows and a multinomial
logistic regression on the ridge's pooled cube features. Writes to runs/cnn_vit: config.json, model.safetensors, README.md (card with
parity plots), metrics.json, plots/, logs/ and checkpoints/.

Defaults that matter on the 16 training planets of the embedded default (see the card for the numbers): log channels
of T, p, rho and q beside the linear ones (gas constant and gravity become differences), no GroupNorm in the stem
(it removed the spatial means that carry the planet parameters), the input's global levels projected into [CLS],
a random longitude roll of each training batch, the best checkpoint chosen by validation NRMSE (the NLL rises
early from over-confident variances), and the predicted variances rescaled at test time by their mean z^2 on the
validation planets (both calibrations are reported).

Order (DESIGN.md section 4): Accelerator; logging; data schema; config and model (+ --init_from); EMA; optimizer
(separate learning rates for the CNN and the ViT parts, no decay on biases, norms and token embeddings); dataset;
lr schedule (warmup + cosine per optimizer step); prepare; resume; loop; save_pretrained; card; end; push.
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
from astrobio_hf.data.synth import (
    PLANET_POPULATION,
    PLANET_POPULATION_DIR,
    ensure_planet_population,
)
from astrobio_hf.evaluation.cnn_vit import (
    BEST_METRICS,
    evaluate,
    fit_regime_baselines,
    fit_ridge,
    model_inputs,
)
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.hub.training_push import HubPusher
from astrobio_hf.models.cnn_vit import CnnVitConfig, CnnVitForParameterRegression
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

logger = logging.getLogger("astrobio_hf.recipes.train_cnn_vit")

DEFAULT_DATA_DIR = PLANET_POPULATION_DIR
NO_DECAY_NAMES = ("cls_token", "position_embeddings")


@dataclass
class DataArguments:
    """Where the shards are and how windows are cut from them."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Shards + schema.json; the embedded default is synthesised here when missing."})
    n_planets: int = field(default=PLANET_POPULATION["n_planets"], metadata={"help": "Planets of the embedded default (the planet population; used when it is synthesised)."})
    n_climate_steps: int = field(default=PLANET_POPULATION["n_climate_steps"], metadata={"help": "Climate steps per planet of the embedded default."})
    context_steps: int = field(default=4, metadata={"help": "Tc: climate steps in each input window."})
    stride: int = field(default=1, metadata={"help": "Climate steps between consecutive training windows."})
    shuffle_buffer: int = field(default=256, metadata={"help": "Windows in the streaming shuffle buffer (0 = stream order)."})
    lon_roll: bool = field(default=True, metadata={"help": "Augment training batches with a random circular shift in longitude (the origin of longitude is arbitrary)."})


@dataclass
class ModelArguments:
    """Model sizes, loss terms and the per-part learning rates (written into CnnVitConfig / the optimizer)."""

    stem_channels: int = 32
    stem_norm: str = field(default="none", metadata={"help": "Stem normalisation: none, or group (GroupNorm per sample over space, which removes the global levels that carry the planet parameters)."})
    global_token: bool = field(default=True, metadata={"help": "Project the input's global levels (stem input averaged over lat/lon) into the [CLS] token."})
    stem_downsample: int = 1
    patch_size: int = 2
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.0
    log_variables: str = field(default="T,p,rho,q", metadata={"help": "Comma-separated positive variables also fed as log channels ('' = none)."})
    predict_variance: bool = True
    regime_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of the regime cross-entropy in the loss (datasets with planet regime labels only)."}
    )
    physics_weights: str = field(
        default='{"cross_scale": 0.1, "ideal_gas": 0.05, "hydrostatic": 0.05}',
        metadata={"help": "JSON dict term -> weight (terms: cross_scale, ideal_gas, hydrostatic)."},
    )
    cnn_lr_multiplier: float = field(default=1.0, metadata={"help": "Learning rate of the CNN part (stem + CNN head) / learning_rate."})
    vit_lr_multiplier: float = field(default=0.5, metadata={"help": "Learning rate of the ViT part (tokens + encoder) / learning_rate."})
    gradient_checkpointing: bool = False
    best_metric: str = field(
        default="nrmse",
        metadata={"help": "Validation metric that picks the best checkpoint (lower is better): nrmse (RMSE / training "
                  "std, averaged over the parameters) or loss (Gaussian NLL + physics; it rises as soon as the predicted "
                  "variances shrink on the few training planets, long before the means stop improving)."},
    )


# ------------------------------------------------------------------------------------------------------
# Data, augmentation and learning rates (the batch -> model mapping, model_inputs, and the evaluation are in
# astrobio_hf.evaluation.cnn_vit)
# ------------------------------------------------------------------------------------------------------
def ensure_dataset(data_args: DataArguments) -> None:
    """Synthesise the planet population (the embedded default of the planet-level families) on first use, and again
    when it was written by an older version or with other settings (main process only); other data_dirs as they are."""
    if data_args.data_dir == DEFAULT_DATA_DIR:
        ensure_planet_population(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, n_climate_steps=data_args.n_climate_steps)


def roll_longitude(inputs: dict) -> dict:
    """Training augmentation: the cube shifted circularly in longitude by a random number of columns (the global
    torch generator, whose state the checkpoints carry); the planet parameters do not depend on the origin."""
    shift = int(torch.randint(inputs["inputs"].shape[-1], ()))
    return {**inputs, "inputs": torch.roll(inputs["inputs"], shifts=shift, dims=-1)}


def lr_multipliers(model_args: ModelArguments) -> dict[str, float]:
    """Module-name prefixes -> learning-rate factors: the CNN part and the ViT part (the ViT head follows the ViT)."""
    return {
        "cnn_vit.stem": model_args.cnn_lr_multiplier,
        "cnn_head": model_args.cnn_lr_multiplier,
        "cnn_vit.embeddings": model_args.vit_lr_multiplier,
        "cnn_vit.layers": model_args.vit_lr_multiplier,
        "cnn_vit.final_norm": model_args.vit_lr_multiplier,
        "vit_head": model_args.vit_lr_multiplier,
        "regime_head": model_args.vit_lr_multiplier,  # reads the ViT's [CLS] token, like vit_head
    }


def make_loader(data_dir, split, schema, data_args, train_args, shuffle: bool, rank: int, world_size: int) -> DataLoader:
    dataset = build_window_dataset(
        data_dir,
        split,
        context_steps=data_args.context_steps,
        stride={"train": data_args.stride, "validation": data_args.context_steps}.get(split, 2),
        shuffle_buffer=data_args.shuffle_buffer if shuffle else 0,
        seed=train_args.seed,
        rank=rank,
        world_size=world_size,
        schema=schema,
    )
    return DataLoader(dataset, batch_size=train_args.per_device_batch_size, collate_fn=collate_windows, num_workers=train_args.num_workers)


# ------------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, train_args = parse_recipe_args(
        (DataArguments, ModelArguments, TrainingArguments), sys.argv[1:] if argv is None else argv,
        defaults={"output_dir": "runs/cnn_vit", "num_epochs": 60},
    )
    output_dir = Path(train_args.output_dir)
    if model_args.best_metric not in BEST_METRICS:
        raise ValueError(f"--best_metric must be one of {sorted(BEST_METRICS)}, got {model_args.best_metric!r}")
    report_to = [n for n in train_args.report_to.split(",") if n and n != "none"]

    # 1. Accelerator and logging.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    setup_logging(accelerator)
    set_seed(train_args.seed)
    started = time.perf_counter()
    rank, world = accelerator.process_index, accelerator.num_processes

    # 2. Data schema (the embedded default is synthesised on first use, by one process).
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_dataset(data_args)
        schema = DatasetSchema.from_dir(data_args.data_dir)

    # 3. Config and model; sizes, grid, targets and normalisation come from the schema.
    config = CnnVitConfig.from_schema(
        schema,
        context_steps=data_args.context_steps,
        stem_channels=model_args.stem_channels,
        stem_norm=model_args.stem_norm,
        global_token=model_args.global_token,
        stem_downsample=model_args.stem_downsample,
        patch_size=model_args.patch_size,
        hidden_size=model_args.hidden_size,
        num_layers=model_args.num_layers,
        num_heads=model_args.num_heads,
        dropout=model_args.dropout,
        log_variables=[n.strip() for n in model_args.log_variables.split(",") if n.strip()],
        predict_variance=model_args.predict_variance,
        physics_weights=json.loads(model_args.physics_weights),
        regime_loss_weight=model_args.regime_loss_weight,
    )
    model = CnnVitForParameterRegression(config)
    init_origin = None
    if train_args.init_from:
        init_origin = init_weights_from(model, train_args.init_from, accelerator)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    logger.info("model summary\n%s", model_summary(model))

    # 4. EMA.
    ema = create_ema(model, train_args.ema_decay)

    # 5. Optimizer: CNN and ViT parts at their own learning rates; no decay on biases, norms, [CLS] and positions.
    optimizer = create_optimizer(
        model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2),
        lr_multipliers=lr_multipliers(model_args), no_decay_names=NO_DECAY_NAMES,
    )

    # 6. Datasets, streamed and split across processes; the ridge baseline on the same training windows.
    with accelerator.main_process_first():
        train_loader = make_loader(data_args.data_dir, "train", schema, data_args, train_args, True, rank, world)
        val_loader = make_loader(data_args.data_dir, "validation", schema, data_args, train_args, False, rank, world)
        test_loader = make_loader(data_args.data_dir, "test", schema, data_args, train_args, False, rank, world)
    ridge = fit_ridge(
        make_loader(data_args.data_dir, "train", schema, data_args, train_args, False, rank, world), val_loader, config, accelerator
    )
    regime_baselines = None
    if config.num_regimes:
        regime_baselines = fit_regime_baselines(
            make_loader(data_args.data_dir, "train", schema, data_args, train_args, False, rank, world), val_loader, config, accelerator
        )

    # 7. LR schedule (warmup + cosine, per optimizer step) from the real number of optimizer steps.
    per_rank = [count_windows(schema, "train", data_args.context_steps, data_args.stride, rank=r, world_size=world) for r in range(world)]
    micro_per_epoch = micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps)
    steps_per_epoch = micro_per_epoch // train_args.gradient_accumulation_steps
    total_steps = train_args.max_steps or steps_per_epoch * train_args.num_epochs
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(train_args.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    logger.info("%d training windows, %d micro-batches/epoch/process, %d optimizer steps", sum(per_rank), micro_per_epoch, total_steps)

    # 8. prepare.
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
    pusher = HubPusher.from_args(accelerator, train_args, config)
    init_trackers(accelerator, "cnn_vit", ",".join(report_to), resolved_config(data_args, model_args, train_args), str(output_dir))
    if accelerator.is_main_process:
        (output_dir / "run_info.txt").write_text(
            f"distributed_type={accelerator.distributed_type} num_processes={world} "
            f"device={accelerator.device} mixed_precision={accelerator.mixed_precision}\n"
        )

    # 9. Resume.
    resume_from = checkpoints.resolve_resume(train_args.resume)
    if resume_from is not None:
        checkpoints.load(resume_from)
        logger.info("resuming at step %d (epoch %d, batch %d)", state.global_step, state.epoch, state.batches_in_epoch)

    # 10. The loop.
    progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_main_process, desc="train")
    running = torch.zeros(2, device=accelerator.device)
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
            inputs = model_inputs(batch, accelerator.device)
            if data_args.lon_roll:
                inputs = roll_longitude(inputs)
            with accelerator.accumulate(model):
                out = model(**inputs)
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

            if ema is not None:
                ema.step([p for p in unwrapped.parameters() if p.requires_grad])
            state.global_step += 1
            timer.step(samples=train_args.per_device_batch_size * world * train_args.gradient_accumulation_steps)
            progress.update(1)
            if state.global_step % train_args.log_every == 0 or state.global_step == total_steps:
                mean_loss = accelerator.reduce(running[0] / running[1], reduction="mean").item()
                running.zero_()
                lrs = lr_scheduler.get_last_lr()
                logs = {
                    "train/loss": mean_loss,
                    "train/nll": out.nll.detach().float().item(),
                    "train/physics_loss": out.physics_loss.detach().float().item(),
                    "train/lr_max": max(lrs),
                    "train/lr_min": min(lrs),
                    "train/grad_norm": float(grad_norm),
                    "train/skipped_steps": state.skipped_steps,
                    "train/epoch": state.epoch + state.batches_in_epoch / micro_per_epoch,
                    **{f"physics/{k}": v.detach().float().item() for k, v in out.physics_terms.items()},
                    **({"train/regime_loss": out.regime_loss.detach().float().item()} if out.regime_loss is not None else {}),
                    **device_memory(accelerator.device),
                }
                accelerator.log(logs, step=state.global_step)
                state.history.append({"step": state.global_step, "train/loss": mean_loss})
                progress.set_postfix(loss=f"{mean_loss:.4f}")

            end_of_epoch = state.batches_in_epoch >= micro_per_epoch
            do_eval = (train_args.eval_every and state.global_step % train_args.eval_every == 0) or end_of_epoch or state.global_step == total_steps
            is_best = False
            if do_eval:
                timer.pause()
                with ema_weights(ema, unwrapped):
                    val = evaluate(unwrapped, val_loader, accelerator)
                is_best = state.record_validation(val[BEST_METRICS[model_args.best_metric]])
                state.history[-1].update({"val/loss": val["loss"], "val/nrmse_mean": val["model/nrmse_mean"]})
                accelerator.log({"val/loss": val["loss"], "val/r2_mean": val["model/r2_mean"], "val/calibration_error": val["calibration/error"]}, step=state.global_step)
                if "regime/model/accuracy" in val:
                    accelerator.log({"val/regime_accuracy": val["regime/model/accuracy"], "val/regime_macro_f1": val["regime/model/macro_f1"]}, step=state.global_step)
                logger.info(
                    "step %d: val loss %.4f, nrmse %.3f, mean R2 %.3f%s", state.global_step, val["loss"], val["model/nrmse_mean"],
                    val["model/r2_mean"], " (best)" if is_best else "",
                )
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

    # 11. Final model = EMA weights of the best checkpoint; test on held-out planets beside the ridge baseline.
    checkpoints.restore_best_weights(state)
    with ema_weights(ema, unwrapped):
        # the predicted variances, fitted on the training planets, are rescaled by their mean z^2 on validation
        scale = evaluate(unwrapped, val_loader, accelerator)["calibration/mean_z2"] if config.predict_variance else 1.0
        test = evaluate(unwrapped, test_loader, accelerator, ridge=ridge, variance_scale=scale, regime_baselines=regime_baselines)
        if accelerator.is_main_process:
            unwrapped.save_pretrained(output_dir, safe_serialization=True)
            from astrobio_hf.evaluation.cnn_vit import write_report

            write_report(
                output_dir, unwrapped, test, state, ridge=ridge,
                report_loader=make_loader(data_args.data_dir, "test", schema, data_args, train_args, False, 0, 1),
                device=accelerator.device, train_seconds=time.perf_counter() - started, throughput=timer.summary(),
                run_config=resolved_config(data_args, model_args, train_args), schema=schema, init_origin=init_origin,
            )
    accelerator.log({f"test/{k}": v for k, v in test.items() if isinstance(v, (int, float))}, step=state.global_step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    pusher.on_end()
    pusher.wait()
    return test


if __name__ == "__main__":
    main()
