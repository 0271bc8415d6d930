"""Closed-form baselines that the recipes fit in the same run as the model they compare against.

Written by hand because none of the stack's libraries has a distributed, streaming ridge regression: the fit needs
only the sufficient statistics X^T X and X^T Y, which every process accumulates over its shard of the data and
`accelerator.reduce` sums, so every process solves the same system (no sklearn, which is not installed, and which
would need all rows on one process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch

logger = logging.getLogger(__name__)

RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@torch.no_grad()
def fit_ridge(
    train_batches: Iterable,
    val_batches: Iterable,
    features: Callable[[dict], torch.Tensor],
    targets: Callable[[dict], torch.Tensor],
    accelerator,
    alphas: tuple[float, ...] = RIDGE_ALPHAS,
    name: str = "ridge",
) -> dict:
    """Ridge regression of `targets(batch)` (N, K) on `features(batch)` (N, F), whose last column must be the
    constant 1 (the intercept, not penalised). The penalty is `alpha * mean(diag(X^T X))` for every alpha in
    `alphas`; the alpha with the smallest validation sum of squared errors wins.

    Returns `{"alpha": float, "weights": (F, K) float64 tensor, "val_sse": list[float]}` (the same on every process).
    """
    xtx = xty = None
    for batch in train_batches:
        x, y = features(batch).double(), targets(batch).double()
        xtx = x.T @ x if xtx is None else xtx + x.T @ x
        xty = x.T @ y if xty is None else xty + x.T @ y
    if xtx is None:
        raise ValueError(f"{name}: expected at least one training batch, got none")
    xtx, xty = accelerator.reduce(xtx, reduction="sum"), accelerator.reduce(xty, reduction="sum")
    eye = torch.eye(xtx.shape[0], dtype=xtx.dtype, device=xtx.device)
    eye[-1, -1] = 0.0  # no penalty on the intercept
    scale = xtx.diagonal().mean()
    weights = {a: torch.linalg.solve(xtx + a * scale * eye, xty) for a in alphas}
    sse = torch.zeros(len(alphas), dtype=torch.float64, device=xtx.device)
    for batch in val_batches:
        x, y = features(batch).double(), targets(batch).double()
        sse += torch.stack([((x @ w - y) ** 2).sum() for w in weights.values()])
    sse = accelerator.reduce(sse, reduction="sum")
    best = alphas[int(torch.argmin(sse))]
    logger.info("%s baseline: alpha %g (validation SSE %s)", name, best, [f"{v:.3g}" for v in sse.tolist()])
    return {"alpha": best, "weights": weights[best], "val_sse": sse.tolist()}


__all__ = ["RIDGE_ALPHAS", "fit_ridge"]
