"""The diffusion recipe through `accelerate launch` on tiny data: artifacts, resume with EMA, eval CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_recipe_datacube import ROOT, _env

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
CLI = str(Path(sys.executable).with_name("astrobio-hf"))
TINY = ROOT / "recipes" / "configs" / "diffusion" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from astrobio_hf.data.synth import synthesize_planets

    out = tmp_path_factory.mktemp("tiny_planets_diffusion")
    synthesize_planets(out, n_planets=6, n_climate_steps=8, n_levels=3, n_lat=8, n_lon=16, seed=5)
    return out


def _launch(out: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu.yaml"),
           str(ROOT / "recipes" / "train_diffusion.py"), str(TINY), "--data_dir", str(data), "--output_dir", str(out), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


def _ema_state(checkpoint: Path) -> dict:
    # accelerate stores registered objects as custom_checkpoint_<i>.pkl (TrainingState is 0, the EMA 1);
    # written by this test's own run, so reading it back is safe.
    return torch.load(checkpoint / "custom_checkpoint_1.pkl", weights_only=False)


def test_diffusion_recipe_resumes_with_ema_and_evaluates(tiny_data, tmp_path):
    out = tmp_path / "run"
    _launch(out, tiny_data, "--max_steps", "4", "--physics_weights", '{"ideal_gas": 0.1}', "--eval_after_training", "false")
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "plots/loss_curves.png",
                 "plots/samples_latest.png", "pipeline/model_index.json", "pipeline/scheduler/scheduler_config.json",
                 "pipeline/denoiser/model.safetensors"):
        assert (out / name).is_file(), name
    ema_before = _ema_state(out / "checkpoints" / "step-00000004")
    assert ema_before["optimization_step"] == 4

    proc = _launch(out, tiny_data, "--max_steps", "6", "--eval_after_training", "false")
    assert "resumed from" in proc.stderr
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 6
    ema_after = _ema_state(out / "checkpoints" / "step-00000006")
    assert ema_after["optimization_step"] == 6  # the EMA continued from its saved state, not from scratch

    from astrobio_hf.diffusion.pipeline_climate_diffusion import ClimateDiffusionPipeline
    from diffusers import UniPCMultistepScheduler

    pipe = ClimateDiffusionPipeline.from_pretrained(out / "pipeline")
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    params = torch.tensor([json.loads((tiny_data / "schema.json").read_text())["planet_param_mean"]] * 2)
    samples = pipe(planet_params=params, class_labels=torch.tensor([0, 1]), num_inference_steps=3,
                   generator=torch.Generator().manual_seed(0)).samples
    assert samples.shape == (2, 6, 8, 16) and torch.isfinite(samples).all()

    done = subprocess.run([CLI, "eval", "diffusion", str(out), "--samplers", "ddim,unipc", "--steps", "3",
                           "--guidance", "1,2", "--samples-per-condition", "2"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (out / "eval" / "sweep.md").is_file() and (out / "eval" / "sweep.json").is_file()
    card = (out / "README.md").read_text()
    assert "| unipc | 3 | 2 |" in card and "EOF-FD" in card


def test_diffusion_recipe_puts_the_evaluation_in_the_card(tiny_data, tmp_path):
    out = tmp_path / "run"
    _launch(out, tiny_data, "--max_steps", "2", "--sample_steps", "2", "--report_to", "none")
    card = (out / "README.md").read_text()
    assert "| dpmsolver++ | 2 | 1 |" in card and "| unipc | 2 | 2 |" in card
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["sampler"] for r in metrics["evaluation"]} == {"dpmsolver++", "unipc"}
