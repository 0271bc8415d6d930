"""The multi-phase pipeline (astrobio_hf.pipeline): real recipes as phases on a tiny synthetic planet population.

A three-phase pipeline (a CNN-ViT encoder, a datacube U-Net, a CNN-ViT fine-tuned from the encoder's weights):
end to end with its manifest and summary card; a rerun skips every finished phase; a changed config of phase 2
reruns phases 2 and 3 only (phase 1's folder untouched, phase 2's old folder kept aside); killed with SIGKILL in its
second phase and rerun, it skips the first, resumes the second from its checkpoint and ends with the weights of an
uninterrupted run; a missing input or a bad argument is one line before anything runs.
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
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = ROOT / "recipes" / "configs" / "cnn_vit" / "tiny.yaml"
TINY_CUBE = ROOT / "recipes" / "configs" / "datacube" / "tiny.yaml"


@pytest.fixture(scope="module")
def planets(tmp_path_factory):
    from astrobio_hf.data.synth import synthesize_planets

    out = tmp_path_factory.mktemp("planets")
    synthesize_planets(out, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64)
    return out


def _pipeline_file(tmp_path: Path, planets: Path, output: Path, cube_steps: int = 8, name: str = "tiny.yaml") -> Path:
    common = {"data_dir": str(planets), "report_to": "none", "ema_decay": 0.0}
    spec = {
        "name": "tiny",
        "output_dir": str(output),
        "phases": [
            {"name": "encoder", "family": "cnn-vit", "config": str(TINY_VIT), "overrides": common},
            {"name": "forecaster", "family": "datacube", "config": str(TINY_CUBE),
             "overrides": {**common, "max_steps": cube_steps, "checkpoint_every": 4, "eval_every": 4}},
            {"name": "finetune", "family": "cnn-vit", "config": str(TINY_VIT), "overrides": {**common, "learning_rate": 5e-4},
             "inputs": {"init_from": "encoder"}},
        ],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _weights(run_dir: Path) -> dict:
    return load_file(run_dir / "model.safetensors")


def _same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=0, rtol=0, msg=lambda m: f"{key}: {m}")


@pytest.fixture(scope="module")
def straight(planets, tmp_path_factory):
    """One uninterrupted run of the three phases (in-process, one thread like the subprocess runs below, so that the
    float sums agree bit for bit)."""
    import torch

    from astrobio_hf.pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("straight")
    path = _pipeline_file(tmp, planets, tmp / "out")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        manifest = run_pipeline(path)
    finally:
        torch.set_num_threads(threads)
    return path, tmp / "out", manifest


def test_pipeline_runs_every_phase_and_writes_manifest_and_summary(straight):
    path, out, manifest = straight
    assert manifest["order"] == ["encoder", "forecaster", "finetune"] and set(manifest["phases"]) == set(manifest["order"])
    for name, entry in manifest["phases"].items():
        assert (out / name / "model.safetensors").is_file() and (out / name / "README.md").is_file()
        assert entry["wall_seconds"] > 0 and len(entry["output_hash"]) == 64
    # the fine-tune consumed the encoder: its input hash is the encoder's output hash, its card names the source
    assert manifest["phases"]["finetune"]["input_hashes"]["init_from"] == manifest["phases"]["encoder"]["output_hash"]
    assert str(out / "encoder") in json.loads((out / "finetune" / "metrics.json").read_text())["init_from"]["init_from"]
    card = (out / "README.md").read_text()
    for name in manifest["order"]:
        assert f"[README.md]({name}/README.md)" in card and f"[metrics.json]({name}/metrics.json)" in card
    assert "Total wall time" in card


def test_rerun_skips_finished_phases_and_a_changed_phase_reruns_with_every_later_one(straight, planets, tmp_path, caplog):
    import shutil

    from astrobio_hf.pipeline import run_pipeline

    path, out, first = straight
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    same = _pipeline_file(tmp_path, planets, copy)
    caplog.set_level("INFO", logger="astrobio_hf.pipeline")
    again = run_pipeline(same)
    assert caplog.text.count("skipped") == 3
    assert {k: v["finished_at"] for k, v in again["phases"].items()} == {k: v["finished_at"] for k, v in first["phases"].items()}
    caplog.clear()
    changed = _pipeline_file(tmp_path, planets, copy, cube_steps=4)  # phase 2's config changed
    after = run_pipeline(changed)
    assert "phase encoder is finished with this config and these inputs: skipped" in caplog.text
    assert after["phases"]["encoder"]["finished_at"] == first["phases"]["encoder"]["finished_at"]
    for name in ("forecaster", "finetune"):
        assert after["phases"][name]["config_hash"] != first["phases"][name]["config_hash"] or name == "finetune"
        assert after["phases"][name]["finished_at"] != first["phases"][name]["finished_at"]
    assert json.loads((copy / "forecaster" / "metrics.json").read_text())["global_step"] == 4
    assert (copy / "forecaster.stale-1" / "model.safetensors").is_file()  # the old run kept aside, not deleted
    _same_weights(copy / "encoder", out / "encoder")
    _same_weights(copy / "finetune", out / "finetune")  # its inputs (the encoder) did not change: same result
    caplog.clear()
    forced = run_pipeline(changed, start="finetune")  # --from: that phase again, nothing before it
    assert forced["phases"]["forecaster"]["finished_at"] == after["phases"]["forecaster"]["finished_at"]
    assert forced["phases"]["finetune"]["finished_at"] != after["phases"]["finetune"]["finished_at"]
    assert "phase finetune: --from: rerunning it" in caplog.text and (copy / "finetune.stale-1").is_dir()


def test_missing_inputs_and_bad_arguments_fail_before_any_phase(planets, tmp_path):
    from astrobio_hf.pipeline import load_pipeline, run_pipeline

    path = _pipeline_file(tmp_path, planets, tmp_path / "out")
    with pytest.raises(ValueError, match="phase finetune: input --init_from 'encoder' is missing: phase encoder has not finished"):
        run_pipeline(path, only="finetune")
    spec = yaml.safe_load(path.read_text())
    spec["phases"][1]["overrides"]["data_dir"] = str(tmp_path / "nowhere")
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(FileNotFoundError, match=f"phase forecaster: --data_dir {tmp_path / 'nowhere'} does not exist"):
        run_pipeline(path)
    spec["phases"][1]["overrides"]["data_dir"] = str(planets)
    spec["phases"][1]["overrides"]["num_levels_typo"] = 3
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="phase forecaster \\(datacube\\):.*num_levels_typo"):
        run_pipeline(path)
    spec["phases"][1]["overrides"].pop("num_levels_typo")
    spec["phases"][2]["inputs"] = {"init_from": "decoder"}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="input --init_from expected an earlier phase \\(encoder, forecaster\\), got 'decoder'"):
        load_pipeline(path)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_killed_in_phase_two_resumes_and_matches_the_uninterrupted_run(straight, planets, tmp_path):
    _, out, first = straight
    path = _pipeline_file(tmp_path, planets, tmp_path / "out")
    cmd = [str(Path(sys.executable).with_name("astrobio-hf")), "pipeline", str(path)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = tmp_path / "out" / "forecaster" / "checkpoints" / "step-00000004" / "COMPLETE"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the pipeline never reached phase 2's step-4 checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert list(manifest["phases"]) == ["encoder"]
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "phase encoder is finished with this config and these inputs: skipped" in rerun.stderr
    assert "phase forecaster was started with this config and these inputs: resuming" in rerun.stderr
    assert "resuming at step 4" in rerun.stderr
    for name in ("forecaster", "finetune"):
        _same_weights(tmp_path / "out" / name, out / name)
    assert "3 of 3 phases finished" in rerun.stdout
