"""Causal world model: a structural causal model with one neural mechanism per variable, learned under DAGMA's
acyclicity path, then thresholded, pruned and refitted; it samples under interventions and answers
counterfactuals by abduction of the noise.

Life cycle:

1. training (`forward`, inside the shared Accelerate loop): the score is the Gaussian log-likelihood with each
   variable's noise variance profiled out, `sum_j 0.5 log mse_j`, where `mse_j` is taken over the rows whose
   regime did *not* intervene on variable j (an intervened variable's value was set from outside, so its
   mechanism learns nothing from those rows: the DCDI / GIES treatment of interventional data). The loss is
   `mu_t * (score + lambda1 |W1|_1 + lambda2/2 |theta|^2) + h(A)` with DAGMA's `h(A) = -log det(sI - A o A) + d log s`
   and `mu_t` decreasing stage by stage (`config.mu_at(step)`);
2. `finalize(values, intervened)` (after training, on the training rows): `A >= edge_threshold` (plus the required
   edges), the weakest edge of any remaining cycle removed until the graph is a DAG, optionally a greedy hill-climb from that
   DAG on CAM's additive-spline BIC score (add / remove / reverse an edge; `structure_search`), CAM-style pruning of each
   variable's parents (F-test of each parent's additive spline block, at `prune_alpha`), a refit of the mechanisms
   on the final graph (L-BFGS, same masked score), and the noise distribution from the residuals;
3. queries: `sample(n, interventions)`, `counterfactual(rows, interventions)`, `adjacency_matrix()`, `edges()`.

Written by hand: DAGMA's and NOTEARS' packages fit numpy arrays in their own loops, with no interventional
masking, background knowledge, checkpointing or several processes; this model is their objective as a torch
module so the shared loop (Accelerate, resume, DDP) trains it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput, logging

from ..loading import ClearLoadingErrorsMixin
from .configuration_causal_world_model import CausalWorldModelConfig

logger = logging.get_logger(__name__)


@dataclass
class CausalWorldModelOutput(ModelOutput):
    """`loss` (the path objective at this step), `score` (sum_j 0.5 log mse_j), `h` (acyclicity), `l1`, `mu`,
    `mse` (d,) per-variable mean squared residual on the non-intervened rows, `prediction` (n, d) standardised."""

    loss: torch.Tensor | None = None
    score: torch.Tensor | None = None
    h: torch.Tensor | None = None
    l1: torch.Tensor | None = None
    mu: float | None = None
    mse: torch.Tensor | None = None
    prediction: torch.Tensor | None = None


def transformed_statistics(values: np.ndarray, transforms) -> tuple[list[float], list[float]]:
    """Mean and std (ddof 0) of each column after its transform: the standardisation a config stores."""
    z = _transform_np(np.asarray(values, dtype=np.float64), transforms)
    return z.mean(axis=0).tolist(), z.std(axis=0).tolist()


def _transform_np(values: np.ndarray, transforms) -> np.ndarray:
    out = values.copy()
    for j, t in enumerate(transforms):
        if t == "log1p":
            out[:, j] = np.log1p(values[:, j])
    return out


class CausalWorldModelPreTrainedModel(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = CausalWorldModelConfig
    config: CausalWorldModelConfig
    base_model_prefix = "causal_world_model"
    main_input_name = "values"
    _no_split_modules: ClassVar[list[str]] = []

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """DAGMA's initialisation: first-layer weights 0 (the empty graph, inside the log-det domain), the other
        layers uniform in +-1/sqrt(fan_in) (torch's Linear default), biases 0; buffers from the config."""
        if isinstance(module, CausalWorldModel):
            cfg = module.config
            init.zeros_(module.w1)
            for name, param in module.named_parameters(recurse=False):
                if name.startswith("hidden_w") or name == "w_out":
                    bound = 1.0 / math.sqrt(param.shape[-1])
                    init.uniform_(param, -bound, bound)
                elif name != "w1":
                    init.zeros_(param)
            with torch.device("cpu"):
                allowed = ~torch.tensor(cfg.forbidden_matrix(), dtype=torch.bool)
            init.copy_(module.allowed, allowed.to(module.allowed.dtype))
            init.copy_(module.data_mean, torch.tensor(cfg.data_mean or [0.0] * cfg.num_variables))
            init.copy_(module.data_std, torch.tensor(cfg.data_std or [1.0] * cfg.num_variables))
            init.copy_(module.log1p_mask, torch.tensor([t == "log1p" for t in cfg.transforms], dtype=module.log1p_mask.dtype))
            init.zeros_(module.dag)
            init.zeros_(module.is_finalized)
            init.ones_(module.noise_std)
            init.zeros_(module.noise_quantiles)


class CausalWorldModel(CausalWorldModelPreTrainedModel):
    """The SCM. Parameters: `w1` (d, m, d) [j, k, i] = weight of input i on hidden unit k of variable j's
    mechanism (one unit for the linear mechanism), `b1` (d, m), hidden layers `hidden_w{l}` (d, m, m) and
    `hidden_b{l}` (d, m), `w_out` (d, m), `b_out` (d,). Buffers (saved): `allowed` (d, d) [i, j] (i -> j permitted),
    `dag` (d, d) [i, j] (the final graph, after `finalize`), the standardisation, and the noise distribution."""

    def __init__(self, config: CausalWorldModelConfig):
        super().__init__(config)
        d, m = config.num_variables, (config.hidden_size if config.mechanism == "mlp" else 1)
        self.w1 = nn.Parameter(torch.zeros(d, m, d))
        if config.mechanism == "mlp":
            self.b1 = nn.Parameter(torch.zeros(d, m))
            for layer in range(config.num_hidden_layers):
                setattr(self, f"hidden_w{layer}", nn.Parameter(torch.zeros(d, m, m)))
                setattr(self, f"hidden_b{layer}", nn.Parameter(torch.zeros(d, m)))
            self.w_out = nn.Parameter(torch.zeros(d, m))
        self.b_out = nn.Parameter(torch.zeros(d))
        self.register_buffer("allowed", torch.ones(d, d))
        self.register_buffer("dag", torch.zeros(d, d))
        self.register_buffer("is_finalized", torch.zeros(()))
        self.register_buffer("data_mean", torch.zeros(d))
        self.register_buffer("data_std", torch.ones(d))
        self.register_buffer("log1p_mask", torch.zeros(d))
        self.register_buffer("noise_std", torch.ones(d))
        self.register_buffer("noise_quantiles", torch.zeros(d, config.num_noise_quantiles))
        self.post_init()

    # ---------------------------------------------------------------------------------------------- units
    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        """File units -> model space: log1p where the config says so, then (x - mean) / std."""
        v = torch.where(self.log1p_mask.bool(), torch.log1p(values.clamp_min(-1 + 1e-12)), values)
        return (v - self.data_mean) / self.data_std

    def destandardise(self, z: torch.Tensor) -> torch.Tensor:
        v = z * self.data_std + self.data_mean
        return torch.where(self.log1p_mask.bool(), torch.expm1(v), v)

    # ----------------------------------------------------------------------------------------- mechanisms
    def input_mask(self) -> torch.Tensor:
        """(d_j, d_i): which inputs each mechanism may read (permitted, and in the final graph once finalized)."""
        mask = self.allowed
        if bool(self.is_finalized):
            mask = mask * self.dag
        return mask.t()

    def mechanisms(self, z: torch.Tensor) -> torch.Tensor:
        """f(z): (n, d) -> (n, d), each column from that variable's mechanism of the permitted inputs."""
        d, m = self.w1.shape[:2]
        w1 = self.w1 * self.input_mask().unsqueeze(1)
        h = (z @ w1.reshape(d * m, d).t()).view(-1, d, m)  # one matmul for every mechanism's first layer
        if self.config.mechanism == "linear":
            return h[..., 0] + self.b_out
        h = torch.sigmoid(h + self.b1)
        for layer in range(self.config.num_hidden_layers):
            w, b = getattr(self, f"hidden_w{layer}"), getattr(self, f"hidden_b{layer}")
            h = torch.sigmoid(torch.bmm(h.transpose(0, 1), w.transpose(1, 2)).transpose(0, 1) + b)
        return (h * self.w_out).sum(-1) + self.b_out

    def adjacency_weights(self) -> torch.Tensor:
        """A (d, d), A[i, j] = ||W1_j[:, i]||_2 (permitted inputs only): the strength of i -> j."""
        w1 = self.w1 * self.input_mask().unsqueeze(1)
        return w1.pow(2).sum(1).t().sqrt()

    def acyclicity(self) -> torch.Tensor:
        """DAGMA's h(A) = -log det(sI - A o A) + d log s: 0 exactly on DAGs, positive otherwise, defined while the
        spectral radius of A o A is below s (outside that domain the result is NaN, so that the loop's non-finite
        guard skips the step and counts it instead of training on a meaningless value)."""
        a2 = (self.w1 * self.input_mask().unsqueeze(1)).pow(2).sum(1)
        d, s = a2.shape[0], self.config.dagma_s
        sign, logabsdet = torch.linalg.slogdet(s * torch.eye(d, device=a2.device, dtype=a2.dtype) - a2)
        h = -logabsdet + d * math.log(s)
        return torch.where(sign > 0, h, torch.full_like(h, float("nan")))

    # ------------------------------------------------------------------------------------------- training
    def forward(self, values: torch.Tensor, intervened: torch.Tensor | None = None, training_step: int | None = None,
                return_dict: bool = True) -> CausalWorldModelOutput:
        """`values` (n, d) in the file's units; `intervened` (n, d) bool, True where the row's regime set that
        variable (those entries do not enter its mechanism's score). Returns the path objective at `training_step`."""
        d = self.config.num_variables
        if values.ndim != 2 or values.shape[1] != d:
            raise ValueError(f"values: expected shape (rows, {d}) for the variables {self.config.variable_names}, got {tuple(values.shape)}")
        if intervened is not None and tuple(intervened.shape) != tuple(values.shape):
            raise ValueError(f"intervened: expected the shape of values {tuple(values.shape)}, got {tuple(intervened.shape)}")
        z = self.standardise(values)
        pred = self.mechanisms(z)
        keep = torch.ones_like(z) if intervened is None else (~intervened.bool()).to(z.dtype)
        count = keep.sum(0)
        mse = (keep * (z - pred).pow(2)).sum(0) / count.clamp_min(1.0)
        score = (0.5 * torch.log(mse + 1e-8) * (count > 0).to(z.dtype)).sum()
        free = self._l1_mask()
        l1 = (self.w1.abs() * free).sum()
        l2 = sum(p.pow(2).sum() for p in self.parameters())
        mu = self.config.mu_at(training_step)
        h = self.acyclicity()
        loss = mu * (score + self.config.lambda1 * l1 + 0.5 * self.config.lambda2 * l2) + h
        return CausalWorldModelOutput(loss=loss, score=score.detach(), h=h.detach(), l1=l1.detach(), mu=mu, mse=mse.detach(), prediction=pred)

    def _l1_mask(self) -> torch.Tensor:
        """(d_j, 1, d_i) 1 everywhere but on the required edges (no sparsity pressure on them)."""
        free = torch.ones_like(self.allowed)
        index = {n: i for i, n in enumerate(self.config.variable_names)}
        for cause, effect in self.config.required_edges:
            free[index[cause], index[effect]] = 0.0
        return free.t().unsqueeze(1)

    # ------------------------------------------------------------------------------------------ finalize
    @torch.no_grad()
    def finalize(self, values, intervened=None, regimes=None) -> dict:
        """Turn the trained weights into the final DAG and noise model, on the training rows (file units).
        Returns what each step did: `thresholded`, `cycle_edges_removed`, `search_moves` (the hill-climb's moves with
        their score changes, when `structure_search` is on), `pruned` (with p-values), `edges`. `regimes` (n,) is each
        row's regime, used when `search_within_regimes` is on."""
        z = self.standardise(torch.as_tensor(np.asarray(values), dtype=self.w1.dtype, device=self.w1.device))
        keep = torch.ones_like(z, dtype=torch.bool) if intervened is None else ~torch.as_tensor(np.asarray(intervened), device=z.device).bool()
        self.is_finalized.zero_()
        names, d = self.config.variable_names, self.config.num_variables
        index = {n: i for i, n in enumerate(names)}
        weights = self.adjacency_weights().cpu().numpy()
        allowed = self.allowed.cpu().numpy() > 0
        graph = (weights >= self.config.edge_threshold) & allowed
        required = np.zeros((d, d), dtype=bool)
        for cause, effect in self.config.required_edges:
            required[index[cause], index[effect]] = True
        graph |= required
        report: dict = {"thresholded": int(graph.sum()), "edge_threshold": self.config.edge_threshold}
        graph, removed = _break_cycles(graph, weights, required)
        report["cycle_edges_removed"] = [[names[i], names[j], float(weights[i, j])] for i, j in removed]
        zn, kn = z.cpu().numpy().astype(np.float64), keep.cpu().numpy()
        if self.config.search_within_regimes:
            if regimes is None:
                raise ValueError("search_within_regimes: expected finalize(values, intervened, regimes=...) with each row's regime, got no regimes")
            zn = _within_regimes(zn, np.asarray(regimes))
            report["search_within_regimes"] = int(len(np.unique(regimes)))
        if self.config.structure_search == "cam_hill_climb":
            graph, moves = cam_hill_climb(zn, kn, graph, allowed, required, linear=self.config.mechanism == "linear",
                                          n_knots=self.config.search_knots, penalty=self.config.search_penalty,
                                          max_iter=self.config.search_max_iter)
            report["search_moves"] = [[kind, names[i], names[j], delta] for kind, i, j, delta in moves]
        pruned = []
        if self.config.pruning == "cam":
            for j in range(d):
                parents = [i for i in np.flatnonzero(graph[:, j]) if not required[i, j]]
                fixed = [i for i in np.flatnonzero(graph[:, j]) if required[i, j]]
                if not parents:
                    continue
                pvalues = parent_pvalues(zn[kn[:, j]], j, parents + fixed, linear=self.config.mechanism == "linear")
                for i in parents:
                    if pvalues[i] > self.config.prune_alpha:
                        graph[i, j] = False
                        pruned.append([names[i], names[j], float(pvalues[i])])
        report["pruned"] = pruned
        report["prune_rule"] = (f"CAM-style: a parent is dropped when its additive {'linear' if self.config.mechanism == 'linear' else 'cubic-spline'} "
                                f"term is not significant at alpha={self.config.prune_alpha} (F-test, all parents in the model)"
                                if self.config.pruning == "cam" else "none")
        self.dag.copy_(torch.as_tensor(graph, dtype=self.dag.dtype))
        self.is_finalized.fill_(1.0)
        report["refit"] = self._refit(z, keep)
        residual = (z - self.mechanisms(z))
        stds, quantiles = [], []
        probs = torch.linspace(0, 1, self.config.num_noise_quantiles, device=z.device, dtype=z.dtype)
        for j in range(d):
            r = residual[keep[:, j], j]
            if r.numel() < 2:
                raise ValueError(f"variable {names[j]!r}: expected at least 2 rows where it is not intervened on, got {r.numel()}")
            stds.append(r.std())
            quantiles.append(torch.quantile(r, probs))
        self.noise_std.copy_(torch.stack(stds))
        self.noise_quantiles.copy_(torch.stack(quantiles))
        report["edges"] = self.edges()
        return report

    def _refit(self, z: torch.Tensor, keep: torch.Tensor) -> dict:
        """Refit the mechanisms on the final graph: L-BFGS on sum_j mse_j + lambda2/2 |theta|^2 (full batch, the
        same masked rows as training). Without it, a mechanism whose pruned inputs carried a small weight would
        shift its prediction when those inputs are masked."""
        steps = self.config.refit_steps
        if steps == 0:
            return {"steps": 0}
        keep_f = keep.to(z.dtype)
        count = keep_f.sum(0).clamp_min(1.0)

        def objective():
            mse = (keep_f * (z - self.mechanisms(z)).pow(2)).sum(0) / count
            return mse.sum() + 0.5 * self.config.lambda2 * sum(p.pow(2).sum() for p in self.parameters()), mse

        with torch.enable_grad():
            before = float(objective()[0].detach())
            optimizer = torch.optim.LBFGS(list(self.parameters()), max_iter=steps, line_search_fn="strong_wolfe")

            def closure():
                optimizer.zero_grad()
                value = objective()[0]
                value.backward()
                return value

            optimizer.step(closure)
            for p in self.parameters():
                p.grad = None
        return {"steps": steps, "objective_before": before, "objective_after": float(objective()[0].detach())}

    # -------------------------------------------------------------------------------------------- queries
    def _require_finalized(self) -> None:
        if not bool(self.is_finalized):
            raise RuntimeError("this causal world model has no final graph yet: call model.finalize(train_values, intervened) after training")

    def adjacency_matrix(self) -> np.ndarray:
        """(d, d) 0/1 of the final DAG, [i, j] = 1 for i -> j."""
        self._require_finalized()
        return self.dag.cpu().numpy().astype(int)

    def edges(self) -> list[dict]:
        """The final DAG as an edge list with the weights `A[i, j]` of the edges."""
        self._require_finalized()
        names, weights, dag = self.config.variable_names, self.adjacency_weights().detach().cpu().numpy(), self.adjacency_matrix()
        return [{"cause": names[i], "effect": names[j], "weight": float(weights[i, j])} for i, j in zip(*np.nonzero(dag))]

    def topological_order(self) -> list[int]:
        from graphlib import TopologicalSorter

        dag = self.adjacency_matrix()
        return list(TopologicalSorter({j: set(np.flatnonzero(dag[:, j]).tolist()) for j in range(dag.shape[0])}).static_order())

    def _interventions(self, interventions: Mapping | None, n: int) -> dict[int, torch.Tensor]:
        """{name: value in file units (scalar or (n,))} -> {index: (n,) in model space}."""
        names = self.config.variable_names
        out = {}
        for name, value in (interventions or {}).items():
            if name not in names:
                raise ValueError(f"interventions: unknown variable {name!r}; the variables are {names}")
            j = names.index(name)
            v = torch.as_tensor(value, dtype=self.w1.dtype, device=self.w1.device).reshape(-1)
            if v.numel() not in (1, n):
                raise ValueError(f"interventions[{name!r}]: expected a scalar or {n} values, got {v.numel()}")
            if bool(self.log1p_mask[j]) and bool((v <= -1).any()):
                raise ValueError(f"interventions[{name!r}]: the variable is log1p-transformed, so values must be > -1, got {v.min().item()}")
            full = torch.zeros(n, len(names), dtype=v.dtype, device=v.device)
            full[:, j] = v.expand(n)
            out[j] = self.standardise(full)[:, j]
        return out

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, d) exogenous noise in model space: inverse-CDF draws from the residual quantiles, or Gaussian."""
        d = self.config.num_variables
        if self.config.noise_distribution == "gaussian":
            return torch.randn(n, d, generator=generator, dtype=self.w1.dtype).to(self.w1.device) * self.noise_std
        q = self.noise_quantiles
        pos = torch.rand(n, d, generator=generator, dtype=self.w1.dtype).to(q.device) * (q.shape[1] - 1)
        lo = pos.floor().long().clamp(max=q.shape[1] - 2)
        frac = pos - lo
        qt = q.t()  # (K, d)
        cols = torch.arange(d, device=q.device).expand(n, d)
        return qt[lo, cols] * (1 - frac) + qt[lo + 1, cols] * frac

    @torch.no_grad()
    def sample(self, num_samples: int, interventions: Mapping | None = None, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw `num_samples` rows (file units) from the SCM under `do(interventions)` ({name: value}); the
        intervened variables take their values and every other one follows its mechanism plus its own noise, in
        topological order."""
        self._require_finalized()
        fixed = self._interventions(interventions, num_samples)
        e = self.sample_noise(num_samples, generator) if noise is None else noise
        z = torch.zeros_like(e)
        for j in self.topological_order():
            z[:, j] = fixed[j] if j in fixed else self.mechanisms(z)[:, j] + e[:, j]
        return self.destandardise(z)

    @torch.no_grad()
    def abduct(self, values: torch.Tensor) -> torch.Tensor:
        """The noise of given rows (model space): e = z - f(z), exact for an additive-noise SCM."""
        self._require_finalized()
        z = self.standardise(torch.as_tensor(values, dtype=self.w1.dtype, device=self.w1.device))
        return z - self.mechanisms(z)

    @torch.no_grad()
    def counterfactual(self, values, interventions: Mapping) -> torch.Tensor:
        """The rows `values` (n, d, file units) had `interventions` held: abduction of each row's noise,
        action, prediction with the same noise. Variables that do not descend from an intervened one keep
        their factual values exactly."""
        self._require_finalized()
        x = torch.as_tensor(values, dtype=self.w1.dtype, device=self.w1.device)
        if x.ndim != 2 or x.shape[1] != self.config.num_variables:
            raise ValueError(f"expected rows of shape (n, {self.config.num_variables}), got {tuple(x.shape)}")
        z = self.standardise(x)
        e = z - self.mechanisms(z)
        fixed = self._interventions(interventions, x.shape[0])
        changed = set(fixed)
        dag = self.adjacency_matrix()
        out = x.clone()
        zc = z.clone()
        for j in self.topological_order():
            if j in fixed:
                zc[:, j] = fixed[j]
            elif any(dag[i, j] for i in changed):
                zc[:, j] = self.mechanisms(zc)[:, j] + e[:, j]
                changed.add(j)
        touched = sorted(changed)
        if touched:
            out[:, touched] = self.destandardise(zc)[:, touched]
        return out


