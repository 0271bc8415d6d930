"""The causal world model's test: its graph against the truth beside the peers run on the same standardised rows,
and (where the dataset ships exact truth, as the planet world does) interventional and counterfactual errors beside
a non-causal regression baseline; metrics.json, graph.csv, plots/ and the model card.

Errors of queries are in standardised units (divided by the truth's std of each variable) and averaged over the
variables that are not intervened on, so that temperatures in K and log-pressures in dex weigh alike:

* interventional mean error: |mean of the answer - mean of the truth| / std of the truth, averaged;
* interventional MMD: unbiased squared MMD (Gaussian kernel, median bandwidth) between the answer's and the truth's
  standardised non-intervened columns;
* counterfactual RMSE: sqrt(mean((answer - truth)^2)) / std of the truth, per variable, averaged.

Baselines for the queries, in the same run:

* `regression` ignores the graph: for each variable, a gradient-boosted regression on every other variable
  (scikit-learn's HistGradientBoostingRegressor, trained on the training rows). It answers do(X = x) by setting X in
  the observational training rows and predicting every other variable from the changed row, and a counterfactual
  by predicting from the changed row and adding back the row's own residual;
* `no_change` answers every query with the factual rows (observational rows for do-queries): the error of doing
  nothing, the floor a useful answer must beat.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from astrobio_hf.evaluation.causal_peers import BASELINES, PEERS_INTERVENTIONAL, PEERS_OBSERVATIONAL, run_peers
from astrobio_hf.evaluation.common import duration, machine, write_metrics_json
from astrobio_hf.hub import build_model_card, markdown_table
from astrobio_hf.hub.init_from import describe_origin
from astrobio_hf.hub.plots import plot_loss_curves
from astrobio_hf.metrics.graphs import graph_metrics, mmd_rbf

logger = logging.getLogger(__name__)

GRAPH_KEYS = ("shd", "precision", "recall", "f1", "skeleton_f1", "edges", "true_edges")


@torch.no_grad()
def validation_objective(model, data, *, use_regimes: bool = True, device="cpu") -> dict:
    """The last stage's path objective on `data` (TableData): the same score weight for every step, so any two
    checkpoints compare (an early step with h > 0 loses). Also its score, acyclicity h and L1."""
    values = torch.as_tensor(data.values, dtype=model.w1.dtype, device=device)
    mask = torch.as_tensor(data.intervened, device=device) if use_regimes else None
    out = model(values, mask, training_step=None)
    return {"loss": float(out.loss), "score": float(out.score), "h": float(out.h), "l1": float(out.l1)}


def true_adjacency(schema: dict) -> np.ndarray | None:
    names = [v["name"] for v in schema["variables"]]
    if not schema.get("edges"):
        return None
    adj = np.zeros((len(names), len(names)), dtype=int)
    for cause, effect in schema["edges"]:
        adj[names.index(cause), names.index(effect)] = 1
    return adj


def regime_targets(schema: dict) -> dict[int, list[int] | str]:
    """{regime index: [intervened variable indices] or "unknown"} from the schema."""
    names = [v["name"] for v in schema["variables"]]
    out = {}
    for k, regime in enumerate(schema.get("regimes") or []):
        targets = regime.get("targets", [])
        out[k] = "unknown" if targets == "unknown" else [names.index(t) for t in targets]
    return out


def default_peers(has_regimes: bool, has_truth: bool) -> list[str]:
    """Every peer that applies: the observational methods, GIES and CD-NOD with regimes, the baselines with a truth."""
    return [*PEERS_OBSERVATIONAL, *(PEERS_INTERVENTIONAL if has_regimes else ()), *(BASELINES if has_truth else ())]


# ------------------------------------------------------------------------------------------- query baselines
class RegressionBaseline:
    """Each variable regressed on all the others (no graph); see the module docstring."""

    def __init__(self, values: np.ndarray, seed: int = 0):
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.d = values.shape[1]
        self.models = []
        for j in range(self.d):
            others = np.delete(values, j, axis=1)
            self.models.append(HistGradientBoostingRegressor(max_iter=200, random_state=seed).fit(others, values[:, j]))

    def predict(self, rows: np.ndarray, skip: set[int]) -> np.ndarray:
        out = rows.copy()
        for j in range(self.d):
            if j not in skip:
                out[:, j] = self.models[j].predict(np.delete(rows, j, axis=1))
        return out

    def intervene(self, rows: np.ndarray, j: int, value) -> np.ndarray:
        changed = rows.copy()
        changed[:, j] = value
        return self.predict(changed, {j})

    def counterfactual(self, rows: np.ndarray, j: int, value) -> np.ndarray:
        changed = rows.copy()
        changed[:, j] = value
        return self.predict(changed, {j}) + (rows - self.predict(rows, {j}))


def _query_errors(answer: np.ndarray, truth: np.ndarray, keep: list[int], *, paired: bool) -> dict:
    scale = truth[:, keep].std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    a, t = answer[:, keep] / scale, truth[:, keep] / scale
    if paired:
        return {"rmse": float(np.sqrt(((a - t) ** 2).mean(axis=0)).mean())}
    return {"mean_error": float(np.abs(a.mean(axis=0) - t.mean(axis=0)).mean()), "mmd": mmd_rbf(a, t, max_rows=1000)}


def query_evaluation(model, train, data_dir: Path, seed: int = 0) -> dict | None:
    """Interventional and counterfactual errors of the model and the baselines against the dataset's exact truth
    (`truth.json` with `interventional_truth.parquet` / `counterfactual_truth.parquet`); None without them."""
    import pandas as pd

    truth_path = Path(data_dir) / "truth.json"
    if not truth_path.is_file():
        return None
    truth = json.loads(truth_path.read_text())
    names = model.config.variable_names
    observational = train.values[~train.intervened.any(axis=1)]
    baseline = RegressionBaseline(train.values, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    out: dict = {"interventional": {}, "counterfactual": {}}
    frame = pd.read_parquet(Path(data_dir) / truth["interventional"]["file"])
    for query in truth["interventional"]["queries"]:
        j, value = names.index(query["variable"]), float(query["value"])
        t = frame.loc[frame["query"] == query["name"], names].to_numpy(np.float64)
        keep = [k for k in range(len(names)) if k != j]
        answers = {
            "model": model.sample(len(t), {query["variable"]: value}, generator=generator).double().cpu().numpy(),
            "regression": baseline.intervene(observational, j, value),
            "no_change": observational,
        }
        out["interventional"][query["name"]] = {k: _query_errors(a, t, keep, paired=False) for k, a in answers.items()}
    frame = pd.read_parquet(Path(data_dir) / truth["counterfactual"]["file"])
    for query in truth["counterfactual"]["queries"]:
        part = frame[frame["query"] == query["name"]]
        j = names.index(query["variable"])
        factual = part[[f"factual_{v}" for v in names]].to_numpy(np.float64)
        t = part[[f"counterfactual_{v}" for v in names]].to_numpy(np.float64)
        value = part["intervened_value"].to_numpy(np.float64)
        keep = [k for k in range(len(names)) if k != j]
        answers = {
            "model": model.counterfactual(torch.as_tensor(factual, dtype=model.w1.dtype), {query["variable"]: value}).double().cpu().numpy(),
            "regression": baseline.counterfactual(factual, j, value),
            "no_change": factual,
        }
        out["counterfactual"][query["name"]] = {k: _query_errors(a, t, keep, paired=True) for k, a in answers.items()}
    for kind, metric in (("interventional", "mean_error"), ("interventional", "mmd"), ("counterfactual", "rmse")):
        for system in ("model", "regression", "no_change"):
            vals = [q[system][metric] for q in out[kind].values()]
            out.setdefault("summary", {})[f"{kind}_{metric}/{system}"] = float(np.mean(vals))
    return out


# ------------------------------------------------------------------------------------------------- report
def plot_graphs(names, true_adj, learned, peers: list[dict], path: Path) -> None:
    panels = 3 if true_adj is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6))
    axes = np.atleast_1d(axes)
    mats = [("learned graph", learned)] + ([("true graph", true_adj)] if true_adj is not None else [])
    for ax, (title, mat) in zip(axes, mats):
        ax.imshow(mat, cmap="Greys", vmin=0, vmax=1)
        ax.set_title(f"{title} ({int(mat.sum())} edges; row = cause)")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
    if true_adj is not None:
        ax = axes[-1]
        rows = [p for p in peers if p.get("status") == "ok" and "shd" in p]
        labels = [p["method"] for p in rows]
        ax.barh(range(len(rows)), [p["shd"] for p in rows], color=["C3" if m == "this model" else "C0" for m in labels])
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("SHD to the true graph (lower is better)")
        for k, p in enumerate(rows):
            ax.text(p["shd"] + 0.2, k, f"F1 {p['f1']:.2f}", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v):
    return "–" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def evaluate_and_report(output_dir, model, train, val, schema, data_dir, state, *, finalize_report, dataset, use_regimes=True,
                        peers="auto", peer_mlp_iterations=2000, seed=0, train_seconds=0.0, run_config=None, throughput=None,
                        init_origin=None) -> dict:
    """Score the finalized model and the peers, write metrics.json, graph.csv, plots/ and README.md."""
    output_dir = Path(output_dir)
    (output_dir / "plots").mkdir(parents=True, exist_ok=True)
    names = model.config.variable_names
    learned = model.adjacency_matrix()
    with (output_dir / "graph.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Cause", "Effect", "weight"])
        writer.writerows([e["cause"], e["effect"], f"{e['weight']:.6g}"] for e in model.edges())
    true_adj = true_adjacency(schema)
    test: dict = {}
    methods: list[dict] = [{"method": "this model", "status": "ok", "graph": learned.tolist(), "seconds": train_seconds}]
    if true_adj is not None:
        methods[0].update(graph_metrics(learned, true_adj))
        test.update({f"graph/{k}": methods[0][k] for k in GRAPH_KEYS})
    # Peers on the model's own standardised rows (transform, then the training statistics).
    with torch.no_grad():
        z = model.standardise(torch.as_tensor(train.values, dtype=model.w1.dtype)).double().cpu().numpy()
    targets = regime_targets(schema)
    has_regimes = use_regimes and any(t == "unknown" or t for t in targets.values())
    chosen = default_peers(has_regimes, true_adj is not None) if peers == "auto" else [] if peers == "none" else [p.strip() for p in peers.split(",") if p.strip()]
    if chosen:
        methods += run_peers(z, true_adj, methods=chosen, regimes=train.regime if has_regimes else None,
                             regime_targets=targets if has_regimes else None, seed=seed, mlp_iterations=peer_mlp_iterations)
    for p in methods[1:]:
        if p.get("status") == "ok" and "shd" in p:
            test[f"peers/{p['method']}/shd"] = p["shd"]
            test[f"peers/{p['method']}/f1"] = p["f1"]
        elif p.get("status") == "ok" and p.get("graph") is not None:  # no truth: how far each peer is from this model
            agreement = graph_metrics(np.asarray(p["graph"]), learned)
            p["to_this_model"] = {k: agreement[k] for k in ("shd", "skeleton_f1", "edges")}
    queries = query_evaluation(model, train, data_dir, seed=seed)
    if queries:
        test.update({f"queries/{k}": v for k, v in queries["summary"].items()})
    payload = write_metrics_json(
        output_dir, test, state, train_seconds=train_seconds, throughput=throughput, run_config=run_config, init_origin=init_origin,
        dataset={"name": dataset, "data_dir": str(data_dir), "rows": len(train), "val_rows": len(val), "source": schema.get("source")},
        finalize=finalize_report, methods=methods,
        queries=queries,
    )
    plot_loss_curves(state.history, output_dir / "plots" / "loss.png", title="Causal world model", ylabel="path objective (val: last stage)")
    plot_graphs(names, true_adj, learned, methods, output_dir / "plots" / "graphs.png")
    build_card(model, methods, queries, payload, schema, dataset, finalize_report).save(str(output_dir / "README.md"))
    return {"test": test}


def build_card(model, methods, queries, payload, schema, dataset, finalize_report):
    config = model.config
    sections = {}
    if methods and "shd" in methods[0]:
        rows = [[p["method"], _fmt(p.get("shd")) + (f" ± {p['shd_std']:.1f}" if "shd_std" in p else ""), _fmt(p.get("f1")),
                 _fmt(p.get("skeleton_f1")), _fmt(p.get("edges")), f"{p.get('seconds', 0):.1f}"] if p.get("status") == "ok"
                else [p["method"], p.get("status", "?"), "", "", "", ""] for p in methods]
        graph_text = markdown_table(["method", "SHD", "F1", "skeleton F1", "edges", "seconds"], rows) + (
            f"\n\nAgainst the {methods[0]['true_edges']}-edge ground truth of the dataset. SHD counts node pairs whose "
            "edge differs (a reversed edge once); F1 is directed (an undirected CPDAG edge counts as correct if either "
            "direction is true); the peers ran on the same standardised training rows in the same run."
            + (" This model used background knowledge (tiers / forbidden / required edges) that the peers did not get."
               if model.config.tiers or model.config.forbidden_edges or model.config.required_edges else ""))
    else:
        rows = [[p["method"], _fmt(p["to_this_model"]["edges"]), _fmt(p["to_this_model"]["shd"]), _fmt(p["to_this_model"]["skeleton_f1"]),
                 f"{p.get('seconds', 0):.1f}"] for p in methods[1:] if "to_this_model" in p]
        graph_text = (f"The dataset has no ground-truth graph. This model's graph has {int(np.asarray(methods[0]['graph']).sum())} "
                      "edges (in `graph.csv`); the peers, run on the same standardised rows, differ from it by:")
        graph_text += ("\n\n" + markdown_table(["method", "edges", "SHD to this model", "skeleton F1 to this model", "seconds"], rows)
                       if rows else " (no peers were run)")
    sections["Evaluation"] = graph_text + "\n\n![graphs](plots/graphs.png)"
    if queries:
        rows = []
        for kind, metric in (("interventional", "mean_error"), ("interventional", "mmd"), ("counterfactual", "rmse")):
            for name, systems in queries[kind].items():
                rows.append([kind, name, metric] + [_fmt(systems[s][metric]) for s in ("model", "regression", "no_change")])
        sections["Evaluation"] += "\n\n" + markdown_table(["query", "name", "metric", "this model", "regression (no graph)", "no change"], rows) + (
            "\n\nErrors in standardised units against the exact truth (the same planets resynthesised), averaged over "
            "the non-intervened variables; see `astrobio_hf/evaluation/causal_world_model.py`.")
    edges = "\n".join(f"- {e['cause']} → {e['effect']} (weight {e['weight']:.2f})" for e in model.edges()) or "- (none)"
    sections["Evaluation"] += "\n\nThe learned graph (also in `graph.csv` of the run and `model.edges()`):\n\n" + edges
    sections["Method"] = (
        f"A structural causal model `x_j = f_j(parents) + e_j` over {config.num_variables} variables with "
        f"{'an MLP (hidden ' + str(config.hidden_size) + ')' if config.mechanism == 'mlp' else 'a linear map'} per variable. "
        f"Trained in the shared Accelerate loop for {payload['global_step']} steps ({duration(payload['train_seconds'])} on {machine()}) "
        f"on DAGMA's log-det acyclicity path ({config.num_stages} stages, mu {config.mu_init} × {config.mu_factor}^t, "
        f"L1 {config.lambda1}, L2 {config.lambda2}); rows where a regime intervened on a variable do not enter that "
        f"variable's score. Final graph: weights ≥ {config.edge_threshold} "
        f"({finalize_report.get('thresholded')} edges), {len(finalize_report.get('cycle_edges_removed', []))} cycle edges removed, "
        + (f"then a greedy hill-climb from that DAG on CAM's additive-spline BIC score (add / remove / reverse one edge; penalty "
           f"{config.search_penalty}, {config.search_knots} knots{', each regime standardised on its own' if config.search_within_regimes else ''}): "
           f"{len(finalize_report.get('search_moves', []))} moves, "
           if config.structure_search == "cam_hill_climb" else "")
        + f"{finalize_report.get('prune_rule')}: {len(finalize_report.get('pruned', []))} pruned; then an L-BFGS refit of the "
        "mechanisms on that graph. Units: " + ", ".join(f"{n} ({t})" for n, t in zip(config.variable_names, config.transforms))
        + " — each transformed and standardised with the training rows' statistics, undone by every query. "
        + describe_origin(payload.get("init_from"))
    )
    sections["Training data"] = f"`{dataset}`: {payload['dataset']['rows']} training rows. {schema.get('source', '')}\n\n" + "\n".join(
        f"- {n}" for n in schema.get("notes", []))
    sections["Intended use"] = ("Research on causal structure and what-if questions of tabular scientific data; the graph is "
                                "a hypothesis to test, not a finding.")
    sections["Limitations"] = ("Additive-noise SCM without hidden confounders or cycles; a graph learned from observational "
                               "rows is identifiable only under the model's assumptions (non-linear mechanisms, additive noise); "
                               "counterfactuals are exact only if the mechanisms and the abducted noise are right.")
    sections["How to load"] = (
        "```python\nimport astrobio_hf  # registers the Auto classes\nfrom transformers import AutoModel\n\n"
        'model = AutoModel.from_pretrained("runs/causal_world_model")\nprint(model.edges())\n'
        f'rows = model.sample(1000, interventions={{"{config.variable_names[0]}": 1.0}})   # do(X = x), file units\n```')
    eval_results = [("shd", "SHD to the true graph", float(methods[0]["shd"])), ("f1", "edge F1", float(methods[0]["f1"]))] if "shd" in methods[0] else []
    return build_model_card(
        model_name="causal-world-model",
        summary="A neural structural causal model (astrobio-hf `causal_world_model`): a learned DAG with one mechanism per "
                "variable that samples under interventions and answers counterfactuals.",
        sections=sections, eval_results=[r for r in eval_results if math.isfinite(r[2])],
        dataset_name=dataset, dataset_type=f"astrobio-hf/{dataset}", task_type="tabular-causal-discovery",
        tags=["causal_world_model", "causal-discovery", "structural-causal-model"],
    )
