"""The climate + spectra recipe, run for real through `accelerate launch` on tiny synthetic data, then resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TINY = ROOT / "recipes" / "configs" / "climate_spectra" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from astrobio_hf.data.synth import synthesize_planets

    out = tmp_path_factory.mktemp("tiny_planets_spectra")
    schema = synthesize_planets(out, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64)
    assert schema.has_spectra
    return out


def _run(output_dir, data_dir, *args, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    cmd = [
        ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu.yaml"),
        str(ROOT / "recipes" / "train_climate_spectra.py"), str(TINY),
        "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--report_to", "tensorboard", *args,
    ]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"recipe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_recipe_runs_writes_card_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "run"
    _run(out, tiny_data)
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "plots/spectra_pred_vs_true.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert metrics["global_step"] == 6
    for key in ("spectrum/spectral_angle_deg", "spectrum/nrmse", "spectrum/r2", "climate/rmse/T", "climate/ssim",
                "baseline_spectrum/r2", "task_loss/climate", "task_loss/spectrum"):
        assert key in test and test[key] == test[key], key  # present and not NaN
    card = (out / "README.md").read_text()
    assert "spectral angle" in card and "spectra_pred_vs_true.png" in card
    # resume from the last checkpoint and run 4 more steps
    proc = _run(out, tiny_data, "--resume", "auto", "--max_steps", "10")
    assert "resuming at step 6" in proc.stdout + proc.stderr
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 10
