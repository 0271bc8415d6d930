"""CNN-ViT hybrid: planet parameters (mean and log-variance) from a (B, V, Tc, Tg, Z, Y, X) datacube window.

1. The cube is normalised per variable and level and its variable, time and level axes become the channels of a
   2-D convolutional stem over (latitude, longitude): circular padding in longitude, replicate in latitude.
2. Square patches of the stem features become tokens (a strided convolution), with a learnt [CLS] token and
   learnt position embeddings, into a ViT encoder. The encoder layers are `torch.nn.TransformerEncoderLayer`
   (pre-norm, GELU, batch-first), each wrapped in a `GradientCheckpointingLayer`: torch's layer dispatches to
   `scaled_dot_product_attention` (flash / memory-efficient kernels on GPU, its fused fast path in inference),
   needs no `ViTConfig` whose image fields would not apply to a datacube, and its state dict is stable across
   torch releases.
3. Two heads: the ViT head reads the [CLS] token (fine scale: attention over patch tokens) and gives the
   prediction (mean, log-variance per parameter); the CNN head reads the globally pooled stem features (coarse
   scale). The cross-scale consistency term is the mean square difference of the two, in normalised units, with
   a gradient path into both branches. With `config.regime_names` (the dataset's planet regime classes), a linear
   regime head on the same [CLS] representation as the ViT parameter head gives `regime_logits` (B, K).

Loss = Gaussian NLL of the normalised planet parameters + `torch.stack([w * term, ...]).sum()` over the configured
physics terms (cross-scale consistency, ideal-gas and hydrostatic consistency of the predicted mean molecular
weight and gravity with the input cube) + `regime_loss_weight` x cross-entropy of the regime logits when
`regime_labels` are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from ..loading import ClearLoadingErrorsMixin
from ..normalisation import normalisation_tensors
from .configuration_cnn_vit import CnnVitConfig

_LOG_VARIANCE_BOUND = 10.0  # smooth tanh clamp of the normalised log-variance
_MOLAR_GAS_CONSTANT = 8.314462618  # J mol-1 K-1


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
@dataclass
class CnnVitModelOutput(ModelOutput):
    """
    Output of [`CnnVitModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(B, 1 + N, D)`): encoder tokens ([CLS] first), final norm.
        pooled_stem (`torch.FloatTensor` of shape `(B, C)`): stem features averaged over (Y, X) (coarse scale).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooled_stem: torch.FloatTensor | None = None


@dataclass
class CnnVitRegressionOutput(ModelOutput):
    """
    Output of [`CnnVitForParameterRegression`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with `labels`): `nll + physics_loss`.
        mean (`torch.FloatTensor` of shape `(B, P)`): predicted planet parameters, physical units.
        log_variance (`torch.FloatTensor` of shape `(B, P)`, `None` if `predict_variance=False`): log of the
            predicted variance, physical units.
        cnn_mean (`torch.FloatTensor` of shape `(B, P)`): the coarse-scale CNN head's parameters, physical units.
        nll (`torch.FloatTensor` of shape `()`, with `labels`): mean Gaussian NLL in normalised units.
        physics_loss (`torch.FloatTensor` of shape `()`, with `labels`): weighted sum of the physics terms.
        physics_terms (`dict[str, torch.FloatTensor]`, with `labels`): each configured term, unweighted.
        regime_logits (`torch.FloatTensor` of shape `(B, K)`, `None` without a regime head): class logits of the
            planet regime (`config.regime_names`).
        regime_loss (`torch.FloatTensor` of shape `()`, with `regime_labels`): mean cross-entropy, unweighted.
        embedding (`torch.FloatTensor` of shape `(B, D)`): the [CLS] representation both heads read (what the
            pipeline's projector turns into soft tokens).
    """

    loss: torch.FloatTensor | None = None
    mean: torch.FloatTensor | None = None
    log_variance: torch.FloatTensor | None = None
    cnn_mean: torch.FloatTensor | None = None
    nll: torch.FloatTensor | None = None
    physics_loss: torch.FloatTensor | None = None
    physics_terms: dict[str, torch.FloatTensor] | None = None
    regime_logits: torch.FloatTensor | None = None
    regime_loss: torch.FloatTensor | None = None
    embedding: torch.FloatTensor | None = None


# ------------------------------------------------------------------------------------------------------------
# Private helpers
# ------------------------------------------------------------------------------------------------------------
def _expected_cube(config: CnnVitConfig) -> str:
    V, Tc, Tg, Z, Y, X = config.cube_shape
    return f"(B, V, Tc, Tg, Z, Y, X) with V={V} {config.variable_names}, Tc={Tc}, Tg={Tg}, Z={Z}, Y={Y}, X={X}"


