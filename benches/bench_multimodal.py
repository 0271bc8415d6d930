"""Multi-modal families benchmark: each recipe against a minimal hand-written loop on the same model, data, batch
and optimizer, in one run, printed as ratios (target >= 0.97).

Two parts: the CNN-ViT recipe (`cnn_vit`) and the climate + spectra recipe (`climate_spectra`).

    python benches/bench_multimodal.py [--steps 60] [--rounds 3] [--batch-size 8] [--ablate] [--only cnn_vit|climate_spectra] [--json out.json]

The climate-spectra minimal loop draws the modalities of each batch like the recipe (both, or one of them with
probability `modality_dropout`) and trains on the same non-forecast windows (a window's target frames and spectra).

Both loops do the same work per step on the same batches: forward (loss with the physics terms), backward, AdamW,
and the recipe's longitude-roll augmentation. The recipe adds gradient clipping with the non-finite guard, the
warmup + cosine schedule, EMA, running-loss bookkeeping and tracker logging. Minimal loop and recipe alternate
for `--rounds` rounds and the ratio reported is the median of the per-round ratios, so that a slow spell of a
shared machine hits one round, not one side. `--ablate` also runs the recipe without clipping and EMA
(`--max_grad_norm 0 --ema_decay 0`) to show what those cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.streaming import build_window_dataset, collate_windows
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.evaluation import climate_spectra as cs_eval
from astrobio_hf.evaluation import cnn_vit as cnn_vit_eval
from astrobio_hf.models.climate_spectra import (
    ClimateSpectraConfig,
    ClimateSpectraForMultiTask,
)
from astrobio_hf.models.cnn_vit import CnnVitConfig, CnnVitForParameterRegression
from astrobio_hf.recipes import train_climate_spectra as cs_recipe
from astrobio_hf.recipes import train_cnn_vit as cnn_vit_recipe
from astrobio_hf.training import create_optimizer


def _cnn_vit_kw() -> dict:
    """The model of the recipe's defaults (its ModelArguments), so that both loops train the same network."""
    args = cnn_vit_recipe.ModelArguments()
    names = ("stem_channels", "stem_norm", "stem_downsample", "patch_size", "hidden_size", "num_layers", "num_heads",
             "dropout", "predict_variance")
    return {
        **{n: getattr(args, n) for n in names},
        "log_variables": [n for n in args.log_variables.split(",") if n],
        "physics_weights": json.loads(args.physics_weights),
    }


CNN_VIT_KW = _cnn_vit_kw()


def batches_forever(data_dir, schema, batch_size, context_steps=4, forecast=True):
    """(first batch of an epoch?, batch), epoch after epoch."""
    ds = build_window_dataset(data_dir, "train", context_steps=context_steps, shuffle_buffer=256, seed=0, schema=schema, forecast=forecast)
    dl = DataLoader(ds, batch_size=batch_size, collate_fn=collate_windows)
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        for i, batch in enumerate(dl):
            yield i == 0, batch
        epoch += 1


def cnn_vit_minimal_loop(data_dir, schema, steps, batch_size, warmup=2) -> float:
    """Fetch, forward, backward, AdamW step; samples/s over `steps` steps after `warmup`. Like the recipe's LoopTimer
    (which restarts its clock after the evaluation at each epoch end), a step that starts an epoch (a new iterator
    whose shuffle buffer is filled from the shards) is not counted."""
    torch.manual_seed(0)
    model = CnnVitForParameterRegression(CnnVitConfig.from_schema(schema, context_steps=4, **CNN_VIT_KW)).train()  # regime head from the schema
    optimizer = create_optimizer(model, 2e-3, 1e-4)
    batches = batches_forever(data_dir, schema, batch_size)
    timed, seconds, done = 0, 0.0, 0
    while timed < steps:
        start = time.perf_counter()
        epoch_start, batch = next(batches)
        batch = cnn_vit_recipe.roll_longitude(cnn_vit_eval.model_inputs(batch, torch.device("cpu")))  # with regime labels
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done += 1
        if done > warmup and not epoch_start:
            seconds += time.perf_counter() - start
            timed += 1
    return steps * batch_size / seconds


def cnn_vit_recipe_loop(data_dir, steps, batch_size, workdir, *extra: str) -> float:
    """The recipe in process; its LoopTimer skips two warm-up steps and excludes evaluation and checkpoints."""
    out = Path(workdir) / f"cnn_vit_run_{time.perf_counter_ns()}"
    cnn_vit_recipe.main([
        "--data_dir", str(data_dir), "--output_dir", str(out), "--max_steps", str(steps + 2),
        "--per_device_batch_size", str(batch_size), "--eval_every", "0", "--checkpoint_every", "100000",
        "--report_to", "none", "--resume", "none", "--num_epochs", "1000", "--ema_decay", "0.995", *extra,
    ])
    return json.loads((out / "metrics.json").read_text())["train_throughput"]["samples_per_second"]


