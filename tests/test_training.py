"""Unit tests of the shared training core: arguments, parameter groups, schedule, checkpoints, EMA, guard."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from astrobio_hf.training import (
    CheckpointManager,
    NonFiniteGuard,
    NonFiniteLossError,
    TrainingArguments,
    TrainingState,
    create_ema,
    create_optimizer,
    ema_weights,
    parameter_groups,
    parse_recipe_args,
)
from astrobio_hf.training.tracking import model_summary


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        h = self.norm(self.conv(x)).mean(dim=(2, 3, 4))
        return self.head(h).squeeze(-1)


@dataclass
class ExtraArgs:
    context_steps: int = 4
    physics_weights: str = "{}"


def test_parse_recipe_args_yaml_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.01\ncontext_steps: 2\nphysics_weights: {hydrostatic: 0.5}\n")
    extra, train = parse_recipe_args((ExtraArgs, TrainingArguments), [str(cfg), "--learning_rate", "0.02"])
    assert train.learning_rate == 0.02  # flag overrides the file
    assert extra.context_steps == 2  # from the file
    assert json.loads(extra.physics_weights) == {"hydrostatic": 0.5}


def test_parse_recipe_args_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rat: 0.01\n")
    with pytest.raises(ValueError, match="unknown keys \\['learning_rat'\\]"):
        parse_recipe_args((ExtraArgs, TrainingArguments), [str(cfg)])
    with pytest.raises(ValueError, match="unknown arguments"):
        parse_recipe_args((ExtraArgs, TrainingArguments), ["--no_such_flag", "1"])


def test_parameter_groups_no_decay_on_bias_and_norm():
    model = Tiny()
    groups = parameter_groups(model, weight_decay=0.1, lr_multipliers={"head": 0.5})
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model.conv.weight)]["weight_decay"] == 0.1
    assert by_id[id(model.conv.bias)]["weight_decay"] == 0.0
    assert by_id[id(model.norm.weight)]["weight_decay"] == 0.0
    assert by_id[id(model.head.weight)]["lr_scale"] == 0.5
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = create_optimizer(model, 1e-3, 0.1, lr_multipliers={"head": 0.5})
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [5e-4, 1e-3]


def test_cosine_schedule_per_optimizer_step():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[1] == 0.5 and lrs[2] == 1.0
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))


def _accelerator(tmp_path):
    return Accelerator(cpu=True)


def test_checkpoint_rotation_best_and_resume(tmp_path):
    acc = _accelerator(tmp_path)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, opt = acc.prepare(model, opt)
    state = TrainingState()
    acc.register_for_checkpointing(state)
    manager = CheckpointManager(acc, tmp_path, keep=2)
    x = torch.randn(2, 2, 3, 3, 3)
    for step in range(1, 6):
        loss = model(x).pow(2).mean()
        acc.backward(loss)
        opt.step()
        opt.zero_grad()
        state.global_step = step
        manager.save(step, metric=1.0 / step, is_best=(step == 2))
    names = [p.name for p in manager.complete_checkpoints()]
    assert names == ["step-00000002", "step-00000004", "step-00000005"]  # 2 kept as best, newest 2 kept
    assert manager.best().name == "step-00000002"
    assert manager.last().name == "step-00000005"
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state.global_step = 99
    manager.load(manager.resolve_resume("auto"))
    assert state.global_step == 5
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k])


def test_crash_while_writing_checkpoint_keeps_previous(tmp_path, monkeypatch):
    acc = _accelerator(tmp_path)
    acc.prepare(Tiny())  # the model whose state the checkpoint holds
    state = TrainingState(global_step=1)
    acc.register_for_checkpointing(state)
    manager = CheckpointManager(acc, tmp_path, keep=2)
    manager.save(1)

    real_save_state = acc.save_state

    def crashing_save_state(path, **kw):
        real_save_state(path, **kw)  # files are written ...
        raise OSError("disk full")  # ... and the process dies before the checkpoint is complete

    monkeypatch.setattr(acc, "save_state", crashing_save_state)
    state.global_step = 2
    with pytest.raises(OSError, match="disk full"):
        manager.save(2)
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / ".tmp-step-00000002").is_dir()  # the half-written folder
    last = manager.resolve_resume("auto")
    assert last.name == "step-00000001"
    state.global_step = 7
    manager.load(last)
    assert state.global_step == 1
    with pytest.raises(FileNotFoundError, match="complete checkpoint"):
        manager.resolve_resume(str(tmp_path / "checkpoints" / ".tmp-step-00000002"))


def test_ema_weights_swap_and_restore():
    model = Tiny()
    ema = create_ema(model, decay=0.5, use_warmup=False)
    params = [p for p in model.parameters() if p.requires_grad]
    original = model.conv.weight.detach().clone()
    ema.step(params)  # diffusers: the first update copies (decay 0)
    with torch.no_grad():
        model.conv.weight.add_(2.0)
    ema.step(params)
    d = ema.cur_decay_value
    assert 0 < d <= 0.5
    with ema_weights(ema, model):
        torch.testing.assert_close(model.conv.weight, d * original + (1 - d) * (original + 2.0))
    torch.testing.assert_close(model.conv.weight, original + 2.0)  # training weights come back
    assert create_ema(model, decay=0.0) is None


def test_nonfinite_guard_skips_then_stops():
    acc = Accelerator(cpu=True)
    guard = NonFiniteGuard(acc, max_consecutive=2)
    assert guard.check(torch.tensor(1.0), torch.tensor(3.0))
    assert not guard.check(torch.tensor(float("nan")), torch.tensor(1.0))
    assert guard.check(torch.tensor(1.0), 2.0)  # a good step resets the count
    assert not guard.check(torch.tensor(1.0), torch.tensor(float("inf")))
    with pytest.raises(NonFiniteLossError, match="2 consecutive non-finite steps"):
        guard.check(torch.tensor(float("inf")), None)
    assert guard.total == 3


def test_model_summary_counts_parameters():
    text = model_summary(Tiny())
    total = sum(p.numel() for p in Tiny().parameters())
    assert f"{total:,} / {total:,}" in text
    assert "conv" in text and "head" in text


def test_micro_batches_per_epoch_smallest_rank_whole_accumulation_cycles():
    from astrobio_hf.training.optim import micro_batches_per_epoch

    assert micro_batches_per_epoch([17, 16], batch_size=4, gradient_accumulation_steps=1) == 4
    assert micro_batches_per_epoch([40], batch_size=4, gradient_accumulation_steps=3) == 9
    with pytest.raises(ValueError, match="expected at least 8 training examples per process"):
        micro_batches_per_epoch([7, 9], batch_size=4, gradient_accumulation_steps=2)


def test_loop_timer_excludes_paused_time_and_warmup(monkeypatch):
    from astrobio_hf.training import tracking

    clock = iter([0.0, 1.0, 2.0, 3.0, 10.0])
    monkeypatch.setattr(tracking.time, "perf_counter", lambda: next(clock))
    timer = tracking.LoopTimer(skip_steps=1)
    timer.step(8)  # t=0: warm-up step, not counted
    timer.step(8)  # t=1: counted (1 s)
    timer.step(8)  # t=2: counted (1 s)
    timer.pause()  # evaluation or a checkpoint happens here
    timer.step(8)  # t=3: the clock restarts, this step is not counted
    timer.step(8)  # t=10: counted (7 s)
    summary = timer.summary()
    assert summary["samples_per_second"] == pytest.approx(8 * 3 / (1 + 1 + 7))


def test_record_validation_best_and_patience():
    state = TrainingState(global_step=3)
    assert state.record_validation(1.0) is True
    state.global_step = 6
    assert state.record_validation(1.5) is False and not state.patience_exhausted(2)
    assert state.record_validation(0.5) is True and state.evals_without_improvement == 0
    assert state.record_validation(0.7) is False and state.record_validation(0.6) is False
    assert state.patience_exhausted(2) and not state.patience_exhausted(0)
    assert [h["val/loss"] for h in state.history] == [1.0, 1.5, 0.5, 0.7, 0.6] and state.best_metric == 0.5


def test_guarded_optimizer_step_skips_a_nan_step():
    from astrobio_hf.training import guarded_optimizer_step

    acc = Accelerator(cpu=True)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    model, opt, sched = acc.prepare(model, opt, sched)
    guard = NonFiniteGuard(acc, max_consecutive=3)
    x = torch.randn(2, 2, 3, 3, 3)
    before = model.conv.weight.detach().clone()
    loss = model(x).sum() * float("nan")
    acc.backward(loss)
    norm, ok = guarded_optimizer_step(acc, model, opt, sched, guard, loss, max_grad_norm=1.0)
    assert not ok and torch.equal(model.conv.weight, before) and sched.scheduler.last_epoch == 0
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step
    loss = model(x).pow(2).mean()
    acc.backward(loss)
    norm, ok = guarded_optimizer_step(acc, model, opt, sched, guard, loss, max_grad_norm=1.0)
    assert ok and float(norm) > 0 and not torch.equal(model.conv.weight, before) and sched.scheduler.last_epoch == 1


def test_ema_foreach_matches_per_parameter_update():
    """`create_ema` uses diffusers' foreach update (s -= (1 - decay) * (s - p) as one fused multiply-subtract):
    the weights of the per-parameter loop to rounding (not bit for bit: the loop rounds the product first)."""
    torch.manual_seed(0)
    model = Tiny()
    emas = [create_ema(model, decay=0.99), create_ema(model, decay=0.99)]
    emas[1].foreach = False
    params = list(model.parameters())
    for _ in range(5):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p) * 0.1)
        for ema in emas:
            ema.step(params)
    for a, b in zip(emas[0].shadow_params, emas[1].shadow_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
