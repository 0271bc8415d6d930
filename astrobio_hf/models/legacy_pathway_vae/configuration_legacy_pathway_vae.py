"""Configuration of the legacy pathway VAE (`model_type = "legacy_pathway_vae"`).

Torch-free at import. The family exists to carry the released pathway VAE of the system this project replaces
(`trained_pathway_vae.pth`, converted by `astrobio_hf.hub.convert_legacy.convert_legacy_pathway_vae`): an MLP VAE
over a zero-padded `max_nodes x max_nodes` adjacency matrix flattened to `max_nodes**2` values.
"""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig

from ..config_checks import finite_float, int_at_least, reject_unknown_keys


class LegacyPathwayVAEConfig(PreTrainedConfig):
    r"""
    Configuration of [`LegacyPathwayVAEModel`], the MLP VAE of the legacy system over small pathway graphs given as
    zero-padded adjacency matrices `(B, max_nodes, max_nodes)`.

    Encoder `Linear(N*N, H), ReLU, Dropout, Linear(H, H), ReLU, Linear(H, 2L)` whose output splits into the mean
    (first L) and the log-variance (last L); decoder `Linear(L, H), ReLU, Linear(H, H), ReLU, Dropout, Linear(H, N*N)`
    followed by a sigmoid for the edge probabilities (N = `max_nodes`, H = `hidden_size`, L = `latent_size`). The
    input size `max_nodes**2` is derived (`input_size`), never stored. A key that is not a field of this class (nor
    a standard `PreTrainedConfig` key) raises `ValueError` listing the valid ones.

    Args:
        max_nodes (`int`, defaults to 6):
            N: nodes of the padded adjacency matrix; smaller graphs are zero-padded to N x N.
        hidden_size (`int`, defaults to 64):
            H: width of the hidden layers of the encoder and the decoder.
        latent_size (`int`, defaults to 32):
            L: size of the latent code (the encoder's last layer outputs 2L values: mean, then log-variance).
        dropout (`float`, defaults to 0.1):
            Dropout probability of the two Dropout layers (active in training mode only). The legacy file does not
            record the value it was trained with; it does not affect evaluation.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the linear weights (biases start at 0).

    Example:

    ```python
    >>> from astrobio_hf.models.legacy_pathway_vae import LegacyPathwayVAEConfig, LegacyPathwayVAEModel
    >>> model = LegacyPathwayVAEModel(LegacyPathwayVAEConfig(hidden_size=16, latent_size=4))
    ```
    """

    model_type = "legacy_pathway_vae"

    max_nodes: int = 6
    hidden_size: int = 64
    latent_size: int = 32
    dropout: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        reject_unknown_keys(LegacyPathwayVAEConfig, kwargs)
        super().__post_init__(**kwargs)
        self._validate()

    @property
    def input_size(self) -> int:
        """Length of the flattened adjacency matrix, `max_nodes**2`."""
        return self.max_nodes**2

    def _validate(self) -> None:
        """Every check of this config, in one place."""
        for name in ("max_nodes", "hidden_size", "latent_size"):
            setattr(self, name, int_at_least(name, getattr(self, name), 1))
        self.dropout = finite_float("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.initializer_range = finite_float("initializer_range", self.initializer_range)
        if self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be positive, got {self.initializer_range}")


__all__ = ["LegacyPathwayVAEConfig"]
