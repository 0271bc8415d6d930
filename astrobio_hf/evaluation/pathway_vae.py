"""Evaluation of pathway graph VAEs on held-out edges, with the baselines the card compares against, and the test
evaluation, plots and model card of a pathway-VAE run (main process only).

- `evaluate_link_prediction`: edge AUC and AP (torchmetrics) on a graph set's fixed held-out positive and
  negative edges (written once at dataset build time with PyG's `RandomLinkSplit`), node-feature reconstruction
  error (MSE in normalised units: 1.0 is the error of predicting the training mean), KL per node, and latent usage
  (active units: latent dimensions whose posterior mean varies across nodes with variance > 0.01, Burda et al.
  2016). The encoder sees only the message-passing (training) edges of each graph.
- `VGAEBaseline`: PyG's plain `VGAE` with the GCN encoder of its example, trained on the same graphs for the same
  number of optimizer steps (`train_vgae`).
- `legacy_windows` / `evaluate_windows`: the converted legacy MLP VAE can only read graphs of at most 6 nodes, so
  it is compared on 6-node windows cut around each held-out edge: the window's nodes are the edge's two ends plus
  their nearest neighbours over training edges; every model sees the window's training edges only (the legacy
  model as a 6 x 6 adjacency, the graph models with node features) and scores the held-out edges inside it
  against the window's true non-edges.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch_geometric.data import Data
from torch_geometric.nn import VGAE, GCNConv
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from astrobio_hf.data.metabolic import collate_graphs
from astrobio_hf.hub import build_model_card, markdown_table
from astrobio_hf.hub.init_from import describe_origin
from astrobio_hf.hub.plots import plot_loss_curves

logger = logging.getLogger(__name__)

ACTIVE_UNIT_THRESHOLD = 0.01


# ----------------------------------------------------------------------------------------------------- metrics
class LinkMetrics:
    """Accumulates edge scores and per-node statistics over batches; `compute()` gives the summary dict."""

    def __init__(self, device):
        # Every process that evaluates scores the whole graph set (it is small), and the test runs on the main
        # process alone: no cross-process sync, which would wait forever for processes that are not evaluating.
        self.auroc = BinaryAUROC(sync_on_compute=False).to(device)
        self.ap = BinaryAveragePrecision(sync_on_compute=False).to(device)
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # feature sq err, feature count, kl sum, nodes
        self.mu_sum = self.mu_sq = None
        self.edges = 0

    def update_edges(self, pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> None:
        scores = torch.cat([pos_logits, neg_logits]).float().sigmoid()
        target = torch.cat([torch.ones_like(pos_logits), torch.zeros_like(neg_logits)]).long()
        if scores.numel():
            self.auroc.update(scores, target)
            self.ap.update(scores, target)
        self.edges += int(pos_logits.numel())

    def update_nodes(self, mu: torch.Tensor, kl_per_node: torch.Tensor | None, feature_error: torch.Tensor | None) -> None:
        mu = mu.double()
        self.mu_sum = mu.sum(0) if self.mu_sum is None else self.mu_sum + mu.sum(0)
        self.mu_sq = (mu**2).sum(0) if self.mu_sq is None else self.mu_sq + (mu**2).sum(0)
        n = mu.shape[0]
        if feature_error is not None:
            self.sums[0] += feature_error.double().pow(2).sum()
            self.sums[1] += feature_error.numel()
        if kl_per_node is not None:
            self.sums[2] += kl_per_node.double().sum()
        self.sums[3] += n

    def compute(self) -> dict:
        out = {
            "auc": float(self.auroc.compute()) if self.edges else float("nan"),
            "ap": float(self.ap.compute()) if self.edges else float("nan"),
            "held_out_edges": self.edges,
        }
        if self.mu_sum is not None:  # latent statistics (absent for systems scored on edges only)
            n = self.sums[3].clamp_min(1)
            mean = self.mu_sum / n
            var = self.mu_sq / n - mean**2
            out.update(nodes=int(self.sums[3]), active_units=int((var > ACTIVE_UNIT_THRESHOLD).sum()), latent_size=int(var.numel()))
        if self.sums[1] > 0:
            out["feature_mse"] = float(self.sums[0] / self.sums[1])
        if self.sums[2] != 0:
            out["kl_per_node"] = float(self.sums[2] / n)
        return out


def _kl_per_node(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)


@torch.no_grad()
def evaluate_link_prediction(model, graphs: list[Data], split: str = "test", device="cpu", batch_size: int = 8) -> dict:
    """A `PathwayVAEModel` on the `split` ("val" or "test") held-out edges of `graphs` (eval mode, z = mean)."""
    if split not in ("val", "test"):
        raise ValueError(f"expected split 'val' or 'test', got {split!r}")
    was_training = model.training
    model.eval()
    metrics = LinkMetrics(device)
    loss_sum, count = 0.0, 0
    for batch in DataLoader(graphs, batch_size=batch_size, collate_fn=collate_graphs):
        batch = batch.to(device)
        out = model(
            x=batch.x, edge_index=batch.edge_index, batch=batch.batch,
            pos_edge_index=batch[f"{split}_pos_edge_index"], neg_edge_index=batch[f"{split}_neg_edge_index"],
        )
        metrics.update_edges(out.pos_edge_logits, out.neg_edge_logits)
        normalised = (batch.x - model.feature_mean) / model.feature_std
        recon = (out.feature_reconstruction - model.feature_mean) / model.feature_std
        metrics.update_nodes(out.node_mu, _kl_per_node(out.node_mu, out.node_logvar), recon - normalised)
        loss_sum += float(out.loss) * batch.num_graphs
        count += batch.num_graphs
    result = metrics.compute()
    result["loss"] = loss_sum / max(count, 1)
    model.train(was_training)
    return result


# ----------------------------------------------------------------------------------------------- VGAE baseline
class GCNEncoder(nn.Module):
    """The GCN encoder of PyG's VGAE example: GCN(F -> 2L), then GCN heads for the mean and log-std."""

    def __init__(self, in_channels: int, hidden: int, latent: int):
        super().__init__()
        self.conv1 = GCNConv(in_channels, hidden)
        self.conv_mu = GCNConv(hidden, latent)
        self.conv_logstd = GCNConv(hidden, latent)

    def forward(self, x, edge_index):
        h = F.relu(self.conv1(x, edge_index))
        return self.conv_mu(h, edge_index), self.conv_logstd(h, edge_index)