def _check_inputs(inputs, config: CnnVitConfig) -> None:
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(  # noqa: TRY004 - bad model input is a ValueError across the families
            f"inputs: expected a torch.Tensor {_expected_cube(config)}, got {type(inputs).__name__}"
        )
    if inputs.ndim != 7 or tuple(inputs.shape[1:]) != config.cube_shape:
        raise ValueError(f"inputs: expected {_expected_cube(config)}, got {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs: expected a floating-point tensor, got dtype {inputs.dtype}")


def _check_labels(labels, config: CnnVitConfig, batch_size: int) -> None:
    expected = f"(B, P) with B={batch_size}, P={config.num_planet_params} {config.planet_param_names}"
    found = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (batch_size, config.num_planet_params):
        raise ValueError(f"labels: expected {expected}, got {found}")


def _check_regime_labels(regime_labels, config: CnnVitConfig, batch_size: int) -> None:
    if config.num_regimes == 0:
        raise ValueError(
            "regime_labels: expected None for a model without a regime head (config.regime_names is None), got "
            f"{tuple(regime_labels.shape) if isinstance(regime_labels, torch.Tensor) else type(regime_labels).__name__}"
        )
    K = config.num_regimes
    expected = f"an int64 tensor (B,) with B={batch_size} and values in [0, {K}) {config.regime_names}"
    if not isinstance(regime_labels, torch.Tensor):
        raise ValueError(f"regime_labels: expected {expected}, got {type(regime_labels).__name__}")  # noqa: TRY004 - bad model input is a ValueError across the families
    if regime_labels.dtype != torch.long or tuple(regime_labels.shape) != (batch_size,):
        raise ValueError(f"regime_labels: expected {expected}, got {regime_labels.dtype} {tuple(regime_labels.shape)}")
    bad = (regime_labels < 0) | (regime_labels >= K)
    if bool(bad.any()):
        raise ValueError(f"regime_labels: expected {expected}, got values {sorted(set(regime_labels[bad].tolist()))}")


def _gaussian_nll(target: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor | None) -> torch.Tensor:
    """Mean of 0.5 * ((y - mu)^2 exp(-logvar) + logvar); logvar = 0 when None."""
    if log_variance is None:
        return 0.5 * (target - mean).pow(2).mean()
    return 0.5 * ((target - mean).pow(2) * torch.exp(-log_variance) + log_variance).mean()


def log_statistics(config: CnnVitConfig) -> dict[str, torch.Tensor]:
    """Index (L,) of the `log_variables` and the per level mean/std (L, Z) of their logarithm: the moments of a
    log-normal variable with the configured `norm_mean`/`norm_std` (0 and 1 where the config holds no table)."""
    index = torch.tensor([config.variable_names.index(n) for n in config.log_variables], dtype=torch.long)
    L, Z = len(config.log_variables), config.num_levels
    if config.norm_mean is None or L == 0:
        return {"log_index": index, "log_mean": torch.zeros(L, Z), "log_std": torch.ones(L, Z)}
    mean = torch.tensor(config.norm_mean, dtype=torch.float64)[index]
    std = torch.tensor(config.norm_std, dtype=torch.float64)[index]
    log_var = torch.log1p((std / mean) ** 2)
    return {
        "log_index": index,
        "log_mean": (mean.log() - 0.5 * log_var).float(),
        "log_std": log_var.sqrt().clamp_min(1e-6).float(),
    }


def cube_gas_constant(cube: torch.Tensor, config: CnnVitConfig) -> torch.Tensor:
    """Specific gas constant [J kg-1 K-1] implied by a physical cube, `p / (rho T)`, geometric mean per sample (B,)."""
    names = config.variable_names
    T, p, rho = (cube[:, names.index(n)].double() for n in ("T", "p", "rho"))
    return torch.exp((p.log() - rho.log() - T.log()).flatten(1).mean(dim=1)).to(cube.dtype)


def cube_gravity(cube: torch.Tensor, config: CnnVitConfig) -> torch.Tensor:
    """Gravity [m s-2] implied by a physical cube on height levels, `-dp/dz / rho` between adjacent levels, mean
    per sample (B,)."""
    names = config.variable_names
    p, rho = cube[:, names.index("p")].double(), cube[:, names.index("rho")].double()  # (B, Tc, Tg, Z, Y, X)
    dz = torch.tensor(config.level_values, dtype=torch.float64, device=cube.device).diff()  # (Z-1,)
    dp_dz = p.diff(dim=3) / dz[:, None, None]  # (B, Tc, Tg, Z-1, Y, X)
    rho_mid = 0.5 * (rho[:, :, :, 1:] + rho[:, :, :, :-1])
    return (-dp_dz / rho_mid).flatten(1).mean(dim=1).to(cube.dtype)


