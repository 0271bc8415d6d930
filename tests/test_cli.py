"""The installed `astrobio-hf` command, run as a user would (subprocess, real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("astrobio-hf"))


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_synth_inspect_and_train(tmp_path):
    data = tmp_path / "planets"
    out = _cli("data", "synth", "--output", str(data), "--n-planets", "6", "--n-climate-steps", "12",
               "--n-levels", "4", "--n-lat", "8", "--n-lon", "16", "--seed", "1")
    assert "6 variables" in out.stdout
    schema = json.loads((data / "schema.json").read_text())
    assert schema["variable_names"] == ["T", "p", "rho", "q", "u", "v"]
    text = _cli("data", "inspect", str(data)).stdout
    assert "split by: planet" in text and "T [K]" in text and "statistics over all shards" in text

    run = tmp_path / "run"
    _cli("train", "datacube", str(ROOT / "recipes/configs/datacube/tiny.yaml"), "--data_dir", str(data),
         "--output_dir", str(run), "--max_steps", "2", "--report_to", "none")
    assert (run / "model.safetensors").is_file() and (run / "README.md").is_file()
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2


@pytest.mark.slow  # long; run by make test-all
def test_ingest_real_netcdf_and_train_on_its_regional_grid(tmp_path):
    iris_sample_data = pytest.importorskip("iris_sample_data")
    src = os.path.join(iris_sample_data.path, "A1B_north_america.nc")
    data = tmp_path / "hadcm3"
    out = _cli("data", "ingest", src, "--output", str(data))
    assert "['T']" in out.stdout
    assert "split by: time_block" in _cli("data", "inspect", str(data)).stdout
    # A regional grid (HadCM3 over North America, 37 x 49) trains: no wrap in longitude, padded to a multiple of
    # 2**depth and cropped back; the card says both.
    tiny = os.path.join(ROOT, "recipes", "configs", "datacube", "tiny.yaml")
    _cli("train", "datacube", tiny, "--data_dir", str(data), "--output_dir", str(tmp_path / "run"),
         "--max_steps", "1", "--eval_every", "1", "--report_to", "none")
    card = (tmp_path / "run" / "README.md").read_text()
    assert "The grid is regional" in card and "cropped back" in card


def test_bad_arguments_are_named(tmp_path):
    proc = _cli("train", "datacube", "--no_such_flag", "3", check=False)
    assert proc.returncode != 0 and "no_such_flag" in proc.stderr
    proc = _cli("data", "inspect", str(tmp_path / "missing"), check=False)
    assert proc.returncode == 2 and "missing does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # long; run by make test-all
def test_convert_legacy_then_release_twice(tmp_path):
    """`convert legacy-pathway-vae` (the real legacy file from ../shared) then `release`; a second release of
    the same version is refused. Everything is written under tmp_path, never into the repository."""
    legacy = ROOT.parent / "shared" / "reference" / "trained_pathway_vae.pth"
    if not legacy.is_file():
        pytest.skip(f"legacy weights not found at {legacy}")
    converted = tmp_path / "converted"
    assert "model.safetensors" in _cli("convert", "legacy-pathway-vae", str(legacy), "--output", str(converted)).stdout
    root = tmp_path / "model_cards"
    args = ("release", str(converted), "--name", "legacy-pathway-vae", "--version", "0.1.0", "--output-root", str(root))
    _cli(*args)
    assert sorted(p.name for p in (root / "legacy-pathway-vae" / "v0.1.0").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    again = _cli(*args, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
