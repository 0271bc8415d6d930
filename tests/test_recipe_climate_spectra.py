"""The climate + spectra recipe, run for real through `accelerate launch` on tiny synthetic data, then resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def _run(output_dir, data_dir, *args, config="cpu.yaml", env=None, timeout=300):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    environ.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", **(env or {})})
    cmd = [
        ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / config),
        str(ROOT / "recipes" / "train_climate_spectra.py"), str(TINY),
        "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--report_to", "tensorboard", *args,
    ]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout)
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
                "baseline_spectrum/r2", "task_loss/climate", "task_loss/spectrum", "spectrum/skill_vs_train_mean",
                "cross_modal_loss", "cross_modal/spectrum_from_cube", "cross_modal/climate_from_spectrum",
                "ridge_spectrum/r2", "ridge_spectrum/nrmse", "ridge_spectrum/alpha"):
        assert key in test and test[key] == test[key], key  # present and not NaN
    card = (out / "README.md").read_text()
    assert "spectral angle" in card and "spectra_pred_vs_true.png" in card and "ridge baseline" in card
    # resume from the last checkpoint and run 4 more steps
    proc = _run(out, tiny_data, "--resume", "auto", "--max_steps", "10")
    assert "resuming at step 6" in proc.stdout + proc.stderr
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 10


def test_frame_windows_without_forecast(tiny_data):
    """forecast=False: every Tc consecutive steps are one window whose labels are the frames themselves."""
    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.data.streaming import (
        build_window_dataset,
        collate_windows,
        count_windows,
    )

    schema = DatasetSchema.from_dir(tiny_data)
    n_time = schema.series_lengths("test")
    assert count_windows(schema, "test", 1, forecast=False) == sum(n_time)
    assert count_windows(schema, "test", 2, forecast=False) == sum(n - 1 for n in n_time)
    rows = list(build_window_dataset(tiny_data, "test", context_steps=1, schema=schema, forecast=False))
    assert len(rows) == sum(n_time)
    batch = collate_windows(rows[:3])
    assert torch.equal(batch["inputs"], batch["labels"])
    assert [int(r["start"]) for r in rows[:3]] == [0, 1, 2]
    # the forecast windows of the same series: labels are the next steps, spectra those of the labels
    forecast = list(build_window_dataset(tiny_data, "test", context_steps=1, schema=schema))
    assert len(forecast) == sum(n - 1 for n in n_time)
    assert torch.equal(collate_windows(forecast[:1])["labels"], batch["labels"][1:2])
    assert torch.equal(collate_windows(forecast[:1])["spectrum"], batch["spectrum"][1:2])


@pytest.mark.slow  # long; run by make test-all
def test_two_process_gloo_matches_one_process(tiny_data, tmp_path):
    """2 processes x batch 2 (gloo, accelerate_configs/cpu_ddp.yaml) against 1 process x batch 4: the same global
    batches and modality draws give the same losses and test metrics (DDP with unused encoder parameters)."""
    args = ("--max_steps", "3", "--eval_every", "3", "--checkpoint_every", "100", "--shuffle_buffer", "0", "--ema_decay", "0")
    one, two = tmp_path / "one", tmp_path / "two"
    _run(one, tiny_data, *args, "--per_device_batch_size", "4")
    _run(two, tiny_data, *args, "--per_device_batch_size", "2", config="cpu_ddp.yaml", env={"ACCELERATE_USE_CPU": "true"})
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    h1 = [h["train/loss"] for h in m1["history"] if "train/loss" in h]
    h2 = [h["train/loss"] for h in m2["history"] if "train/loss" in h]
    assert len(h1) == 3 and h1 == pytest.approx(h2, rel=1e-4)
    assert m2["test"]["samples"] == m1["test"]["samples"]
    for key, value in m1["test"].items():
        if isinstance(value, float):
            assert m2["test"][key] == pytest.approx(value, rel=1e-3, abs=1e-6, nan_ok=True), key


@pytest.fixture(scope="module")
def wasp_data(tmp_path_factory):
    """A tiny WASP-43b dataset: 6 perturbed GCMs (4 train, 1 val, 1 test) at 2 of the 15 observed phases."""
    pytest.importorskip("nemesispy")
    from astrobio_hf.data.spectra import build_spectra_dataset

    out = tmp_path_factory.mktemp("wasp43b_tiny")
    build_spectra_dataset(out, n_samples=6, seed=0, phase_index=[0, 7])
    return out


@pytest.mark.slow  # long; run by make test-all
def test_wasp43b_config_trains_and_reports_chi_squared(wasp_data, tmp_path):
    """recipes/configs/climate_spectra/wasp43b.yaml's dataset switch on a tiny built dataset: chi-squared of the
    predicted phase spectra against the observations, beside the unperturbed GCM's, and the phase-spectrum plot."""
    from astrobio_hf.data.spectra import load_observations

    out = tmp_path / "wasp"
    _run(out, wasp_data, "--dataset", "wasp43b", "--context_steps", "1", "--max_steps", "3", "--eval_every", "0",
         "--per_device_batch_size", "2")
    assert (wasp_data / "gcm_cube.npy").is_file()  # the unperturbed GCM's cube, written on first use
    test = json.loads((out / "metrics.json").read_text())["test"]
    obs = load_observations(wasp_data)
    assert test["samples"] == 1 and test["wasp43b/n_points"] == obs["spectrum"].size == 2 * 17
    assert test["wasp43b/chi2_gcm_forward_model"] == pytest.approx(obs["gcm_chi_squared"])
    for key in ("chi2_gcm_predicted", "chi2_gcm_predicted_vs_forward_model", "chi2_test_predicted_mean", "chi2_test_forward_model_mean",
                "chi2_test_ridge_mean"):
        value = test[f"wasp43b/{key}"]
        assert 0 < value < float("inf"), key  # finite (NaN fails too)
    assert len(test["wasp43b/gcm_predicted_spectrum"]) == 2
    card = (out / "README.md").read_text()
    assert "chi-squared" in card and "phase_spectra_vs_observed.png" in card
    assert (out / "plots" / "phase_spectra_vs_observed.png").is_file()
