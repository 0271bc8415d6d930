"""Causal-discovery peers run on the same standardised table as a learned causal model, so both are scored in the
same run with :func:`astrobio_hf.metrics.graphs.graph_metrics`.

Observational peers (:data:`PEERS_OBSERVATIONAL`): PC and GES (causal-learn; Fisher-z at alpha 0.05, BIC),
DirectLiNGAM (lingam), NOTEARS linear and NOTEARS-MLP (Zheng et al. 2018 / 2020, implemented here: no installed
package ships NOTEARS), DAGMA linear and DAGMA-MLP (dagma). Interventional peers (:data:`PEERS_INTERVENTIONAL`):
GIES (gies; needs the rows' regimes and every regime's intervention targets) and CD-NOD (causal-learn; the regime
index is the context variable). Baselines (:data:`BASELINES`): the empty graph and random DAGs with the true number of
edges.

Graphs are ``(d, d)`` 0/1 matrices with ``A[i, j] = 1`` meaning ``i -> j``; an undirected CPDAG edge ``i - j`` (PC,
GES, GIES, CD-NOD) or a bidirected one (PC with conflicting collider orientations) is ``A[i, j] = A[j, i] = 1``, which
:func:`graph_metrics` scores as "either direction".

Settings, as published by each method's authors unless noted: PC / CD-NOD alpha 0.05 Fisher-z; GES / GIES BIC;
DirectLiNGAM pwling (its adaptive-lasso pruning decides the edges); NOTEARS linear lambda1 0.1, w_threshold 0.3;
NOTEARS-MLP hidden 10, lambda1 0.01, lambda2 0.01, w_threshold 0.3, at most :data:`NOTEARS_MLP_MAX_OUTER` dual-ascent
steps; DAGMA linear l2 loss, lambda1 0.02, w_threshold 0.3; DAGMA-MLP hidden 10, lambda1 0.02, lambda2 0.005, T 4,
``warm_iter = mlp_iterations`` and ``max_iter = 1.6 * mlp_iterations`` Adam steps (the package's defaults, 5e4 /
8e4, are 2.5x the steps of :data:`DEFAULT_MLP_ITERATIONS` = 2e4, which takes 2 min on Sachs' 11 variables x 853 rows
on 2 CPU cores; 1e4 and 1.5e4 gave the same graph there). Both MLP peers run with one torch thread.

``x`` is used as given (already standardised by the caller); every peer gets its own copy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from astrobio_hf.metrics.graphs import graph_metrics, random_dag

__all__ = [
    "BASELINES", "DEFAULT_MLP_ITERATIONS", "METHODS", "PEERS_INTERVENTIONAL", "PEERS_OBSERVATIONAL", "notears_linear",
    "notears_mlp", "run_peers",
]

logger = logging.getLogger(__name__)

PEERS_OBSERVATIONAL = ("pc", "ges", "direct_lingam", "notears_linear", "notears_mlp", "dagma_linear", "dagma_mlp")
PEERS_INTERVENTIONAL = ("gies", "cdnod")
BASELINES = ("empty", "random")
METHODS = PEERS_OBSERVATIONAL + PEERS_INTERVENTIONAL + BASELINES

DEFAULT_MLP_ITERATIONS = 20_000  # DAGMA-MLP warm_iter (max_iter is 1.6x): 2 min on Sachs (11 x 853), 2 cores
NOTEARS_MLP_MAX_OUTER = 20  # dual-ascent steps of NOTEARS-MLP (the reference allows 100; it stops at h <= 1e-8)
_METRIC_KEYS = ("shd", "precision", "recall", "f1", "skeleton_precision", "skeleton_recall", "skeleton_f1")


# ------------------------------------------------------------------------------------------------ helpers
def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _causallearn_to_adjacency(g: np.ndarray) -> np.ndarray:
    """causal-learn's endpoint matrix (``G[i, j]`` is the mark at ``i`` of the edge ``i - j``: -1 tail, 1 arrow;
    ``G[j, i] = 1, G[i, j] = -1`` is ``i -> j``; both -1 undirected, both 1 bidirected) -> our adjacency."""
    g = np.asarray(g)
    present = (g != 0) & (g.T != 0)
    adj = present & ~((g == 1) & (g.T == -1))  # i -> j unless the arrow points at i from a tail at j
    adj = adj.astype(np.int8)
    np.fill_diagonal(adj, 0)
    return adj


def _weights_to_adjacency(w: np.ndarray) -> np.ndarray:
    adj = (np.asarray(w) != 0).astype(np.int8)
    np.fill_diagonal(adj, 0)
    return adj


@contextlib.contextmanager
def _quiet_tqdm(*modules):
    """dagma draws a tqdm bar per fit; silence it for the duration."""
    from functools import partial

    saved = [m.tqdm for m in modules]
    try:
        for m, t in zip(modules, saved):
            m.tqdm = partial(t, disable=True)
        yield
    finally:
        for m, t in zip(modules, saved):
            m.tqdm = t


@contextlib.contextmanager
def _torch_threads(n: int):
    """Run with ``n`` torch threads: the MLP peers' tensors are small (n x 10 d), and with more threads than free
    cores torch's thread pool slows each step several-fold (measured: 2 threads on 2 busy cores, 10x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _torch_state():
    """Restore torch's thread count and default dtype (dagma sets float64 as the default) after a method."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        yield
        return
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)


def _split_regimes(regimes, regime_targets, d: int, method: str):
    """Unique regimes (sorted) and each one's intervened variable indices; ValueError naming what is missing."""
    if regimes is None:
        raise ValueError(f"{method} needs the rows' regimes (regimes=None)")
    labels = np.unique(regimes)
    if regime_targets is None:
        return labels, None
    targets, unknown = [], []
    for r in labels:
        key = r.item() if hasattr(r, "item") else r
        t = regime_targets.get(key, regime_targets.get(str(key)))
        if not isinstance(t, (list, tuple, np.ndarray)):
            unknown.append(key)
            continue
        t = [int(v) for v in t]
        bad = [v for v in t if not 0 <= v < d]
        if bad:
            raise ValueError(f"regime {key!r} targets variable indices {bad} outside [0, {d})")
        targets.append(sorted(set(t)))
    if unknown:
        raise ValueError(f"{method} needs every regime's intervention targets; unknown for regime(s) {unknown}")
    return labels, targets


