"""Versioned releases (`astrobio_hf.hub.release`): exactly three files, a card that parses back, weights that
load through the Auto classes, immutable versions, and a push to a Hub.

No Hub is reachable here: the push test runs the unchanged `huggingface_hub` client (`HfApi(endpoint=...)`)
against `tests/hub_server.py`, a loopback fake of the create-repo, validate-yaml, preupload, commit (NDJSON, inline base64
files) and tag endpoints (and the info, tree and resolve endpoints downloads use), and checks what arrived there.

A diffusion run's release also loads as a `ClimateDiffusionPipeline`, from the folder and from a Hub snapshot,
with the weights stored once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

import astrobio_hf  # noqa: F401  (registers the Auto classes)
from astrobio_hf import DatacubeUNetForForecast
from astrobio_hf.hub import build_model_card
from astrobio_hf.hub.release import ReleaseExistsError, normalize_version, release_run

try:
    from .hub_server import FakeHub
    from .test_modeling_climate_diffusion import tiny_config as tiny_diffusion_config
    from .test_modeling_datacube_unet import tiny_config, tiny_inputs
except ImportError:  # tests/ is not a package
    from hub_server import FakeHub
    from test_modeling_climate_diffusion import tiny_config as tiny_diffusion_config
    from test_modeling_datacube_unet import tiny_config, tiny_inputs

FAKE_TOKEN = "hf_FAKEtokenTHATmustNEVERbeRELEASED0123"
RELEASE_FILES = {"README.md", "config.json", "model.safetensors"}
EVAL = [("rmse", "lat-weighted RMSE T", 1.25), ("rmse", "lat-weighted RMSE p", 42.0)]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A finished run: save_pretrained output + card + metrics, and junk that must never be released."""
    torch.manual_seed(0)
    run = tmp_path / "run"
    DatacubeUNetForForecast(tiny_config()).eval().save_pretrained(run, safe_serialization=True)
    card = build_model_card(
        model_name="datacube-unet",
        summary="A tiny datacube U-Net.",
        sections={"Training": "data `/home/me/secret/planets`", "Limitations": "Tiny test model; not for science."},
        eval_results=EVAL,
        tags=["climate", "datacube"],
    )
    card.save(str(run / "README.md"))
    (run / "metrics.json").write_text(json.dumps({"test": {"model/rmse/T": 1.25}, "global_step": 3}))
    (run / "run_config.json").write_text(json.dumps({"data_dir": "/home/me/secret/planets", "hub_token": FAKE_TOKEN}))
    (run / "checkpoints" / "step-1").mkdir(parents=True)
    (run / "checkpoints" / "step-1" / "optimizer.bin").write_bytes(b"\x00optimizer state")
    (run / "logs").mkdir()
    (run / "logs" / "events.out.tfevents").write_bytes(b"tb")
    (run / "wandb").mkdir()
    (run / "wandb" / "settings").write_text(f"api_key={FAKE_TOKEN}\n")
    (run / ".env").write_text(f"HF_TOKEN={FAKE_TOKEN}\n")
    return run


