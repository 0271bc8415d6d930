"""Plots every run writes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_curves(history: list[dict], path: Path, title: str = "Training", ylabel: str = "loss") -> None:
    """Train loss (mean over each logging interval) and validation loss against the optimizer step."""
    train = [(h["step"], h["train/loss"]) for h in history if "train/loss" in h]
    val = [(h["step"], h["val/loss"]) for h in history if "val/loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train (mean over log interval)")
    if val:
        ax.plot(*zip(*val), "o-", label="validation (EMA weights)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
