"""Pathway VAE: a variational graph auto-encoder over metabolic pathway graphs (torch_geometric layers).

A batch is a PyG-style disjoint union of graphs: node features `x (N, F)`, message-passing edges `edge_index (2, E)`
(both directions) and `batch (N,)` the graph of each node, sorted as `torch_geometric.data.Batch` makes it.
The encoder (`TransformerConv` or `GPSConv` layers) gives each node a Gaussian latent `N(mu, sigma^2)` (N, L); the
edge decoder scores a node pair by the inner product of their latent codes plus a learned bias, and the feature
decoder (an MLP) reconstructs the normalised node features. The loss is computed inside `forward` from the graph
itself (edges to reconstruct vs. non-edges, features, KL to the prior), so there are no labels. A graph's
embedding is the mean of its nodes' `mu` (`embed_graphs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GINConv, GPSConv, TransformerConv, global_mean_pool
from torch_geometric.nn import LayerNorm as GraphLayerNorm
from torch_geometric.nn import Linear as GraphLinear
from torch_geometric.nn.models.autoencoder import InnerProductDecoder
from torch_geometric.utils import batched_negative_sampling, to_undirected
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput, logging

from ..loading import ClearLoadingErrorsMixin
from ..normalisation import statistics_table
from .configuration_pathway_vae import PathwayVAEConfig

logger = logging.get_logger(__name__)

# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
@dataclass
class PathwayVAEOutput(ModelOutput):
    """
    Output of [`PathwayVAEModel`] (N nodes, G graphs, L = `config.latent_size`, F = `config.node_feature_size`).

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `edge_loss_weight * edge_loss + feature_loss_weight * feature_loss + kl_weight * kl`.
        edge_loss (`torch.FloatTensor` of shape `()`):
            Mean binary cross-entropy of the edges to reconstruct (target 1) plus that of the non-edges (target 0).
        feature_loss (`torch.FloatTensor` of shape `()`):
            Mean squared error of the reconstructed node features, in normalised units.
        kl (`torch.FloatTensor` of shape `()`):
            KL divergence of each node's latent Gaussian from N(0, I), summed over the latent and averaged over nodes.
        kl_weight (`torch.FloatTensor` of shape `()`):
            The KL weight used, `config.kl_weight_at(training_step)`.
        pos_edge_logits (`torch.FloatTensor` of shape `(P,)`):
            Edge logit of each edge to reconstruct (`pos_edge_index`).
        neg_edge_logits (`torch.FloatTensor` of shape `(Q,)`):
            Edge logit of each non-edge (`neg_edge_index`, given or sampled).
        node_mu (`torch.FloatTensor` of shape `(N, L)`):
            Mean of each node's latent Gaussian.
        node_logvar (`torch.FloatTensor` of shape `(N, L)`):
            Log-variance of each node's latent Gaussian, clamped to `[-logvar_clamp, logvar_clamp]`.
        z (`torch.FloatTensor` of shape `(N, L)`):
            The latent codes decoded: `mu + exp(logvar / 2) * noise` (`mu` in evaluation mode without noise).
        graph_embedding (`torch.FloatTensor` of shape `(G, L)`):
            Mean of `node_mu` over the nodes of each graph.
        feature_reconstruction (`torch.FloatTensor` of shape `(N, F)`):
            Reconstructed node features, physical units (the units of `x`).
    """

    loss: torch.FloatTensor | None = None
    edge_loss: torch.FloatTensor | None = None
    feature_loss: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None
    kl_weight: torch.FloatTensor | None = None
    pos_edge_logits: torch.FloatTensor | None = None
    neg_edge_logits: torch.FloatTensor | None = None
    node_mu: torch.FloatTensor | None = None
    node_logvar: torch.FloatTensor | None = None
    z: torch.FloatTensor | None = None
    graph_embedding: torch.FloatTensor | None = None
    feature_reconstruction: torch.FloatTensor | None = None


# ------------------------------------------------------------------------------------------------------------
# Private helpers
# ------------------------------------------------------------------------------------------------------------
def _feature_statistics(config: PathwayVAEConfig) -> dict[str, torch.Tensor]:
    """Per-feature mean/std (F,) from the config; identity (0, 1) where it holds none."""
    size = (config.node_feature_size,)
    return {
        "feature_mean": statistics_table(config.feature_mean, size, 0.0),
        "feature_std": statistics_table(config.feature_std, size, 1.0),
    }


def _check_edges(name: str, edges, batch: torch.Tensor) -> torch.Tensor:
    """(2, E) integer tensor of node indices in [0, N) joining nodes of the same graph; returned as int64."""
    if not isinstance(edges, torch.Tensor):
        raise ValueError(  # noqa: TRY004 - bad model input is a ValueError across the families
            f"{name}: expected a (2, E) integer torch.Tensor, got {type(edges).__name__}"
        )
    if edges.ndim != 2 or edges.shape[0] != 2:
        raise ValueError(f"{name}: expected shape (2, E), got {tuple(edges.shape)}")
    if edges.is_floating_point() or edges.is_complex() or edges.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor of node indices, got dtype {edges.dtype}")
    edges = edges.long()
    num_nodes = batch.shape[0]
    if edges.numel() == 0:
        return edges
    low, high = int(edges.min()), int(edges.max())
    if low < 0 or high >= num_nodes:
        raise ValueError(
            f"{name} points outside its nodes: expected node indices in [0, {num_nodes}) (N = x.shape[0]), got "
            f"max index {high} and min index {low}"
        )
    crossing = (batch[edges[0]] != batch[edges[1]]).nonzero().flatten()
    if crossing.numel():
        k = int(crossing[0])
        i, j = int(edges[0, k]), int(edges[1, k])
        raise ValueError(
            f"{name}: expected edges within one graph, got {crossing.numel()} edge(s) joining different graphs, "
            f"e.g. ({i}, {j}) between graphs {int(batch[i])} and {int(batch[j])}"
        )
    return edges


def _bce_mean(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of `logits` against a constant target; 0 for an empty set (a complete graph has
    no non-edges to score)."""
    if logits.numel() == 0:
        return logits.sum()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


