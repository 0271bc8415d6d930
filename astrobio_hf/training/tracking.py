"""Logging helpers: a model summary, device memory, and tracker set-up with the resolved config as JSON."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def setup_logging(accelerator) -> None:
    """INFO on the main process, WARNING elsewhere; library chatter kept at WARNING."""
    level = logging.INFO if accelerator.is_main_process else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    for noisy in ("datasets", "transformers", "diffusers", "urllib3", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def model_summary(model: nn.Module, max_depth: int = 2) -> str:
    """Parameters per block (to `max_depth` levels of module names), then trainable/total."""
    rows: list[tuple[str, int]] = []
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        if 0 < depth <= max_depth:
            count = sum(p.numel() for p in module.parameters())
            if count:
                rows.append((name, count))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max([len(n) for n, _ in rows] + [10])
    lines = [f"{'block':<{width}}  {'params':>12}"]
    lines += [f"{'  ' * n.count('.') + n.split('.')[-1]:<{width}}  {c:>12,}" for n, c in rows]
    lines.append(f"{'trainable / total':<{width}}  {trainable:>12,} / {total:,}")
    return "\n".join(lines)


def device_memory(device: torch.device) -> dict[str, float]:
    """Memory in MiB: CUDA allocated/peak, or the process resident set size on CPU."""
    if device.type == "cuda":
        return {
            "memory/allocated_mib": torch.cuda.memory_allocated(device) / 2**20,
            "memory/peak_mib": torch.cuda.max_memory_allocated(device) / 2**20,
        }
    try:
        with open("/proc/self/statm") as f:
            rss_pages = int(f.read().split()[1])
        return {"memory/rss_mib": rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20}
    except (OSError, ValueError):
        return {}


def init_trackers(accelerator, project_name: str, report_to: str, config: dict[str, Any], output_dir: str) -> None:
    """Start the trackers named in `report_to` with the resolved configuration logged as plain JSON.

    TensorBoard writes under `output_dir/logs`; wandb runs offline unless WANDB_MODE says otherwise
    (these machines have no route to wandb's servers; `wandb sync` uploads later)."""
    names = [n.strip() for n in report_to.split(",") if n.strip() and n.strip() != "none"]
    if "wandb" in names:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", output_dir)
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "run_config.json"), "w") as f:
            json.dump(config, f, indent=2)
    if names:
        # TensorBoard's hparams only take scalars: give it the flat scalar part; wandb gets everything.
        flat = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(project_name, config=flat, init_kwargs={"wandb": {"config": config}} if "wandb" in names else {})


def log_images(accelerator, images: dict[str, Any], step: int) -> None:
    """Send images (PNG paths or HWC arrays) to every tracker of the run: TensorBoard as images, wandb as
    `wandb.Image`s. Called by the main process (the trackers live there)."""
    if not images or not accelerator.trackers:
        return
    import matplotlib.image as mpimg

    arrays = {k: (mpimg.imread(v)[..., :3] if isinstance(v, (str, os.PathLike)) else v) for k, v in images.items()}
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({f"plots/{k}": a[None] for k, a in arrays.items()}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({f"plots/{k}": [a] for k, a in arrays.items()}, step=step)
        else:
            logger.warning("tracker %s: images are not logged to it", tracker.name)


class LoopTimer:
    """Samples per second of the optimizer steps themselves: `pause()` before evaluation or checkpoint
    work makes the next `step()` restart the clock, so that time is not counted; the first
    `skip_steps` steps (allocator and kernel warm-up) are not counted either."""

    def __init__(self, skip_steps: int = 2):
        self.skip_steps, self.steps, self.seconds, self.samples = skip_steps, 0, 0.0, 0
        self._last = None

    def step(self, samples: int) -> None:
        now = time.perf_counter()
        self.steps += 1
        if self._last is not None and self.steps > self.skip_steps:
            self.seconds += now - self._last
            self.samples += samples
        self._last = now

    def pause(self) -> None:
        self._last = None

    def summary(self) -> dict:
        rate = self.samples / self.seconds if self.seconds else float("nan")
        return {"timed_steps": max(0, self.steps - self.skip_steps), "seconds": self.seconds, "samples_per_second": rate}
