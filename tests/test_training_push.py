"""Pushing to the Hub while training (`--push_to_hub`, `--hub_strategy`), resuming from a Hub repo, `--init_from`.

The Hugging Face Hub is unreachable from these machines, so these tests run the unchanged `huggingface_hub`
client against `tests/hub_server.py`, a loopback fake of the Hub endpoints it calls (create repo, preupload,
commit, tag, model info, tree, resolve), pointed at with HF_ENDPOINT; HF_TOKEN is a fake token and HF_HUB_CACHE
a temporary folder. The recipes run in-process through `main([...])` on tiny data (seconds each); the check
that only the main process pushes runs the datacube recipe for real on 2 gloo processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

try:
    from .hub_server import FakeHub
except ImportError:  # tests/ is not a package
    from hub_server import FakeHub

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
DATACUBE_TINY = ROOT / "recipes" / "configs" / "datacube" / "tiny.yaml"
DIFFUSION_TINY = ROOT / "recipes" / "configs" / "diffusion" / "tiny.yaml"
FAKE_TOKEN = "hf_FAKEtokenTHATmustNEVERbeUPLOADED4567"
REPO = "astrobio/datacube-run"
END_FILES = {"README.md", "config.json", "model.safetensors", "metrics.json",
             "plots/loss_curves.png", "plots/maps_level0.png", "plots/temperature_profile.png"}
CHECKPOINT_FILES = {"COMPLETE", "model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
                    "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"}


@pytest.fixture(scope="module")
def planets(tmp_path_factory):
    from astrobio_hf.data.synth import synthesize_planets

    out = tmp_path_factory.mktemp("push_planets")
    synthesize_planets(out, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64)
    return out


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The fake Hub, with the client's endpoint, token and cache pointed at it / at tmp_path."""
    with FakeHub(lifetime_s=300, max_requests=2000) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        yield server
    assert server.unexpected == []
    assert set(server.auth_headers) <= {f"Bearer {FAKE_TOKEN}", None}


def train_datacube(planets: Path, output_dir: Path, *args: str) -> dict:
    from astrobio_hf.recipes.train_datacube import main

    main([str(DATACUBE_TINY), "--data_dir", str(planets), "--output_dir", str(output_dir), "--report_to", "none",
          "--max_steps", "4", "--eval_every", "4", "--keep_checkpoints", "10", *args])
    return json.loads((output_dir / "metrics.json").read_text())


def commits(hub: FakeHub, repo_id: str = REPO) -> list[tuple[str, dict[str, bytes]]]:
    repo = hub.repos[repo_id]
    return [(repo["messages"][oid], repo["snapshots"][oid]) for oid in repo["commits"]]


def assert_no_secrets(files: dict[str, bytes]) -> None:
    for name, content in files.items():
        assert FAKE_TOKEN.encode() not in content, name
        assert not name.startswith(("logs/", "wandb/", "checkpoints/")) and name not in ("run_config.json", ".env"), name


