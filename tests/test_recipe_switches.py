"""What every recipe shares through the one loop, checked through `accelerate launch` as a user runs it:
bad input reported as one line, one run per output folder, switches honoured or refused, DDP with a family's
optional term left out (unused parameters found by the loop), and --report_to wandb (offline) with the plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from test_recipe_datacube import ACCELERATE, ROOT, _env
from test_recipe_diffusion import TINY as DIFFUSION_TINY
from test_recipe_diffusion import tiny_data  # noqa: F401  (fixture: tiny planets for the diffusion family)

CNN_VIT_TINY = ROOT / "recipes" / "configs" / "cnn_vit" / "tiny.yaml"


def _cmd(recipe: str, config, *args, accelerate_config="cpu.yaml"):
    return [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / accelerate_config),
            str(ROOT / "recipes" / f"train_{recipe}.py"), str(config), *args]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--max_steps", "-1"), "expected --max_steps >= 0 (0 = from num_epochs), got -1"),
        (("--physics_weights", "{cross_scale: 1}"), "expected --physics_weights to be JSON"),
    ],  # the other checks are the same code path, tested in-process in test_loop.py
)
def test_bad_input_through_accelerate_launch_is_one_line(tmp_path, args, message):
    """The user sees the recipe's one line once, not its traceback (accelerate adds only its own exit notice)."""
    proc = subprocess.run(_cmd("cnn_vit", CNN_VIT_TINY, "--output_dir", str(tmp_path / "run"), *args), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("astrobio-hf: error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
    assert "astrobio_hf/training" not in proc.stderr and "raise ValueError" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work


@pytest.mark.slow  # ~90 s; the lock itself is tested against real holder processes in test_loop.py
def test_a_second_run_on_a_held_output_dir_is_refused(tmp_path):
    """Two runs on one --output_dir: the second is refused at start while the first one trains on, unharmed."""
    from test_recipe_datacube import TINY

    from astrobio_hf.data.synth import synthesize_planets

    data = tmp_path / "data"
    synthesize_planets(data, n_planets=5, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3)
    out = tmp_path / "run"
    common = ("--data_dir", str(data), "--output_dir", str(out), "--report_to", "none")
    first = subprocess.Popen(_cmd("datacube", TINY, *common, "--max_steps", "5000", "--checkpoint_every", "1000"), cwd=ROOT,
                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not (out / "run_info.txt").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended before the second could start"
        second = subprocess.run(_cmd("datacube", TINY, *common, "--max_steps", "2"), cwd=ROOT, env=_env(),
                                capture_output=True, text=True, timeout=180)
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode != 0
    assert f"output_dir {out} is in use by another run (pid" in second.stderr, second.stderr[-3000:]
    assert json.loads((out / "run_config.json").read_text())["max_steps"] == 5000  # the second run wrote nothing
    # the first run was killed: its lock is stale now and a new run takes the folder over
    third = subprocess.run(_cmd("datacube", TINY, *common, "--max_steps", "2", "--resume", "none"), cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "no longer running" in third.stderr


def test_diffusion_two_processes_without_condition_dropout_and_wandb_with_plots(tiny_data, tmp_path):  # noqa: F811
    """The diffusion family on 2 processes with its optional terms left out (no condition dropout, no physics): the
    loop's probe step finds that every parameter still gets a gradient (the null embedding stays in the graph
    through a torch.where), so DDP runs without the unused-parameter search, and the run goes through. It also
    reports to wandb offline, with its plots and the sample grids."""
    out = tmp_path / "ddp"
    cmd = _cmd("diffusion", DIFFUSION_TINY, "--data_dir", str(tiny_data), "--output_dir", str(out), "--max_steps", "3",
               "--condition_dropout", "0", "--eval_after_training", "false", "--report_to", "tensorboard,wandb",
               accelerate_config="cpu_ddp.yaml")
    proc = subprocess.run(cmd, cwd=ROOT, env=_env({"ACCELERATE_USE_CPU": "true"}), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-6000:]
    run_info = (out / "run_info.txt").read_text()
    assert "num_processes=2" in run_info and "find_unused_parameters=False" in run_info
    assert json.loads((out / "metrics.json").read_text())["global_step"] == 3
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs, "no offline wandb run"
    media = {p.name.split("_")[0] for p in runs[0].rglob("media/images/plots/*.png")}
    assert {"samples", "loss"} <= media, sorted(p.name for p in runs[0].rglob("*.png"))
