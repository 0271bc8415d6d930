"""Language-model family: a pretrained causal LM with PEFT LoRA / QLoRA adapters (see `loading`)."""

from .loading import (
    DEFAULT_BASE_MODEL,
    DEFAULT_TARGET_MODULES,
    QUANTIZATIONS,
    add_lora,
    base_model_card_id,
    check_4bit_supported,
    disable_cpu_inference_repack,
    load_adapter_release,
    load_base_model,
    load_tokenizer,
    resolve_base_model,
    save_adapter_release,
    trainable_state_only,
)

__all__ = [
    "DEFAULT_BASE_MODEL", "DEFAULT_TARGET_MODULES", "QUANTIZATIONS", "add_lora", "base_model_card_id", "check_4bit_supported",
    "disable_cpu_inference_repack", "load_adapter_release", "load_base_model", "load_tokenizer", "resolve_base_model",
    "save_adapter_release", "trainable_state_only",
]
