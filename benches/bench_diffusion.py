"""Diffusion benchmark: side by side in one run, printed as ratios.

1. Training throughput: the recipe (Accelerate, EMA, min-SNR weights, CFG dropout, guard, logging)
   against a minimal plain diffusers + PyTorch loop (DDPMScheduler.add_noise, v target, MSE, AdamW) on the
   same denoiser, data and batch. Target: ratio >= 1.0.
2. Quality per network evaluation on a trained run: DPM-Solver++ and UniPC at 20 steps against DDPM at
   1000 steps, same model, same seeds, same held-out planets. Target: conditional error and EOF Frechet
   distance within 5% of DDPM's at 50x fewer evaluations.

    python benches/bench_diffusion.py [--run-dir runs/diffusion] [--steps 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.frames import build_frame_dataset, collate_frames
from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.diffusion.evaluation import evaluate_run
from astrobio_hf.diffusion.schedulers import make_scheduler
from astrobio_hf.models.climate_diffusion import ClimateDiffusionConfig, ClimateDiffusionModel
from astrobio_hf.recipes import train_diffusion as recipe
from astrobio_hf.training import create_optimizer

BLOCKS = "32,64,128"  # the recipe defaults
LAYERS_PER_BLOCK = 2


def minimal_loop(data_dir, schema, steps: int, batch_size: int, warmup: int = 2) -> float:
    """Frames/s of the plainest correct loop on the same model and data."""
    torch.manual_seed(0)
    config = ClimateDiffusionConfig.from_schema(
        schema, level_indices=[0], block_out_channels=[int(c) for c in BLOCKS.split(",")], layers_per_block=LAYERS_PER_BLOCK,
        num_class_labels=len(schema.geological_time_values), prediction_type="v_prediction",
    )
    model = ClimateDiffusionModel(config)
    scheduler = make_scheduler("ddpm", prediction_type="v_prediction", zero_terminal_snr=True)
    optimizer = create_optimizer(model, 1e-3, 1e-4)
    loader = DataLoader(build_frame_dataset(data_dir, "train", shuffle_buffer=512, schema=schema), batch_size=batch_size,
                        collate_fn=partial(collate_frames, level_indices=[0]))
    batches, epoch, frames = iter(loader), 0, 0
    for i in range(warmup + steps):
        try:
            batch = next(batches)
        except StopIteration:
            epoch += 1
            loader.dataset.set_epoch(epoch)
            batches = iter(loader)
            batch = next(batches)
        if i == warmup:
            start, frames = time.perf_counter(), 0
        clean = model.normalize(batch["fields"])
        noise = torch.randn_like(clean)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],))
        noisy = scheduler.add_noise(clean, noise, t)
        out = model(sample=noisy, timestep=t, planet_params=batch["planet_params"], class_labels=batch["class_labels"],
                    target=scheduler.get_velocity(clean, noise, t))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        frames += clean.shape[0]
    return frames / (time.perf_counter() - start)


def recipe_loop(data_dir, steps: int, batch_size: int, workdir) -> float:
    out = Path(workdir) / "recipe"
    result = recipe.main([
        "--data_dir", str(data_dir), "--output_dir", str(out), "--max_steps", str(steps + 2), "--per_device_batch_size",
        str(batch_size), "--block_out_channels", BLOCKS, "--layers_per_block", str(LAYERS_PER_BLOCK), "--report_to", "none", "--checkpoint_every", "100000",
        "--num_epochs", "1000", "--resume", "none",
    ])
    return result["train_throughput"]["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/diffusion", help="a trained run (trained with the defaults if missing)")
    parser.add_argument("--data-dir", default="data/synthetic")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--samples-per-condition", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data_dir = Path(args.data_dir)
    if not (data_dir / "schema.json").is_file():
        synthesize_planets(data_dir, seed=0)
    schema = DatasetSchema.from_dir(data_dir)
    results: dict = {}

    # 1. Training throughput.
    minimal = minimal_loop(data_dir, schema, args.steps, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        rec = recipe_loop(data_dir, args.steps, args.batch_size, tmp)
    results.update(minimal_frames_per_second=minimal, recipe_frames_per_second=rec, recipe_over_minimal=rec / minimal)
    print(f"training: minimal diffusers loop {minimal:.1f} frames/s, recipe {rec:.1f} frames/s, "
          f"ratio {rec / minimal:.3f} (target >= 1.0)")

    # 2. Quality per network evaluation.
    run_dir = Path(args.run_dir)
    if not (run_dir / "pipeline" / "model_index.json").is_file():
        recipe.main(["--data_dir", str(data_dir), "--output_dir", str(run_dir), "--report_to", "none"])
    common = dict(guidance_scales=(1.0,), samples_per_condition=args.samples_per_condition, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        ddpm = evaluate_run(run_dir, samplers=("ddpm",), steps=(1000,), out_dir=Path(tmp) / "ddpm", **common)[0]
        fast = evaluate_run(run_dir, samplers=("dpmsolver++", "unipc"), steps=(20,), out_dir=Path(tmp) / "fast", **common)
    print(f"\n{'sampler':<14}{'NFE':>6}{'cond. error':>13}{'EOF-FD':>10}{'vs DDPM cond':>14}{'vs DDPM FD':>12}{'s/sample':>10}")
    rows = [ddpm, *fast]
    results["quality"] = []
    for r in rows:
        rel_c = r["conditional_error"] / ddpm["conditional_error"]
        rel_f = r["frechet_distance"] / ddpm["frechet_distance"]
        results["quality"].append({k: r[k] for k in ("sampler", "num_inference_steps", "conditional_error", "frechet_distance", "seconds_per_sample")}
                                  | {"conditional_error_vs_ddpm": rel_c, "frechet_distance_vs_ddpm": rel_f})
        print(f"{r['sampler']:<14}{r['num_inference_steps']:>6}{r['conditional_error']:>13.4f}{r['frechet_distance']:>10.3f}"
              f"{rel_c:>14.3f}{rel_f:>12.3f}{r['seconds_per_sample']:>10.4f}")
    print("target: 20-step samplers within 5% of DDPM-1000 (ratios <= 1.05)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