@pytest.mark.parametrize("strategy", ["end", "every_save", "checkpoint"])
def test_each_strategy_pushes_exactly_its_files(planets, hub, tmp_path, strategy):
    out = tmp_path / "run"
    train_datacube(planets, out, "--push_to_hub", REPO, "--hub_strategy", strategy, "--hub_private", str(strategy == "checkpoint"))
    assert hub.repos[REPO]["private"] is (strategy == "checkpoint")
    saved = sorted(int(p.name[5:]) for p in (out / "checkpoints").glob("step-*"))
    history = commits(hub)
    assert history[-1][0] == "End of training"
    final = hub.repos[REPO]["files"]
    for name in END_FILES:  # the final model and card, as written in the run directory
        assert final[name] == (out / name).read_bytes(), name
    for _, files in history:
        assert_no_secrets(files)
    assert not (out / ".hub-staging").exists()

    if strategy == "end":
        assert len(history) == 1 and set(final) == END_FILES
        return
    steps = [int(message.rsplit(" ", 1)[1]) for message, _ in history[:-1]]
    assert all(message.startswith("Training in progress, step ") for message, _ in history[:-1])
    # One commit per checkpoint, in order; a save is skipped only while the previous upload still runs.
    assert steps == sorted(steps) and set(steps) <= set(saved) and steps[0] == saved[0]
    for step, (_, files) in zip(steps, history[:-1]):
        checkpoint = out / "checkpoints" / f"step-{step:08d}"
        assert files["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()
        assert json.loads(files["config.json"])["model_type"] == "datacube_unet"
        pushed_state = {k.split("/", 1)[1]: v for k, v in files.items() if k.startswith("last-checkpoint/")}
        if strategy == "every_save":
            assert set(files) <= {"config.json", "model.safetensors"} | END_FILES and not pushed_state
        else:  # the full training state of that step, byte for byte
            assert set(pushed_state) == CHECKPOINT_FILES
            for name, content in pushed_state.items():
                assert content == (checkpoint / name).read_bytes(), name
    if strategy == "checkpoint":
        assert set(final) == END_FILES | {f"last-checkpoint/{n}" for n in CHECKPOINT_FILES}
        assert json.loads(final["last-checkpoint/COMPLETE"])["step"] == steps[-1]
    else:
        assert set(final) == END_FILES


def test_resume_from_a_hub_repo_continues_at_its_step(planets, hub, tmp_path, caplog):
    first = tmp_path / "first"
    before = train_datacube(planets, first, "--push_to_hub", REPO, "--hub_strategy", "checkpoint")
    pushed_step = json.loads(hub.repos[REPO]["files"]["last-checkpoint/COMPLETE"])["step"]
    assert pushed_step in (2, 4)

    # Another machine: a fresh output folder, the state comes from the Hub only.
    second = tmp_path / "second"
    with caplog.at_level(logging.INFO):
        after = train_datacube(planets, second, "--resume", REPO, "--max_steps", "6")
    assert f"resuming at step {pushed_step}" in caplog.text
    assert after["global_step"] == 6
    resumed_from = [h for h in before["history"] if h["step"] <= pushed_step]
    assert after["history"][: len(resumed_from)] == resumed_from  # the TrainingState came from the Hub
    assert [h["step"] for h in after["history"]][-1] == 6
    assert not (first / "checkpoints" / f"step-{6:08d}").exists()

    # A repo pushed without last-checkpoint/ cannot be resumed from, and says why.
    from astrobio_hf.hub.release import push_release, release_run

    push_release(release_run(first, name="datacube", version="1.0.0", output_root=tmp_path / "cards"), "astrobio/weights-only")
    with pytest.raises(FileNotFoundError, match="last-checkpoint"):
        train_datacube(planets, tmp_path / "third", "--resume", "astrobio/weights-only")


def test_hub_checkpoints_with_foreign_pickles_are_refused(tmp_path):
    from astrobio_hf.training.checkpoint import check_pickled_files

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save({"step": 3, "weights": torch.ones(2)}, folder / "custom_checkpoint_0.pkl")
    check_pickled_files(folder)  # tensors and plain values pass
    torch.save({"callback": os.system}, folder / "custom_checkpoint_1.pkl")  # would run on unpickling
    with pytest.raises(ValueError, match=r"references to \['(posix|nt)\.system'\]"):
        check_pickled_files(folder)


def test_no_repo_means_no_push_and_bad_settings_fail_early(tmp_path):
    from accelerate import Accelerator

    from astrobio_hf.hub.training_push import HubPusher

    accelerator = Accelerator(cpu=True)
    pusher = HubPusher(accelerator, tmp_path, "", "checkpoint")
    assert not pusher.enabled
    assert pusher.on_checkpoint(2, tmp_path / "missing") is None and pusher.on_end() is None and pusher.wait() == []
    with pytest.raises(ValueError, match="hub_strategy"):
        HubPusher(accelerator, tmp_path, REPO, "all_checkpoints")
    with pytest.raises(ValueError, match="config"):
        HubPusher(accelerator, tmp_path, REPO, "every_save")
    with pytest.raises(ValueError, match="owner/name"):
        HubPusher(accelerator, tmp_path, "not a repo id")
    with pytest.raises(ValueError, match="pushes go to main"):
        HubPusher(accelerator, tmp_path, f"{REPO}@v1")
    assert not (tmp_path / ".hub-staging").exists()


def test_the_token_is_never_pushed_and_failed_uploads_are_raised(hub, tmp_path):
    from accelerate import Accelerator
    from safetensors.torch import save_file

    from astrobio_hf.hub.training_push import HubPusher, HubPushError

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model_type": "datacube_unet"}))
    save_file({"w": torch.zeros(2)}, str(run / "model.safetensors"))
    (run / "README.md").write_text(f"debugging notes: HF_TOKEN={FAKE_TOKEN}\n")
    pusher = HubPusher(Accelerator(cpu=True), run, REPO, "end")
    with pytest.raises(HubPushError, match="refusing to push README.md: it contains your Hugging Face token"):
        pusher.on_end()
    assert hub.repos[REPO]["commits"] == []

    (run / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a card\n")
    hub.repos.pop(REPO)  # the repo is gone when the upload runs: the error surfaces in wait(), named
    pusher.on_end()
    with pytest.raises(HubPushError, match=r"(?s)1 upload\(s\) failed \(the end of training: RepositoryNotFoundError.*Repository Not Found"):
        pusher.wait()
    assert not (run / ".hub-staging").exists()


def test_only_the_main_process_pushes_and_all_resume_from_the_hub(planets, tmp_path):
    """Real 2-process gloo runs: every commit arrives once, from rank 0; then both processes resume from the
    pushed last-checkpoint/ (the main process pins the commit) and load --init_from weights the same way."""
    with FakeHub(lifetime_s=300, max_requests=2000) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_", "HF_"))}
        env.update(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", HF_ENDPOINT=hub.url, HF_TOKEN=FAKE_TOKEN,
                   HF_HUB_CACHE=str(tmp_path / "hf_cache"), HF_HOME=str(tmp_path / "hf_home"))

        def launch(out: Path, *args: str) -> subprocess.CompletedProcess:
            cmd = [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu_ddp.yaml"),
                   str(ROOT / "recipes" / "train_datacube.py"), str(DATACUBE_TINY), "--data_dir", str(planets),
                   "--output_dir", str(out), "--report_to", "none", "--per_device_batch_size", "2", *args]
            proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-6000:]
            assert "num_processes=2" in (out / "run_info.txt").read_text()
            return proc

        launch(tmp_path / "ddp", "--max_steps", "2", "--eval_every", "2", "--push_to_hub", REPO, "--hub_strategy", "checkpoint")
        assert hub.requests.count(("POST", "/api/repos/create")) == 1
        assert [message for message, _ in commits(hub)] == ["Training in progress, step 2", "End of training"]
        assert hub.requests.count(("POST", f"/api/models/{REPO}/commit/main")) == 2
        assert_no_secrets(hub.repos[REPO]["files"])

        proc = launch(tmp_path / "resumed", "--max_steps", "3", "--eval_every", "3", "--resume", REPO,
                      "--init_from", f"{REPO}@main")
    assert "resuming at step 2" in proc.stderr
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["global_step"] == 3
    assert metrics["init_from"]["revision"] == hub.repos[REPO]["commits"][-1]
    assert hub.unexpected == []
    assert set(hub.auth_headers) <= {f"Bearer {FAKE_TOKEN}", None}


# ------------------------------------------------------------------------------------------------------
# --init_from
# ------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_init_from_local_release_and_hub_revision(planets, hub, tmp_path):
    from astrobio_hf.hub.release import push_release, release_run

    # Two trained runs released as v1.0.0 and v1.1.0 of one Hub repo: main moves on, the tag stays.
    first, second = tmp_path / "first", tmp_path / "second"
    train_datacube(planets, first, "--max_steps", "1", "--eval_every", "1")
    train_datacube(planets, second, "--max_steps", "1", "--eval_every", "1", "--seed", "1")
    cards = tmp_path / "cards"
    v1 = release_run(first, name="datacube", version="1.0.0", output_root=cards)
    v11 = release_run(second, name="datacube", version="1.1.0", output_root=cards)
    push_release(v1, "astrobio/datacube")
    push_release(v11, "astrobio/datacube")
    tag_commit = hub.repos["astrobio/datacube"]["tags"]["v1.0.0"]

    # With a zero learning rate and no EMA, the saved model is exactly the initial weights.
    frozen = ("--learning_rate", "0", "--ema_decay", "0", "--max_steps", "1", "--eval_every", "1")
    for spec, expected, revision in ((str(v1), v1, None), ("astrobio/datacube@v1.0.0", v1, tag_commit)):
        out = tmp_path / f"init-{revision or 'local'}"
        metrics = train_datacube(planets, out, "--init_from", spec, *frozen)
        assert metrics["init_from"] == {"init_from": spec, "source": "hub" if revision else "local", "revision": revision,
                                        "sha256": _sha256(expected / "model.safetensors")}
        weights, reference = load_file(out / "model.safetensors"), load_file(expected / "model.safetensors")
        assert weights.keys() == reference.keys()
        for key in reference:
            torch.testing.assert_close(weights[key], reference[key], rtol=0, atol=0)
        card = (out / "README.md").read_text()
        assert f"Initialised from `{spec}`" in card and (revision is None or revision in card)

    from astrobio_hf.hub.init_from import resolve_init_from

    folder, latest = resolve_init_from("astrobio/datacube")  # no revision: main, now at v1.1.0
    assert latest["revision"] == hub.repos["astrobio/datacube"]["commits"][-1] != tag_commit
    assert latest["sha256"] == _sha256(v11 / "model.safetensors") == _sha256(folder / "model.safetensors")


def test_init_from_errors(planets, hub, tmp_path):
    from astrobio_hf import (
        ClimateDiffusionModel,
        DatacubeUNetConfig,
        DatacubeUNetForForecast,
    )
    from astrobio_hf.hub.init_from import init_weights_from

    run = tmp_path / "run"
    train_datacube(planets, run, "--max_steps", "1", "--eval_every", "1")
    config = DatacubeUNetConfig.from_pretrained(run)

    wider = DatacubeUNetForForecast(DatacubeUNetConfig.from_pretrained(run, base_channels=16))
    with pytest.raises(ValueError, match=r"shape mismatch \S+: expected \(\d+.*, got \(\d+"):
        init_weights_from(wider, str(run))
    deeper = DatacubeUNetForForecast(DatacubeUNetConfig.from_pretrained(run, depth=2))
    with pytest.raises(ValueError, match=r"missing in the weights \['"):
        init_weights_from(deeper, str(run))
    assert config.base_channels != 16 and config.depth != 2

    sys.path.insert(0, str(Path(__file__).parent))
    from test_modeling_climate_diffusion import tiny_config

    with pytest.raises(ValueError, match="expected model_type 'climate_diffusion', got 'datacube_unet'"):
        init_weights_from(ClimateDiffusionModel(tiny_config()), str(run))
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="checkpoints/step-"):
        init_weights_from(wider, str(unfinished))  # a run folder without final weights: the hint names checkpoints
    with pytest.raises(FileNotFoundError, match="no such folder"):
        init_weights_from(wider, str(tmp_path / "nowhere" / "at" / "all"))
    with pytest.raises(FileNotFoundError, match="astrobio/missing"):
        init_weights_from(wider, "astrobio/missing@v1.0.0")

    # Through the recipe: a mismatch stops the run before training, with the same message.
    with pytest.raises(ValueError, match="shape mismatch"):
        train_datacube(planets, tmp_path / "bad", "--init_from", str(run), "--base_channels", "16")


