"""The closed-form ridge baseline the recipes fit in the same run (astrobio_hf.metrics.baselines.fit_ridge)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from astrobio_hf.metrics.baselines import fit_ridge


def _batches(x: np.ndarray, y: np.ndarray, size: int):
    return [{"x": torch.from_numpy(x[i : i + size]), "y": torch.from_numpy(y[i : i + size])} for i in range(0, len(x), size)]


def test_ridge_matches_the_normal_equations_and_picks_alpha_on_validation():
    """Accumulated over batches, the weights equal numpy's solution of (X^T X + alpha s I') W = X^T Y with
    s = mean(diag(X^T X)) and the intercept unpenalised; the alpha with the smallest validation SSE is returned."""
    rng = np.random.default_rng(0)
    n, f, k = 60, 5, 3
    x = np.concatenate([rng.normal(size=(n, f)), np.ones((n, 1))], axis=1)
    w_true = rng.normal(size=(f + 1, k))
    y = x @ w_true + 0.5 * rng.normal(size=(n, k))
    train, val = _batches(x[:40], y[:40], 7), _batches(x[40:], y[40:], 7)
    alphas = (1e-3, 1.0, 100.0)
    result = fit_ridge(train, val, lambda b: b["x"], lambda b: b["y"], Accelerator(cpu=True), alphas=alphas)
    xtx, xty = x[:40].T @ x[:40], x[:40].T @ y[:40]
    penalty = np.eye(f + 1)
    penalty[-1, -1] = 0.0
    solutions = {a: np.linalg.solve(xtx + a * np.diag(xtx).mean() * penalty, xty) for a in alphas}
    val_sse = [float(((x[40:] @ w - y[40:]) ** 2).sum()) for w in solutions.values()]
    assert result["val_sse"] == pytest.approx(val_sse, rel=1e-9)
    best = alphas[int(np.argmin(val_sse))]
    assert result["alpha"] == best
    np.testing.assert_allclose(result["weights"].numpy(), solutions[best], rtol=1e-9, atol=1e-12)
    # a huge penalty shrinks everything but the intercept: predictions tend to the train mean
    flat = fit_ridge(train, val, lambda b: b["x"], lambda b: b["y"], Accelerator(cpu=True), alphas=(1e9,))
    np.testing.assert_allclose(flat["weights"][-1].numpy(), y[:40].mean(0), atol=1e-3)
    np.testing.assert_allclose(flat["weights"][:-1].numpy(), 0.0, atol=1e-4)


def test_ridge_without_training_batches_names_the_problem():
    with pytest.raises(ValueError, match="expected at least one training batch, got none"):
        fit_ridge([], [], lambda b: b["x"], lambda b: b["y"], Accelerator(cpu=True))