# ------------------------------------------------------------------------------------------------ NOTEARS
def notears_linear(x: np.ndarray, lambda1: float = 0.1, *, max_iter: int = 100, h_tol: float = 1e-8,
                   rho_max: float = 1e16, w_threshold: float = 0.3) -> np.ndarray:
    """NOTEARS, linear SEM with least-squares loss (Zheng et al. 2018, the authors' reference algorithm): augmented
    Lagrangian on ``h(W) = tr(exp(W o W)) - d``, each subproblem by L-BFGS-B on ``W = W+ - W-`` (both >= 0, zero
    diagonal) so the L1 penalty is smooth. Returns the thresholded weighted adjacency ``W[i, j]`` for ``i -> j``."""
    import scipy.linalg as sla
    import scipy.optimize as sopt

    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    x = x - x.mean(axis=0, keepdims=True)

    def _adj(w):
        return (w[: d * d] - w[d * d:]).reshape(d, d)

    def _h(w_mat):
        e = sla.expm(w_mat * w_mat)
        return float(np.trace(e) - d), e.T * w_mat * 2

    def _func(w, rho, alpha):
        w_mat = _adj(w)
        r = x - x @ w_mat
        loss = 0.5 / n * float((r ** 2).sum())
        g_loss = -1.0 / n * x.T @ r
        h, g_h = _h(w_mat)
        obj = loss + 0.5 * rho * h * h + alpha * h + lambda1 * w.sum()
        g_smooth = g_loss + (rho * h + alpha) * g_h
        return obj, np.concatenate((g_smooth + lambda1, -g_smooth + lambda1), axis=None)

    bounds = [(0, 0) if i == j else (0, None) for _ in range(2) for i in range(d) for j in range(d)]
    w_est, rho, alpha, h = np.zeros(2 * d * d), 1.0, 0.0, np.inf
    for _ in range(max_iter):
        w_new, h_new = w_est, h
        while rho < rho_max:
            sol = sopt.minimize(_func, w_est, args=(rho, alpha), method="L-BFGS-B", jac=True, bounds=bounds)
            w_new = sol.x
            h_new, _ = _h(_adj(w_new))
            if h_new > 0.25 * h:
                rho *= 10
            else:
                break
        w_est, h = w_new, h_new
        alpha += rho * h
        if h <= h_tol or rho >= rho_max:
            break
    w_mat = _adj(w_est)
    w_mat[np.abs(w_mat) < w_threshold] = 0
    return w_mat


