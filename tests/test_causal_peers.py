"""Causal-discovery peers (astrobio_hf.evaluation.causal_peers): recovery of a small linear SCM, the baselines,
failure reporting and the method-name check. MLP peers are exercised with a tiny iteration budget only."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("causallearn")
pytest.importorskip("dagma")

from astrobio_hf.evaluation.causal_peers import (  # noqa: E402
    METHODS,
    _causallearn_to_adjacency,
    notears_linear,
    notears_mlp,
    run_peers,
)
from astrobio_hf.metrics.graphs import is_dag  # noqa: E402

# 0 -> 2 <- 1 (collider), 2 -> 3 (chain), 2 -> 4 <- 1 (fork at 2): the collider orients every other edge (Meek
# rules 1 and 2), so the CPDAG is the DAG itself and observational PC can recover it exactly
EDGES = [(0, 2), (1, 2), (2, 3), (2, 4), (1, 4)]
D = 5
WEIGHTS = (-1.06, -1.0, 0.75, 0.44, 0.92)
NOISE = (0.32, 0.38, 0.67, 0.41, 0.71)  # unequal noise standard deviations


def _simulate(rng, n: int, do: int | None = None) -> np.ndarray:
    w = np.zeros((D, D))
    for (i, j), s in zip(EDGES, WEIGHTS):
        w[i, j] = s
    scale = np.array(NOISE)
    x = np.zeros((n, D))
    for j in range(D):  # 0..4 is a topological order
        if j == do:  # do(X_j = N(1, 2^2)): cut from its parents
            x[:, j] = 1.0 + 2.0 * rng.standard_normal(n)
        else:
            x[:, j] = x @ w[:, j] + scale[j] * rng.standard_normal(n)
    return x


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def _true() -> np.ndarray:
    a = np.zeros((D, D), dtype=int)
    for i, j in EDGES:
        a[i, j] = 1
    return a


def _scm(n: int = 1000, seed: int = 0):
    return _standardise(_simulate(np.random.default_rng(seed), n)), _true()


@pytest.fixture(scope="module")
def data():
    return _scm()


def test_pc_and_dagma_linear_recover_the_graph(data):
    x, true = data
    rows = {r["method"]: r for r in run_peers(x, true, methods=["pc", "dagma_linear"])}
    for m in ("pc", "dagma_linear"):
        r = rows[m]
        assert r["status"] == "ok", r["status"]
        assert r["shd"] <= 2, (m, r["shd"], r["graph"])
        assert np.asarray(r["graph"]).shape == (D, D)
        assert r["seconds"] >= 0
        assert {"precision", "recall", "f1", "skeleton_f1", "edges", "true_edges"} <= set(r)
    # the collider 0 -> 2 <- 1 is identifiable from observational data: PC orients it
    g = np.asarray(rows["pc"]["graph"])
    assert g[0, 2] == 1 and g[2, 0] == 0 and g[1, 2] == 1 and g[2, 1] == 0


def test_baselines(data):
    x, true = data
    empty, rnd = run_peers(x, true, methods=["empty", "random"], random_repeats=5, seed=3)
    assert empty["status"] == "ok" and empty["shd"] == len(EDGES) and empty["edges"] == 0
    assert rnd["status"] == "ok" and rnd["repeats"] == 5
    g = np.asarray(rnd["graph"])
    assert is_dag(g) and g.sum() == len(EDGES)
    assert {"shd", "shd_std", "f1", "f1_std", "skeleton_f1", "skeleton_f1_std"} <= set(rnd)
    assert rnd["shd_std"] >= 0
    again = run_peers(x, true, methods=["random"], random_repeats=5, seed=3)[0]
    assert again["shd"] == rnd["shd"] and again["graph"] == rnd["graph"]  # seeded


def test_failures_are_reported_and_the_rest_runs(data):
    x, true = data
    rows = run_peers(x, true, methods=["gies", "cdnod", "empty"])
    assert [r["method"] for r in rows] == ["gies", "cdnod", "empty"]
    for r in rows[:2]:
        assert r["status"].startswith("failed: ") and "regimes" in r["status"] and "\n" not in r["status"]
        assert r["graph"] is None and r["shd"] is None
    assert rows[2]["status"] == "ok"
    # random without the truth fails; no metric keys without the truth
    rnd, empty = run_peers(x, None, methods=["random", "empty"])
    assert rnd["status"].startswith("failed: ") and "true_adj" in rnd["status"]
    assert empty["status"] == "ok" and "shd" not in empty
    # unknown targets: gies is skipped with the reason
    regimes = np.repeat([0, 1], len(x) // 2)
    r = run_peers(x, true, methods=["gies"], regimes=regimes, regime_targets={0: []})[0]
    assert r["status"].startswith("failed: ") and "unknown" in r["status"]
    # a spent budget skips what is left
    r = run_peers(x, true, methods=["empty"], max_seconds=-1)[0]
    assert r["status"].startswith("failed: ") and "budget" in r["status"]


def test_interventional_peers():
    pytest.importorskip("gies")
    rng = np.random.default_rng(1)
    x = _standardise(np.concatenate([_simulate(rng, 600), _simulate(rng, 600, do=2)]))
    regimes = np.repeat([0, 1], 600)
    rows = {r["method"]: r for r in run_peers(x, _true(), methods=["gies", "cdnod"], regimes=regimes,
                                              regime_targets={"0": [], "1": [2]})}  # str keys work too
    for m in ("gies", "cdnod"):
        assert rows[m]["status"] == "ok", rows[m]["status"]
        assert np.asarray(rows[m]["graph"]).shape == (D, D)  # cdnod's context node is dropped
    assert rows["gies"]["shd"] <= 1, rows["gies"]["graph"]
    # CD-NOD: the context points at the intervened X2, which orients X2's outgoing edges (Fisher-z on the pooled
    # mixture misses weakened edges into X2, so only a loose bound on the rest)
    g = np.asarray(rows["cdnod"]["graph"])
    assert g[2, 3] == 1 and g[3, 2] == 0 and g[2, 4] == 1 and g[4, 2] == 0, g
    assert rows["cdnod"]["shd"] <= 3, g


def test_mlp_peers_run_with_tiny_budgets(data):
    x, true = data
    rows = run_peers(x[:300], true, methods=["dagma_mlp"], mlp_iterations=50)
    assert rows[0]["status"] == "ok", rows[0]["status"]
    assert np.asarray(rows[0]["graph"]).shape == (D, D)


def test_notears_mlp_one_dual_step(data):
    x, _ = data
    w = notears_mlp(x[:200], max_iter=1, seed=0)
    assert w.shape == (D, D) and np.all(np.diag(w) == 0)
    assert np.all((w == 0) | (w >= 0.3))


def test_torch_state_is_restored(data):
    torch = pytest.importorskip("torch")
    x, true = data
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    run_peers(x[:200], true, methods=["dagma_mlp"], mlp_iterations=20)
    assert torch.get_num_threads() == threads and torch.get_default_dtype() == dtype


def test_unknown_method_names_the_choices(data):
    x, true = data
    with pytest.raises(ValueError, match="unknown peer method") as e:
        run_peers(x, true, methods=["pc", "fci"])
    for m in METHODS:
        assert m in str(e.value)


def test_causallearn_endpoint_conversion():
    g = np.zeros((4, 4), dtype=int)
    g[0, 1], g[1, 0] = -1, 1  # 0 -> 1
    g[1, 2] = g[2, 1] = -1  # 1 - 2
    g[2, 3] = g[3, 2] = 1  # 2 <-> 3
    a = _causallearn_to_adjacency(g)
    expected = np.zeros((4, 4), dtype=int)
    expected[0, 1] = 1
    expected[1, 2] = expected[2, 1] = 1
    expected[2, 3] = expected[3, 2] = 1
    np.testing.assert_array_equal(a, expected)


def test_notears_linear_returns_a_thresholded_dag(data):
    x, true = data
    w = notears_linear(x)
    assert is_dag(w != 0)
    assert np.all((w == 0) | (np.abs(w) >= 0.3))
    # its lambda1 0.1 (the reference setting) shrinks weak edges: most of the graph, never a dense one
    r = run_peers(x, true, methods=["notears_linear"])[0]
    assert r["status"] == "ok" and r["shd"] <= 3 and r["skeleton_f1"] >= 0.6, r
