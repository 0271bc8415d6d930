"""The pathway-VAE recipe, run for real on the real metabolic networks (cobra's offline models).

Covers: a short `accelerate launch` run whose run directory `release` accepts and `from_pretrained` loads, with
the VGAE (and, when the reference file is present, legacy) baselines scored in the same run; exact resume
(a run stopped at step 2 and resumed to step 4 ends with the weights of a straight 4-step run); a 2-process gloo
run through the same prepared DataLoader of PyG batches.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TINY = ROOT / "recipes" / "configs" / "pathway_vae" / "tiny.yaml"


@pytest.fixture(scope="module")
def metabolic_data(tmp_path_factory):
    from astrobio_hf.data.metabolic import write_metabolic_dataset

    out = tmp_path_factory.mktemp("metabolic")
    write_metabolic_dataset(out, seed=0)
    return out


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "ACCELERATE_USE_CPU": "true"})
    return env


def _launch(config: str, out: Path, data: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    cmd = [
        ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / config),
        str(ROOT / "recipes" / "train_pathway_vae.py"), str(TINY),
        "--data_dir", str(data), "--output_dir", str(out), "--report_to", "tensorboard", *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"recipe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_recipe_runs_scores_baselines_and_releases(metabolic_data, tmp_path):
    out = tmp_path / "run"
    _launch("cpu.yaml", out, metabolic_data)
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "plots/loss.png", "plots/edge_scores.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    test = metrics["test"]
    for system in ("model", "vgae"):
        for test_set in ("ecoli", "salmonella", "windows"):
            auc = test[f"{system}/{test_set}/auc"]
            assert 0.0 <= auc <= 1.0 and test[f"{system}/{test_set}/held_out_edges"] > 0, (system, test_set)
    assert test["model/ecoli/feature_mse"] > 0 and test["model/ecoli/kl_per_node"] >= 0
    assert 0 <= test["model/salmonella/active_units"] <= test["model/salmonella/latent_size"] == 4
    if metrics["legacy_weights"]:
        assert math.isfinite(test["legacy/windows/auc"])
    card = (out / "README.md").read_text()
    assert "PyG VGAE (GCN)" in card and "held-out organism" in card

    from transformers import AutoModel

    import astrobio_hf  # noqa: F401  (registers the Auto classes)
    from astrobio_hf.hub.release import release_run
    from astrobio_hf.models.pathway_vae import PathwayVAEModel

    release = release_run(out, name="pathway-vae", version="0.0.1", output_root=tmp_path / "model_cards")
    assert sorted(p.name for p in release.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model = AutoModel.from_pretrained(release)
    assert isinstance(model, PathwayVAEModel)
    assert "model-index" in (release / "README.md").read_text()


def test_resume_is_exact(metabolic_data, tmp_path):
    """Stopped at step 2 (max_steps 2 over a 4-step schedule would change the LR), so: a 4-step run is killed
    logically by resuming a copy of its step-2 checkpoint in a fresh output dir and finishing it."""
    import shutil

    from astrobio_hf.recipes.train_pathway_vae import main

    common = [str(TINY), "--data_dir", str(metabolic_data), "--report_to", "none", "--max_steps", "4",
              "--checkpoint_every", "2", "--eval_every", "0", "--train_vgae_baseline", "false", "--keep_checkpoints", "5"]
    straight = tmp_path / "straight"
    main(common + ["--output_dir", str(straight)])
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step-00000002", resumed / "checkpoints" / "step-00000002")
    main(common + ["--output_dir", str(resumed), "--resume", str(resumed / "checkpoints" / "step-00000002")])
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0, msg=k)


def test_two_process_gloo_run(metabolic_data, tmp_path):
    out = tmp_path / "ddp"
    # the feature reconstruction term left out (weight 0): the loop's DDP probe decides on unused parameters
    _launch("cpu_ddp.yaml", out, metabolic_data, "--train_vgae_baseline", "false", "--max_steps", "4", "--feature_loss_weight", "0")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4
    assert math.isfinite(metrics["test"]["model/ecoli/auc"])
    assert "num_processes=2" in (out / "run_info.txt").read_text()