def test_diffusion_recipe_init_from_push_and_release(hub, tmp_path):
    """The diffusion recipe: --init_from a previous run, and --push_to_hub at the end (loadable as the pipeline)."""
    from astrobio_hf.data.synth import synthesize_planets
    from astrobio_hf.diffusion.pipeline_climate_diffusion import (
        ClimateDiffusionPipeline,
    )
    from astrobio_hf.recipes.train_diffusion import main

    data = tmp_path / "planets"
    synthesize_planets(data, n_planets=6, n_climate_steps=8, n_levels=3, n_lat=8, n_lon=16, seed=5)
    common = [str(DIFFUSION_TINY), "--data_dir", str(data), "--report_to", "none", "--eval_after_training", "false"]
    main([*common, "--output_dir", str(tmp_path / "base"), "--max_steps", "2"])
    out = tmp_path / "tuned"
    result = main([*common, "--output_dir", str(out), "--max_steps", "1", "--learning_rate", "0", "--ema_decay", "0",
                   "--init_from", str(tmp_path / "base"), "--push_to_hub", "astrobio/diffusion-run"])
    origin = json.loads((out / "metrics.json").read_text())["init_from"]
    assert origin == result["init_from"] and origin["source"] == "local"
    assert origin["sha256"] == _sha256(tmp_path / "base" / "model.safetensors")
    assert "Initialised from" in (out / "README.md").read_text()
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "base" / "model.safetensors").read_bytes()

    # The end-of-training push stores the weights once and also loads as the pipeline (after a download).
    files = hub.repos["astrobio/diffusion-run"]["files"]
    assert {"model_index.json", "scheduler/scheduler_config.json", "model.safetensors", "config.json", "README.md"} <= set(files)
    assert [n for n in files if n.endswith(".safetensors")] == ["model.safetensors"]
    from huggingface_hub import snapshot_download

    pipe = ClimateDiffusionPipeline.from_pretrained(snapshot_download("astrobio/diffusion-run", endpoint=hub.url,
                                                                      cache_dir=tmp_path / "hf_cache"))
    assert pipe.denoiser.config.model_type == "climate_diffusion"
