"""DP-SGD cost: the private step (Opacus per-sample gradients, clipping, noise) against the non-private step of the
same datacube U-Net on the same batches, side by side in one run, printed as a ratio.

Both run forward, backward and an AdamW step on the same fixed batches of synthetic planet windows; the private
one through `astrobio_hf.training.privacy.make_private` (GradSampleModule hooks, flat clipping, noise multiplier 1).
Peak resident memory is not separated (one process); the per-sample gradients cost batch x parameters floats.

    python benches/bench_privacy.py [--batch-size 16] [--steps 20] [--base-channels 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.streaming import build_window_dataset, collate_windows
from astrobio_hf.data.synth import synthesize_planets
from astrobio_hf.evaluation.datacube import model_inputs
from astrobio_hf.models.datacube_unet import DatacubeUNetConfig, DatacubeUNetForForecast
from astrobio_hf.training.privacy import make_private


def _time_steps(model, optimizer, batches, device) -> float:
    model.train()
    times = []
    for batch in batches:
        inputs = model_inputs(batch, device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    times = times[2:]  # warm-up
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize_planets(tmp, n_planets=12, n_climate_steps=16, n_levels=4, n_lat=16, n_lon=32, seed=0)
        schema = DatasetSchema.from_dir(tmp)
        windows = list(build_window_dataset(tmp, "train", context_steps=4, stride=1, shuffle_buffer=0, seed=0, rank=0, world_size=1, schema=schema))
        loader = DataLoader(windows, batch_size=args.batch_size, collate_fn=collate_windows, shuffle=True, drop_last=True)
        batches = [b for _, b in zip(range(args.steps + 2), iter(loader))]
        while len(batches) < args.steps + 2:
            batches += batches[: args.steps + 2 - len(batches)]
        config = DatacubeUNetConfig.from_schema(schema, context_steps=4, base_channels=args.base_channels, depth=2)
        results = {}
        for name in ("non-private", "DP-SGD"):
            torch.manual_seed(0)
            model = DatacubeUNetForForecast(config)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            if name == "DP-SGD":
                acc = Accelerator(cpu=True)
                model, optimizer, _, _ = make_private(acc, model, optimizer, loader, max_grad_norm=1.0, target_delta=1e-5, noise_multiplier=1.0)
            results[name] = _time_steps(model, optimizer, batches, "cpu")
    n_params = sum(p.numel() for p in DatacubeUNetForForecast(config).parameters())
    ratio = results["DP-SGD"] / results["non-private"]
    print(f"datacube U-Net ({n_params:,} parameters), batch {args.batch_size}, {args.steps} timed steps, {torch.get_num_threads()} threads")
    print("| step | s/step | ratio |\n|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.4f} | {seconds / results['non-private']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds_per_step": results, "ratio": ratio, "parameters": n_params, "batch_size": args.batch_size}, f, indent=2)


if __name__ == "__main__":
    main()
