"""Datacube benchmark: side by side in one run, printed as ratios.

1. Training loop: the recipe (Accelerate, EMA, clipping, non-finite guard, logging) against a minimal
   hand-written PyTorch loop on the same model, data, batch and optimizer. Target: ratio >= 0.97.
2. Data pipeline: windows/s the streamed `datasets` loader delivers against windows/s the model consumes
   in training. Target: >= 5x.
3. With --device cuda: throughput, peak memory and model FLOP utilisation for fp32, bf16,
   bf16+channels_last_3d, bf16+torch.compile and bf16+gradient checkpointing.

    python benches/bench_datacube.py [--steps 40] [--batch-size 8] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.streaming import build_window_dataset, collate_windows
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.models.datacube_unet import DatacubeUNetConfig, DatacubeUNetForForecast
from astrobio_hf.recipes import train_datacube as recipe
from astrobio_hf.training import create_optimizer

# Dense bf16 tensor-core peaks (no sparsity), for model FLOP utilisation.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}

MODEL_KW = dict(base_channels=24, depth=2, physics_weights={"hydrostatic": 0.05, "ideal_gas": 0.05, "lapse_rate": 0.05})


def loader(data_dir, schema, batch_size, shuffle_buffer=256, seed=0):
    ds = build_window_dataset(data_dir, "train", context_steps=4, shuffle_buffer=shuffle_buffer, seed=seed, schema=schema)
    return DataLoader(ds, batch_size=batch_size, collate_fn=collate_windows)


def batches_forever(dl):
    epoch = 0
    while True:
        dl.dataset.set_epoch(epoch)
        yield from dl
        epoch += 1


def to_device(batch, device):
    keys = ("inputs", "labels", "planet_params", "gravity", "gas_constant", "heat_capacity", "planet_radius")
    return {k: batch[k].to(device, non_blocking=True) for k in keys}


def minimal_loop(data_dir, schema, steps, batch_size, device, warmup=2, autocast_dtype=None, channels_last=False,
                 compile_model=False, checkpointing=False):
    """The plain PyTorch loop: forward, backward, AdamW step. Returns samples/s, peak MiB, FLOPs/sample."""
    torch.manual_seed(0)
    config = DatacubeUNetConfig.from_schema(schema, context_steps=4, **MODEL_KW)
    model = DatacubeUNetForForecast(config).to(device)
    if checkpointing:
        model.activation_checkpointing_enable()
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = create_optimizer(model, 2e-3, 1e-4)
    step_fn = torch.compile(model) if compile_model else model
    batches = batches_forever(loader(data_dir, schema, batch_size))
    flops = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        batch = to_device(next(batches), device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if flops is None and not compile_model:
                with FlopCounterMode(display=False) as counter:
                    loss = step_fn(**batch).loss
                    loss.backward()
                flops = counter.get_total_flops() / batch_size
            else:
                loss = step_fn(**batch).loss
                loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"samples_per_second": steps * batch_size / seconds, "peak_mib": peak, "flops_per_sample": flops}


def recipe_loop(data_dir, steps, batch_size, workdir):
    """The recipe itself, in process, on the same data and batch; its LoopTimer excludes evaluation and
    checkpoint time and the first two steps (the minimal loop skips two warm-up steps too)."""
    out = Path(workdir) / "recipe_run"
    recipe.main([
        "--data_dir", str(data_dir), "--output_dir", str(out), "--max_steps", str(steps + 2),
        "--per_device_batch_size", str(batch_size), "--eval_every", "0", "--checkpoint_every", "100000",
        "--report_to", "none", "--base_channels", str(MODEL_KW["base_channels"]), "--depth", str(MODEL_KW["depth"]),
        "--resume", "none", "--num_epochs", "1000",
    ])
    return json.loads((out / "metrics.json").read_text())["train_throughput"]


def data_pipeline(data_dir, schema, batches, batch_size):
    dl = loader(data_dir, schema, batch_size)
    it = batches_forever(dl)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default="data/synthetic")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    data_dir = Path(args.data_dir)
    if not (data_dir / "schema.json").is_file():
        synthesize_planets(data_dir, seed=0)
    schema = DatasetSchema.from_dir(data_dir)
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{os.cpu_count()} (torch threads {torch.get_num_threads()})"}

    # 1. Recipe against the minimal loop (CPU recipe run; on CUDA the accelerate config decides).
    minimal = minimal_loop(data_dir, schema, args.steps, args.batch_size, device)
    with tempfile.TemporaryDirectory() as tmp:
        rec = recipe_loop(data_dir, args.steps, args.batch_size, tmp)
    results["minimal_samples_per_second"] = minimal["samples_per_second"]
    results["recipe_samples_per_second"] = rec["samples_per_second"]
    results["recipe_over_minimal"] = rec["samples_per_second"] / minimal["samples_per_second"]

    # 2. Data pipeline against consumption.
    pipeline = data_pipeline(data_dir, schema, max(20, args.steps), args.batch_size)
    results["pipeline_windows_per_second"] = pipeline
    results["pipeline_over_consumption"] = pipeline / minimal["samples_per_second"]

    print(f"device: {results['device']}; batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'training loop':<34}{'samples/s':>12}")
    print(f"{'minimal PyTorch loop':<34}{minimal['samples_per_second']:>12.2f}")
    print(f"{'recipe (Accelerate)':<34}{rec['samples_per_second']:>12.2f}")
    print(f"ratio recipe/minimal: {results['recipe_over_minimal']:.3f}   (target >= 0.97)")
    print(f"data pipeline: {pipeline:.1f} windows/s; ratio pipeline/consumption: {results['pipeline_over_consumption']:.1f}x   (target >= 5x)")

    # 3. GPU variants.
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), float("nan")) * 1e12
        variants = {
            "fp32": {},
            "bf16": {"autocast_dtype": torch.bfloat16},
            "bf16 + channels_last_3d": {"autocast_dtype": torch.bfloat16, "channels_last": True},
            "bf16 + torch.compile": {"autocast_dtype": torch.bfloat16, "compile_model": True},
            "bf16 + gradient checkpointing": {"autocast_dtype": torch.bfloat16, "checkpointing": True},
        }
        flops = minimal["flops_per_sample"]
        print(f"\n{'variant':<32}{'samples/s':>12}{'vs fp32':>9}{'peak MiB':>10}{'MFU':>8}")
        base = None
        results["variants"] = {}
        for label, kw in variants.items():
            r = minimal_loop(data_dir, schema, args.steps, args.batch_size, device, **kw)
            base = base or r["samples_per_second"]
            mfu = r["samples_per_second"] * flops / peak if flops else float("nan")
            results["variants"][label] = {**r, "mfu": mfu}
            print(f"{label:<32}{r['samples_per_second']:>12.1f}{r['samples_per_second'] / base:>9.2f}{r['peak_mib']:>10.0f}{mfu:>8.2%}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