def notears_mlp(x: np.ndarray, hidden: int = 10, lambda1: float = 0.01, lambda2: float = 0.01, *,
                max_iter: int = NOTEARS_MLP_MAX_OUTER, h_tol: float = 1e-8, rho_max: float = 1e16,
                w_threshold: float = 0.3, seed: int = 0) -> np.ndarray:
    """NOTEARS-MLP (Zheng et al. 2020, the authors' reference algorithm): one MLP per variable whose first layer is
    split into non-negative ``W+ - W-`` (zero weight from a variable to its own MLP), ``h = tr(exp(A)) - d`` on
    ``A[i, j]`` = squared norm of variable i's first-layer weights into j's MLP, squared loss, L1 on the first layer
    and L2 on all weights, each augmented-Lagrangian subproblem by L-BFGS-B (scipy) over all parameters in float64.
    At most ``max_iter`` dual-ascent steps. Returns the thresholded ``sqrt(A)``."""
    import scipy.optimize as sopt
    import torch
    from torch import nn

    from dagma.locally_connected import LocallyConnected

    dtype = torch.float64
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    n, d = xt.shape
    torch.manual_seed(seed)
    with torch.no_grad():
        fc1_pos = nn.Linear(d, d * hidden, bias=True).to(dtype)
        fc1_neg = nn.Linear(d, d * hidden, bias=True).to(dtype)
        fc2 = LocallyConnected(d, hidden, 1, bias=True).to(dtype)
    params = [fc1_pos.weight, fc1_pos.bias, fc1_neg.weight, fc1_neg.bias, fc2.weight, fc2.bias]
    # fc1 weight rows are [j * hidden + m], columns i: the weight from variable i into j's MLP, >= 0, 0 for i == j
    w_lo = np.zeros((d, hidden, d))
    w_hi = np.full((d, hidden, d), np.inf)
    w_hi[np.arange(d), :, np.arange(d)] = 0.0
    lo, hi = [], []
    for p in params:
        if p is fc1_pos.weight or p is fc1_neg.weight:
            lo.append(w_lo.ravel())
            hi.append(w_hi.ravel())
        else:
            lo.append(np.full(p.numel(), -np.inf))
            hi.append(np.full(p.numel(), np.inf))
    lo, hi = np.concatenate(lo), np.concatenate(hi)
    bounds = sopt.Bounds(lo, hi)
    sizes = [p.numel() for p in params]

    def _set(flat: np.ndarray) -> None:
        with torch.no_grad():
            for p, chunk in zip(params, np.split(flat, np.cumsum(sizes)[:-1])):
                p.copy_(torch.as_tensor(chunk, dtype=dtype).view_as(p))

    def _get() -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in params]).numpy().astype(np.float64)

    def _a() -> torch.Tensor:
        w = (fc1_pos.weight - fc1_neg.weight).view(d, hidden, d)  # [j, m, i]
        return torch.sum(w * w, dim=1).t()  # [i, j]

    def _h() -> torch.Tensor:
        return torch.linalg.matrix_exp(_a()).diagonal().sum() - d

    def _forward() -> torch.Tensor:
        z = (fc1_pos(xt) - fc1_neg(xt)).view(-1, d, hidden)
        return fc2(torch.sigmoid(z)).squeeze(dim=2)

    def _func(flat, rho, alpha):
        _set(flat)
        for p in params:
            p.grad = None
        loss = 0.5 / n * torch.sum((_forward() - xt) ** 2)
        h = _h()
        w1 = fc1_pos.weight - fc1_neg.weight
        l2 = 0.5 * lambda2 * (torch.sum(w1 ** 2) + torch.sum(fc2.weight ** 2))
        l1 = lambda1 * torch.sum(fc1_pos.weight + fc1_neg.weight)
        obj = loss + 0.5 * rho * h * h + alpha * h + l2 + l1
        obj.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in params]).numpy().astype(np.float64)
        return float(obj.item()), grad

    flat = np.clip(_get(), lo, hi)
    rho, alpha, h = 1.0, 0.0, np.inf
    for _ in range(max_iter):
        h_new = h
        while rho < rho_max:
            sol = sopt.minimize(_func, flat, args=(rho, alpha), method="L-BFGS-B", jac=True, bounds=bounds)
            flat = sol.x  # the reference keeps the solution even when it raises rho
            _set(flat)
            with torch.no_grad():
                h_new = float(_h().item())
            if h_new > 0.25 * h:
                rho *= 10
            else:
                break
        h = h_new
        alpha += rho * h
        if h <= h_tol or rho >= rho_max:
            break
    _set(flat)
    with torch.no_grad():
        w_mat = torch.sqrt(_a()).numpy().copy()
    w_mat[np.abs(w_mat) < w_threshold] = 0
    return w_mat