def _climate_spectra_config(schema) -> ClimateSpectraConfig:
    """The model of the recipe's defaults (its DataArguments and ModelArguments)."""
    a, d = cs_recipe.ModelArguments(), cs_recipe.DataArguments()
    return ClimateSpectraConfig.from_schema(
        schema, context_steps=d.context_steps, cube_channels=a.cube_channels, hidden_size=a.hidden_size,
        num_fusion_layers=a.num_fusion_layers, norm_groups=a.norm_groups, column_pathway=a.column_pathway, column_hidden_size=a.column_hidden_size,
        loss_mode=a.loss_mode, task_weights=json.loads(a.task_weights), adaptive_temperature=a.adaptive_temperature,
        adaptive_warmup_steps=a.adaptive_warmup_steps, cross_modal_weight=a.cross_modal_weight, consistency_weight=a.consistency_weight,
        smoothness_weight=a.smoothness_weight, physics_warmup_steps=a.physics_warmup_steps,
    )


def climate_spectra_minimal_loop(data_dir, schema, steps, batch_size, warmup=2) -> float:
    """Fetch, draw the modalities, forward, backward, AdamW step; samples/s (epoch-start steps not counted)."""
    torch.manual_seed(0)
    model = ClimateSpectraForMultiTask(_climate_spectra_config(schema)).train()
    optimizer = create_optimizer(model, 2e-3, 1e-4)
    dropout = cs_recipe.ModelArguments().modality_dropout
    batches = batches_forever(data_dir, schema, batch_size, context_steps=cs_recipe.DataArguments().context_steps, forecast=False)
    timed, seconds, done = 0, 0.0, 0
    while timed < steps:
        start = time.perf_counter()
        epoch_start, batch = next(batches)
        inputs = cs_eval.model_inputs(batch, torch.device("cpu"), cs_recipe.draw_modalities(dropout, "cpu"))
        loss = model(**inputs, training_step=done).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done += 1
        if done > warmup and not epoch_start:
            seconds += time.perf_counter() - start
            timed += 1
    return steps * batch_size / seconds


def climate_spectra_recipe_loop(data_dir, steps, batch_size, workdir, *extra: str) -> float:
    """The recipe in process; its LoopTimer skips two warm-up steps and excludes evaluation and checkpoints."""
    out = Path(workdir) / f"climate_spectra_run_{time.perf_counter_ns()}"
    cs_recipe.main([
        "--data_dir", str(data_dir), "--output_dir", str(out), "--max_steps", str(steps + 2),
        "--per_device_batch_size", str(batch_size), "--eval_every", "0", "--checkpoint_every", "100000",
        "--report_to", "none", "--resume", "none", "--num_epochs", "1000", *extra,
    ])
    return json.loads((out / "metrics.json").read_text())["train_throughput"]["samples_per_second"]


PARTS = {
    "cnn_vit": (lambda d, s, n, b: cnn_vit_minimal_loop(d, s, n, b), cnn_vit_recipe_loop),
    "climate_spectra": (lambda d, s, n, b: climate_spectra_minimal_loop(d, s, n, b), climate_spectra_recipe_loop),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ablate", action="store_true", help="also time the recipe without clipping and EMA")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--only", choices=sorted(PARTS), default=None)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "planets"
        if not args.data_dir:
            synthesize_planets(data_dir, n_planets=12, seed=0)  # with spectra, for both parts
        schema = DatasetSchema.from_dir(data_dir)
        for part in [args.only] if args.only else list(PARTS):
            minimal_loop, recipe_loop = PARTS[part]
            rounds = []
            for _ in range(args.rounds):
                minimal = minimal_loop(data_dir, schema, args.steps, args.batch_size)
                recipe = recipe_loop(data_dir, args.steps, args.batch_size, tmp)
                row = {"minimal": minimal, "recipe": recipe, "ratio": recipe / minimal}
                if args.ablate:
                    bare = recipe_loop(data_dir, args.steps, args.batch_size, tmp, "--max_grad_norm", "0", "--ema_decay", "0")
                    row.update(recipe_no_clip_no_ema=bare, ratio_no_clip_no_ema=bare / minimal)
                rounds.append(row)
                print(f"{part} round: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
            summary = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
            results[part] = {
                "minimal_samples_per_second": summary["minimal"], "recipe_samples_per_second": summary["recipe"],
                "ratio": summary["ratio"], "rounds": rounds, "steps": args.steps, "batch_size": args.batch_size,
            }
            if args.ablate:
                results[part]["ratio_no_clip_no_ema"] = summary["ratio_no_clip_no_ema"]
    for part, r in results.items():
        print(f"{part}: recipe {r['recipe_samples_per_second']:.1f} samples/s, minimal loop {r['minimal_samples_per_second']:.1f} "
              f"samples/s, ratio {r['ratio']:.3f} (median of {args.rounds} rounds; target >= 0.97)"
              + (f"; without clipping and EMA {r['ratio_no_clip_no_ema']:.3f}" if "ratio_no_clip_no_ema" in r else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
