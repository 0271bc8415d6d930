"""Causal-graph metrics (structural Hamming distance, directed and skeleton precision / recall / F1), a kernel
two-sample statistic (unbiased squared MMD, Gaussian kernel) and random-DAG helpers.

Graphs are ``(d, d)`` 0/1 numpy arrays with ``A[i, j] = 1`` meaning ``i -> j``. An undirected edge (a CPDAG's
``i - j``, as PC / GES / GIES return) is ``A[i, j] = A[j, i] = 1``; so is a bidirected ``i <-> j`` (PC can return
one when its collider orientations conflict), and both are scored alike.

Conventions (they reproduce the Sachs figures quoted in benches/sachs_peers.py):

* **SHD** counts node pairs ``{i, j}`` whose edge status differs between the two graphs, where a pair's status is
  one of: no edge, ``i -> j``, ``j -> i``, undirected. A missing edge, an extra edge, a reversed edge, and an
  undirected edge where the truth is directed each cost **1** (once per pair, never 2 for a reversal).
* **Directed precision / recall / F1** count edges per node pair: a predicted pair with an edge is one predicted
  edge, whatever its orientation. A predicted directed edge ``i -> j`` is a true positive only if ``i -> j`` is
  true; a predicted **undirected** edge is one predicted edge that is a true positive if *either* direction is a
  true edge (the CPDAG leaves the direction open and the truth is in the equivalence class' choices), so
  ``precision = TP / predicted edges`` and ``recall = TP / true edges``.
* **Skeleton** metrics compare the undirected adjacency (pairs) and ignore orientation.
* ``precision`` is 0 when nothing is predicted, ``recall`` is 0 when the truth has no edge, ``f1`` is 0 when both
  are 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["graph_metrics", "is_dag", "mmd_rbf", "random_dag"]


def _as_adjacency(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) adjacency matrix, got shape {arr.shape}")
    out = (arr != 0).astype(np.int8)
    np.fill_diagonal(out, 0)
    return out


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(precision), float(recall), float(f1)


def graph_metrics(pred, true) -> dict:
    """Compare a predicted graph with the true one (see the module docstring for the conventions).

    Returns ``{"shd", "precision", "recall", "f1", "skeleton_precision", "skeleton_recall", "skeleton_f1",
    "edges", "true_edges"}``; ``edges`` and ``true_edges`` count node pairs with an edge (an undirected edge is one
    edge).
    """
    p = _as_adjacency(pred, "pred")
    t = _as_adjacency(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred and true have different shapes: {p.shape} vs {t.shape}")
    iu, ju = np.triu_indices(p.shape[0], k=1)
    # per pair status: 0 none, 1 i->j, 2 j->i, 3 undirected / bidirected
    p_status = p[iu, ju] + 2 * p[ju, iu]
    t_status = t[iu, ju] + 2 * t[ju, iu]
    shd = int(np.count_nonzero(p_status != t_status))

    p_adj, t_adj = p_status > 0, t_status > 0
    n_pred, n_true = int(p_adj.sum()), int(t_adj.sum())
    # a predicted directed edge matches when the true pair holds that direction (1 & 1, 1 & 3, 2 & 2, 2 & 3);
    # a predicted undirected edge (3) matches any true edge in the pair.
    tp_dir = int(np.count_nonzero(p_adj & t_adj & ((p_status & t_status) > 0)))
    tp_skel = int(np.count_nonzero(p_adj & t_adj))

    precision, recall, f1 = _prf(tp_dir, n_pred, n_true)
    s_precision, s_recall, s_f1 = _prf(tp_skel, n_pred, n_true)
    return {
        "shd": shd,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "skeleton_precision": s_precision,
        "skeleton_recall": s_recall,
        "skeleton_f1": s_f1,
        "edges": n_pred,
        "true_edges": n_true,
    }


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aa = np.einsum("ij,ij->i", a, a)[:, None]
    bb = np.einsum("ij,ij->i", b, b)[None, :]
    return np.maximum(aa + bb - 2.0 * a @ b.T, 0.0)


def mmd_rbf(x, y, bandwidth: float | None = None, *, max_rows: int = 2000, seed: int = 0) -> float:
    """Unbiased estimate of the squared MMD between samples ``x (n, d)`` and ``y (m, d)``, Gaussian kernel
    ``k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))``.

    ``bandwidth`` defaults to the median heuristic: the median pairwise distance of the pooled (subsampled) sample.
    Each sample is subsampled without replacement to at most ``max_rows`` rows with a generator seeded by
    ``seed``, so the value is deterministic. The unbiased estimator can be slightly negative when the two
    distributions agree.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y have different numbers of columns: {x.shape[1]} vs {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("mmd_rbf needs at least 2 rows in each sample")
    rng = np.random.default_rng(seed)
    if len(x) > max_rows:
        x = x[rng.choice(len(x), max_rows, replace=False)]
    if len(y) > max_rows:
        y = y[rng.choice(len(y), max_rows, replace=False)]
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidth is None:
        pooled = np.concatenate([x, y])
        dzz = _sq_dists(pooled, pooled)
        off = dzz[np.triu_indices(len(pooled), k=1)]
        med = float(np.median(np.sqrt(off)))
        bandwidth = med if med > 0 else 1.0
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    gamma = 1.0 / (2.0 * float(bandwidth) ** 2)
    kxx, kyy, kxy = np.exp(-gamma * dxx), np.exp(-gamma * dyy), np.exp(-gamma * dxy)
    n, m = len(x), len(y)
    term_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(term_x + term_y - 2.0 * kxy.mean())


def random_dag(d: int, n_edges: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """A uniformly drawn DAG on ``d`` nodes with exactly ``n_edges`` edges: ``n_edges`` distinct pairs of a random
    node order, each oriented from earlier to later in that order. Returns a ``(d, d)`` int8 0/1 matrix."""
    max_edges = d * (d - 1) // 2
    if not 0 <= n_edges <= max_edges:
        raise ValueError(f"a DAG on {d} nodes has between 0 and {max_edges} edges, asked for {n_edges}")
    rng = np.random.default_rng(rng)
    order = rng.permutation(d)
    iu, ju = np.triu_indices(d, k=1)
    chosen = rng.choice(max_edges, n_edges, replace=False)
    adj = np.zeros((d, d), dtype=np.int8)
    adj[order[iu[chosen]], order[ju[chosen]]] = 1
    return adj


def is_dag(adj) -> bool:
    """True when the directed graph ``adj`` (nonzero = edge, ``adj[i, j]`` meaning ``i -> j``) has no cycle; an
    undirected edge (both directions set) is a 2-cycle, and a self-loop is a cycle."""
    a = np.asarray(adj) != 0
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be square, got shape {a.shape}")
    indeg = a.sum(axis=0).astype(int)
    stack = [int(i) for i in np.flatnonzero(indeg == 0)]
    seen = 0
    while stack:
        i = stack.pop()
        seen += 1
        for j in np.flatnonzero(a[i]):
            indeg[j] -= 1
            if indeg[j] == 0:
                stack.append(int(j))
    return seen == a.shape[0]