# ------------------------------------------------------------------------------------------------ the methods
def _pc(x, **_):
    from causallearn.search.ConstraintBased.PC import pc

    cg = pc(x, alpha=0.05, indep_test="fisherz", show_progress=False)
    return _causallearn_to_adjacency(cg.G.graph)


def _ges(x, **_):
    from causallearn.search.ScoreBased.GES import ges

    record = ges(x, score_func="local_score_BIC")
    return _causallearn_to_adjacency(record["G"].graph)


def _direct_lingam(x, *, seed, **_):
    import lingam

    model = lingam.DirectLiNGAM(random_state=seed).fit(x)
    return _weights_to_adjacency(np.asarray(model.adjacency_matrix_).T)  # lingam's B[i, j] is j -> i


def _notears_linear(x, **_):
    return _weights_to_adjacency(notears_linear(x, lambda1=0.1, w_threshold=0.3))


def _notears_mlp(x, *, seed, **_):
    with _torch_threads(1):
        w = notears_mlp(x, hidden=10, lambda1=0.01, lambda2=0.01, w_threshold=0.3, seed=seed)
    return _weights_to_adjacency(w)


def _dagma_linear(x, **_):
    import dagma.linear
    from dagma.linear import DagmaLinear

    with _quiet_tqdm(dagma.linear):
        w = DagmaLinear(loss_type="l2").fit(x.copy(), lambda1=0.02, w_threshold=0.3)  # fit centres X in place
    return _weights_to_adjacency(w)


def _dagma_mlp(x, *, seed, mlp_iterations, **_):
    import torch

    import dagma.nonlinear
    from dagma.nonlinear import DagmaMLP, DagmaNonlinear

    d = x.shape[1]
    torch.manual_seed(seed)
    eq_model = DagmaMLP(dims=[d, 10, 1], bias=True, dtype=torch.double)
    with _quiet_tqdm(dagma.nonlinear), _torch_threads(1):
        w = DagmaNonlinear(eq_model, dtype=torch.double).fit(
            x.copy(), lambda1=0.02, lambda2=0.005, T=4, warm_iter=int(mlp_iterations),
            max_iter=int(1.6 * mlp_iterations), w_threshold=0.3,
        )
    return _weights_to_adjacency(w)


def _gies(x, *, regimes, regime_targets, **_):
    import gies

    labels, targets = _split_regimes(regimes, regime_targets, x.shape[1], "gies")
    if targets is None:
        raise ValueError("gies needs regime_targets (every regime's intervened variable indices)")
    data = [np.ascontiguousarray(x[regimes == r]) for r in labels]
    estimate, _score = gies.fit_bic(data, targets)  # estimate[i, j] != 0: i -> j; both set: i - j
    return _weights_to_adjacency(estimate)


def _cdnod(x, *, regimes, **_):
    from causallearn.search.ConstraintBased.CDNOD import cdnod

    labels, _ = _split_regimes(regimes, None, x.shape[1], "cdnod")
    if len(labels) < 2:
        raise ValueError(f"cdnod needs at least 2 regimes, got {len(labels)}")
    c_indx = np.asarray(regimes, dtype=np.float64).reshape(-1, 1)
    with contextlib.redirect_stderr(io.StringIO()):  # cdnod draws its skeleton's progress bar whatever show_progress says
        cg = cdnod(x, c_indx, alpha=0.05, indep_test="fisherz", show_progress=False)
    d = x.shape[1]
    return _causallearn_to_adjacency(cg.G.graph)[:d, :d]  # the context is the last node


def _empty(x, **_):
    d = x.shape[1]
    return np.zeros((d, d), dtype=np.int8)


_RUNNERS = {
    "pc": _pc, "ges": _ges, "direct_lingam": _direct_lingam, "notears_linear": _notears_linear,
    "notears_mlp": _notears_mlp, "dagma_linear": _dagma_linear, "dagma_mlp": _dagma_mlp, "gies": _gies,
    "cdnod": _cdnod, "empty": _empty,
}


def _random(d: int, true: np.ndarray | None, *, seed: int, repeats: int) -> dict:
    if true is None:
        raise ValueError("random needs true_adj (it draws DAGs with the true number of edges)")
    if repeats < 1:
        raise ValueError(f"random_repeats must be >= 1, got {repeats}")
    n_edges = graph_metrics(true, true)["edges"]
    rng = np.random.default_rng(seed)
    graphs = [random_dag(d, n_edges, rng) for _ in range(repeats)]
    rows = [graph_metrics(g, true) for g in graphs]
    out = {"graph": graphs[0].astype(int).tolist(), "repeats": repeats}
    for k in _METRIC_KEYS:
        values = np.array([r[k] for r in rows], dtype=np.float64)
        out[k] = float(values.mean())
        out[f"{k}_std"] = float(values.std())
    out["edges"] = n_edges
    out["true_edges"] = rows[0]["true_edges"]
    return out