# ------------------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------------------
class PathwayVAETransformerLayer(GradientCheckpointingLayer):
    """`TransformerConv` (heads averaged) -> GELU -> dropout, added to the input and layer-normalised."""

    def __init__(self, config: PathwayVAEConfig):
        super().__init__()
        hidden = config.hidden_size
        self.conv = TransformerConv(hidden, hidden, heads=config.num_heads, concat=False, dropout=config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, hidden_states: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        update = self.dropout(F.gelu(self.conv(hidden_states, edge_index)))  # (N, H)
        return self.norm(hidden_states + update)  # (N, H)


class PathwayVAEGPSLayer(GradientCheckpointingLayer):
    """`GPSConv`: GIN message passing over the edges plus multi-head attention over all nodes of each graph, with
    residuals, per-node LayerNorms and a feed-forward MLP (the GPS recipe). Per-node LayerNorm instead of GPS's
    default BatchNorm: a graph's encoding then does not depend on the other graphs of its batch, and training and
    evaluation normalise alike."""

    def __init__(self, config: PathwayVAEConfig):
        super().__init__()
        hidden = config.hidden_size
        local = GINConv(nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)))
        self.conv = GPSConv(
            hidden,
            local,
            heads=config.num_heads,
            dropout=config.dropout,
            act="gelu",
            norm="layer_norm",
            norm_kwargs={"mode": "node"},
            attn_type="multihead",
            attn_kwargs={"dropout": config.dropout},
        )

    def forward(self, hidden_states: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return self.conv(hidden_states, edge_index, batch)  # (N, H)


_ENCODER_LAYERS = {"transformer": PathwayVAETransformerLayer, "gps": PathwayVAEGPSLayer}


class PathwayVAEEncoder(nn.Module):
    """Normalised node features (N, F) -> input projection -> encoder layers -> latent mean and clamped
    log-variance (N, L) each."""

    def __init__(self, config: PathwayVAEConfig):
        super().__init__()
        self.logvar_clamp = config.logvar_clamp
        self.input_projection = nn.Linear(config.node_feature_size, config.hidden_size)
        self.layers = nn.ModuleList([_ENCODER_LAYERS[config.encoder_type](config) for _ in range(config.num_layers)])
        self.mu_head = nn.Linear(config.hidden_size, config.latent_size)
        self.logvar_head = nn.Linear(config.hidden_size, config.latent_size)

    def forward(
        self, normalized_x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states = self.input_projection(normalized_x)  # (N, H)
        for layer in self.layers:
            hidden_states = layer(hidden_states, edge_index, batch)  # (N, H)
        mu = self.mu_head(hidden_states)  # (N, L)
        logvar = self.logvar_head(hidden_states).clamp(-self.logvar_clamp, self.logvar_clamp)  # (N, L)
        return mu, logvar


class PathwayVAEFeatureDecoder(nn.Module):
    """Latent code (N, L) -> hidden -> normalised node features (N, F)."""

    def __init__(self, config: PathwayVAEConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.latent_size, config.hidden_size)
        self.fc_out = nn.Linear(config.hidden_size, config.node_feature_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.gelu(self.fc_in(z)))


# ------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ------------------------------------------------------------------------------------------------------------
class PathwayVAEPreTrainedModel(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = PathwayVAEConfig
    config: PathwayVAEConfig
    base_model_prefix = "pathway_vae"
    main_input_name = "x"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["PathwayVAETransformerLayer", "PathwayVAEGPSLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) linear and attention weights (torch and torch_geometric linears alike),
        zero biases, unit LayerNorms, GIN's fixed epsilon, a zero edge bias, and the feature statistics (buffers
        that are not saved) recomputed from the config, so that `from_pretrained` (which builds the model on the
        meta device) gets them right."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, GraphLinear)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):  # its out_proj is an nn.Linear, handled above
            init.normal_(module.in_proj_weight, mean=0.0, std=std)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, (nn.LayerNorm, GraphLayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GINConv):
            init.constant_(module.eps, module.initial_eps)
        elif isinstance(module, PathwayVAEModel):
            init.zeros_(module.edge_bias)
            with torch.device("cpu"):
                stats = _feature_statistics(self.config)
            for name, value in stats.items():
                init.copy_(getattr(module, name), value)


# ------------------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------------------
class PathwayVAEModel(PathwayVAEPreTrainedModel):
    """Variational graph auto-encoder: graph-transformer encoder, inner-product edge decoder, MLP feature decoder,
    and the negative ELBO (with KL annealing) as its loss."""

    def __init__(self, config: PathwayVAEConfig):
        super().__init__(config)
        config._validate()
        # Feature statistics: config values, not saved with the weights (the config is the source of truth)
        for name, value in _feature_statistics(config).items():
            self.register_buffer(name, value, persistent=False)
        self.encoder = PathwayVAEEncoder(config)
        self.edge_decoder = InnerProductDecoder()
        self.edge_bias = nn.Parameter(torch.zeros(1))  # the logit of two orthogonal latent codes
        self.feature_decoder = PathwayVAEFeatureDecoder(config)
        self.post_init()

    # ---- public helpers --------------------------------------------------------------------------------------
    def encode(
        self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Node features `x (N, F)` (physical units) over `edge_index (2, E)` -> latent `(mu, logvar)`, (N, L) each
        (log-variance clamped to `[-logvar_clamp, logvar_clamp]`)."""
        x, edge_index, batch, _ = self._check_graph(x, edge_index, batch)
        return self.encoder(self._normalize(x), edge_index, batch)

    def edge_logits(self, z: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Edge logit `z_i . z_j + bias` of each pair `(i, j)` of `edge_index (2, E)` -> (E,)."""
        return self.edge_decoder(z, edge_index, sigmoid=False) + self.edge_bias

    def embed_graphs(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """One embedding per graph (G, L): the mean of its nodes' latent mean `mu`. Call `model.eval()` first for a
        deterministic embedding (dropout off), and wrap in `torch.no_grad()` when no gradient is wanted."""
        x, edge_index, batch, num_graphs = self._check_graph(x, edge_index, batch)
        mu, _ = self.encoder(self._normalize(x), edge_index, batch)
        return global_mean_pool(mu, batch, size=num_graphs)

    def sample_negative_edges(
        self, edge_index: torch.Tensor, pos_edge_index: torch.Tensor, batch: torch.Tensor
    ) -> torch.Tensor:
        """Node pairs that are not edges (2, Q), sampled with `torch_geometric.utils.batched_negative_sampling`: each
        one joins two distinct nodes of the same graph and is neither an edge of `edge_index` nor one of
        `pos_edge_index`, in either direction (the inner-product decoder is symmetric). About
        `negative_sampling_ratio` non-edges per edge to reconstruct, in proportion to each graph's edges (PyG may
        return fewer for dense graphs, and none for a complete one). The sampling draws from Python's `random`
        module (as PyG does): seed it (`accelerate.utils.set_seed` does) for reproducible negatives. Inputs are
        taken as validated by `forward` (indices in range, `batch` sorted)."""
        num_nodes = batch.shape[0]
        # coalesced: sorted by source node, hence by graph (batch is sorted), as batched_negative_sampling needs
        true_edges = to_undirected(torch.cat([edge_index, pos_edge_index], dim=1), num_nodes=num_nodes)
        # PyG samples int(ratio * edges of the graph) per graph; scale the ratio so the total is about
        # negative_sampling_ratio * P (exactly that when the edges to reconstruct are the message-passing edges)
        ratio = self.config.negative_sampling_ratio * pos_edge_index.shape[1] / true_edges.shape[1]
        negatives = batched_negative_sampling(true_edges, batch, num_neg_samples=float(ratio))
        # PyG builds a graph's empty sample with torch.tensor([]) (float32), which turns the whole result float
        return negatives.long()

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        batch: torch.Tensor | None = None,
        pos_edge_index: torch.Tensor | None = None,
        neg_edge_index: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        training_step: int | None = None,
        return_dict: bool = True,
    ) -> PathwayVAEOutput | tuple:
        """
        Args:
            x (`torch.FloatTensor` of shape `(N, F)`): node features in physical units, in the order of
                `config.node_feature_names`, in the model's dtype.
            edge_index (`torch.LongTensor` of shape `(2, E)`): message-passing edges (both directions of each
                undirected edge).
            batch (`torch.LongTensor` of shape `(N,)`, *optional*): graph id of each node, sorted, ids 0 ... G-1
                (as `torch_geometric.data.Batch` makes it); `None` means one graph.
            pos_edge_index (`torch.LongTensor` of shape `(2, P)`, *optional*): edges to reconstruct; defaults to
                `edge_index`. Pass held-out edges here to score them.
            neg_edge_index (`torch.LongTensor` of shape `(2, Q)`, *optional*): non-edges to score; when `None` they
                are sampled (`sample_negative_edges`), never a true edge nor across graphs.
            noise (`torch.FloatTensor` of shape `(N, L)`, *optional*): reparameterisation noise; when `None` it is
                drawn from N(0, I) in training mode, and `z = mu` in evaluation mode.
            training_step (`int`, *optional*): optimizer step, for the KL annealing (`config.kl_weight_at`); `None`
                uses `kl_weight_max`.
            return_dict (`bool`, defaults to `True`): return a `PathwayVAEOutput`; `False` returns its tuple.
        """
        config = self.config
        # 0. Validate the graph, the edges to score and the noise
        x, edge_index, batch, num_graphs = self._check_graph(x, edge_index, batch)
        pos_edge_index = edge_index if pos_edge_index is None else _check_edges("pos_edge_index", pos_edge_index, batch)
        if pos_edge_index.shape[1] == 0:
            raise ValueError("pos_edge_index: expected at least one edge to reconstruct, got shape (2, 0)")
        if neg_edge_index is not None:
            neg_edge_index = _check_edges("neg_edge_index", neg_edge_index, batch)
        num_nodes, latent = x.shape[0], config.latent_size
        if noise is not None and (not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (num_nodes, latent)):
            found = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise: expected a tensor of shape (N, L) = ({num_nodes}, {latent}), got {found}")
        kl_weight = config.kl_weight_at(training_step)

        # 1. Encode: normalised features -> per-node latent Gaussian
        normalized_x = self._normalize(x)  # (N, F)
        mu, logvar = self.encoder(normalized_x, edge_index, batch)  # (N, L) each

        # 2. Reparameterise
        if noise is None and self.training:
            noise = torch.randn_like(mu)
        z = mu if noise is None else mu + torch.exp(0.5 * logvar) * noise.to(mu.dtype)  # (N, L)

        # 3. Decode edges (true edges and non-edges) and node features
        if neg_edge_index is None:
            neg_edge_index = self.sample_negative_edges(edge_index, pos_edge_index, batch)  # (2, Q)
            if neg_edge_index.shape[1] == 0:
                logger.warning_once(
                    "pathway VAE: no non-edge could be sampled (complete graphs, or too few edges to reconstruct "
                    "per graph for negative_sampling_ratio); the edge loss has no negative term. Pass neg_edge_index "
                    "to score chosen non-edges."
                )
        pos_logits = self.edge_logits(z, pos_edge_index)  # (P,)
        neg_logits = self.edge_logits(z, neg_edge_index)  # (Q,)
        reconstruction = self.feature_decoder(z)  # (N, F), normalised units

        # 4. Negative ELBO with the annealed KL weight
        edge_loss = _bce_mean(pos_logits, 1.0) + _bce_mean(neg_logits, 0.0)
        feature_loss = F.mse_loss(reconstruction, normalized_x)
        kl = (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=-1)).mean()
        loss = config.edge_loss_weight * edge_loss + config.feature_loss_weight * feature_loss + kl_weight * kl

        output = PathwayVAEOutput(
            loss=loss,
            edge_loss=edge_loss,
            feature_loss=feature_loss,
            kl=kl,
            kl_weight=torch.tensor(kl_weight, dtype=loss.dtype, device=loss.device),
            pos_edge_logits=pos_logits,
            neg_edge_logits=neg_logits,
            node_mu=mu,
            node_logvar=logvar,
            z=z,
            graph_embedding=global_mean_pool(mu, batch, size=num_graphs),  # (G, L)
            feature_reconstruction=reconstruction * self.feature_std + self.feature_mean,  # (N, F), physical units
        )
        return output if return_dict else output.to_tuple()

    # ---- private ---------------------------------------------------------------------------------------------
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean) / self.feature_std

    def _check_graph(self, x, edge_index, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Validate `x (N, F)`, `edge_index (2, E)`, `batch (N,)`; returns them (indices as int64, `batch` made of
        zeros when `None`) and the number of graphs G."""
        size = self.config.node_feature_size
        expected_x = f"(N, F) with F={size} {self.config.node_feature_names}"
        if not isinstance(x, torch.Tensor):
            raise ValueError(  # noqa: TRY004 - bad model input is a ValueError across the families
                f"x: expected a torch.Tensor {expected_x}, got {type(x).__name__}"
            )
        if x.ndim != 2 or x.shape[1] != size:
            raise ValueError(f"x: expected {expected_x}, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("x: expected at least one node, got shape (0, F)")
        dtype = self.feature_std.dtype
        if x.dtype != dtype:
            raise ValueError(f"x: expected dtype {dtype} (the model's), got {x.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError(f"x: expected finite node features, got {int((~torch.isfinite(x)).sum())} NaN/Inf values")
        num_nodes = x.shape[0]

        if batch is None:
            batch = torch.zeros(num_nodes, dtype=torch.long, device=x.device)
        else:
            if not isinstance(batch, torch.Tensor) or batch.ndim != 1 or batch.shape[0] != num_nodes:
                found = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
                raise ValueError(f"batch: expected a graph id per node, shape (N,) = ({num_nodes},), got {found}")
            if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
                raise ValueError(f"batch: expected an integer tensor of graph ids, got dtype {batch.dtype}")
            batch = batch.long()
            # sorted ids 0 ... G-1, each with a node: attention over each graph (to_dense_batch) and the batched
            # negative sampling rely on this layout, which torch_geometric.data.Batch always has
            steps = batch[1:] - batch[:-1]
            if int(batch[0]) != 0 or bool(((steps != 0) & (steps != 1)).any()):
                raise ValueError(
                    "batch: expected sorted graph ids 0, 1, ..., G-1 with at least one node each (as "
                    f"torch_geometric.data.Batch makes them), got ids {torch.unique(batch).tolist()[:20]} "
                    f"starting with {batch[:10].tolist()}"
                )
        edge_index = _check_edges("edge_index", edge_index, batch)
        return x, edge_index, batch, int(batch[-1]) + 1


__all__ = ["PathwayVAEModel", "PathwayVAEOutput", "PathwayVAEPreTrainedModel"]
