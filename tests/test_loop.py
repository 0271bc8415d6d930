"""The one training loop (`astrobio_hf.training.loop`) and the checks around it, in-process on a tiny model.

Each failure case here was reproduced first against the loops the recipes carried before (hangs, silent
acceptance, raw tracebacks); the recipe tests run the same loop end to end through `accelerate launch`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from astrobio_hf.training import TrainingArguments, create_optimizer, finish_run, fit, parse_recipe_args, start_run
from astrobio_hf.training.args import json_option, resolved_config
from astrobio_hf.training.guards import NonFiniteLossError
from astrobio_hf.training.lock import RunLock, RunLockedError

ROOT = Path(__file__).resolve().parents[1]


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.unused = nn.Linear(3, 1)  # never called: the DDP probe must notice it


def _loss(model, batch, state):
    x, y = batch
    pred = model.linear(x).squeeze(-1)
    loss = ((pred - y) ** 2).mean()
    return loss, {"mse": loss.detach()}


def _evaluate(data):
    def evaluate(model, state):
        x, y = data
        with torch.no_grad():
            return {"loss": ((model.linear(x).squeeze(-1) - y) ** 2).mean().item()}
    return evaluate


def _data(n=16, nan_rows=()):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    for i in nan_rows:
        x[i] = float("nan")
    return x, y


def _fit(tmp_path, x, y, **overrides):
    settings = dict(output_dir=str(tmp_path / "run"), report_to="none", per_device_batch_size=4, checkpoint_every=100,
                    ema_decay=0.0, learning_rate=1e-2, warmup_ratio=0.0)
    args = TrainingArguments(**{**settings, **overrides})
    acc = start_run(args)
    model = Regressor()
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False)
    result = fit(acc, model, create_optimizer(model, args.learning_rate, 0.0), loader, args, loss_fn=_loss,
                 evaluate=_evaluate(_data()), micro_batches_per_epoch=len(loader), run_config=resolved_config(args), project="test")
    finish_run(result)
    return result


@pytest.mark.timeout(120)
def test_nonfinite_last_micro_batch_of_each_epoch_is_skipped_not_hung(tmp_path):
    """A NaN in the last batch of every epoch: that step is skipped (counted), the run goes on and ends."""
    x, y = _data(nan_rows=(15,))
    result = _fit(tmp_path, x, y, num_epochs=3)
    # 4 batches per epoch, the 4th always non-finite: 3 optimizer steps per epoch, so the 12 steps of
    # 3 epochs take 4 epochs, with 3 skipped
    assert result.state.global_step == 12 and result.state.skipped_steps == 3 and result.state.epoch == 3
    assert all(h["train/loss"] == h["train/loss"] for h in result.state.history if "train/loss" in h)  # no NaN logged
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


@pytest.mark.timeout(120)
def test_diverging_run_stops_with_clear_error(tmp_path):
    """--learning_rate 1e30: every step after the first is non-finite; the limit stops the run."""
    x, y = _data()
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite steps"):
        _fit(tmp_path, x * 1e20, y, num_epochs=50, learning_rate=1e30, max_nonfinite_steps=3)
    # the folder is free again after the failure
    RunLock(tmp_path / "run").acquire().release()


def test_second_run_on_a_held_folder_is_refused_and_stale_locks_are_taken_over(tmp_path):
    code = f"from astrobio_hf.training.lock import RunLock; import time; RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by another run \\(pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # A lock left behind by an earlier run of this same process (it failed before releasing) does not block the next.
    RunLock(tmp_path).acquire()
    again = RunLock(tmp_path).acquire()
    again.release()
    RunLock(tmp_path).acquire().release()
    # A lock file left by a process that died (SIGKILL: the kernel dropped its flock) is stale: taken over.
    code = f"from astrobio_hf.training.lock import RunLock; import os; RunLock({str(tmp_path / 'k')!r}).acquire(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert json.loads((tmp_path / "k" / ".run.lock").read_text())["state"] == "running"
    RunLock(tmp_path / "k").acquire().release()


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    code = textwrap.dedent(f"""
        from astrobio_hf.training.lock import RunLock, RunLockedError
        try:
            RunLock({str(tmp_path)!r}).acquire()
        except RunLockedError as err:
            print("refused:", err)
    """)
    held = RunLock(tmp_path).acquire()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    held.release()
    assert out.startswith("refused:") and str(tmp_path) in out


@pytest.mark.parametrize(
    "flag, value, message",
    [("max_steps", "-1", "expected --max_steps >= 0"), ("warmup_ratio", "-0.5", "expected --warmup_ratio in \\[0, 1\\)"),
     ("per_device_batch_size", "0", "per_device_batch_size >= 1"), ("report_to", "tensorbord", "expected --report_to"),
     ("ema_decay", "1.5", "ema_decay in"), ("learning_rate", "nan", "learning_rate")],
)
def test_bad_training_arguments_are_refused_before_any_work(flag, value, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe_args((TrainingArguments,), [f"--{flag}", value])


def test_yaml_syntax_error_and_bad_json_option_name_the_file_and_option(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1e-3\nmax_steps: [3\n")
    with pytest.raises(ValueError, match=r"bad.yaml, found a syntax error at line \d+"):
        parse_recipe_args((TrainingArguments,), [str(bad)])
    with pytest.raises(ValueError, match="expected --physics_weights to be JSON"):
        json_option("physics_weights", "{hydrostatic: 0.1}")
    with pytest.raises(ValueError, match="expected --physics_weights to be a JSON dict, got list"):
        json_option("physics_weights", "[1, 2]")


def test_report_to_wandb_without_wandb_is_refused_at_start(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs the wandb package.*astrobio-hf\[tracking\]"):
        start_run(TrainingArguments(output_dir=str(tmp_path), report_to="tensorboard,wandb"))


class Stream(IterableDataset):
    """A streamed dataset (set_epoch + seeded order), like the Parquet window streams of the datacube families."""

    def __init__(self, x, y):
        self.x, self.y, self.epoch = x, y, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.epoch))
        for i in order:
            yield self.x[i], self.y[i]


@pytest.mark.timeout(180)
def test_resume_skips_a_corrupted_latest_checkpoint_and_matches_an_uninterrupted_run(tmp_path, caplog):
    """The newest checkpoint's weights truncated and its optimizer state garbled, last.json truncated: the rerun
    names what it skips, resumes from the previous checkpoint, and ends where an uninterrupted run ends."""
    x, y = _data(24)

    def run(out, max_steps, **kw):
        args = TrainingArguments(output_dir=str(out), report_to="none", per_device_batch_size=4, checkpoint_every=2,
                                 keep_checkpoints=3, ema_decay=0.9, learning_rate=1e-2, max_steps=max_steps, eval_every=100, **kw)
        acc = start_run(args)
        torch.manual_seed(0)
        model = Regressor()
        result = fit(acc, model, create_optimizer(model, args.learning_rate, 0.0), DataLoader(Stream(x, y), batch_size=4), args,
                     loss_fn=_loss, evaluate=_evaluate(_data()), micro_batches_per_epoch=6, run_config={}, project="test")
        finish_run(result)
        return {k: v.clone() for k, v in result.model.state_dict().items()}

    full = run(tmp_path / "full", 8)
    out = tmp_path / "broken"
    run(out, 8)  # then its newest checkpoint goes bad, as if the run had been killed right after writing it
    ckpts = out / "checkpoints"
    newest = ckpts / "step-00000008"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (newest / "optimizer.bin").write_bytes(b"garbage" * 10)
    (ckpts / "last.json").write_text('{"checkpoint": "step-000')
    caplog.set_level("WARNING")
    resumed = run(out, 8)
    text = caplog.text
    assert "last.json" in text and "skipping checkpoint" in text and "step-00000008" in text and "trying step-00000006" in text
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0)


def test_switches_are_refused_for_a_model_that_cannot_take_them():
    from astrobio_hf.training.loop import _apply_model_switches

    with pytest.raises(ValueError, match="Regressor does not support gradient checkpointing"):
        _apply_model_switches(Regressor(), TrainingArguments(gradient_checkpointing=True))
    with pytest.raises(ValueError, match="Regressor has no 2-D or 3-D convolutions"):
        _apply_model_switches(Regressor(), TrainingArguments(channels_last=True))
    conv = nn.Sequential(nn.Conv3d(2, 4, 3), nn.Linear(4, 1))
    _apply_model_switches(conv, TrainingArguments(channels_last=True))
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