@dataclass
class VGAEBaseline:
    """PyG `VGAE` with a GCN encoder on the same normalised node features as the pathway VAE."""

    model: VGAE
    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    @classmethod
    def create(cls, config, seed: int = 0) -> VGAEBaseline:
        torch.manual_seed(seed)
        encoder = GCNEncoder(len(config.node_feature_names), config.hidden_size, config.latent_size)
        return cls(VGAE(encoder), torch.tensor(config.feature_mean), torch.tensor(config.feature_std))

    def to(self, device) -> VGAEBaseline:
        self.model.to(device)
        self.feature_mean, self.feature_std = self.feature_mean.to(device), self.feature_std.to(device)
        return self

    def normalise(self, x):
        return (x - self.feature_mean) / self.feature_std

    def loss(self, batch) -> torch.Tensor:
        """PyG's VGAE objective: `recon_loss` (its own negative sampling) + KL / num_nodes."""
        z = self.model.encode(self.normalise(batch.x), batch.edge_index)
        return self.model.recon_loss(z, batch.edge_index) + self.model.kl_loss() / batch.num_nodes

    @torch.no_grad()
    def evaluate(self, graphs: list[Data], split: str = "test", device="cpu", batch_size: int = 8) -> dict:
        self.model.eval()
        metrics = LinkMetrics(device)
        for batch in DataLoader(graphs, batch_size=batch_size, collate_fn=collate_graphs):
            batch = batch.to(device)
            z = self.model.encode(self.normalise(batch.x), batch.edge_index)  # the mean in eval mode
            pos = self.model.decoder(z, batch[f"{split}_pos_edge_index"], sigmoid=False)
            neg = self.model.decoder(z, batch[f"{split}_neg_edge_index"], sigmoid=False)
            metrics.update_edges(pos, neg)
            mu, logstd = self.model.__mu__, self.model.__logstd__.clamp(max=10)
            metrics.update_nodes(mu, _kl_per_node(mu, 2 * logstd), None)
        self.model.train()
        return metrics.compute()