# ------------------------------------------------------------------------------------------------ entry point
def run_peers(
    x: np.ndarray,
    true_adj: np.ndarray | None,
    *,
    methods: Sequence[str],
    regimes: np.ndarray | None = None,
    regime_targets: Mapping[int | str, list[int]] | None = None,
    seed: int = 0,
    random_repeats: int = 20,
    max_seconds: float | None = None,
    mlp_iterations: int = DEFAULT_MLP_ITERATIONS,
) -> list[dict]:
    """Run each of ``methods`` (names from :data:`METHODS`, in the given order) on the standardised ``x (n, d)``.

    ``regimes`` (n,) labels each row's regime (GIES, CD-NOD); ``regime_targets`` maps a regime label (or its
    ``str``) to the intervened variable indices (``[]`` observational); a regime missing from it or mapped to
    anything but a list (``"unknown"``) has unknown targets, and GIES then fails. ``max_seconds`` is a budget for
    the whole call: a method that would start after it is spent is reported failed (skipped), never interrupted.

    Returns one dict per method: ``method``, ``graph`` (list-of-lists 0/1 adjacency, ``[i][j] = 1`` for ``i -> j``,
    both set for an undirected edge; ``None`` when failed), ``seconds``, ``status`` (``"ok"`` or ``"failed: <one-line
    reason>"``) and, when ``true_adj`` is given, the :func:`graph_metrics` keys (``None`` when failed). ``random``
    reports the mean over ``random_repeats`` DAGs (seeded by ``seed``) of each metric and its std as ``<key>_std``,
    with ``graph`` the first draw. A method that raises is reported failed; the others still run.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown peer method(s) {unknown}; expected names from {list(METHODS)}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"x must be a (n, d) table with n >= 2 rows and d >= 2 variables, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x has non-finite values")
    n, d = x.shape
    true = None
    if true_adj is not None:
        true = (np.asarray(true_adj) != 0).astype(np.int8)
        if true.shape != (d, d):
            raise ValueError(f"true_adj must be ({d}, {d}) for {d} variables, got shape {true.shape}")
    if regimes is not None:
        regimes = np.asarray(regimes)
        if regimes.shape != (n,):
            raise ValueError(f"regimes must have shape ({n},), one label per row, got {regimes.shape}")
    if mlp_iterations < 1:
        raise ValueError(f"mlp_iterations must be >= 1, got {mlp_iterations}")

    start = time.monotonic()
    results = []
    for method in methods:
        row: dict = {"method": method}
        t0 = time.monotonic()
        spent = t0 - start
        try:
            if max_seconds is not None and spent > max_seconds:
                raise TimeoutError(f"skipped: the {max_seconds:g} s budget was spent ({spent:.0f} s)")
            with _torch_state():
                if method == "random":
                    row.update(_random(d, true, seed=seed, repeats=random_repeats))
                    adj = None
                else:
                    adj = _RUNNERS[method](x.copy(), seed=seed, regimes=regimes, regime_targets=regime_targets,
                                           mlp_iterations=mlp_iterations)
            if adj is not None:
                adj = np.asarray(adj, dtype=np.int8)
                if adj.shape != (d, d):
                    raise RuntimeError(f"{method} returned a graph of shape {adj.shape}, expected ({d}, {d})")
                row["graph"] = adj.astype(int).tolist()
                if true is not None:
                    row.update(graph_metrics(adj, true))
            row["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - a failing peer is reported, never fatal
            row = {"method": method, "graph": None, "status": f"failed: {_one_line(e)}"}
            if true is not None:
                row.update({k: None for k in (*_METRIC_KEYS, "edges")})
                row["true_edges"] = int(graph_metrics(true, true)["edges"])
        row["seconds"] = round(time.monotonic() - t0, 3)
        if row["status"] == "ok":
            extra = f", SHD {row['shd']:g}, F1 {row['f1']:.2f}" if "shd" in row else ""
            logger.info("peer %s: %.1f s%s", method, row["seconds"], extra)
        else:
            logger.warning("peer %s: %.1f s, %s", method, row["seconds"], row["status"])
        results.append(row)
    return results
