"""The one training loop every recipe calls, and the start and end of a run around it.

    accelerator = start_run(train_args)                      # checks, lock on output_dir, logging, seed
    ... data, config, model, optimizer (the family's part) ...
    result = fit(accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss,
                 evaluate=validate, micro_batches_per_epoch=n, run_config=..., hooks=hooks)
    with ema_weights(result.ema, result.model): ... test, save_pretrained, card ...
    finish_run(result, test)                                 # test metrics + plots to the trackers, push, unlock

`fit` owns what every family shares: the cosine schedule from the real number of optimizer steps, EMA,
`accelerator.prepare`, DDP's unused-parameter detection, torch.compile / gradient checkpointing /
channels_last, checkpoint registration and exact resume (falling back to the newest checkpoint that loads),
`accelerate.accumulate` with clipping and the non-finite guard, logging, validation cadence, best-checkpoint
selection and early stopping, checkpoint rotation and Hub pushes, and the loop timer. The family gives its
`loss_fn(model, batch, state) -> (loss, {name: term})` and `evaluate(model, state) -> {name: value}`.

Hooks are plain objects with optional methods, called on every process:
`after_step(state, accelerator)` after each optimizer step and `after_validation(state, metrics, accelerator)`
after each validation (`metrics`: every scalar of the evaluation as "val/<name>"). A hook stops the run by
raising (e.g. optuna.TrialPruned); the loop releases the output folder and the trackers and re-raises.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import (
    DistributedDataParallelKwargs,
    ProjectConfiguration,
    broadcast_object_list,
    set_seed,
)
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from .args import TrainingArguments
from .checkpoint import CheckpointManager, TrainingState
from .ema import create_ema, ema_weights
from .guards import NonFiniteGuard, guarded_optimizer_step
from .lock import RunLock, RunLockedError
from .tracking import LoopTimer, device_memory, init_trackers, log_images, model_summary, setup_logging

logger = logging.getLogger(__name__)

_EXTRAS = {"wandb": "tracking", "tensorboard": "tracking"}


@dataclass
class FitResult:
    """What `fit` hands back: the unwrapped model (with the best checkpoint's weights and EMA restored), its EMA
    (None without), the loop state (steps, history, best metric), throughput, and the pieces `finish_run` ends."""

    accelerator: Accelerator
    model: nn.Module
    ema: Any
    state: TrainingState
    throughput: dict
    pusher: Any
    checkpoints: CheckpointManager
    args: TrainingArguments


# ------------------------------------------------------------------------------------------------------
# Start and end of a run
# ------------------------------------------------------------------------------------------------------
def start_run(args: TrainingArguments, *, dataloader_config=None) -> Accelerator:
    """The Accelerator of a run (hardware and precision from the accelerate config), after the checks that must
    come before any work: the trackers named in `report_to` are installed, and no live run holds `output_dir`
    (the lock is taken by the main process and the verdict broadcast, so every process stops with the same
    one-line error). Logging and the seed are set here too. Safe to call again in the same process (tuning)."""
    for name in args.trackers:
        module = "tensorboard" if name == "tensorboard" else name
        if importlib.util.find_spec(module) is None:
            raise ValueError(
                f"--report_to {name} needs the {module} package, which is not installed: "
                f"pip install 'astrobio-hf[{_EXTRAS.get(name, name)}]' (or --report_to none)"
            )
    # A second run in the same process (a tuning study) starts from fresh accelerate singletons; the process
    # group (PartialState) is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        # --dp: Opacus accumulates (virtual steps over physical chunks of each Poisson batch, charged once); accelerate's
        # own accumulation would scale every per-sample gradient by 1/k before clipping and skip updates it has charged
        gradient_accumulation_steps=1 if args.dp else args.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,  # the schedule counts global optimizer steps
        log_with=args.trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=dataloader_config,
    )
    setup_logging(accelerator)
    lock, verdict = None, [None]
    if accelerator.is_main_process:
        try:
            lock = RunLock(output_dir).acquire()
        except RunLockedError as err:
            verdict = [str(err)]
    if accelerator.num_processes > 1:
        broadcast_object_list(verdict)
    if verdict[0] is not None:
        raise RunLockedError(verdict[0])
    accelerator.run_lock = lock  # released by finish_run (or by fit on an error); the kernel frees it at exit anyway
    set_seed(args.seed)
    return accelerator


def finish_run(result: FitResult, test: dict | None = None) -> None:
    """Log the test metrics and every plot of `output_dir/plots` to each tracker, end the trackers, push the
    final model and card (main process; waits for every upload), and release the output folder."""
    acc, step = result.accelerator, result.state.global_step
    try:
        if result.state.privacy and acc.is_main_process:
            _card_privacy_section(Path(result.args.output_dir) / "README.md", result.state.privacy)
        if test:
            acc.log({f"test/{k}": v for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)
        if acc.is_main_process:
            plots = Path(result.args.output_dir) / "plots"
            log_images(acc, {p.stem: p for p in sorted(plots.glob("*.png"))} if plots.is_dir() else {}, step)
        acc.wait_for_everyone()
        acc.end_training()  # trackers flushed before the push, which may fail
        result.pusher.on_end()
        result.pusher.wait()
    finally:
        _release(acc)


def _card_privacy_section(card_path: Path, privacy: dict) -> None:
    """Append what a --dp run spent to its model card (every family's card, in one place)."""
    if not card_path.is_file():
        return
    text = card_path.read_text()
    if "\n## Privacy\n" in text:
        return
    card_path.write_text(text.rstrip() + (
        "\n\n## Privacy\n\n"
        f"Trained with DP-SGD (Opacus): ({privacy['epsilon']:.3g}, {privacy['delta']:.3g})-differential privacy for the training "
        f"examples, {privacy['accountant']} accountant; noise multiplier {privacy['noise_multiplier']:.4g}, per-sample clipping "
        f"norm {privacy['max_grad_norm']:.4g}, Poisson sampling rate {privacy['sample_rate']:.4g}, {privacy['steps']} steps. "
        f"The unit of privacy is one training example ({privacy.get('examples', '?')} in all, as the recipe cuts them: a "
        "window of a series, a row, a dialogue); several examples from one source (the windows of one planet) are "
        "protected together only at the weaker group level. The guarantee covers the weights; the logged training "
        "losses are not privatised.\n"
    ))


def _release(accelerator) -> None:
    lock = getattr(accelerator, "run_lock", None)
    if lock is not None:
        lock.release()


def steps_per_run(micro_batches_per_epoch: int, args: TrainingArguments) -> int:
    """Optimizer steps of the whole run: --max_steps, or whole accumulation cycles per epoch x --num_epochs."""
    return args.max_steps or max(1, micro_batches_per_epoch // args.gradient_accumulation_steps) * args.num_epochs


# ------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------
def fit(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: DataLoader,
    args: TrainingArguments,
    *,
    loss_fn: Callable[[nn.Module, Any, TrainingState], tuple[torch.Tensor, dict]],
    evaluate: Callable[[nn.Module, TrainingState], dict],
    micro_batches_per_epoch: int,
    run_config: dict,
    project: str,
    selection_metric: str = "loss",
    history_keys: Sequence[str] = (),
    hooks: Sequence[Any] = (),
    samples_in: Callable[[Any], int] | None = None,
    eval_every_epochs: int = 1,
    checkpoint_at_epoch_end: bool = True,
    find_unused_parameters: bool | None = None,
    compile_kwargs: dict | None = None,
) -> FitResult:
    """Train `model` and return it with the best validation step's weights (see the module docstring).

    `train_loader` is either streamed (its dataset an IterableDataset with `set_epoch`, already split by
    process; resume replays the seeded stream up to the saved position) or map-style (prepared here, so
    accelerate shards it; resume skips the consumed batches). `selection_metric` (lower is better) picks the
    best checkpoint and drives early stopping. `find_unused_parameters`: True when the family knows some
    parameters go without gradient on some batches; None finds out with one probe step on several processes.
    """
    acc = accelerator
    output_dir = Path(args.output_dir)
    try:
        streamed = isinstance(train_loader.dataset, IterableDataset)
        swapped_attention = []
        if args.dp:
            from .privacy import poisson_source_loader, swap_attention

            if streamed:
                raise ValueError("--dp: expected a map-style dataset (Poisson sampling draws examples by index), got a streamed one")
            swapped_attention = swap_attention(model, optimizer)
            # one Poisson draw per optimizer step, of expected size the global batch; Opacus' virtual steps accumulate
            train_loader = poisson_source_loader(
                train_loader, args.per_device_batch_size * acc.num_processes * args.gradient_accumulation_steps)
            micro_batches_per_epoch = len(train_loader)
            total_steps = args.max_steps or micro_batches_per_epoch * args.num_epochs
        else:
            total_steps = steps_per_run(micro_batches_per_epoch, args)
        _apply_model_switches(model, args)
        logger.info("model summary\n%s", model_summary(model))
        ema = create_ema(model, args.ema_decay)
        lr_scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(args.warmup_ratio * total_steps), total_steps)
        if acc.num_processes > 1:
            if find_unused_parameters is None:
                model.to(acc.device)
                find_unused_parameters = _has_unused_parameters(model, train_loader, loss_fn, streamed)
            if find_unused_parameters:
                acc.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=True)
        engine = None
        if args.dp:
            # DP-SGD: accelerate prepares the model and optimizer first, Opacus then wraps them and takes the raw
            # loader for Poisson sampling (astrobio_hf.training.privacy; the other orders fail silently).
            from .privacy import make_private, register_accountant

            delta = args.target_delta or 1.0 / len(train_loader.dataset)
            model, optimizer, train_loader, engine = make_private(
                acc, model, optimizer, train_loader, max_grad_norm=args.max_grad_norm, target_delta=delta,
                noise_multiplier=args.noise_multiplier or None, target_epsilon=args.target_epsilon or None, steps=total_steps,
                accountant=args.dp_accountant, clipping=args.dp_clipping,
            )
            lr_scheduler = acc.prepare(lr_scheduler)
            register_accountant(acc, engine)
            if len(train_loader) != micro_batches_per_epoch:
                raise RuntimeError(f"expected {micro_batches_per_epoch} Poisson batches per epoch, got {len(train_loader)} from Opacus")
        elif streamed:
            model, optimizer, lr_scheduler = acc.prepare(model, optimizer, lr_scheduler)
        else:
            model, optimizer, train_loader, lr_scheduler = acc.prepare(model, optimizer, train_loader, lr_scheduler)
            if len(train_loader) != micro_batches_per_epoch:  # the schedule was sized for this many batches
                raise RuntimeError(f"expected {micro_batches_per_epoch} batches per process, got {len(train_loader)} from accelerate")
        if args.torch_compile:
            model = torch.compile(model, **(compile_kwargs or {}))
        unwrapped = acc.unwrap_model(model, keep_torch_compile=False)
        if engine is not None:
            unwrapped = unwrapped._module  # Opacus' GradSampleModule around the family's model
        state = TrainingState()
        acc.register_for_checkpointing(state)
        if ema is not None:
            ema.to(acc.device)
            acc.register_for_checkpointing(ema)
        checkpoints = CheckpointManager(acc, output_dir, keep=args.keep_checkpoints)
        guard = NonFiniteGuard(acc, args.max_nonfinite_steps)
        from astrobio_hf.hub.training_push import HubPusher  # (hub sits above training; imported only to push)

        pusher = HubPusher.from_args(acc, args, getattr(unwrapped, "config", None))  # a bad token fails before training
        init_trackers(acc, project, ",".join(args.trackers), run_config, str(output_dir))
        if acc.is_main_process:
            (output_dir / "run_info.txt").write_text(
                f"distributed_type={acc.distributed_type} num_processes={acc.num_processes} device={acc.device} "
                f"mixed_precision={acc.mixed_precision} find_unused_parameters={bool(find_unused_parameters)} "
                f"torch_compile={args.torch_compile} gradient_checkpointing={args.gradient_checkpointing} "
                f"channels_last={args.channels_last}\n"
            )
        logger.info(
            "%d micro-batches/epoch/process, %d optimizer steps in all (global batch %d)", micro_batches_per_epoch, total_steps,
            args.per_device_batch_size * acc.num_processes * args.gradient_accumulation_steps,
        )
        if checkpoints.resume(args.resume) is not None:
            logger.info("resuming at step %d (epoch %d, batch %d)", state.global_step, state.epoch, state.batches_in_epoch)

        if engine is not None:
            evaluate = _with_privacy(evaluate, engine, optimizer, state, args, delta, len(train_loader.dataset))
        timer = _run_loop(
            acc, model, unwrapped, optimizer, lr_scheduler, train_loader, args, state, ema, checkpoints, guard, pusher,
            loss_fn=loss_fn, evaluate=evaluate, micro_per_epoch=micro_batches_per_epoch, total_steps=total_steps,
            streamed=streamed, selection_metric=selection_metric, history_keys=history_keys, hooks=hooks,
            samples_in=samples_in or (_rows_in if args.dp else (lambda batch: args.per_device_batch_size)), eval_every_epochs=max(1, eval_every_epochs),
            checkpoint_at_epoch_end=checkpoint_at_epoch_end,
        )
        if state.patience_exhausted(args.early_stopping_patience):
            logger.info("early stopping: %d validations without improvement", state.evals_without_improvement)
        if engine is not None:
            _record_privacy(engine, optimizer, state, args, delta, len(train_loader.dataset))
            logger.info("privacy spent: %s", state.privacy)
        checkpoints.restore_best_weights(state)  # weights + EMA of the best validation step, this run's history
        if swapped_attention:  # the family's own attention modules again, with the trained (or EMA) weights
            from .privacy import restore_attention

            if ema is not None:
                ema.copy_to([p for p in unwrapped.parameters() if p.requires_grad])
                ema = None
                logger.info("DP-SGD: the EMA weights are the final weights (the attention modules are rebuilt)")
            restore_attention(unwrapped)
        return FitResult(acc, unwrapped, ema, state, timer.summary(), pusher, checkpoints, args)
    except BaseException:
        # a hook's stop (pruning), a bad input, a non-finite run: free the folder and flush the trackers
        try:
            if acc.trackers:
                acc.end_training()
        finally:
            _release(acc)
        raise


def _run_loop(acc, model, unwrapped, optimizer, lr_scheduler, train_loader, args, state, ema, checkpoints, guard, pusher, *,
              loss_fn, evaluate, micro_per_epoch, total_steps, streamed, selection_metric, history_keys, hooks, samples_in,
              eval_every_epochs, checkpoint_at_epoch_end) -> LoopTimer:
    if args.dp:
        from .privacy import private_step
    progress = tqdm(total=total_steps, initial=state.global_step, disable=not acc.is_main_process, desc="train")
    names = None  # the loss and the family's terms, in the order of the first micro-batch
    sums = None  # running sums of the loss and its terms since the last log, one tensor (no host sync)
    pending = None  # the same for the micro-batches of the step in progress
    count = pending_count = 0
    samples = 0
    timer = LoopTimer(skip_steps=2)  # optimizer steps only: evaluation and checkpoint time are paused out
    trainable = [p for p in unwrapped.parameters() if p.requires_grad]
    stop = state.global_step >= total_steps
    model.train()
    while not stop:
        for batch in _epoch_batches(acc, train_loader, state, micro_per_epoch, streamed):
            state.batches_in_epoch += 1
            if args.dp:  # one Poisson draw: Opacus clips per sample, accumulates over physical chunks, adds noise once
                loss, terms, step_ok = private_step(acc, model, optimizer, lr_scheduler, guard, loss_fn, batch, state,
                                                    physical_batch_size=args.per_device_batch_size)
                grad_norm = None
            else:
                with acc.accumulate(model):
                    loss, terms = loss_fn(model, batch, state)
                    acc.backward(loss)
                    grad_norm, step_ok = guarded_optimizer_step(acc, model, optimizer, lr_scheduler, guard, loss, args.max_grad_norm)
            if names is None:
                names = ["loss", *terms]
            values = torch.stack([v.detach().float().reshape(()) if torch.is_tensor(v) else torch.tensor(float(v), device=acc.device)
                                  for v in (loss, *terms.values())])
            pending = values if pending is None else pending + values
            pending_count += 1
            samples += samples_in(batch)
            end_of_epoch = state.batches_in_epoch >= micro_per_epoch
            is_best = checkpoint = False
            if acc.sync_gradients:
                # the logged means cover the steps taken; a skipped step's terms are dropped (the guard logged it)
                if step_ok:
                    sums = pending if sums is None else sums + pending
                    count += pending_count
                pending, pending_count = None, 0
            if acc.sync_gradients and not step_ok:
                state.skipped_steps += 1  # counted and logged by the guard; its limit stops the run
                samples = 0
            elif acc.sync_gradients:
                # only on optimizer steps: EMA, counting, logging, validation, checkpoints
                if ema is not None:
                    ema.step(trainable)
                state.global_step += 1
                timer.step(samples=samples * acc.num_processes)
                samples = 0
                progress.update(1)
                if state.global_step % args.log_every == 0 or state.global_step == total_steps:
                    logs = _train_logs(acc, names, sums, count, lr_scheduler, grad_norm, state, micro_per_epoch)
                    sums, count = None, 0
                    acc.log(logs, step=state.global_step)
                    state.history.append({"step": state.global_step, "train/loss": logs["train/loss"]})
                    progress.set_postfix(loss=f"{logs['train/loss']:.4f}")
                for hook in hooks:
                    if hasattr(hook, "after_step"):
                        hook.after_step(state, acc)
                epoch_eval = end_of_epoch and (state.epoch + 1) % eval_every_epochs == 0
                if (args.eval_every and state.global_step % args.eval_every == 0) or epoch_eval or state.global_step == total_steps:
                    timer.pause()
                    is_best = _validate(acc, unwrapped, ema, evaluate, state, selection_metric, history_keys, hooks)
                stop = state.global_step >= total_steps or state.patience_exhausted(args.early_stopping_patience)
                checkpoint = state.global_step % args.checkpoint_every == 0 or is_best or stop or (end_of_epoch and checkpoint_at_epoch_end)
            if end_of_epoch:
                state.epoch += 1
                state.batches_in_epoch = 0
            if checkpoint:
                timer.pause()
                saved = checkpoints.save(state.global_step, metric=state.best_metric if is_best else None, is_best=is_best)
                pusher.on_checkpoint(state.global_step, saved)
            if stop or end_of_epoch:
                break
    progress.close()
    return timer


def _rows_in(batch) -> int:
    from accelerate.utils import find_batch_size

    return find_batch_size(batch) or 0


def _epoch_batches(acc, train_loader, state, micro_per_epoch, streamed):
    """The micro-batches left in the current epoch, from the saved position on."""
    if streamed:
        train_loader.dataset.set_epoch(state.epoch)
        batches = iter(train_loader)
        for _ in range(state.batches_in_epoch):  # replay the seeded stream up to the saved position
            next(batches)
        for _ in range(micro_per_epoch - state.batches_in_epoch):
            yield next(batches)
        return
    if hasattr(train_loader, "set_epoch"):  # (Opacus' Poisson loader draws from its own generator)
        train_loader.set_epoch(state.epoch)
    yield from (acc.skip_first_batches(train_loader, state.batches_in_epoch) if state.batches_in_epoch else train_loader)


def _record_privacy(engine, optimizer, state, args, delta, examples) -> dict:
    from .privacy import privacy_spent

    spent = privacy_spent(engine, optimizer, delta=delta, max_grad_norm=args.max_grad_norm)
    spent.examples = examples
    state.privacy = spent.as_dict()
    if args.target_epsilon and spent.epsilon > args.target_epsilon * (1 + 1e-3):
        raise RuntimeError(
            f"--dp: the privacy budget is spent: epsilon {spent.epsilon:.4g} > --target_epsilon {args.target_epsilon} at step "
            f"{state.global_step} (delta {delta:.3g}); train fewer steps or raise the budget"
        )
    return state.privacy


def _with_privacy(evaluate, engine, optimizer, state, args, delta, examples):
    """Every validation also reports the epsilon spent so far (and stops the run once a target is exceeded)."""

    def evaluate_with_epsilon(model, st):
        values = evaluate(model, st)
        return {**values, "epsilon": _record_privacy(engine, optimizer, state, args, delta, examples)["epsilon"]}

    return evaluate_with_epsilon


def _train_logs(acc, names, sums, count, lr_scheduler, grad_norm, state, micro_per_epoch) -> dict:
    if sums is None:  # every step since the last log was skipped
        sums = torch.full((len(names),), float("nan"), device=acc.device)
    means = (acc.reduce(sums, reduction="mean") / max(count, 1)).tolist()
    logs = {n if "/" in n else f"train/{n}": v for n, v in zip(names, means)}
    lrs = lr_scheduler.get_last_lr()
    logs["train/lr"] = max(lrs)
    if min(lrs) != max(lrs):
        logs["train/lr_min"] = min(lrs)
    logs.update({
        "train/grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
        "train/skipped_steps": state.skipped_steps,
        "train/epoch": state.epoch + state.batches_in_epoch / micro_per_epoch,
        **device_memory(acc.device),
    })
    return logs


def _validate(acc, unwrapped, ema, evaluate, state, selection_metric, history_keys, hooks) -> bool:
    with ema_weights(ema, unwrapped):
        values = evaluate(unwrapped, state)
    unwrapped.train()
    if selection_metric not in values:
        raise KeyError(f"expected the evaluation to return the selection metric {selection_metric!r}, got {sorted(values)}")
    metrics = {f"val/{k}": float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    is_best = state.record_validation(float(values[selection_metric]))
    entry = state.history[-1]
    entry.update({f"val/{k}": metrics[f"val/{k}"] for k in ("loss", selection_metric, *history_keys, "epsilon") if f"val/{k}" in metrics})
    acc.log(metrics, step=state.global_step)
    logger.info(
        "step %d: val loss %.4f%s%s", state.global_step, metrics.get("val/loss", float("nan")),
        f", {selection_metric} {values[selection_metric]:.4f}" if selection_metric != "loss" else "", " (best)" if is_best else "",
    )
    for hook in hooks:
        if hasattr(hook, "after_validation"):
            hook.after_validation(state, metrics, acc)
    return is_best


# ------------------------------------------------------------------------------------------------------
# Switches and DDP
# ------------------------------------------------------------------------------------------------------
def _apply_model_switches(model: nn.Module, args: TrainingArguments) -> None:
    """--gradient_checkpointing and --channels_last, or a clear refusal for a model that cannot take them."""
    name = type(model).__name__
    if args.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ValueError(f"--gradient_checkpointing true: {name} does not support gradient checkpointing")
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        if "gradient_checkpointing_kwargs" in inspect.signature(enable).parameters:
            # transformers models (e.g. a PEFT-wrapped LM): non-reentrant checkpointing, which needs no input that
            # requires grad and works with frozen layers and DDP
            enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            enable()
    if args.channels_last:
        convs = {type(m) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))}
        if not convs:
            raise ValueError(f"--channels_last true: {name} has no 2-D or 3-D convolutions, so no channels-last memory format applies")
        if nn.Conv3d in convs and nn.Conv2d in convs:
            raise ValueError(f"--channels_last true: {name} mixes 2-D and 3-D convolutions; no single channels-last format fits both")
        fmt = torch.channels_last_3d if nn.Conv3d in convs else torch.channels_last
        for module in model.modules():  # only the convolutions: 1-D and dense weights have no channels-last format
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                module.to(memory_format=fmt)


def _has_unused_parameters(model, train_loader, loss_fn, streamed) -> bool:
    """One probe step (forward + backward on the first training batch, before DDP wraps the model) to see whether
    some trainable parameter gets no gradient, which DDP must then be told. Gradients, buffers and every RNG
    are restored afterwards, so the run itself is exactly what it would have been."""
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
           torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    if streamed:
        train_loader.dataset.set_epoch(0)
    batch = next(iter(train_loader))
    was_training = model.training
    model.train()
    loss, _ = loss_fn(model, batch, TrainingState())
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    torch.set_rng_state(rng[0])
    np.random.set_state(rng[1])
    random.setstate(rng[2])
    if rng[3] is not None:
        torch.cuda.set_rng_state_all(rng[3])
    if unused:
        logger.info("DDP: %d parameters get no gradient on a training batch (%s%s): find_unused_parameters on",
                    len(unused), ", ".join(unused[:4]), ", ..." if len(unused) > 4 else "")
    return bool(unused)
