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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from astrobio_hf.data.metabolic import (
    collate_graphs,
    ensure_metabolic_dataset,
    load_graphs,
    load_metabolic_schema,
)
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.hub.training_push import HubPusher
from astrobio_hf.evaluation.pathway_vae import evaluate_link_prediction
from astrobio_hf.models.pathway_vae import PathwayVAEConfig, PathwayVAEModel
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
from astrobio_hf.training.tracking import (
    LoopTimer,
    device_memory,
    init_trackers,
    model_summary,
    setup_logging,
)

logger = logging.getLogger("astrobio_hf.recipes.train_pathway_vae")

DEFAULT_DATA_DIR = "data/metabolic"


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
    gradient_checkpointing: bool = False
    train_vgae_baseline: bool = field(default=True, metadata={"help": "Train PyG's plain VGAE for the same steps and compare on the test."})


def model_inputs(batch, device, step: int | None = None) -> dict:
    """A collated `Batch` -> the model's keyword inputs (the loss comes from the graph itself)."""
    batch = batch.to(device)
    return {"x": batch.x, "edge_index": batch.edge_index, "batch": batch.batch, "training_step": step}


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, train_args = parse_recipe_args(
        (DataArguments, ModelArguments, TrainingArguments), sys.argv[1:] if argv is None else argv,
        defaults={
            "output_dir": "runs/pathway_vae", "learning_rate": 2e-3, "num_epochs": 240, "per_device_batch_size": 8,
            "eval_every": 0, "checkpoint_every": 200, "log_every": 10, "ema_decay": 0.99,
        },
    )
    output_dir = Path(train_args.output_dir)
    report_to = [n for n in train_args.report_to.split(",") if n and n != "none"]

    # 1. Accelerator and logging.
    accelerator = Accelerator(
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
        log_with=report_to or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    setup_logging(accelerator)
    set_seed(train_args.seed)
    started = time.perf_counter()

    # 2. Data schema (built from cobra on first use, by one process).
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_metabolic_dataset(data_args.data_dir)
        schema = load_metabolic_schema(data_args.data_dir)
        train_graphs = load_graphs(data_args.data_dir, "train")
        heldout_graphs = load_graphs(data_args.data_dir, "heldout_organism")

    # 3. Config and model; feature names and normalisation come from the schema. The loader (step 6) is sharded by
    # `accelerator.prepare` into ceil(batches / processes) batches per process (even_batches), which sets the
    # schedule's length and the KL warm-up.
    micro_per_epoch = math.ceil(math.ceil(len(train_graphs) / train_args.per_device_batch_size) / accelerator.num_processes)
    steps_per_epoch = max(1, micro_per_epoch // train_args.gradient_accumulation_steps)
    total_steps = train_args.max_steps or steps_per_epoch * train_args.num_epochs
    warmup = model_args.kl_warmup_steps if model_args.kl_warmup_steps >= 0 else int(0.3 * total_steps)
    config = PathwayVAEConfig.from_schema(
        schema,
        encoder_type=model_args.encoder_type,
        hidden_size=model_args.hidden_size,
        latent_size=model_args.latent_size,
        num_layers=model_args.num_layers,
        num_heads=model_args.num_heads,
        dropout=model_args.dropout,
        feature_loss_weight=model_args.feature_loss_weight,
        kl_weight_max=model_args.kl_weight_max,
        kl_warmup_steps=warmup,
        negative_sampling_ratio=model_args.negative_sampling_ratio,
    )
    model = PathwayVAEModel(config)
    init_origin = init_weights_from(model, train_args.init_from, accelerator) if train_args.init_from else None
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    logger.info("model summary\n%s", model_summary(model))

    # 4. EMA; 5. optimizer (no decay on biases and norms).
    ema = create_ema(model, train_args.ema_decay)
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))

    # 6. Data: a map-style list of graphs, sharded across processes by accelerate.
    train_loader = DataLoader(
        train_graphs, batch_size=train_args.per_device_batch_size, shuffle=True, collate_fn=collate_graphs,
        num_workers=train_args.num_workers,
    )

    # 7. LR schedule from the real number of optimizer steps.
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(train_args.warmup_ratio * total_steps), num_training_steps=total_steps
    )
    logger.info(
        "%d training graphs (%d nodes), %d held-out-organism graphs; %d micro-batches/epoch/process, %d optimizer steps, "
        "KL weight 0 -> %.3g over %d steps",
        len(train_graphs), sum(int(g.num_nodes) for g in train_graphs), len(heldout_graphs), micro_per_epoch, total_steps,
        config.kl_weight_max, warmup,
    )

    # 8. prepare.
    model, optimizer, train_loader, lr_scheduler = accelerator.prepare(model, optimizer, train_loader, lr_scheduler)
    if len(train_loader) != micro_per_epoch:  # the schedule above was sized for this many batches per process
        raise RuntimeError(f"expected {micro_per_epoch} batches per process, got {len(train_loader)} from accelerate")
    if train_args.torch_compile:
        model = torch.compile(model, dynamic=True)  # graph sizes vary from batch to batch
    unwrapped = accelerator.unwrap_model(model)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    checkpoints = CheckpointManager(accelerator, output_dir, keep=train_args.keep_checkpoints)
    guard = NonFiniteGuard(accelerator, train_args.max_nonfinite_steps)
    pusher = HubPusher.from_args(accelerator, train_args, config)  # creates the repo now: a bad token fails before training
    run_config = resolved_config(data_args, model_args, train_args)
    init_trackers(accelerator, "pathway_vae", ",".join(report_to), run_config, str(output_dir))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "run_info.txt").write_text(
            f"distributed_type={accelerator.distributed_type} num_processes={accelerator.num_processes} "
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
        train_loader.set_epoch(state.epoch)
        loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) if state.batches_in_epoch else train_loader
        for batch in loader:
            state.batches_in_epoch += 1
            # The model draws negatives (Python's `random`, inside PyG) and reparameterisation noise (torch) on every
            # batch. Seeding them from the data position makes each step a function of (seed, epoch, batch, rank)
            # alone, so a resumed run is bit-identical: a fresh DataLoader iterator draws from the global torch RNG
            # and would otherwise shift every later draw.
            set_seed((train_args.seed * 1_000_003 + state.epoch * 10_007 + state.batches_in_epoch) * 64 + accelerator.process_index)
            with accelerator.accumulate(model):
                out = model(**model_inputs(batch, accelerator.device, state.global_step))
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
            timer.step(samples=int(batch.num_graphs) * accelerator.num_processes)
            progress.update(1)
            if state.global_step % train_args.log_every == 0 or state.global_step == total_steps:
                mean_loss = accelerator.reduce(running[0] / running[1], reduction="mean").item()
                running.zero_()
                logs = {
                    "train/loss": mean_loss,
                    "train/edge_loss": out.edge_loss.detach().float().item(),
                    "train/feature_loss": out.feature_loss.detach().float().item(),
                    "train/kl": out.kl.detach().float().item(),
                    "train/kl_weight": float(out.kl_weight),
                    "train/lr": lr_scheduler.get_last_lr()[0],
                    "train/grad_norm": float(grad_norm),
                    "train/skipped_steps": state.skipped_steps,
                    **device_memory(accelerator.device),
                }
                accelerator.log(logs, step=state.global_step)
                state.history.append({"step": state.global_step, "train/loss": mean_loss})
                progress.set_postfix(loss=f"{mean_loss:.4f}", kl_w=f"{logs['train/kl_weight']:.3f}")

            end_of_epoch = state.batches_in_epoch >= micro_per_epoch
            do_eval = (train_args.eval_every and state.global_step % train_args.eval_every == 0) or (
                end_of_epoch and (state.epoch + 1) % max(1, train_args.num_epochs // 12) == 0
            ) or state.global_step == total_steps
            is_best = False
            if do_eval:
                timer.pause()
                # every process scores the same few validation edges (no collectives, identical numbers)
                with ema_weights(ema, unwrapped):
                    val = evaluate_link_prediction(unwrapped, train_graphs, "val", accelerator.device)
                is_best = state.record_validation(val["loss"])
                state.history[-1].update({"val/auc": val["auc"], "val/ap": val["ap"]})
                accelerator.log({"val/loss": val["loss"], "val/auc": val["auc"], "val/ap": val["ap"]}, step=state.global_step)
                logger.info("step %d: val loss %.4f, AUC %.4f, AP %.4f%s", state.global_step, val["loss"], val["auc"], val["ap"], " (best)" if is_best else "")
            stop = state.global_step >= total_steps or state.patience_exhausted(train_args.early_stopping_patience)
            if end_of_epoch:
                state.epoch += 1
                state.batches_in_epoch = 0
            if state.global_step % train_args.checkpoint_every == 0 or is_best or stop:
                timer.pause()
                saved = checkpoints.save(state.global_step, metric=state.best_metric if is_best else None, is_best=is_best)
                pusher.on_checkpoint(state.global_step, saved)
            if stop or end_of_epoch:
                break
    progress.close()
    train_seconds = time.perf_counter() - started

    # 11. Final model = EMA weights of the best checkpoint; test with the baselines (main process).
    checkpoints.restore_best_weights(state)
    result: dict = {"global_step": state.global_step, "best_val_loss": state.best_metric, "train_throughput": timer.summary()}
    with ema_weights(ema, unwrapped):
        if accelerator.is_main_process:
            unwrapped.save_pretrained(output_dir, safe_serialization=True)
            from astrobio_hf.evaluation.pathway_vae import evaluate_and_report

            result.update(evaluate_and_report(
                output_dir, unwrapped, train_graphs, heldout_graphs, schema, state,
                steps=state.global_step, batch_size=train_args.per_device_batch_size, device=accelerator.device,
                train_vgae_baseline=model_args.train_vgae_baseline, seed=train_args.seed,
                train_seconds=train_seconds, run_config=run_config, throughput=timer.summary(), init_origin=init_origin,
            ))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    pusher.on_end()  # main process only: the final model and card; then wait for every upload
    pusher.wait()
    return result


if __name__ == "__main__":
    main()
