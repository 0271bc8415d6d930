"""Configuration of the causal world model (`model_type = "causal_world_model"`).

Torch-free at import. The variables, their units, transforms and standardisation statistics come from a table
dataset schema (`astrobio_hf.data.table`, schema kind `"table"`) and the training rows, through `from_schema`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field

from transformers.configuration_utils import PreTrainedConfig

from ..config_checks import finite_float, float_list, int_at_least, reject_unknown_keys, str_list

MECHANISMS = ("mlp", "linear")
TRANSFORMS = ("identity", "log1p")
PRUNING = ("cam", "none")
NOISE_DISTRIBUTIONS = ("empirical", "gaussian")
STRUCTURE_SEARCHES = ("cam_hill_climb", "none")
SCHEMA_KIND = "table"


def _pairs(name: str, values, known: Sequence[str]) -> list[list[str]]:
    """A list of [cause, effect] name pairs, every name one of `known` and no self-loop."""
    out = []
    for item in values or []:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(isinstance(v, str) for v in item):
            raise ValueError(f"{name}: expected [cause, effect] pairs of variable names, got {item!r}")
        out.append([item[0], item[1]])
    unknown = sorted({v for pair in out for v in pair if v not in known})
    if unknown:
        raise ValueError(f"{name}: unknown variable(s) {unknown}; the variables are {list(known)}")
    loops = [pair for pair in out if pair[0] == pair[1]]
    if loops:
        raise ValueError(f"{name}: expected edges between two different variables, got self-loop(s) {loops}")
    return out


class CausalWorldModelConfig(PreTrainedConfig):
    r"""
    Configuration of [`CausalWorldModel`]: a structural causal model over named variables, `x_j = f_j(x_pa(j)) +
    e_j`, with one neural mechanism `f_j` per variable (an MLP as in DAGMA-MLP / NOTEARS-MLP, or a linear map) whose
    first-layer weights define the weighted adjacency `A[i, j] = ||W1_j[:, i]||_2` (the strength of i -> j). It is
    trained under DAGMA's log-determinant acyclicity function `h(A) = -log det(s I - A o A) + d log s` on a path of
    decreasing score weights `mu` (Bello et al. 2022), then thresholded, made acyclic, pruned (CAM-style
    significance tests on the parents) and refitted on the final graph.

    Units. The model works in a standardised space: each variable is transformed (`transforms`: identity or log1p)
    and standardised with `data_mean` / `data_std` (the transformed training rows' statistics). Every public method
    takes and returns values in the file's units; the standardisation is undone.

    Background knowledge: `forbidden_edges` never appear (their weights are held at 0), `required_edges` always
    appear (no sparsity penalty on them, never thresholded or pruned), and `tiers` order groups of variables: a
    variable of a later tier is never a cause of one of an earlier tier (e.g. planet parameters first). Variables in
    no tier are unconstrained.

    Args:
        variable_names (`list[str]`): the d variables, in the column order of the data.
        variable_units (`list[str]`, *optional*): one unit per variable ("" when unknown).
        transforms (`list[str]`, *optional*): "identity" or "log1p" per variable (default identity).
        data_mean, data_std (`list[float]`, *optional*): statistics of the transformed training rows.
        mechanism (`str`, defaults to "mlp"): "mlp" (sigmoid hidden layers) or "linear".
        hidden_size (`int`, defaults to 10): hidden units of each variable's MLP.
        num_hidden_layers (`int`, defaults to 0): further hidden layers after the first (0 is DAGMA-MLP's dims [d, 10, 1]).
        lambda1 (`float`, defaults to 0.02): L1 weight on the first-layer weights (sparsity).
        lambda2 (`float`, defaults to 0.005): L2 weight on all weights.
        dagma_s (`float`, defaults to 1.0): the log-det domain parameter s.
        mu_init (`float`, defaults to 1.0), mu_factor (`float`, defaults to 0.1), num_stages (`int`, defaults to 4):
            the path: stage t weighs the score by `mu_init * mu_factor**t`.
        final_stage_weight (`float`, defaults to 1.6): the last stage runs this many times longer than the others
            (DAGMA: 80k against 50k iterations).
        path_steps (`int`, defaults to 1000): optimizer steps of the whole path (the recipe sets it to the run's).
        edge_threshold (`float`, defaults to 0.3): edges with `A[i, j]` below it are dropped.
        pruning (`str`, defaults to "cam"): "cam" drops a parent whose additive spline term (linear term for the
            linear mechanism) is not significant at `prune_alpha` (F-test on the non-intervened rows); "none".
        prune_alpha (`float`, defaults to 0.001): CAM's level.
        structure_search (`str`, defaults to "none"): after thresholding, "cam_hill_climb" runs a greedy
            hill-climb over DAGs (add / remove / reverse one edge, acyclic, background knowledge respected) on CAM's
            score `sum_j n_j/2 log(RSS_j / n_j) + search_penalty * k_j log(n_j) / 2` (additive cubic-spline regression
            of each variable on its parents, k_j basis columns; linear terms for the linear mechanism), started
            from the thresholded graph; "none" keeps the thresholded graph. On Sachs' 853 observational rows it
            takes SHD 16-18 to 14 (F1 0.43) for every seed; on the 7466 pooled interventional rows the BIC term is
            too weak (SHD 22 -> 40, 42 edges), hence off by default.
        search_penalty (`float`, defaults to 1.0): the BIC multiplier of that score.
        search_knots (`int`, defaults to 5): knots of each parent's spline block in that score.
        search_max_iter (`int`, defaults to 500): at most this many moves.
        search_within_regimes (`bool`, defaults to False): the structure search and the pruning tests see each
            regime's rows standardised on their own (a regime-specific location and scale for every variable), so
            that a stimulus that shifts the whole network (Sachs' PMA or beta2-cAMP) is not read as edges; the
            mechanisms are still fitted on the pooled rows. Off, the between-regime shifts are evidence too, as
            they should be for perfect interventions. Needs `finalize(..., regimes=...)`.
        refit_steps (`int`, defaults to 200): L-BFGS iterations of the refit of the mechanisms on the final graph.
        noise_distribution (`str`, defaults to "empirical"): noise for `sample`: the residuals' quantiles
            (`num_noise_quantiles` of them, inverse-CDF sampling) or a Gaussian with the residuals' std.
        forbidden_edges, required_edges (`list[[cause, effect]]`), tiers (`list[list[str]]`): background knowledge.
    """

    model_type = "causal_world_model"

    # 1. Variables (from the table schema and the training rows)
    variable_names: list[str] = field(default_factory=lambda: ["x0", "x1"])
    variable_units: list[str] | None = None
    transforms: list[str] | None = None
    data_mean: list[float] | None = None
    data_std: list[float] | None = None
    # 2. Mechanisms
    mechanism: str = "mlp"
    hidden_size: int = 10
    num_hidden_layers: int = 0
    # 3. Score, sparsity and the acyclicity path
    lambda1: float = 0.02
    lambda2: float = 0.005
    dagma_s: float = 1.0
    mu_init: float = 1.0
    mu_factor: float = 0.1
    num_stages: int = 4
    final_stage_weight: float = 1.6
    path_steps: int = 1000
    # 4. From weights to a graph
    edge_threshold: float = 0.3
    pruning: str = "cam"
    prune_alpha: float = 0.001
    structure_search: str = "none"
    search_penalty: float = 1.0
    search_knots: int = 5
    search_max_iter: int = 500
    search_within_regimes: bool = False
    refit_steps: int = 200
    noise_distribution: str = "empirical"
    num_noise_quantiles: int = 257
    # 5. Background knowledge
    forbidden_edges: list[list[str]] = field(default_factory=list)
    required_edges: list[list[str]] = field(default_factory=list)
    tiers: list[list[str]] = field(default_factory=list)

    def __post_init__(self, **kwargs):
        reject_unknown_keys(CausalWorldModelConfig, kwargs)
        super().__post_init__(**kwargs)
        self._validate()

    @classmethod
    def from_schema(cls, schema: Mapping, data_mean=None, data_std=None, **overrides) -> "CausalWorldModelConfig":
        """Config whose variables, units and transforms come from a table schema (the dict of `schema.json`);
        `data_mean` / `data_std` are the transformed training rows' statistics."""
        kind = schema.get("kind")
        if kind != SCHEMA_KIND:
            raise ValueError(f"expected a {SCHEMA_KIND!r} dataset schema (astrobio-hf data table), got one of kind {kind!r}")
        variables = schema.get("variables") or []
        clash = sorted({"variable_names", "variable_units", "transforms"} & set(overrides))
        if clash:
            raise ValueError(f"{clash} come from the dataset schema; do not pass them to from_schema as well")
        return cls(
            variable_names=[v["name"] for v in variables], variable_units=[v.get("unit") or "" for v in variables],
            transforms=[v.get("transform") or "identity" for v in variables], data_mean=data_mean, data_std=data_std,
            **overrides,
        )

    # ----------------------------------------------------------------------------------------------------------
    @property
    def num_variables(self) -> int:
        return len(self.variable_names)

    def stage_at(self, step: int | None) -> int:
        """Path stage of optimizer step `step` (None: the last stage). Stages 0..T-2 have equal length, the last
        `final_stage_weight` times more."""
        if step is None:
            return self.num_stages - 1
        unit = self.path_steps / (self.num_stages - 1 + self.final_stage_weight)
        return int(min(self.num_stages - 1, max(0, int(step // max(unit, 1e-9)))))

    def mu_at(self, step: int | None) -> float:
        return float(self.mu_init * self.mu_factor ** self.stage_at(step))

    def forbidden_matrix(self) -> list[list[bool]]:
        """(d, d) booleans, True where i -> j may never appear: self-loops, `forbidden_edges` and the tiers."""
        d, index = self.num_variables, {n: i for i, n in enumerate(self.variable_names)}
        out = [[i == j for j in range(d)] for i in range(d)]
        for cause, effect in self.forbidden_edges:
            out[index[cause]][index[effect]] = True
        tier_of = {name: t for t, names in enumerate(self.tiers) for name in names}
        for a, ta in tier_of.items():
            for b, tb in tier_of.items():
                if ta > tb:
                    out[index[a]][index[b]] = True
        return out

    # ----------------------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        names = self.variable_names = str_list("variable_names", self.variable_names)
        if len(names) < 2:
            raise ValueError(f"variable_names: expected at least 2 variables, got {names}")
        if len(set(names)) != len(names):
            raise ValueError(f"variable_names: expected unique names, got duplicates {sorted({n for n in names if names.count(n) > 1})}")
        d = len(names)
        self.variable_units = [""] * d if self.variable_units is None else [u or "" for u in self.variable_units]
        self.transforms = ["identity"] * d if self.transforms is None else list(self.transforms)
        for key in ("variable_units", "transforms"):
            if len(getattr(self, key)) != d:
                raise ValueError(f"{key}: expected one entry per variable ({d}), got {len(getattr(self, key))}")
        bad = sorted(set(self.transforms) - set(TRANSFORMS))
        if bad:
            raise ValueError(f"transforms: expected each of {list(TRANSFORMS)}, got {bad}")
        if (self.data_mean is None) != (self.data_std is None):
            raise ValueError("data_mean and data_std: expected both or neither")
        if self.data_mean is not None:
            self.data_mean, self.data_std = float_list("data_mean", self.data_mean), float_list("data_std", self.data_std)
            if len(self.data_mean) != d or len(self.data_std) != d:
                raise ValueError(f"data_mean/data_std: expected {d} values each, got {len(self.data_mean)} and {len(self.data_std)}")
            flat = [n for n, s in zip(names, self.data_std) if not s > 0]
            if flat:
                raise ValueError(f"data_std: expected positive values, got a constant variable: {flat}")
        for key, choices in (("mechanism", MECHANISMS), ("pruning", PRUNING), ("noise_distribution", NOISE_DISTRIBUTIONS),
                             ("structure_search", STRUCTURE_SEARCHES)):
            if getattr(self, key) not in choices:
                raise ValueError(f"{key}: expected one of {list(choices)}, got {getattr(self, key)!r}")
        self.hidden_size = int_at_least("hidden_size", self.hidden_size, 1)
        self.num_hidden_layers = int_at_least("num_hidden_layers", self.num_hidden_layers, 0)
        self.num_stages = int_at_least("num_stages", self.num_stages, 1)
        self.path_steps = int_at_least("path_steps", self.path_steps, 1)
        self.refit_steps = int_at_least("refit_steps", self.refit_steps, 0)
        self.search_knots = int_at_least("search_knots", self.search_knots, 2)
        self.search_max_iter = int_at_least("search_max_iter", self.search_max_iter, 0)
        if not isinstance(self.search_within_regimes, bool):
            raise ValueError(f"search_within_regimes: expected true or false, got {self.search_within_regimes!r}")
        self.num_noise_quantiles = int_at_least("num_noise_quantiles", self.num_noise_quantiles, 3)
        for key in ("lambda1", "lambda2", "edge_threshold", "search_penalty"):
            value = finite_float(key, getattr(self, key))
            if value < 0:
                raise ValueError(f"{key}: expected a value >= 0, got {value}")
            setattr(self, key, value)
        for key in ("dagma_s", "mu_init", "final_stage_weight"):
            value = finite_float(key, getattr(self, key))
            if value <= 0:
                raise ValueError(f"{key}: expected a positive value, got {value}")
            setattr(self, key, value)
        self.mu_factor = finite_float("mu_factor", self.mu_factor)
        if not 0 < self.mu_factor <= 1:
            raise ValueError(f"mu_factor: expected a value in (0, 1], got {self.mu_factor}")
        self.prune_alpha = finite_float("prune_alpha", self.prune_alpha)
        if not 0 < self.prune_alpha < 1:
            raise ValueError(f"prune_alpha: expected a level in (0, 1), got {self.prune_alpha}")

        # background knowledge: known names, consistent with each other, required edges acyclic
        self.forbidden_edges = _pairs("forbidden_edges", self.forbidden_edges, names)
        self.required_edges = _pairs("required_edges", self.required_edges, names)
        tiers = []
        for tier in self.tiers or []:
            tiers.append(str_list("tiers", tier))
        unknown = sorted({n for tier in tiers for n in tier if n not in names})
        if unknown:
            raise ValueError(f"tiers: unknown variable(s) {unknown}; the variables are {names}")
        repeated = sorted({n for tier in tiers for n in tier if sum(n in t for t in tiers) > 1})
        if repeated:
            raise ValueError(f"tiers: expected each variable in at most one tier, got {repeated} in several")
        self.tiers = tiers
        forbidden = self.forbidden_matrix()
        index = {n: i for i, n in enumerate(names)}
        clash = [pair for pair in self.required_edges if forbidden[index[pair[0]]][index[pair[1]]]]
        if clash:
            raise ValueError(f"required_edges: {clash} are also forbidden (forbidden_edges or tiers)")
        from graphlib import CycleError, TopologicalSorter

        graph: dict[str, set[str]] = {}
        for cause, effect in self.required_edges:
            graph.setdefault(effect, set()).add(cause)
        try:
            tuple(TopologicalSorter(graph).static_order())
        except CycleError as e:
            raise ValueError(f"required_edges: expected an acyclic set of edges, got the cycle {e.args[1]}") from e


__all__ = ["CausalWorldModelConfig"]
