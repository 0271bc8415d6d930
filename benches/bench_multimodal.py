"""Multi-modal families benchmark: each recipe against a minimal hand-written loop on the same model, data, batch
and optimizer, in one run, printed as ratios (target >= 0.97).

This file holds the CNN-ViT part (`cnn_vit`); the climate-spectra part is added beside it by its owner.

    python benches/bench_multimodal.py [--steps 30] [--batch-size 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.streaming import build_window_dataset, collate_windows
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.models.cnn_vit import CnnVitConfig, CnnVitForParameterRegression
from astrobio_hf.recipes import train_cnn_vit as cnn_vit_recipe
from astrobio_hf.training import create_optimizer

CNN_VIT_KW = {"stem_channels": 32, "stem_downsample": 1, "patch_size": 2, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
              "physics_weights": {"cross_scale": 0.1, "ideal_gas": 0.05, "hydrostatic": 0.05}}


def batches_forever(data_dir, schema, batch_size):
    ds = build_window_dataset(data_dir, "train", context_steps=4, shuffle_buffer=256, seed=0, schema=schema)
    dl = DataLoader(ds, batch_size=batch_size, collate_fn=collate_windows)
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        yield from dl
        epoch += 1


def cnn_vit_minimal_loop(data_dir, schema, steps, batch_size, warmup=2) -> float:
    """Forward, backward, AdamW step; samples/s after `warmup` steps."""
    torch.manual_seed(0)
    model = CnnVitForParameterRegression(CnnVitConfig.from_schema(schema, context_steps=4, **CNN_VIT_KW)).train()
    optimizer = create_optimizer(model, 2e-3, 1e-4)
    batches = batches_forever(data_dir, schema, batch_size)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        batch = next(batches)
        loss = model(inputs=batch["inputs"], labels=batch["planet_params"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch_size / (time.perf_counter() - start)


def cnn_vit_recipe_loop(data_dir, steps, batch_size, workdir) -> float:
    """The recipe in process; its LoopTimer skips two warm-up steps and excludes evaluation and checkpoints."""
    out = Path(workdir) / "cnn_vit_run"
    cnn_vit_recipe.main([
        "--data_dir", str(data_dir), "--output_dir", str(out), "--max_steps", str(steps + 2),
        "--per_device_batch_size", str(batch_size), "--eval_every", "0", "--checkpoint_every", "100000",
        "--report_to", "none", "--resume", "none", "--num_epochs", "1000", "--ema_decay", "0.995",
    ])
    return json.loads((out / "metrics.json").read_text())["train_throughput"]["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "planets"
        if not args.data_dir:
            synthesize_planets(data_dir, n_planets=12, seed=0)
        schema = DatasetSchema.from_dir(data_dir)
        minimal = cnn_vit_minimal_loop(data_dir, schema, args.steps, args.batch_size)
        recipe = cnn_vit_recipe_loop(data_dir, args.steps, args.batch_size, tmp)
    results = {"cnn_vit": {"minimal_samples_per_second": minimal, "recipe_samples_per_second": recipe, "ratio": recipe / minimal}}
    print(f"cnn_vit: recipe {recipe:.1f} samples/s, minimal loop {minimal:.1f} samples/s, ratio {recipe / minimal:.3f} (target >= 0.97)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