class CnnVitConv(nn.Module):
    """3x3 convolution over (Y, X): circular in longitude, replicate in latitude; `stride=2` halves both."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=0)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.pad(hidden_states, (1, 1, 0, 0), mode="circular")  # longitude
        hidden_states = F.pad(hidden_states, (0, 0, 1, 1), mode="replicate")  # latitude
        return self.conv(hidden_states)


# ------------------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------------------
class CnnVitStem(nn.Module):
    """Conv + GroupNorm + GELU twice, then `stem_downsample` stride-2 stages: (B, V*Tc*Tg*Z, Y, X) -> (B, C, Y', X')."""

    def __init__(self, config: CnnVitConfig):
        super().__init__()
        V, Tc, Tg, Z = config.num_input_variables, config.context_steps, config.geological_steps, config.num_levels
        C = config.stem_channels
        groups = math.gcd(8, C)

        def norm() -> nn.Module:
            return nn.GroupNorm(groups, C) if config.stem_norm == "group" else nn.Identity()

        self.conv_in = CnnVitConv(V * Tc * Tg * Z, C)
        self.norm_in = norm()
        self.conv_mid = CnnVitConv(C, C)
        self.norm_mid = norm()
        self.downsamplers = nn.ModuleList([CnnVitConv(C, C, stride=2) for _ in range(config.stem_downsample)])
        self.down_norms = nn.ModuleList([norm() for _ in range(config.stem_downsample)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.gelu(self.norm_in(self.conv_in(hidden_states)))
        hidden_states = hidden_states + F.gelu(self.norm_mid(self.conv_mid(hidden_states)))
        for conv, norm in zip(self.downsamplers, self.down_norms):
            hidden_states = F.gelu(norm(conv(hidden_states)))
        return hidden_states


class CnnVitEmbeddings(nn.Module):
    """Patch tokens (strided convolution) + a learnt [CLS] token + learnt position embeddings."""

    def __init__(self, config: CnnVitConfig):
        super().__init__()
        rows, cols = config.token_grid
        self.patch_embeddings = nn.Conv2d(
            config.stem_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + rows * cols, config.hidden_size))
        self.global_projection = None
        if config.global_token:
            channels = config.num_input_variables * config.context_steps * config.geological_steps * config.num_levels
            self.global_projection = nn.Linear(channels, config.hidden_size)

    def forward(self, features: torch.Tensor, global_features: torch.Tensor | None = None) -> torch.Tensor:
        tokens = rearrange(self.patch_embeddings(features), "b d h w -> b (h w) d")  # (B, N, D)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        if self.global_projection is not None:  # global levels of the input straight into [CLS]
            cls = cls + self.global_projection(global_features)[:, None]
        return torch.cat([cls, tokens], dim=1) + self.position_embeddings  # (B, 1 + N, D)

    def per_sample_gradients(self, activations, backprops: torch.Tensor) -> dict:
        """Each example's gradient of this module's own parameters, for DP-SGD (Opacus calls it; the patch
        convolution and the global projection have Opacus' own): the output is `[CLS; tokens] + positions`, so an
        example's position-table gradient is its output gradient and its [CLS] gradient that of the first row."""
        grads = {}
        if self.position_embeddings.requires_grad:
            grads[self.position_embeddings] = backprops[:, None]  # (B, 1, 1 + N, D)
        if self.cls_token.requires_grad:
            grads[self.cls_token] = backprops[:, None, :1]  # (B, 1, 1, D)
        return grads


class CnnVitLayer(GradientCheckpointingLayer):
    """One pre-norm ViT encoder layer (`torch.nn.TransformerEncoderLayer`: self-attention + GELU MLP)."""

    def __init__(self, config: CnnVitConfig):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model=config.hidden_size,
            nhead=config.num_heads,
            dim_feedforward=round(config.mlp_ratio * config.hidden_size),
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layer(hidden_states)


# ------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ------------------------------------------------------------------------------------------------------------
class CnnVitPreTrainedModel(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = CnnVitConfig
    config: CnnVitConfig
    base_model_prefix = "cnn_vit"
    main_input_name = "inputs"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CnnVitLayer"]  # noqa: RUF012  (transformers reads a list)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) weights, zero biases, unit norms, truncated-normal [CLS] and position
        embeddings, and the unsaved normalisation buffers recomputed from the config."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.normal_(module.in_proj_weight, mean=0.0, std=std)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CnnVitEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            init.trunc_normal_(module.position_embeddings, std=std)
        elif isinstance(module, CnnVitModel):
            with torch.device("cpu"):
                stats = normalisation_tensors(self.config)
                stats.update(log_statistics(self.config))
            for name, value in stats.items():
                init.copy_(getattr(module, name), value)


# ------------------------------------------------------------------------------------------------------------
# Base model
# ------------------------------------------------------------------------------------------------------------
class CnnVitModel(CnnVitPreTrainedModel):
    """Normalisation, convolutional stem, patch tokens and the ViT encoder."""

    def __init__(self, config: CnnVitConfig):
        super().__init__(config)
        config._validate()
        for name, value in normalisation_tensors(config).items():  # config values, not saved with the weights
            self.register_buffer(name, value, persistent=False)
        for name, value in log_statistics(config).items():  # log channels (config values, not saved)
            self.register_buffer(name, value, persistent=False)
        self.stem = CnnVitStem(config)
        self.embeddings = CnnVitEmbeddings(config)
        self.layers = nn.ModuleList([CnnVitLayer(config) for _ in range(config.num_layers)])
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def forward(self, inputs: torch.Tensor) -> CnnVitModelOutput:
        """
        Args:
            inputs (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`): the cube window, physical units.
        """
        _check_inputs(inputs, self.config)

        # 1. Normalise per variable per level
        mean = rearrange(self.norm_mean, "v z -> 1 v 1 1 z 1 1")
        std = rearrange(self.norm_std, "v z -> 1 v 1 1 z 1 1")
        dtype = self.stem.conv_in.conv.weight.dtype
        normalized = ((inputs - mean) / std).to(dtype)  # (B, V, Tc, Tg, Z, Y, X)
        if self.config.log_variables:  # log channels of the positive variables: ratios become differences
            log_mean = rearrange(self.log_mean, "l z -> 1 l 1 1 z 1 1")
            log_std = rearrange(self.log_std, "l z -> 1 l 1 1 z 1 1")
            logs = (inputs[:, self.log_index].float().clamp_min(1e-30).log() - log_mean) / log_std
            normalized = torch.cat([normalized, logs.to(dtype)], dim=1)  # (B, V + L, Tc, Tg, Z, Y, X)

        # 2. Variables, time steps and levels become channels of a 2-D stem over (lat, lon)
        hidden = rearrange(normalized, "b v tc tg z y x -> b (v tc tg z) y x")  # (B, (V+L)*Tc*Tg*Z, Y, X)
        features = self.stem(hidden)  # (B, C, Y', X')

        # 3. Patch tokens + [CLS] + positions, ViT encoder
        # (no None argument without the global token: Opacus' hooks keep every positional input)
        tokens = self.embeddings(features, hidden.mean(dim=(-2, -1))) if self.config.global_token else self.embeddings(features)  # (B, 1 + N, D)
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.final_norm(tokens)  # (B, 1 + N, D)

        return CnnVitModelOutput(last_hidden_state=tokens, pooled_stem=features.mean(dim=(-2, -1)))  # pooled (B, C)


# ------------------------------------------------------------------------------------------------------------
# Regression head
# ------------------------------------------------------------------------------------------------------------
class CnnVitForParameterRegression(CnnVitPreTrainedModel):
    """CNN-ViT trunk + ViT head (mean, log-variance per planet parameter) + coarse CNN head + (with
    `config.regime_names`) a regime classification head on [CLS]; computes its own loss."""

    def __init__(self, config: CnnVitConfig):
        super().__init__(config)
        P = config.num_planet_params
        self.cnn_vit = CnnVitModel(config)
        self.vit_head = nn.Linear(config.hidden_size, (2 if config.predict_variance else 1) * P)
        self.cnn_head = nn.Linear(config.stem_channels, P)
        self.regime_head = nn.Linear(config.hidden_size, config.num_regimes) if config.num_regimes else None
        self.post_init()

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor | None = None, regime_labels: torch.Tensor | None = None
    ) -> CnnVitRegressionOutput:
        """
        Args:
            inputs (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`): the cube window, physical units.
            labels (`torch.FloatTensor` of shape `(B, P)`, *optional*): true planet parameters, physical units, in
                the order of `config.planet_param_names`; when given, the loss terms are returned.
            regime_labels (`torch.LongTensor` of shape `(B,)`, *optional*): class index of each planet's regime in
                `config.regime_names` (only for a model with a regime head); adds `regime_loss_weight` x the
                cross-entropy of `regime_logits` to the loss.
        """
        config = self.config
        if labels is not None and isinstance(inputs, torch.Tensor):
            _check_labels(labels, config, inputs.shape[0])
        if regime_labels is not None and isinstance(inputs, torch.Tensor):
            _check_regime_labels(regime_labels, config, inputs.shape[0])

        # 1. Trunk
        trunk = self.cnn_vit(inputs)

        # 2. Heads: fine scale ([CLS] of the ViT) and coarse scale (pooled stem), normalised units
        out = rearrange(self.vit_head(trunk.last_hidden_state[:, 0]), "b (s p) -> s b p", p=config.num_planet_params)
        mean_normalized = out[0]  # (B, P)
        log_variance_normalized = None
        if config.predict_variance:
            log_variance_normalized = _LOG_VARIANCE_BOUND * torch.tanh(out[1] / _LOG_VARIANCE_BOUND)  # (B, P)
        cnn_normalized = self.cnn_head(trunk.pooled_stem)  # (B, P)
        regime_logits = self.regime_head(trunk.last_hidden_state[:, 0]) if self.regime_head is not None else None  # (B, K)

        # 3. Physical units
        planet_mean, planet_std = self.cnn_vit.planet_mean, self.cnn_vit.planet_std
        mean = mean_normalized * planet_std + planet_mean  # (B, P)
        cnn_mean = cnn_normalized * planet_std + planet_mean  # (B, P)
        log_variance = None if log_variance_normalized is None else log_variance_normalized + 2 * torch.log(planet_std)
        regime_loss = None
        if regime_labels is not None:
            regime_loss = F.cross_entropy(regime_logits.float(), regime_labels)
        if labels is None:
            return CnnVitRegressionOutput(
                loss=None if regime_loss is None else config.regime_loss_weight * regime_loss,
                mean=mean, log_variance=log_variance, cnn_mean=cnn_mean, regime_logits=regime_logits, regime_loss=regime_loss,
                embedding=trunk.last_hidden_state[:, 0],
            )

        # 4. Loss: Gaussian NLL (normalised) + physics terms aggregated as one tensor (+ weighted regime cross-entropy)
        labels_normalized = (labels.to(mean.dtype) - planet_mean) / planet_std
        nll = _gaussian_nll(labels_normalized, mean_normalized, log_variance_normalized)
        physics_terms = self._physics_terms(inputs, mean, mean_normalized, cnn_normalized)
        if physics_terms:
            physics_loss = torch.stack([config.physics_weights[k] * v for k, v in physics_terms.items()]).sum()
        else:
            physics_loss = torch.zeros((), device=nll.device, dtype=nll.dtype)
        loss = nll + physics_loss
        if regime_loss is not None:
            loss = loss + config.regime_loss_weight * regime_loss.to(loss.dtype)
        return CnnVitRegressionOutput(
            loss=loss,
            mean=mean,
            log_variance=log_variance,
            cnn_mean=cnn_mean,
            nll=nll,
            physics_loss=physics_loss,
            physics_terms=physics_terms,
            regime_logits=regime_logits,
            regime_loss=regime_loss,
            embedding=trunk.last_hidden_state[:, 0],
        )

    def _physics_terms(self, inputs, mean, mean_normalized, cnn_normalized) -> dict[str, torch.Tensor]:
        """Each configured physics term (unweighted, shape ())."""
        config = self.config
        names = config.planet_param_names
        terms = {}
        if "cross_scale" in config.physics_weights:  # fine (ViT) vs coarse (CNN) scale, gradient into both
            terms["cross_scale"] = (mean_normalized - cnn_normalized).pow(2).mean()
        if "ideal_gas" in config.physics_weights:  # R = R* / M (M in g mol-1) against p / (rho T) of the cube
            molar_mass = mean[:, names.index("mean_molecular_weight")].clamp_min(1e-3)
            predicted = math.log(_MOLAR_GAS_CONSTANT * 1e3) - molar_mass.log()
            terms["ideal_gas"] = (predicted - cube_gas_constant(inputs, config).log()).pow(2).mean()
        if "hydrostatic" in config.physics_weights:  # g against -dp/dz / rho of the cube
            gravity = mean[:, names.index("gravity")].clamp_min(1e-6)
            terms["hydrostatic"] = (gravity.log() - cube_gravity(inputs, config).log()).pow(2).mean()
        return terms


__all__ = [
    "CnnVitForParameterRegression",
    "CnnVitModel",
    "CnnVitModelOutput",
    "CnnVitPreTrainedModel",
    "CnnVitRegressionOutput",
    "cube_gas_constant",
    "cube_gravity",
    "log_statistics",
]