def train_vgae(baseline: VGAEBaseline, graphs: list[Data], steps: int, batch_size: int, lr: float = 0.01,
               device="cpu", seed: int = 0) -> dict:
    """Train the baseline for `steps` optimizer steps over shuffled batches of `graphs` (Adam, as PyG's example)."""
    baseline.to(device)
    optimizer = torch.optim.Adam(baseline.model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(graphs, batch_size=batch_size, shuffle=True, collate_fn=collate_graphs, generator=generator)
    baseline.model.train()
    step, graphs, started, losses = 0, 0, time.perf_counter(), []
    while step < steps:
        for batch in loader:
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = baseline.loss(batch)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            step += 1
            graphs += int(batch.num_graphs)
            if step >= steps:
                break
    seconds = time.perf_counter() - started
    return {"steps": step, "seconds": seconds, "graphs_per_second": graphs / seconds, "final_loss": float(torch.stack(losses[-10:]).mean())}


# ------------------------------------------------------------------------------------ small windows (legacy)
def _neighbours(num_nodes: int, edge_index: torch.Tensor) -> list[list[int]]:
    adj: list[list[int]] = [[] for _ in range(num_nodes)]
    for a, b in edge_index.t().tolist():
        adj[a].append(b)
    return [sorted(set(n)) for n in adj]


def legacy_windows(graphs: list[Data], size: int = 6, split: str = "test", max_windows: int = 2000, seed: int = 0) -> list[Data]:
    """Windows of at most `size` nodes around each held-out positive edge (see the module docstring). Each window
    is a `Data` with `x`, `edge_index` (training edges inside, both directions), `test_pos_edge_index` (held-out
    edges inside) and `test_neg_edge_index` (pairs inside that are no edge of the full graph), in window-local ids,
    with the nodes in a seeded random order."""
    windows: list[Data] = []
    generator = torch.Generator().manual_seed(seed)
    for graph in graphs:
        n = int(graph.num_nodes)
        train = graph.edge_index
        neighbours = _neighbours(n, train)
        true_pairs = {tuple(sorted(p)) for p in train.t().tolist()}
        for key in ("val_pos_edge_index", "test_pos_edge_index"):
            true_pairs |= {tuple(sorted(p)) for p in graph[key].t().tolist()}
        held_out = [tuple(p) for p in graph[f"{split}_pos_edge_index"].t().tolist()]
        held_set = {tuple(sorted(p)) for p in held_out}
        for u, v in held_out:
            nodes, queue = [u, v], deque([u, v])
            while queue and len(nodes) < size:  # breadth first over training edges from both ends
                for w in neighbours[queue.popleft()]:
                    if w not in nodes:
                        nodes.append(w)
                        if len(nodes) == size:
                            break
                        queue.append(w)
            # shuffle the window's node order: the held-out edge's ends must not sit at fixed positions (the
            # legacy MLP reads positions of a padded matrix and would score positions, not structure)
            nodes = [nodes[i] for i in torch.randperm(len(nodes), generator=generator).tolist()]
            local = {node: i for i, node in enumerate(nodes)}
            pairs = [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:]]
            inside_train = [(local[a], local[b]) for a, b in pairs if tuple(sorted((a, b))) in true_pairs and tuple(sorted((a, b))) not in held_set]
            pos = [(local[a], local[b]) for a, b in pairs if tuple(sorted((a, b))) in held_set]
            neg = [(local[a], local[b]) for a, b in pairs if tuple(sorted((a, b))) not in true_pairs]
            if not neg:
                continue  # a complete window has nothing to rank the held-out edge against
            directed = inside_train + [(b, a) for a, b in inside_train]
            windows.append(Data(
                x=graph.x[nodes],
                edge_index=torch.tensor(directed, dtype=torch.long).t().reshape(2, -1),
                test_pos_edge_index=torch.tensor(pos, dtype=torch.long).t().reshape(2, -1),
                test_neg_edge_index=torch.tensor(neg, dtype=torch.long).t().reshape(2, -1),
                val_pos_edge_index=torch.zeros(2, 0, dtype=torch.long),
                val_neg_edge_index=torch.zeros(2, 0, dtype=torch.long),
                num_nodes=len(nodes),
                graph_id=f"{getattr(graph, 'graph_id', 'graph')}:{u}-{v}",
            ))
            if len(windows) >= max_windows:
                return windows
    return windows


