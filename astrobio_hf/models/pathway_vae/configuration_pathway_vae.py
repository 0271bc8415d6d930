"""Configuration of the pathway graph VAE (`model_type = "pathway_vae"`).

Torch-free at import. The node features and their normalisation statistics come from the metabolic dataset schema
(`astrobio_hf.data.metabolic`, schema kind `"metabolic_graphs"`), read by key or attribute in `from_schema` so that
models do not import `data`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import field

from transformers.configuration_utils import PreTrainedConfig

from ..config_checks import (
    finite_float,
    float_list,
    int_at_least,
    merge_schema_fields,
    reject_unknown_keys,
    str_list,
)


def _default_node_feature_names() -> list[str]:
    # The node features of the metabolic dataset (`astrobio_hf.data.metabolic.NODE_FEATURE_NAMES`, repeated here
    # because models do not import `data`); a real config takes them from the dataset schema with `from_schema`.
    return [
        *(f"log1p_{element}" for element in ("C", "H", "N", "O", "P", "S")),
        "log1p_other_elements",
        "slog1p_charge",
        "has_formula",
        *(f"compartment_{compartment}" for compartment in ("c", "p", "e")),
        "compartment_other",
    ]


ENCODER_TYPES = ("transformer", "gps")
SCHEMA_KIND = "metabolic_graphs"
_SCHEMA_FIELDS = ("node_feature_names", "feature_mean", "feature_std")
# exp(80) ~ 5.5e34 is finite in float32 (max ~3.4e38); a larger bound would let exp(logvar) overflow
_MAX_LOGVAR_CLAMP = 80.0


class PathwayVAEConfig(PreTrainedConfig):
    r"""
    Configuration of [`PathwayVAEModel`], a variational graph auto-encoder over metabolic pathway graphs: a graph
    transformer encodes each node (metabolite) into a Gaussian latent `N(mu, sigma)`; an inner-product decoder
    scores node pairs as edges and an MLP reconstructs the node features. One config covers two encoders
    (`encoder_type`): a stack of `torch_geometric.nn.TransformerConv` (attention over graph neighbours) and
    `torch_geometric.nn.GPSConv` layers (a local GIN message passing plus multi-head attention over all nodes of
    each graph).

    Data-dependent values (feature names and their mean/std) come from the dataset schema (`from_schema`); the
    feature count is derived (`node_feature_size`), never stored. All checks live in `_validate()`; an invalid
    value raises `ValueError` saying what was expected and what was found, and a key that is not a field of this
    class (nor a standard `PreTrainedConfig` key) raises `ValueError` listing the valid ones.

    Args:
        node_feature_names (`list[str]`, defaults to the 13 features of the metabolic dataset):
            Names of the node features along the last axis of `x`, in order (from the dataset schema).
        feature_mean (`list[float]`, *optional*):
            Mean of each feature over the nodes of the training graphs (physical units); the model normalises `x`
            inside, so it takes features as the dataset stores them. `None` means 0 for every feature.
        feature_std (`list[float]`, *optional*):
            Standard deviation of each feature (positive; a constant feature is stored as 1 by the schema). `None`
            means 1 for every feature. Given together with `feature_mean`.
        encoder_type (`str`, defaults to `"transformer"`):
            `"transformer"`: `num_layers` x (`TransformerConv` with `num_heads` heads averaged (`concat=False`),
            GELU, dropout, residual, `LayerNorm`). `"gps"`: `num_layers` x `GPSConv` with a GIN local message
            passing and multi-head attention restricted to each graph of the batch (per-node LayerNorm, so that a
            graph's encoding does not depend on the other graphs of its batch, in training as in evaluation).
        hidden_size (`int`, defaults to 64):
            Width of the encoder layers and of the feature decoder's hidden layer. With `"gps"` it must be
            divisible by `num_heads` (multi-head attention splits it).
        latent_size (`int`, defaults to 16):
            L: size of each node's latent code.
        num_layers (`int`, defaults to 2):
            Encoder layers (each one a gradient-checkpointing unit).
        num_heads (`int`, defaults to 4):
            Attention heads of every encoder layer.
        dropout (`float`, defaults to 0.1):
            Dropout of the encoder layers (attention weights and layer outputs), active in training mode only.
        edge_loss_weight (`float`, defaults to 1.0):
            Weight of the edge reconstruction loss (binary cross-entropy of true edges vs. sampled non-edges).
        feature_loss_weight (`float`, defaults to 1.0):
            Weight of the node feature reconstruction loss (mean squared error in normalised units).
        kl_weight_max (`float`, defaults to 1.0):
            Weight of the KL term once the annealing is over.
        kl_warmup_steps (`int`, defaults to 200):
            Optimizer steps over which the KL weight grows linearly from 0 to `kl_weight_max` (annealing keeps the
            posterior from collapsing onto the prior before the decoders learn anything). 0 means no ramp.
        kl_start_step (`int`, defaults to 0):
            Optimizer step at which the ramp starts (the KL weight is 0 before it).
        logvar_clamp (`float`, defaults to 10.0):
            c: the encoder's log-variance is clamped to `[-c, c]` before `exp`, so that the KL term and the
            reparameterisation cannot overflow whatever the input. At most 80 (`exp(80)` is finite in float32).
        negative_sampling_ratio (`float`, defaults to 1.0):
            Non-edges sampled per edge to reconstruct, when `forward` is not given `neg_edge_index`.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the linear and attention weights (biases start at 0).

    Example:

    ```python
    >>> from astrobio_hf.models.pathway_vae import PathwayVAEConfig, PathwayVAEModel
    >>> config = PathwayVAEConfig(node_feature_names=["C", "charge"], hidden_size=16, latent_size=4)
    >>> model = PathwayVAEModel(config)
    >>> config.kl_weight_at(100)  # half-way through the default 200-step warm-up
    0.5
    ```
    """

    model_type = "pathway_vae"

    # 1. Node features (from the dataset schema)
    node_feature_names: list[str] = field(default_factory=_default_node_feature_names)
    feature_mean: list[float] | None = None
    feature_std: list[float] | None = None
    # 2. Encoder
    encoder_type: str = "transformer"
    hidden_size: int = 64
    latent_size: int = 16
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1
    # 3. Loss
    edge_loss_weight: float = 1.0
    feature_loss_weight: float = 1.0
    kl_weight_max: float = 1.0
    kl_warmup_steps: int = 200
    kl_start_step: int = 0
    logvar_clamp: float = 10.0
    negative_sampling_ratio: float = 1.0
    # 4. Initialisation
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        reject_unknown_keys(PathwayVAEConfig, kwargs)
        super().__post_init__(**kwargs)
        self._validate()

    @classmethod
    def from_schema(cls, schema, **overrides) -> PathwayVAEConfig:
        """Config whose feature names and statistics come from the metabolic dataset schema (the dict of
        `schema.json`, or any object with the attributes `node_feature_names`, `feature_mean`, `feature_std`).
        `overrides` set the other fields (sizes, loss weights); giving a schema field there too is an error, as is
        an unknown key or a schema of another kind."""
        is_mapping = isinstance(schema, Mapping)
        kind = schema.get("kind") if is_mapping else getattr(schema, "kind", None)
        if kind is not None and kind != SCHEMA_KIND:
            raise ValueError(f"expected a {SCHEMA_KIND!r} dataset schema, got one of kind {kind!r}")
        missing = [name for name in _SCHEMA_FIELDS if (name not in schema if is_mapping else not hasattr(schema, name))]
        if missing:
            raise ValueError(
                f"expected a dataset schema with {list(_SCHEMA_FIELDS)}, got one without {missing} "
                "(build the metabolic dataset with `astrobio-hf data metabolic`)"
            )
        from_schema = {name: schema[name] if is_mapping else getattr(schema, name) for name in _SCHEMA_FIELDS}
        return cls(**merge_schema_fields(from_schema, overrides))

    # ----------------------------------------------------------------------------------------------------------
    @property
    def node_feature_size(self) -> int:
        """F: number of node features, `len(node_feature_names)` (derived, never stored)."""
        return len(self.node_feature_names)

    def kl_weight_at(self, step: int | None) -> float:
        """KL weight at optimizer step `step`: `kl_weight_max * clamp((step - kl_start_step) / kl_warmup_steps, 0,
        1)`; with `kl_warmup_steps = 0` it is `kl_weight_max` from `kl_start_step` on (0 before). `None` (no
        training step, e.g. evaluation) gives `kl_weight_max`."""
        if step is None:
            return float(self.kl_weight_max)
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"training_step: expected a non-negative integer optimizer step or None, got {step!r}")
        if self.kl_warmup_steps == 0:
            return float(self.kl_weight_max) if step >= self.kl_start_step else 0.0
        fraction = (int(step) - self.kl_start_step) / self.kl_warmup_steps
        return float(self.kl_weight_max * min(max(fraction, 0.0), 1.0))

    # ----------------------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        """Every check of this config, in one place. Normalises containers to JSON types (lists, floats)."""
        # 1. Node features
        self.node_feature_names = str_list("node_feature_names", self.node_feature_names)
        if not self.node_feature_names:
            raise ValueError("node_feature_names: expected at least one node feature, got []")
        if (self.feature_mean is None) != (self.feature_std is None):
            raise ValueError(
                "feature_mean and feature_std: expected both or neither, got "
                f"feature_mean={self.feature_mean} and feature_std={self.feature_std}"
            )
        if self.feature_mean is not None:
            self.feature_mean = float_list("feature_mean", self.feature_mean)
            self.feature_std = float_list("feature_std", self.feature_std)
            for name, values in (("feature_mean", self.feature_mean), ("feature_std", self.feature_std)):
                if len(values) != self.node_feature_size:
                    raise ValueError(
                        f"{name}: expected one value per node feature, {self.node_feature_size} "
                        f"(node_feature_names={self.node_feature_names}), got {len(values)}"
                    )
            bad = [name for name, std in zip(self.node_feature_names, self.feature_std) if std <= 0]
            if bad:
                raise ValueError(
                    f"feature_std: expected positive values (a constant feature is stored as 1), got "
                    f"non-positive std for {bad} in {self.feature_std}"
                )

        # 2. Encoder
        if self.encoder_type not in ENCODER_TYPES:
            raise ValueError(f"encoder_type: expected one of {list(ENCODER_TYPES)}, got {self.encoder_type!r}")
        for name in ("hidden_size", "latent_size", "num_layers", "num_heads"):
            setattr(self, name, int_at_least(name, getattr(self, name), 1))
        if self.encoder_type == "gps" and self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"encoder_type='gps' splits hidden_size over the attention heads: expected hidden_size divisible "
                f"by num_heads={self.num_heads}, got hidden_size={self.hidden_size}"
            )
        self.dropout = finite_float("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {self.dropout}")

        # 3. Loss
        for name in ("edge_loss_weight", "feature_loss_weight", "kl_weight_max"):
            value = finite_float(name, getattr(self, name))
            if value < 0:
                raise ValueError(f"{name}: expected a weight >= 0, got {value}")
            setattr(self, name, value)
        for name in ("kl_warmup_steps", "kl_start_step"):
            setattr(self, name, int_at_least(name, getattr(self, name), 0))
        self.logvar_clamp = finite_float("logvar_clamp", self.logvar_clamp)
        if not 0.0 < self.logvar_clamp <= _MAX_LOGVAR_CLAMP:
            raise ValueError(
                f"logvar_clamp: expected a value in (0, {_MAX_LOGVAR_CLAMP}] (exp(c) must stay finite in float32), "
                f"got {self.logvar_clamp}"
            )
        for name in ("negative_sampling_ratio", "initializer_range"):
            value = finite_float(name, getattr(self, name))
            if value <= 0:
                raise ValueError(f"{name}: expected a positive value, got {value}")
            setattr(self, name, value)


__all__ = ["PathwayVAEConfig"]
