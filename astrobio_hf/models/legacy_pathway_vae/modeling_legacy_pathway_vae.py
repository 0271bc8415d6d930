"""Legacy pathway VAE: zero-padded adjacency (B, N, N) -> latent Gaussian (mean, log-variance) -> edge probabilities.

The layout reproduces the released `trained_pathway_vae.pth` of the old system module for module: `encoder` and
`decoder` are `nn.Sequential`s whose indices are those of the legacy state dict (`encoder.0`, `encoder.3`,
`encoder.5`, `decoder.0`, `decoder.2`, `decoder.5` are the linears), so the converted weights give bit-identical
outputs. Decoding is deterministic (from the mean) unless `sample=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from ..loading import ClearLoadingErrorsMixin
from .configuration_legacy_pathway_vae import LegacyPathwayVAEConfig


@dataclass
class LegacyPathwayVAEOutput(ModelOutput):
    """
    Output of [`LegacyPathwayVAEModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            `reconstruction_loss + kl_loss`, the negative ELBO per graph.
        edge_probabilities (`torch.FloatTensor` of shape `(B, N, N)`):
            Decoded probability of each edge of the padded adjacency matrix (N = `config.max_nodes`).
        mean (`torch.FloatTensor` of shape `(B, L)`):
            Mean of the latent Gaussian (L = `config.latent_size`).
        log_variance (`torch.FloatTensor` of shape `(B, L)`):
            Log-variance of the latent Gaussian.
        reconstruction_loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            Binary cross-entropy between the edge probabilities and `labels`, summed over the N*N entries and
            averaged over the batch.
        kl_loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            KL divergence of the latent Gaussian from N(0, I), summed over the latent and averaged over the batch.
    """

    loss: torch.FloatTensor | None = None
    edge_probabilities: torch.FloatTensor | None = None
    mean: torch.FloatTensor | None = None
    log_variance: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None


class LegacyPathwayVAEPreTrainedModel(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = LegacyPathwayVAEConfig
    config: LegacyPathwayVAEConfig
    base_model_prefix = "vae"
    main_input_name = "adjacency"
    supports_gradient_checkpointing = False  # three small linears per side: nothing worth recomputing

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) linear weights, zero biases."""
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)


class LegacyPathwayVAEModel(LegacyPathwayVAEPreTrainedModel):
    """MLP VAE over zero-padded adjacency matrices, the architecture of the legacy `trained_pathway_vae.pth`."""

    def __init__(self, config: LegacyPathwayVAEConfig):
        super().__init__(config)
        n, h, latent = config.input_size, config.hidden_size, config.latent_size
        # indices match the legacy state dict: 0 Linear, 1 ReLU, 2 Dropout, 3 Linear, 4 ReLU, 5 Linear
        self.encoder = nn.Sequential(
            nn.Linear(n, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2 * latent)
        )
        # 0 Linear, 1 ReLU, 2 Linear, 3 ReLU, 4 Dropout, 5 Linear
        self.decoder = nn.Sequential(
            nn.Linear(latent, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(h, n)
        )
        self.post_init()

    def _flatten(self, name: str, tensor) -> torch.Tensor:
        """(B, N, N) or (B, N*N) floating tensor -> (B, N*N); anything else is a ValueError saying what was found."""
        n = self.config.max_nodes
        expected = f"(B, {n}, {n}) or (B, {n * n}) (max_nodes={n})"
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(  # noqa: TRY004 - bad model input is a ValueError across the families
                f"{name}: expected a torch.Tensor of shape {expected}, got {type(tensor).__name__}"
            )
        shape = tuple(tensor.shape)
        if not ((tensor.ndim == 3 and shape[1:] == (n, n)) or (tensor.ndim == 2 and shape[1] == n * n)):
            raise ValueError(f"{name}: expected shape {expected}, got {shape}")
        if not tensor.is_floating_point():
            tensor = tensor.to(self.encoder[0].weight.dtype)
        return tensor.reshape(shape[0], n * n)

    def encode(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, N) or (B, N*N) adjacency -> latent (mean, log_variance), each (B, L).

        A floating adjacency must be in the model's dtype (integer or bool 0/1 tensors are cast to it)."""
        flat = self._flatten("adjacency", adjacency)
        dtype = self.encoder[0].weight.dtype
        if flat.dtype != dtype:
            raise ValueError(
                f"adjacency: expected dtype {dtype} (the model's) or an integer/bool 0/1 tensor, got {adjacency.dtype}"
            )
        hidden = self.encoder(flat)
        latent = self.config.latent_size
        return hidden[:, :latent], hidden[:, latent:]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, L) latent code -> edge logits (B, N*N)."""
        return self.decoder(latent)

    def forward(
        self,
        adjacency: torch.Tensor,
        labels: torch.Tensor | None = None,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> LegacyPathwayVAEOutput:
        """
        Args:
            adjacency (`torch.Tensor` of shape `(B, N, N)` or `(B, N*N)`): zero-padded adjacency matrices (0/1)
                in the model's dtype; integer or bool tensors are cast to it, another floating dtype is a ValueError.
            labels (`torch.Tensor` of the same shape, *optional*): target adjacency (usually `adjacency` itself);
                when given, `loss = reconstruction_loss + kl_loss`.
            sample (`bool`, defaults to `False`): decode a reparametrised sample `mean + exp(logvar / 2) * eps`
                instead of the mean (deterministic, as the legacy evaluation does).
            generator (`torch.Generator`, *optional*): source of `eps` when `sample=True`.
        """
        mean, log_variance = self.encode(adjacency)
        latent = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            latent = mean + torch.exp(0.5 * log_variance) * noise
        logits = self.decode(latent)
        n = self.config.max_nodes
        edge_probabilities = torch.sigmoid(logits).reshape(-1, n, n)

        loss = reconstruction_loss = kl_loss = None
        if labels is not None:
            target = self._flatten("labels", labels)
            if target.shape[0] != logits.shape[0]:
                raise ValueError(
                    f"labels: expected batch size B={logits.shape[0]} (from adjacency), got {tuple(labels.shape)}"
                )
            target = target.to(logits.dtype)
            reconstruction_loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]
            kl = -0.5 * (1.0 + log_variance - mean.pow(2) - log_variance.exp()).sum(dim=-1)
            kl_loss = kl.mean()
            loss = reconstruction_loss + kl_loss

        return LegacyPathwayVAEOutput(
            loss=loss,
            edge_probabilities=edge_probabilities,
            mean=mean,
            log_variance=log_variance,
            reconstruction_loss=reconstruction_loss,
            kl_loss=kl_loss,
        )


__all__ = ["LegacyPathwayVAEModel", "LegacyPathwayVAEOutput", "LegacyPathwayVAEPreTrainedModel"]
