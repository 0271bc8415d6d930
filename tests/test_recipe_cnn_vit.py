"""The CNN-ViT recipe, run for real through `accelerate launch` on tiny synthetic data, then resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TINY = ROOT / "recipes" / "configs" / "cnn_vit" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from astrobio_hf.data.synth import synthesize_planets

    out = tmp_path_factory.mktemp("tiny_planets_cnn_vit")
    synthesize_planets(out, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64)
    return out


def _run(output_dir: Path, data_dir: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    cmd = [
        ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu.yaml"),
        str(ROOT / "recipes" / "train_cnn_vit.py"), str(TINY),
        "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--report_to", "tensorboard", *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"recipe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_recipe_runs_writes_card_with_ridge_baseline_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "run"
    _run(out, tiny_data)
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "plots/parity.png", "plots/loss_curves.png"):
        assert (out / name).is_file(), name
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    test = metrics["test"]
    names = json.loads((out / "config.json").read_text())["planet_param_names"]
    for name in names:
        for system in ("model", "ridge"):
            assert test[f"{system}/rmse/{name}"] > 0
            assert test[f"{system}/r2/{name}"] == test[f"{system}/r2/{name}"]  # finite, not NaN
    assert 0.0 <= test["calibration/coverage_1sigma"] <= test["calibration/coverage_2sigma"] <= 1.0
    card = (out / "README.md").read_text()
    assert "R2 ridge" in card and "parity.png" in card and "model-index" in card

    from transformers import AutoConfig, AutoModel

    import astrobio_hf  # noqa: F401
    from astrobio_hf.models.cnn_vit import CnnVitConfig, CnnVitForParameterRegression

    AutoConfig.register("cnn_vit", CnnVitConfig, exist_ok=True)
    AutoModel.register(CnnVitConfig, CnnVitForParameterRegression, exist_ok=True)
    assert type(AutoModel.from_pretrained(out)) is CnnVitForParameterRegression

    proc = _run(out, tiny_data, "--max_steps", "8")
    assert "resumed from" in proc.stderr + proc.stdout
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 8