@torch.no_grad()
def evaluate_legacy_on_windows(legacy_model, windows: list[Data], device="cpu") -> dict:
    """AUC / AP of the legacy MLP VAE on the windows: it reads the zero-padded window adjacency (training edges)
    and its decoded edge probability for an undirected pair is the mean of the two directions."""
    size = legacy_model.config.max_nodes
    legacy_model.eval().to(device)
    metrics = LinkMetrics(device)
    adjacency = torch.zeros(len(windows), size, size)
    for i, w in enumerate(windows):
        if w.num_nodes > size:
            raise ValueError(f"expected windows of at most {size} nodes for the legacy model, got {w.num_nodes}")
        adjacency[i, w.edge_index[0], w.edge_index[1]] = 1.0
    probs = legacy_model(adjacency.to(device)).edge_probabilities
    probs = 0.5 * (probs + probs.transpose(1, 2))
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
    for i, w in enumerate(windows):
        pos, neg = w.test_pos_edge_index.to(device), w.test_neg_edge_index.to(device)
        metrics.update_edges(logits[i, pos[0], pos[1]], logits[i, neg[0], neg[1]])
    return {k: v for k, v in metrics.compute().items() if k in ("auc", "ap", "held_out_edges")}


def find_legacy_weights():
    """The legacy `.pth` in `../shared/reference` beside the repository (not shipped with the project), or None."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = root.parent / "shared" / "reference" / "trained_pathway_vae.pth"
        if path.is_file():
            return path
    return None


def load_legacy_model(path):
    from astrobio_hf.hub.convert_legacy import (
        legacy_pathway_vae_from_state_dict,
        load_legacy_state_dict,
    )

    return legacy_pathway_vae_from_state_dict(load_legacy_state_dict(path))


# ------------------------------------------------------------------------------------ test evaluation and card
DATASET_NAME = "cobra metabolic networks (E. coli core, iJO1366 by subsystem, Salmonella LT2)"
DATASET_TYPE = "astrobio-hf/metabolic-networks"
TEST_SETS = {"ecoli": "held-out E. coli edges", "salmonella": "held-out organism (Salmonella LT2) edges", "windows": "6-node windows"}
SHORT_LABELS = {"ecoli": "E. coli\nheld-out edges", "salmonella": "Salmonella LT2\n(held-out organism)", "windows": "6-node windows\n(legacy-sized)"}


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_scores(results: dict, path: Path) -> None:
    """Edge AUC and AP of every system on every test set, side by side."""
    systems = [s for s in ("model", "vgae", "legacy") if s in results]
    sets = [t for t in TEST_SETS if any(t in results[s] for s in systems)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    width = 0.8 / len(systems)
    for ax, metric in zip(axes, ("auc", "ap")):
        for i, system in enumerate(systems):
            values = [results[system].get(t, {}).get(metric, float("nan")) for t in sets]
            bars = ax.bar([j + i * width for j in range(len(sets))], values, width, label=system)
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(sets))], [SHORT_LABELS[t] for t in sets], fontsize=8)
        ax.set_title(f"edge {metric.upper()}")
        if metric == "auc":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_and_report(output_dir, model, train_graphs, heldout_graphs, schema, state, *, steps, batch_size, device,
                        train_vgae_baseline=True, seed=0, train_seconds=0.0, run_config=None, throughput=None, init_origin=None) -> dict:
    """Score the model and the baselines, write metrics.json, plots/ and README.md; return the results."""
    output_dir = Path(output_dir)
    (output_dir / "plots").mkdir(parents=True, exist_ok=True)
    results: dict = {"model": {
        "ecoli": evaluate_link_prediction(model, train_graphs, "test", device),
        "salmonella": evaluate_link_prediction(model, heldout_graphs, "test", device),
    }}
    windows = legacy_windows(train_graphs + heldout_graphs, size=6, split="test")
    results["model"]["windows"] = evaluate_link_prediction(model, windows, "test", device)
    vgae_info = None
    if train_vgae_baseline:
        baseline = VGAEBaseline.create(model.config, seed=seed)
        vgae_info = train_vgae(baseline, train_graphs, steps=steps, batch_size=batch_size, device=device, seed=seed)
        results["vgae"] = {
            "ecoli": baseline.evaluate(train_graphs, "test", device),
            "salmonella": baseline.evaluate(heldout_graphs, "test", device),
            "windows": baseline.evaluate(windows, "test", device),
        }
    legacy_path = find_legacy_weights()
    if legacy_path is not None:
        results["legacy"] = {"windows": evaluate_legacy_on_windows(load_legacy_model(legacy_path), windows, device)}
    else:
        logger.info("legacy weights not found (../shared/reference/trained_pathway_vae.pth): no legacy baseline")

    metrics = {
        "global_step": state.global_step,
        "best_val_loss": state.best_metric,
        "train_seconds": train_seconds,
        "throughput": throughput,
        "vgae_training": vgae_info,
        "legacy_weights": str(legacy_path) if legacy_path else None,
        "init_from": init_origin,  # where the starting weights came from (--init_from), or null
        "test": {f"{system}/{test_set}/{k}": v for system, sets in results.items() for test_set, vals in sets.items()
                 for k, v in vals.items()},
        "dataset": {k: schema.get(k) for k in ("counts", "currency_metabolites", "cobra_version") if k in schema},
        "history": state.history,
        "run_config": run_config,
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    plot_loss_curves(state.history, output_dir / "plots" / "loss.png", title="Pathway VAE", ylabel="loss (validation: held-out edges)")
    plot_scores(results, output_dir / "plots" / "edge_scores.png")
    card = build_card(model, results, metrics, schema, len(windows))
    card.save(str(output_dir / "README.md"))
    return {"test": metrics["test"]}


def build_card(model, results, metrics, schema, n_windows):
    config = model.config
    rows = []
    for test_set, label in TEST_SETS.items():
        for system in ("model", "vgae", "legacy"):
            vals = results.get(system, {}).get(test_set)
            if vals:
                rows.append([label, {"model": "this model", "vgae": "PyG VGAE (GCN)", "legacy": "legacy MLP VAE"}[system],
                             _fmt(vals.get("auc")), _fmt(vals.get("ap")), _fmt(vals.get("feature_mse")), _fmt(vals.get("kl_per_node")),
                             f"{vals['active_units']}/{vals['latent_size']}" if "active_units" in vals else "–", vals.get("held_out_edges", "–")])
    table = markdown_table(["test set", "system", "edge AUC", "edge AP", "feature MSE", "KL/node", "active units", "held-out edges"], rows)
    table += (
        "\n\nEdge AUC/AP: held-out edges against as many non-edges (chance AUC 0.5); in the 6-node windows a held-out "
        "edge is ranked against all of its window's non-edges (chance AP is the share of positives, about 0.15). "
        "Feature MSE is in normalised units (1 = predicting the training mean). Active units: latent dimensions whose "
        "posterior mean varies across nodes (variance > 0.01)."
    )
    counts = schema.get("counts", {})
    data_text = (
        "Metabolic networks from cobra's offline models: nodes are metabolites (features: log1p element counts from the "
        "formula, signed log charge, compartment), edges join metabolites that share a reaction, with currency metabolites "
        f"({len(schema.get('currency_metabolites', []))} listed in `astrobio_hf.data.metabolic.CURRENCY_METABOLITES`), "
        "boundary reactions and very large reactions removed. Training: E. coli core and iJO1366 split by subsystem; "
        "held-out organism: Salmonella enterica Typhimurium LT2. Each graph's edges were split once with PyG's "
        "`RandomLinkSplit` (85% message passing and training, 5% validation, 10% test, as many sampled non-edges).\n\n"
        + (f"```json\n{json.dumps(counts, indent=2)}\n```" if counts else "")
    )
    vgae = metrics.get("vgae_training")
    vgae_time = f" ({vgae['seconds']:.0f} s, {vgae['graphs_per_second']:.0f} graphs/s in a plain loop)" if vgae else ""
    rate = (metrics.get("throughput") or {}).get("samples_per_second")
    speed = f" Training throughput {rate:.0f} graphs/s (the recipe loop, with EMA, clipping and the non-finite guard)." if rate else ""
    method = (
        f"Encoder: {config.num_layers} x `{'TransformerConv' if config.encoder_type == 'transformer' else 'GPSConv'}` "
        f"(hidden {config.hidden_size}, {config.num_heads} heads) -> per-node Gaussian (latent {config.latent_size}); inner-product "
        "edge decoder and MLP feature decoder. Loss: edge BCE against the real adjacency with PyG negative sampling + "
        f"feature MSE + KL annealed per optimizer step to {config.kl_weight_max} over {config.kl_warmup_steps} steps. "
        f"Trained {metrics['global_step']} optimizer steps in {metrics['train_seconds']:.0f} s on {platform.processor() or platform.machine()} "
        f"({torch.__version__}); the weights are the EMA of the best validation step. "
        f"{describe_origin(metrics.get('init_from'))}{speed}\n\n"
        "Baselines in the same run: PyG's plain `VGAE` with its example GCN encoder, trained on the same graphs for the same "
        f"number of steps{vgae_time}; and the converted legacy MLP VAE of the system this "
        f"project replaces, which reads at most 6 nodes: all systems are also scored on {n_windows} 6-node windows cut around "
        "each held-out edge (the window's training edges in, the held-out edge against the window's non-edges out). "
        "`benches/bench_pathway_vae.py` compares the throughput of this model and the VGAE side by side at the same size."
    )
    example = (
        "```python\nimport astrobio_hf  # registers the Auto classes\nfrom astrobio_hf.data.metabolic import load_graphs\n"
        "from astrobio_hf.models.pathway_vae import PathwayVAEModel\n\n"
        'model = PathwayVAEModel.from_pretrained("model_cards/pathway-vae/v1.0.0").eval()\n'
        'graph = load_graphs("data/metabolic", "heldout_organism")[0]   # astrobio-hf data metabolic builds it\n'
        "embedding = model.embed_graphs(graph.x, graph.edge_index)       # (1, latent) graph embedding\n```"
    )
    eval_results = []
    for test_set in ("ecoli", "salmonella"):
        vals = results["model"].get(test_set, {})
        for metric in ("auc", "ap"):
            if isinstance(vals.get(metric), float) and math.isfinite(vals[metric]):
                eval_results.append((metric, f"edge {metric.upper()} ({TEST_SETS[test_set]})", vals[metric]))
    return build_model_card(
        model_name="pathway-vae",
        summary=(
            "A variational graph auto-encoder of metabolic pathways (astrobio-hf `pathway_vae`): it embeds a metabolic "
            "network's metabolites and the network itself, predicts missing links between metabolites, and "
            "reconstructs metabolite composition."
        ),
        sections={
            "Evaluation": table + "\n\n![edge scores](plots/edge_scores.png)\n\n![loss](plots/loss.png)",
            "Method": method,
            "Training data": data_text,
            "Intended use": "Research on metabolic network structure (link prediction, network embeddings) for "
            "astrobiology studies; not for clinical or engineering decisions.",
            "Limitations": "Trained on two closely related enterobacteria; metabolite identity comes only from "
            "composition, charge and compartment, so isomers look alike. Link prediction scores held-out edges against "
            "sampled non-edges, the usual but optimistic protocol.",
            "How to load": example,
        },
        eval_results=eval_results,
        dataset_name=DATASET_NAME,
        dataset_type=DATASET_TYPE,
        task_type="graph-ml",
        tags=["pathway_vae", "graph-neural-network", "metabolic-networks", "torch-geometric"],
    )
