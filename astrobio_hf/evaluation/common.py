"""What every family's report shares: the run facts written to metrics.json and how a card names the hardware
and a duration."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def write_metrics_json(output_dir, test, state, *, train_seconds, throughput, run_config, init_origin=None, **extra) -> dict:
    """``output_dir/metrics.json``: everything the test pass computed plus the run facts (steps, time,
    throughput, skipped steps, history, configuration, where the starting weights came from) and the
    family's own ``extra`` keys. Returns the payload."""
    payload = {
        "test": test,
        "global_step": state.global_step,
        "train_seconds": train_seconds,
        "train_throughput": throughput,
        "skipped_steps": state.skipped_steps,
        "history": state.history,
        "config": run_config,
        "init_from": init_origin,  # where the starting weights came from (--init_from), or null
        **({"privacy": state.privacy} if getattr(state, "privacy", None) else {}),  # --dp: epsilon, delta, noise, ...
        **extra,
    }
    (Path(output_dir) / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    return payload


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def machine() -> str:
    """The hardware a run trained on, for the card: GPU name or CPU model and core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, CPU only)"