def _break_cycles(graph: np.ndarray, weights: np.ndarray, required: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Remove the weakest non-required edge of a cycle until none is left (the thresholded graph of a
    path that ended with h > 0 can keep a cycle)."""
    import networkx as nx

    graph = graph.copy()
    removed = []
    while True:
        g = nx.DiGraph([(int(i), int(j)) for i, j in zip(*np.nonzero(graph))])
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            return graph, removed
        candidates = [(weights[i, j], i, j) for i, j in cycle if not required[i, j]]
        _, i, j = min(candidates)
        graph[i, j] = False
        removed.append((i, j))


def _within_regimes(z: np.ndarray, regimes: np.ndarray) -> np.ndarray:
    """Each regime's rows standardised on their own (a constant column within a regime is centred only)."""
    if regimes.shape != (z.shape[0],):
        raise ValueError(f"regimes: expected one regime per row ({z.shape[0]},), got shape {regimes.shape}")
    out = z.copy()
    for r in np.unique(regimes):
        rows = regimes == r
        std = z[rows].std(axis=0)
        out[rows] = (z[rows] - z[rows].mean(axis=0)) / np.where(std > 0, std, 1.0)
    return out


def _spline_block(column: np.ndarray, linear: bool, n_knots: int) -> np.ndarray:
    """One parent's additive block: the raw column (linear), or cubic B-splines with one column dropped against
    the intercept (the same basis as `parent_pvalues`)."""
    from sklearn.preprocessing import SplineTransformer

    col = column.reshape(-1, 1)
    return col if linear else SplineTransformer(n_knots=n_knots, degree=3).fit_transform(col)[:, 1:]


def _reaches(graph: np.ndarray, start: int, target: int) -> bool:
    """Is there a directed path start ~> target in the 0/1 graph [i, j] = i -> j?"""
    seen, stack = {start}, [start]
    while stack:
        u = stack.pop()
        if u == target:
            return True
        for v in np.flatnonzero(graph[u]):
            if v not in seen:
                seen.add(int(v))
                stack.append(int(v))
    return False


def cam_hill_climb(z: np.ndarray, keep: np.ndarray, graph: np.ndarray, allowed: np.ndarray, required: np.ndarray,
                   linear: bool = False, n_knots: int = 5, penalty: float = 1.0, max_iter: int = 500):
    """Greedy hill-climb over DAGs on CAM's score (Buehlmann, Peters & Ernest 2014), started from `graph`.

    Score (lower is better): sum_j n_j/2 log(RSS_j / n_j) + penalty * k_j log(n_j) / 2, where RSS_j is the
    residual sum of squares of the least-squares additive regression of z_j on its parents' blocks (cubic
    B-splines, `_spline_block`) over the rows where j is not intervened on (`keep[:, j]`), n_j those rows and k_j
    the basis columns. It is the Gaussian log-likelihood of an additive-noise SCM with each variable's noise
    variance profiled out (the training score, at the MLE) plus BIC. Each move is the best of: add i -> j
    (allowed, keeps acyclic), remove a non-required edge, reverse a non-required edge (allowed, keeps acyclic);
    stops when no move lowers the score. Returns the graph and the moves [(kind, i, j, score change)]."""
    graph = np.asarray(graph, dtype=bool).copy()
    d = graph.shape[0]
    blocks = [_spline_block(z[:, p], linear, n_knots) for p in range(d)]
    cache: dict = {}

    def local(j: int, parents) -> float:
        key = (j, frozenset(int(p) for p in parents))
        if key not in cache:
            rows = keep[:, j]
            y = z[rows, j]
            n = len(y)
            design = np.column_stack([np.ones(n)] + [blocks[p][rows] for p in sorted(key[1])])
            beta, *_ = np.linalg.lstsq(design, y, rcond=None)
            r = y - design @ beta
            rss = max(float(r @ r), 1e-12 * n)
            cache[key] = 0.5 * n * math.log(rss / n) + penalty * (design.shape[1] - 1) * math.log(n) / 2
        return cache[key]

    parents = [set(np.flatnonzero(graph[:, j]).tolist()) for j in range(d)]
    scores = [local(j, parents[j]) for j in range(d)]
    moves = []
    for _ in range(max_iter):
        best, best_move = -1e-9, None
        for i in range(d):
            for j in range(d):
                if i == j:
                    continue
                if graph[i, j]:
                    if required[i, j]:
                        continue
                    removal = local(j, parents[j] - {i}) - scores[j]
                    if removal < best:
                        best, best_move = removal, ("remove", i, j)
                    if allowed[j, i]:
                        delta = removal + local(i, parents[i] | {j}) - scores[i]
                        if delta < best:
                            graph[i, j] = False
                            if not _reaches(graph, i, j):
                                best, best_move = delta, ("reverse", i, j)
                            graph[i, j] = True
                elif allowed[i, j] and not graph[j, i]:
                    delta = local(j, parents[j] | {i}) - scores[j]
                    if delta < best and not _reaches(graph, j, i):
                        best, best_move = delta, ("add", i, j)
        if best_move is None:
            break
        kind, i, j = best_move
        if kind == "add":
            graph[i, j] = True
            parents[j].add(i)
        else:
            graph[i, j] = False
            parents[j].discard(i)
            if kind == "reverse":
                graph[j, i] = True
                parents[i].add(j)
                scores[i] = local(i, parents[i])
        scores[j] = local(j, parents[j])
        moves.append((kind, i, j, float(best)))
    return graph, moves


def parent_pvalues(z: np.ndarray, j: int, parents: list[int], linear: bool = False, n_knots: int = 5) -> dict[int, float]:
    """p-value of each parent of variable j in an additive regression z_j ~ sum_p s_p(z_p) (cubic B-splines with
    `n_knots` knots, one basis column dropped per parent against the intercept; the raw column when `linear`):
    the F-test of removing that parent's block. This is CAM's pruning (Buehlmann et al. 2014 use mgcv's GAM
    p-values); written with least squares because sklearn's SplineTransformer and scipy's F distribution give it
    exactly, without a GAM package."""
    from scipy import stats
    from sklearn.preprocessing import SplineTransformer

    y = z[:, j]
    n = len(y)
    blocks = {}
    for p in parents:
        col = z[:, [p]]
        blocks[p] = col if linear else SplineTransformer(n_knots=n_knots, degree=3).fit_transform(col)[:, 1:]

    def rss(cols: list[int]) -> tuple[float, int]:
        design = np.column_stack([np.ones(n)] + [blocks[c] for c in cols])
        beta, *_ = np.linalg.lstsq(design, y, rcond=None)
        r = y - design @ beta
        return float(r @ r), design.shape[1]

    full, k_full = rss(parents)
    out = {}
    for p in parents:
        reduced, _ = rss([c for c in parents if c != p])
        k = blocks[p].shape[1]
        dof = n - k_full
        if dof <= 0 or full <= 0:
            out[p] = 0.0
            continue
        f = max(reduced - full, 0.0) / k / (full / dof)
        out[p] = float(stats.f.sf(f, k, dof))
    return out


__all__ = ["CausalWorldModel", "CausalWorldModelOutput", "CausalWorldModelPreTrainedModel", "cam_hill_climb", "parent_pvalues", "transformed_statistics"]
