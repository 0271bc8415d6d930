"""Evaluation of pathway graph VAEs on held-out edges, with the baselines the card compares against.

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

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch_geometric.data import Data
from torch_geometric.nn import VGAE, GCNConv
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from astrobio_hf.data.metabolic import collate_graphs

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
