"""The pipeline's soft-token phases end to end (issue 16): a tiny pipeline of the CNN-ViT encoder, the integration
phase (projector into a frozen LM) and the LLM-guided phase (projector + LoRA on questions answered from the cube),
on a 9-planet population with a tiny random Llama that has SmolLM2's real tokenizer and chat template.

Checked: generation with soft tokens equal to real token embeddings gives what generation from those tokens as ids
gives (left-padded batch against each prompt alone); the phases hand their outputs on (the manifest's input hashes);
the projector trains alone (its checkpoints hold its tensors only), the assistant trains the projector and the
adapters (nothing of the frozen base in its checkpoints); the release is a `PlanetAssistant` through `AutoModel`
whose `ask` on the test cubes reproduces the recipe's own test answers; the metrics hold every system and question
type with numbers a scorer computed; the answer parser and scorer on known cases; one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

sys.path.insert(0, str(Path(__file__).parent))
from lm_fixtures import make_tiny_llama  # noqa: E402

from astrobio_hf import PlanetAssistant, PlanetAssistantConfig, PlanetProjector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_generation_with_soft_tokens_equal_to_token_embeddings_is_generation_from_those_ids(tmp_path):
    from transformers import AutoModelForCausalLM

    from astrobio_hf.data.chat import ChatEncoder
    from astrobio_hf.models.language_model import load_tokenizer
    from astrobio_hf.models.planet_projector import generate_with_soft_tokens

    path = make_tiny_llama(tmp_path / "llama", initializer_range=0.3)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = load_tokenizer(str(path))
    chat = ChatEncoder(tokenizer, 256, "Be brief.")
    prompts = ["Hi", "What is this planet made of, and why?", "Yes?"]  # different lengths: a left-padded batch
    torch.manual_seed(0)
    inserted = torch.randint(5, 1000, (3, 2))
    with torch.no_grad():
        soft = lm.get_input_embeddings()(inserted)
    got = generate_with_soft_tokens(lm, chat, soft, prompts, max_new_tokens=6)
    want = []
    for ids_before, prompt in zip(inserted, prompts):
        ids = torch.tensor([ids_before.tolist() + chat.prompt_ids(prompt)])
        out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=chat.end_of_turn)
        want.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert got == want and len(set(got)) == 3 and all(got)
    assert generate_with_soft_tokens(lm, chat, None, prompts, max_new_tokens=6) != got  # the soft tokens matter


def test_answer_parsing_and_scores():
    from astrobio_hf.evaluation.planet_assistant import majority_answer, parse_choice, score_choices

    labels = ["frozen", "temperate", "warm"]
    assert parse_choice("Temperate.", labels) == "temperate"
    assert parse_choice("It is warm", labels) == "warm"
    assert parse_choice("warmish", labels) is None  # not a whole word
    assert parse_choice("frozen or warm", labels) is None  # several
    assert parse_choice("high_flux", ["low", "medium", "high"]) == "high"
    s = score_choices(["a", "a", "a", "b"], ["a", "a", "a", "a"])
    assert s["accuracy"] == 0.75 and s["balanced_accuracy"] == 0.5 and s["parsed"] == 1.0 and s["n"] == 4
    assert score_choices(["a", "b"], [None, "b"])["parsed"] == 0.5
    assert majority_answer(["no", "yes", "yes", "no"]) == "no"  # a tie: sorted order, not row order


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="expected question_types among"):
        PlanetAssistantConfig(question_types=["colour"])
    with pytest.raises(ValueError, match="expected >= 2 regime_names"):
        PlanetAssistantConfig(question_types=["regime"], regime_names=["warm"])
    with pytest.raises(ValueError, match=r"expected flux_terciles \[low, high\]"):
        PlanetAssistantConfig(question_types=["stellar_flux_range"])
    with pytest.raises(ValueError, match="unknown key"):
        PlanetAssistantConfig(adapters="x")


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    import yaml

    from astrobio_hf.data.synth import synthesize_planets
    from astrobio_hf.pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("soft_token_pipeline")
    base = make_tiny_llama(tmp / "llama", initializer_range=0.3)
    planets = tmp / "planets"
    synthesize_planets(planets, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64)
    lm_steps = {"max_steps": 6, "eval_every": 3, "checkpoint_every": 3, "per_device_batch_size": 4, "report_to": "none", "data_dir": str(planets)}
    spec = {"name": "soft-tokens", "output_dir": str(tmp / "out"), "phases": [
        {"name": "encoder", "family": "cnn-vit", "config": str(ROOT / "recipes" / "configs" / "cnn_vit" / "tiny.yaml"),
         "overrides": {"data_dir": str(planets), "report_to": "none"}},
        {"name": "projector", "family": "planet-projector", "inputs": {"encoder": "encoder"}, "overrides": {**lm_steps, "base_model": str(base)}},
        {"name": "assistant", "family": "planet-assistant", "inputs": {"projector": "projector", "encoder": "encoder"},
         "overrides": {**lm_steps, "lora_rank": 4, "max_new_tokens": 4}},
    ]}
    (tmp / "p.yaml").write_text(yaml.safe_dump(spec))
    manifest = run_pipeline(tmp / "p.yaml")
    return {"manifest": manifest, "out": tmp / "out", "planets": planets, "base": base}


def test_integration_phase_trains_the_projector_alone(pipeline_run):
    from safetensors.torch import load_file

    out, manifest = pipeline_run["out"] / "projector", pipeline_run["manifest"]
    assert manifest["phases"]["projector"]["input_hashes"]["encoder"] == manifest["phases"]["encoder"]["output_hash"]
    projector = AutoModel.from_pretrained(out)
    assert type(projector) is PlanetProjector and projector.config.encoder == str(pipeline_run["out"] / "encoder")
    assert projector.config.base_model == str(pipeline_run["base"]) and projector.config.encoder_hidden_size == 16  # the tiny CNN-ViT
    checkpoint = sorted((out / "checkpoints").glob("step-*"))[-1]
    assert all(k.startswith("projector.") for k in load_file(checkpoint / "model.safetensors"))
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["projector/description_loss"] > 0 and test["mean_embedding/description_loss"] > 0 and test["test_windows"] > 0


def test_llm_guided_phase_trains_projector_and_adapters_and_scores_every_system(pipeline_run):
    from safetensors.torch import load_file

    out, manifest = pipeline_run["out"] / "assistant", pipeline_run["manifest"]
    assert manifest["phases"]["assistant"]["input_hashes"]["projector"] == manifest["phases"]["projector"]["output_hash"]
    checkpoint = sorted((out / "checkpoints").glob("step-*"))[-1]
    names = list(load_file(checkpoint / "model.safetensors"))
    assert any(k.startswith("projector.") for k in names) and any("lora_" in k for k in names)
    assert all(k.startswith("projector.") or "lora_" in k for k in names)  # nothing of the frozen base
    # the projector moved from the integration phase's (it was initialised from it and trained on)
    start = load_file(pipeline_run["out"] / "projector" / "model.safetensors")
    end = load_file(out / "model.safetensors")
    assert set(end) == {f"projector.{k}" for k in start}
    assert any(not torch.equal(end[f"projector.{k}"], v) for k, v in start.items())

    metrics = json.loads((out / "metrics.json").read_text())
    types = metrics["question_types"]
    assert types == ["regime", "above_freezing", "stellar_flux_range"]
    scores = metrics["test"]["scores"]
    assert set(scores) == {"assistant", "assistant_mean_embedding", "assistant_no_cube_tokens", "base_lm_no_cube_tokens", "cnn_vit", "majority"}
    assert set(scores["cnn_vit"]) == {"regime", "stellar_flux_range"}  # no CNN-ViT head answers "above freezing"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["test"]["test_questions"] == 3 * metrics["test"]["test_windows"]
    for kind in types:  # the scores are those of the written predictions
        mine = [r for r in rows if r["type"] == kind]
        assert scores["majority"][kind]["accuracy"] == pytest.approx(sum(r["majority"] == r["answer"] for r in mine) / len(mine))
        assert scores["assistant"][kind]["parsed"] == pytest.approx(sum(r["assistant"] is not None for r in mine) / len(mine))
    assert scores["majority"]["regime"]["parsed"] == 1.0
    card = (out / "README.md").read_text()
    assert "training majority class" in card and "CNN-ViT heads" in card and "base language model, no cube tokens" in card


def test_release_loads_with_auto_model_and_answers_as_the_recipe_did(pipeline_run, tmp_path):
    """`release_run` of the assistant's run folder carries the projector, adapter/ and encoder/ (no checkpoints) and
    pushes exactly those files (the unchanged huggingface_hub client against tests/hub_server.py, a loopback fake of
    the Hub's API; the real Hub cannot be reached from here); the release, loaded with AutoModel, answers the test
    cubes with the recipe's own test answers."""
    from hub_server import FakeHub

    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.data.streaming import build_window_dataset, collate_windows
    from astrobio_hf.hub.release import release_run

    out = pipeline_run["out"] / "assistant"
    with FakeHub(lifetime_s=60) as hub:
        release = release_run(out, name="planet-assistant", version="0.1.0", output_root=tmp_path / "model_cards",
                              push="astrobio/planet-assistant", endpoint=hub.url, token="hf_fake")
    files = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    assert hub.unexpected == [] and sorted(hub.repos["astrobio/planet-assistant"]["files"]) == files
    assert {"README.md", "config.json", "model.safetensors", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
            "adapter/base_model.json", "adapter/tokenizer.json", "encoder/config.json", "encoder/model.safetensors"} <= set(files)
    assert not any("checkpoint" in f for f in files)
    assert "training majority class" in (release / "README.md").read_text()  # the run card's evaluation, carried over
    assistant = AutoModel.from_pretrained(release)
    assert type(assistant) is PlanetAssistant
    schema = DatasetSchema.from_dir(pipeline_run["planets"])
    context = assistant.components().encoder.config.context_steps
    windows = list(build_window_dataset(pipeline_run["planets"], "test", context_steps=context, stride=1, shuffle_buffer=0, seed=0,
                                        rank=0, world_size=1, schema=schema))
    cube = collate_windows(windows)["inputs"]
    answers = assistant.ask(cube)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(answers) == len(windows)
    for i, w in enumerate(windows):
        for kind in assistant.config.question_types:
            row = next(r for r in rows if r["planet_id"] == w["planet_id"] and r["start"] == int(w["start"])
                       and r["segment"] == int(w["segment"]) and r["type"] == kind)
            assert answers[i][kind]["text"] == row["assistant_text"] and answers[i][kind]["answer"] == row["assistant"]
    with pytest.raises(ValueError, match="expected question types this assistant was trained on"):
        assistant.ask(cube, ["colour"])


def test_missing_projector_is_a_one_line_error():
    from astrobio_hf.recipes.train_planet_assistant import main

    with pytest.raises(ValueError, match="--projector: expected the integration phase's projector folder"):
        main(["--report_to", "none"])