def _outputs(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def test_release_contents_card_and_load(run_dir, tmp_path):
    out = release_run(run_dir, name="datacube-unet", version="1.0.0", output_root=tmp_path / "model_cards")

    assert out == tmp_path / "model_cards" / "datacube-unet" / "v1.0.0"
    assert {p.name for p in out.iterdir()} == RELEASE_FILES
    assert not [p for p in out.parent.iterdir() if p.name != "v1.0.0"]  # no temp folders left behind
    assert (out / "model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()
    assert (out / "config.json").read_bytes() == (run_dir / "config.json").read_bytes()
    for f in out.iterdir():
        text = f.read_bytes()
        assert FAKE_TOKEN.encode() not in text and b"/home/me/secret" not in text, f.name

    # The card's metadata parses back, with the run's evaluation results as model-index.
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers"
    assert {"astrobio-hf", "climate", "datacube", "datacube_unet"} <= set(card.data.tags)
    assert card.data.datasets
    results = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {(t, n): v for t, n, v in EVAL}
    assert all(r.dataset_split == "test" for r in card.data.eval_results)
    for section in ("## Training data", "## Intended use", "## Limitations", "## How to load", "## Evaluation"):
        assert section in card.text
    assert "Tiny test model; not for science." in card.text
    assert f'from_pretrained("{out.as_posix()}")' in card.text

    # The release loads through the Auto classes and gives the run's outputs.
    from transformers import AutoModel

    original = DatacubeUNetForForecast.from_pretrained(run_dir).eval()
    released = AutoModel.from_pretrained(out).eval()
    assert type(released) is DatacubeUNetForForecast
    inputs = tiny_inputs(original.config)
    a, b = _outputs(original, inputs), _outputs(released, inputs)
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)


def test_versions_are_immutable_and_validated(run_dir, tmp_path):
    root = tmp_path / "model_cards"
    out = release_run(run_dir, name="datacube-unet", version="v1.0.0", output_root=root)
    assert out.name == "v1.0.0"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for again in ("1.0.0", "v1.0.0"):
        with pytest.raises(ReleaseExistsError, match="already exists"):
            release_run(run_dir, name="datacube-unet", version=again, output_root=root)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert release_run(run_dir, name="datacube-unet", version="1.0.1", output_root=root).name == "v1.0.1"

    assert normalize_version("v2.3.4-rc.1") == "2.3.4-rc.1"
    for bad in ("1.0", "latest", "v1", "1.0.0.0", "01.0.0"):
        with pytest.raises(ValueError, match="semantic version"):
            release_run(run_dir, name="datacube-unet", version=bad, output_root=root)
    (run_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        release_run(run_dir, name="datacube-unet", version="2.0.0", output_root=root)
    assert not (root / "datacube-unet" / "v2.0.0").exists()


def test_push_to_hub(run_dir, tmp_path):
    with FakeHub(lifetime_s=60) as hub:
        out = release_run(
            run_dir,
            name="datacube-unet",
            version="1.0.0",
            output_root=tmp_path / "model_cards",
            push="astrobio/datacube-unet",
            endpoint=hub.url,
            token=FAKE_TOKEN,
        )
    assert hub.unexpected == []
    repo = hub.repos["astrobio/datacube-unet"]
    assert set(repo["files"]) == RELEASE_FILES
    for name, content in repo["files"].items():
        assert content == (out / name).read_bytes(), name
    assert repo["tags"] == {"v1.0.0": repo["commits"][-1]}
    assert len(repo["commits"]) == 1
    assert 'revision="v1.0.0"' in (out / "README.md").read_text()
    assert set(hub.auth_headers) == {f"Bearer {FAKE_TOKEN}"}
    assert hub.validated_metadata and hub.validated_metadata[-1]["model-index"][0]["name"] == "datacube-unet"



def test_push_to_an_existing_tag_is_refused_before_anything_is_uploaded(run_dir, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    from astrobio_hf.hub.release import push_release

    repo_id = "astrobio/datacube-unet"
    # another run, other weights, released under the same version into another output root
    other_run = tmp_path / "other_run"
    torch.manual_seed(1)
    DatacubeUNetForForecast(tiny_config()).eval().save_pretrained(other_run, safe_serialization=True)
    assert (other_run / "model.safetensors").read_bytes() != (run_dir / "model.safetensors").read_bytes()

    with FakeHub(lifetime_s=60) as hub:
        first = release_run(run_dir, name="datacube-unet", version="1.0.0", output_root=tmp_path / "first",
                            push=repo_id, endpoint=hub.url, token=FAKE_TOKEN)
        repo = hub.repos[repo_id]
        first_commit, first_weights = repo["commits"][-1], repo["files"]["model.safetensors"]
        requests_before = len(hub.requests)

        with pytest.raises(ReleaseExistsError, match=rf"tag v1.0.0 already exists in Hub repo {repo_id}") as error:
            release_run(other_run, name="datacube-unet", version="1.0.0", output_root=tmp_path / "second",
                        push=repo_id, endpoint=hub.url, token=FAKE_TOKEN)
        assert first_commit in str(error.value)
        assert not (tmp_path / "second" / "datacube-unet" / "v1.0.0").exists()  # refused before the local release too
        # a release folder pushed directly is refused the same way
        with pytest.raises(ReleaseExistsError, match=rf"tag v1.0.0 already exists in Hub repo {repo_id}"):
            push_release(first, repo_id, endpoint=hub.url, token=FAKE_TOKEN)
        pushed = hub.requests[requests_before:]
        assert all(method == "GET" for method, _ in pushed), pushed  # only the refs were read: no repo, commit or tag

        # main still serves the first release's weights, at the first release's commit
        api = HfApi(endpoint=hub.url, token=FAKE_TOKEN)
        assert api.model_info(repo_id).sha == first_commit
        main_weights = hf_hub_download(repo_id, "model.safetensors", revision="main", endpoint=hub.url,
                                       cache_dir=tmp_path / "hf_cache", token=FAKE_TOKEN)
    assert hub.unexpected == []
    assert repo["commits"] == [first_commit]
    assert repo["tags"] == {"v1.0.0": first_commit}
    assert repo["files"]["model.safetensors"] == first_weights == (first / "model.safetensors").read_bytes()
    assert Path(main_weights).read_bytes() == (run_dir / "model.safetensors").read_bytes()


@pytest.fixture
def diffusion_run_dir(tmp_path) -> Path:
    """What the diffusion recipe leaves: the model at the root and the same model as pipeline/denoiser/."""
    from astrobio_hf import ClimateDiffusionModel
    from astrobio_hf.diffusion.pipeline_climate_diffusion import (
        ClimateDiffusionPipeline,
    )
    from astrobio_hf.diffusion.schedulers import make_scheduler

    torch.manual_seed(0)
    run = tmp_path / "diffusion_run"
    model = ClimateDiffusionModel(tiny_diffusion_config()).eval()
    model.save_pretrained(run, safe_serialization=True)
    scheduler = make_scheduler("dpmsolver++", prediction_type="v_prediction", zero_terminal_snr=True)
    ClimateDiffusionPipeline(denoiser=model, scheduler=scheduler).save_pretrained(run / "pipeline")
    (run / "metrics.json").write_text(json.dumps({"global_step": 2}))
    (run / "run_config.json").write_text(json.dumps({"data_dir": "/home/me/secret/planets"}))
    return run


def test_diffusion_release_loads_as_model_and_pipeline_with_weights_once(diffusion_run_dir, tmp_path):
    from diffusers import DPMSolverMultistepScheduler
    from huggingface_hub import snapshot_download
    from transformers import AutoModel

    from astrobio_hf import ClimateDiffusionModel
    from astrobio_hf.diffusion.pipeline_climate_diffusion import (
        ClimateDiffusionPipeline,
    )

    with FakeHub(lifetime_s=60) as hub:
        out = release_run(
            diffusion_run_dir, name="climate-diffusion", version="1.0.0", output_root=tmp_path / "model_cards",
            push="astrobio/climate-diffusion", endpoint=hub.url, token=FAKE_TOKEN,
        )
        snapshot = Path(snapshot_download("astrobio/climate-diffusion", revision="v1.0.0", endpoint=hub.url,
                                          cache_dir=tmp_path / "hf_cache", token=FAKE_TOKEN))
    assert hub.unexpected == []
    files = {"README.md", "config.json", "model.safetensors", "model_index.json", "scheduler/scheduler_config.json"}
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == files
    assert set(hub.repos["astrobio/climate-diffusion"]["files"]) == files
    assert len(list(out.rglob("*.safetensors"))) == 1  # no denoiser/ copy: the pipeline reads the root weights
    assert (out / "model.safetensors").read_bytes() == (diffusion_run_dir / "model.safetensors").read_bytes()
    card = (out / "README.md").read_text()
    assert "ClimateDiffusionPipeline.from_pretrained" in card and "/home/me/secret" not in card

    model = AutoModel.from_pretrained(out).eval()
    assert type(model) is ClimateDiffusionModel
    for where in (out, snapshot):
        pipe = ClimateDiffusionPipeline.from_pretrained(where)
        assert type(pipe.scheduler) is DPMSolverMultistepScheduler
        for key, value in model.state_dict().items():
            torch.testing.assert_close(pipe.denoiser.state_dict()[key], value, rtol=0, atol=0)
        pipe.set_progress_bar_config(disable=True)
        samples = pipe(planet_params=torch.tensor([[1361.0, 400.0]]), class_labels=torch.tensor([1]), num_inference_steps=2,
                       generator=torch.Generator().manual_seed(0)).samples
        assert samples.shape == (1, 3, 8, 16) and torch.isfinite(samples).all()

    # The pipeline's denoiser must be the run's model: a run whose two copies differ is refused.
    other = ClimateDiffusionModel(tiny_diffusion_config())
    other.save_pretrained(diffusion_run_dir / "pipeline" / "denoiser", safe_serialization=True)
    with pytest.raises(ValueError, match="same file"):
        release_run(diffusion_run_dir, name="climate-diffusion", version="1.0.1", output_root=tmp_path / "model_cards")
    assert not (tmp_path / "model_cards" / "climate-diffusion" / "v1.0.1").exists()
