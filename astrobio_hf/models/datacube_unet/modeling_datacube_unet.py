"""Datacube U-Net: probabilistic forecast of the next climate steps of a (V, Tc, Tg, Z, Y, X) datacube.

Cube axes: V variable, Tc climate time (context window), Tg geological time, Z level, Y latitude, X longitude.
The two time axes are moved with named einops patterns: the climate steps of all variables become channels
(`(v tc)`) and the geological steps become independent samples (`(b tg)`) that share the weights and are told
apart by FiLM conditioning on a one-hot of their index. Convolutions are 3-D over (Z, Y, X), circular in
longitude on a global grid (replicate/zero padded on a regional one) and replicate/zero padded in level and
latitude; downsampling is (1, 2, 2) (Z is small). Any grid size works: the trunk pads (Y, X) up to multiples of
`2**depth` (`config.padded_shape`) and crops back before the head, so no padded cell reaches the loss or a metric.

Masked data (land/sea masks, `_FillValue`): `inputs_valid` / `labels_valid` (bool, the cube's shape) mark real
values. Invalid inputs are replaced by the per-level mean (0 in normalised units) before the network sees them,
so outputs do not depend on what is written in masked cells; the NLL and the physics terms average over valid
label values only.

The network works in normalised units (per variable per level mean/std from the config) and predicts, for each
of the next Tc steps, a mean as a residual around the last context frame (so it starts at persistence) and a
log-variance. `mean` and `log_variance` are returned in physical units; the NLL is computed in normalised units
and the physics constraints on the de-normalised mean with the per-sample planet constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from ...physics.constraints import PhysicsConstraints
from ..loading import ClearLoadingErrorsMixin
from ..normalisation import normalisation_tensors, statistics_table
from .configuration_datacube_unet import DatacubeUNetConfig


# Bound of the predicted log-variance (normalised units), applied as a smooth tanh clamp: exp(+-10) spans
# variances from 4.5e-5 to 2.2e4 times the per-level variance of the data, and keeps exp(-logvar) finite.
_LOG_VARIANCE_BOUND = 10.0
_PLANET_CONSTANTS = ("gravity", "gas_constant", "heat_capacity", "planet_radius")


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
@dataclass
class DatacubeUNetModelOutput(ModelOutput):
    """
    Output of [`DatacubeUNetModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(B, C, Tg, Z, Y, X)`):
            Features of the last decoder stage, `C = config.base_channels`.
        normalized_inputs (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`):
            The inputs in normalised units (per variable per level mean/std of the config).
    """

    last_hidden_state: torch.FloatTensor | None = None
    normalized_inputs: torch.FloatTensor | None = None


@dataclass
class DatacubeForecastOutput(ModelOutput):
    """
    Output of [`DatacubeUNetForForecast`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            `nll + physics_loss`.
        mean (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`):
            Forecast mean of the next Tc steps, physical units.
        log_variance (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`, `None` if `predict_variance=False`):
            Log of the forecast variance, physical units (`log(var_normalised) + 2 log(norm_std)`).
        nll (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            Mean Gaussian negative log-likelihood `0.5 * ((y - mu)^2 exp(-logvar) + logvar)` in normalised units
            (constant `0.5 log 2 pi` omitted; with `predict_variance=False`, logvar = 0).
        physics_loss (`torch.FloatTensor` of shape `()`, returned when `labels` are given):
            Weighted sum of the physics terms on the de-normalised mean (0 when `physics_weights` is empty).
        physics_terms (`dict[str, torch.FloatTensor]`, returned when `labels` are given):
            Each weighted physics term (unweighted value), keyed by constraint name.
    """

    loss: torch.FloatTensor | None = None
    mean: torch.FloatTensor | None = None
    log_variance: torch.FloatTensor | None = None
    nll: torch.FloatTensor | None = None
    physics_loss: torch.FloatTensor | None = None
    physics_terms: dict[str, torch.FloatTensor] | None = None


# ------------------------------------------------------------------------------------------------------------
# Private helpers
# ------------------------------------------------------------------------------------------------------------
def _pad_periodic(hidden: torch.Tensor, boundary_padding: str, periodic: bool = True) -> torch.Tensor:
    """Pad (N, C, Z, Y, X) by one cell: circular in X (longitude) on a global grid, replicate or zeros in Z and
    Y (and in X on a regional grid)."""
    mode = "replicate" if boundary_padding == "replicate" else "constant"
    if not periodic:
        return F.pad(hidden, (1, 1, 1, 1, 1, 1), mode=mode)
    hidden = torch.cat([hidden[..., -1:], hidden, hidden[..., :1]], dim=-1)  # circular in longitude
    return F.pad(hidden, (0, 0, 1, 1, 1, 1), mode=mode)


def _grid_padding(config: DatacubeUNetConfig) -> tuple[int, int, int, int]:
    """(lon_before, lon_after, lat_before, lat_after) cells that bring (Y, X) to `config.padded_shape`: latitude
    split between both edges; longitude after the last column on a global grid (filled by wrapping around), split
    between both edges on a regional one."""
    (Yp, Xp), Y, X = config.padded_shape, config.num_lat, config.num_lon
    dy, dx = Yp - Y, Xp - X
    if config.periodic_lon:
        return (0, dx, dy // 2, dy - dy // 2)
    return (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2)


def _pad_grid(hidden: torch.Tensor, config: DatacubeUNetConfig) -> torch.Tensor:
    """(N, C, Z, Y, X) -> (N, C, Z, Yp, Xp): edge replication in latitude (and longitude on a regional grid),
    wrap-around in longitude on a global grid."""
    x0, x1, y0, y1 = _grid_padding(config)
    if not (x0 or x1 or y0 or y1):
        return hidden
    if config.periodic_lon and x1:
        hidden = torch.cat([hidden, hidden[..., :x1]], dim=-1)
        x1 = 0
    return F.pad(hidden, (x0, x1, y0, y1, 0, 0), mode="replicate")


def _crop_grid(hidden: torch.Tensor, config: DatacubeUNetConfig) -> torch.Tensor:
    """Inverse of `_pad_grid`: back to the data grid (Y, X)."""
    x0, _, y0, _ = _grid_padding(config)
    return hidden[..., y0 : y0 + config.num_lat, x0 : x0 + config.num_lon]


def _expected_cube(config: DatacubeUNetConfig) -> str:
    V, Tc, Tg, Z, Y, X = config.cube_shape
    return f"(B, V, Tc, Tg, Z, Y, X) with V={V} {config.variable_names}, Tc={Tc}, Tg={Tg}, Z={Z}, Y={Y}, X={X}"


def _check_cube(name: str, tensor, config: DatacubeUNetConfig, batch_size: int | None = None) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor {_expected_cube(config)}, got {type(tensor).__name__}")
    if tensor.ndim != 7 or tuple(tensor.shape[1:]) != config.cube_shape:
        raise ValueError(f"{name}: expected {_expected_cube(config)}, got {tuple(tensor.shape)}")
    if batch_size is not None and tensor.shape[0] != batch_size:
        raise ValueError(f"{name}: expected batch size B={batch_size} (from inputs), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {tensor.dtype}")


def _gaussian_nll(
    target: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor | None, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of 0.5 * ((y - mu)^2 exp(-logvar) + logvar) (logvar = 0 when None), over the valid elements only
    when a mask is given (0 when none is valid)."""
    if log_variance is None:
        per_element = 0.5 * (target - mean).pow(2)
    else:
        per_element = 0.5 * ((target - mean).pow(2) * torch.exp(-log_variance) + log_variance)
    if valid is None:
        return per_element.mean()
    return torch.where(valid, per_element, 0.0).sum() / valid.sum().clamp_min(1)


def _check_mask(name: str, mask, like: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(like.shape):
        found = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name}: expected a bool tensor of the cube's shape {tuple(like.shape)}, got {found}")
    return mask.to(torch.bool)


def _normalisation_tensors(config: DatacubeUNetConfig) -> dict[str, torch.Tensor]:
    """The shared normalisation statistics plus this family's tendency scale."""
    V, Z = config.num_variables, config.num_levels
    tensors = normalisation_tensors(config)
    # the forecast change's unit, in normalised units (tendency_std / norm_std); 1 without tendency_std
    tensors["tendency_scale"] = (
        torch.ones(V, Z)
        if config.tendency_std is None
        else statistics_table(config.tendency_std, (V, Z), 1.0) / tensors["norm_std"]
    )
    return tensors


def build_physics_constraints(config: DatacubeUNetConfig, weights: dict[str, float] | None = None) -> PhysicsConstraints:
    """The model's physics constraints on its grid (`weights` defaults to `config.physics_weights`; pass
    `{}` for an unweighted instance that only evaluates residuals, e.g. of baselines or true fields)."""
    # Differences in time are made dimensionless by each variable's typical spread (level-mean of norm_std)
    scales = None
    if config.norm_std is not None:
        scales = {name: sum(row) / len(row) for name, row in zip(config.variable_names, config.norm_std)}
    return PhysicsConstraints(
        config.variable_names,
        dict(config.physics_weights if weights is None else weights),
        lat_deg=config.lat_values,
        lon_deg=config.lon_values,
        levels=config.level_values,
        level_unit=config.level_unit,
        variable_scales=scales,
        learnable=config.physics_learnable and weights is None,
    )


# ------------------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------------------
class DatacubeUNetConv(nn.Module):
    """3x3x3 convolution over (Z, Y, X), circular in longitude; `stride=(1, 2, 2)` halves Y and X."""

    def __init__(self, config: DatacubeUNetConfig, in_channels: int, out_channels: int, stride=(1, 1, 1)):
        super().__init__()
        self.boundary_padding = config.boundary_padding
        self.periodic = config.periodic_lon
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=0)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(_pad_periodic(hidden_states, self.boundary_padding, self.periodic))


class DatacubeUNetConditioning(nn.Module):
    """MLP from the conditioning vector (normalised planet parameters + one-hot geological step) to an embedding."""

    def __init__(self, config: DatacubeUNetConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.conditioning_size, config.conditioning_channels)
        self.fc_out = nn.Linear(config.conditioning_channels, config.conditioning_channels)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        return F.silu(self.fc_out(F.silu(self.fc_in(conditioning))))


class DatacubeUNetResidualBlock(GradientCheckpointingLayer):
    """GroupNorm + SiLU + conv, twice, with FiLM (scale, shift) after the second GroupNorm and a residual path."""

    def __init__(self, config: DatacubeUNetConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(config.norm_groups, in_channels)
        self.conv1 = DatacubeUNetConv(config, in_channels, out_channels)
        self.norm2 = nn.GroupNorm(config.norm_groups, out_channels)
        self.film = nn.Linear(config.conditioning_channels, 2 * out_channels) if config.use_film else None
        self.conv2 = DatacubeUNetConv(config, out_channels, out_channels)
        self.shortcut = (
            nn.Conv3d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, hidden_states: torch.Tensor, conditioning: torch.Tensor | None = None) -> torch.Tensor:
        residual = self.shortcut(hidden_states)
        hidden_states = self.conv1(F.silu(self.norm1(hidden_states)))
        hidden_states = self.norm2(hidden_states)
        if self.film is not None:
            scale, shift = rearrange(self.film(conditioning), "n (two c) -> two n c 1 1 1", two=2)
            hidden_states = hidden_states * (1 + scale) + shift
        hidden_states = self.conv2(F.silu(hidden_states))
        return residual + hidden_states


class DatacubeUNetDownsample(nn.Module):
    """Strided (1, 2, 2) convolution: halves latitude and longitude, keeps the levels."""

    def __init__(self, config: DatacubeUNetConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = DatacubeUNetConv(config, in_channels, out_channels, stride=(1, 2, 2))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(hidden_states)


class DatacubeUNetUpsample(nn.Module):
    """Nearest (1, 2, 2) upsampling followed by a convolution."""

    def __init__(self, config: DatacubeUNetConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = DatacubeUNetConv(config, in_channels, out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.interpolate(hidden_states, scale_factor=(1, 2, 2), mode="nearest")
        return self.conv(hidden_states)


# ------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ------------------------------------------------------------------------------------------------------------
class DatacubeUNetPreTrainedModel(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = DatacubeUNetConfig
    config: DatacubeUNetConfig
    base_model_prefix = "unet"
    main_input_name = "inputs"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DatacubeUNetResidualBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) convolutions and linears, unit GroupNorms, and the buffers that are not
        saved (normalisation statistics, physics grid) recomputed from the config, so that `from_pretrained`
        (which builds the model on the meta device) gets them right."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, DatacubeUNetModel):
            with torch.device("cpu"):
                stats = _normalisation_tensors(self.config)
            for name, value in stats.items():
                init.copy_(getattr(module, name), value)
        elif isinstance(module, PhysicsConstraints):
            with torch.device("cpu"):
                reference = build_physics_constraints(self.config)
            own = dict(module.named_parameters())
            own.update(dict(module.named_buffers()))
            for name, value in list(reference.named_parameters()) + list(reference.named_buffers()):
                init.copy_(own[name], value)


# ------------------------------------------------------------------------------------------------------------
# Base model
# ------------------------------------------------------------------------------------------------------------
class DatacubeUNetModel(DatacubeUNetPreTrainedModel):
    """Normalisation, time-axis folding, conditioning and the U-Net trunk; returns decoder features."""

    def __init__(self, config: DatacubeUNetConfig):
        super().__init__(config)
        config._validate()
        V, Tc = config.num_variables, config.context_steps
        channels = [config.base_channels * 2**i for i in range(config.depth + 1)]

        # Normalisation statistics: config values, not saved with the weights (the config is the source of truth)
        for name, value in _normalisation_tensors(config).items():
            self.register_buffer(name, value, persistent=False)

        self.conditioning = DatacubeUNetConditioning(config) if config.use_film else None
        self.stem = DatacubeUNetConv(config, V * Tc, channels[0])
        self.encoder_blocks = nn.ModuleList(
            [DatacubeUNetResidualBlock(config, channels[i], channels[i]) for i in range(config.depth)]
        )
        self.downsamplers = nn.ModuleList(
            [DatacubeUNetDownsample(config, channels[i], channels[i + 1]) for i in range(config.depth)]
        )
        self.middle_block = DatacubeUNetResidualBlock(config, channels[-1], channels[-1])
        self.upsamplers = nn.ModuleList(
            [DatacubeUNetUpsample(config, channels[i + 1], channels[i]) for i in range(config.depth)]
        )
        self.decoder_blocks = nn.ModuleList(
            [DatacubeUNetResidualBlock(config, 2 * channels[i], channels[i]) for i in range(config.depth)]
        )
        self.post_init()

    def forward(
        self,
        inputs: torch.Tensor,
        planet_params: torch.Tensor | None = None,
        inputs_valid: torch.Tensor | None = None,
        label_phase: torch.Tensor | None = None,
    ) -> DatacubeUNetModelOutput:
        """
        Args:
            inputs (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`): context window, physical units.
            planet_params (`torch.FloatTensor` of shape `(B, P)`, *optional*): physical planet parameters in the
                order of `config.planet_param_names`; required when FiLM is on and P > 0.
            inputs_valid (`torch.BoolTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`, *optional*): True where an input
                value is real data; masked values are replaced by the per-level mean whatever they hold.
            label_phase (`torch.FloatTensor` of shape `(B, Tc)`, *optional*): position in the calendar year, in
                [0, 1), of every forecast step; required with `config.calendar_conditioning`.
        """
        config = self.config
        _check_cube("inputs", inputs, config)
        if inputs.dtype != self.stem.conv.weight.dtype:
            raise ValueError(f"inputs: expected dtype {self.stem.conv.weight.dtype} (the model's), got {inputs.dtype}")
        B, Tg = inputs.shape[0], config.geological_steps
        planet_params = self._check_planet_params(planet_params, B)

        # 1. Normalise per variable per level
        mean = rearrange(self.norm_mean, "v z -> 1 v 1 1 z 1 1")
        std = rearrange(self.norm_std, "v z -> 1 v 1 1 z 1 1")
        normalized = (inputs - mean) / std  # (B, V, Tc, Tg, Z, Y, X)
        inputs_valid = _check_mask("inputs_valid", inputs_valid, inputs)
        if inputs_valid is not None:  # masked cells carry no information, whatever they hold
            normalized = torch.where(inputs_valid, normalized, torch.zeros((), dtype=normalized.dtype, device=normalized.device))

        # 2. Fold time axes: climate steps become channels, geological steps become samples; pad the grid to
        #    multiples of 2**depth (cropped back at the end)
        hidden = rearrange(normalized, "b v tc tg z y x -> (b tg) (v tc) z y x")  # (B*Tg, V*Tc, Z, Y, X)
        hidden = _pad_grid(hidden, config)  # (B*Tg, V*Tc, Z, Yp, Xp)

        # 3. Conditioning vector: normalised planet parameters + one-hot geological step
        conditioning = None
        if self.conditioning is not None:
            planet = (planet_params - self.planet_mean) / self.planet_std  # (B, P)
            planet = repeat(planet, "b p -> (b tg) p", tg=Tg)  # (B*Tg, P)
            step = torch.eye(Tg, dtype=hidden.dtype, device=hidden.device)
            step = repeat(step, "tg k -> (b tg) k", b=B)  # (B*Tg, Tg)
            parts = [planet.to(hidden.dtype), step]
            if config.calendar_conditioning:
                if not isinstance(label_phase, torch.Tensor) or tuple(label_phase.shape) != (B, config.context_steps):
                    found = tuple(label_phase.shape) if isinstance(label_phase, torch.Tensor) else label_phase
                    raise ValueError(f"label_phase: expected (B, Tc) = ({B}, {config.context_steps}) year fractions (calendar_conditioning), got {found}")
                angle = 2 * torch.pi * label_phase.to(hidden.dtype)
                phase = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)  # (B, 2 Tc)
                parts.append(repeat(phase, "b k -> (b tg) k", tg=Tg))
            conditioning = self.conditioning(torch.cat(parts, dim=-1))  # (B*Tg, Cc)

        # 4. Encoder: residual block, keep the skip, downsample (1, 2, 2)
        hidden = self.stem(hidden)  # (B*Tg, C0, Z, Y, X)
        skips = []
        for block, downsample in zip(self.encoder_blocks, self.downsamplers):
            hidden = block(hidden, conditioning)
            skips.append(hidden)
            hidden = downsample(hidden)  # (B*Tg, C_{i+1}, Z, Y/2^(i+1), X/2^(i+1))

        # 5. Middle
        hidden = self.middle_block(hidden, conditioning)  # (B*Tg, C_depth, Z, Y/2^depth, X/2^depth)

        # 6. Decoder: upsample, concatenate the skip, residual block
        for i in reversed(range(config.depth)):
            hidden = self.upsamplers[i](hidden)  # (B*Tg, C_i, Z, Y/2^i, X/2^i)
            hidden = torch.cat([hidden, skips[i]], dim=1)  # (B*Tg, 2*C_i, ...)
            hidden = self.decoder_blocks[i](hidden, conditioning)  # (B*Tg, C_i, ...)

        hidden = _crop_grid(hidden, config)  # (B*Tg, C0, Z, Y, X): padding cells dropped
        hidden = rearrange(hidden, "(b tg) c z y x -> b c tg z y x", tg=Tg)  # (B, C0, Tg, Z, Y, X)
        return DatacubeUNetModelOutput(last_hidden_state=hidden, normalized_inputs=normalized)

    def _check_planet_params(self, planet_params, batch_size: int) -> torch.Tensor | None:
        config = self.config
        P = config.num_planet_params
        expected = f"(B, P) with B={batch_size}, P={P} {config.planet_param_names}"
        if planet_params is None:
            if self.conditioning is not None and P > 0:
                raise ValueError(f"planet_params: expected {expected} (FiLM conditioning is on), got None")
            if self.conditioning is None:
                return None
            return torch.zeros(batch_size, 0, device=self.norm_mean.device)
        if not isinstance(planet_params, torch.Tensor) or tuple(planet_params.shape) != (batch_size, P):
            found = tuple(planet_params.shape) if isinstance(planet_params, torch.Tensor) else type(planet_params).__name__
            raise ValueError(f"planet_params: expected {expected}, got {found}")
        return planet_params


# ------------------------------------------------------------------------------------------------------------
# Forecast head
# ------------------------------------------------------------------------------------------------------------
class DatacubeUNetForForecast(DatacubeUNetPreTrainedModel):
    """U-Net trunk + head that predicts the next Tc steps (mean and log-variance) and computes its own loss:
    Gaussian NLL in normalised units + weighted physics constraints on the de-normalised mean."""

    def __init__(self, config: DatacubeUNetConfig):
        super().__init__(config)
        self.unet = DatacubeUNetModel(config)
        outputs_per_step = 2 if config.predict_variance else 1
        self.head_norm = nn.GroupNorm(config.norm_groups, config.base_channels)
        self.head = DatacubeUNetConv(
            config, config.base_channels, outputs_per_step * config.num_variables * config.context_steps
        )
        self.physics = build_physics_constraints(config) if config.physics_weights else None
        self.post_init()

    def forward(
        self,
        inputs: torch.Tensor,
        planet_params: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        gravity: float | torch.Tensor | None = None,
        gas_constant: float | torch.Tensor | None = None,
        heat_capacity: float | torch.Tensor | None = None,
        planet_radius: float | torch.Tensor | None = None,
        inputs_valid: torch.Tensor | None = None,
        labels_valid: torch.Tensor | None = None,
        label_phase: torch.Tensor | None = None,
    ) -> DatacubeForecastOutput:
        """
        Args:
            inputs (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`): context window, physical units.
            planet_params (`torch.FloatTensor` of shape `(B, P)`, *optional*): physical planet parameters in the
                order of `config.planet_param_names`; required when FiLM is on and P > 0, unused otherwise.
            labels (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`, *optional*): the next Tc steps,
                physical units; when given, `loss`, `nll`, `physics_loss` and `physics_terms` are returned.
            gravity, gas_constant, heat_capacity, planet_radius (`float` or `torch.FloatTensor` of shape `(B,)`,
                *optional*): per-sample planet constants (SI) for the physics terms; the config defaults when None.
            inputs_valid, labels_valid (`torch.BoolTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`, *optional*): True
                where a value is real data (masked data). Masked inputs are ignored; the NLL and the physics terms
                average over valid labels only.
            label_phase (`torch.FloatTensor` of shape `(B, Tc)`, *optional*): year fraction of each forecast step
                (with `config.calendar_conditioning`).
        """
        config = self.config
        V, Tc, Tg = config.num_variables, config.context_steps, config.geological_steps
        if labels is not None:
            batch_size = inputs.shape[0] if isinstance(inputs, torch.Tensor) else None
            _check_cube("labels", labels, config, batch_size=batch_size)

        # 1. Trunk: normalise, fold time axes, U-Net
        trunk = self.unet(inputs, planet_params=planet_params, inputs_valid=inputs_valid, label_phase=label_phase)
        features = trunk.last_hidden_state  # (B, C0, Tg, Z, Y, X)
        normalized = trunk.normalized_inputs  # (B, V, Tc, Tg, Z, Y, X)
        constants = self._planet_constants(inputs.shape[0], gravity, gas_constant, heat_capacity, planet_radius)

        # 2. Head: per-step delta (and log-variance) for the next Tc steps
        features = rearrange(features, "b c tg z y x -> (b tg) c z y x")
        out = self.head(F.silu(self.head_norm(features)))  # (B*Tg, S*V*Tc, Z, Y, X), S = 1 or 2
        # (S, B, V, Tc, Tg, Z, Y, X)
        out = rearrange(out, "(b tg) (s v tc) z y x -> s b v tc tg z y x", tg=Tg, v=V, tc=Tc)

        # 3. Residual around the last context frame, in tendency units (tendency_std, see the config): the
        #    model starts at persistence, and the change it predicts is O(1) for every variable and level
        scale = rearrange(self.unet.tendency_scale, "v z -> 1 v 1 1 z 1 1")  # normalised units per tendency unit
        mean_normalized = normalized[:, :, -1:] + out[0] * scale  # (B, V, Tc, Tg, Z, Y, X)
        log_variance_tendency = None
        if config.predict_variance:
            log_variance_tendency = _LOG_VARIANCE_BOUND * torch.tanh(out[1] / _LOG_VARIANCE_BOUND)

        # 4. Back to physical units
        norm_mean = rearrange(self.unet.norm_mean, "v z -> 1 v 1 1 z 1 1")
        norm_std = rearrange(self.unet.norm_std, "v z -> 1 v 1 1 z 1 1")
        mean = mean_normalized * norm_std + norm_mean  # (B, V, Tc, Tg, Z, Y, X), physical
        log_variance = None
        if log_variance_tendency is not None:
            log_variance = log_variance_tendency + 2 * torch.log(scale * norm_std)  # (B, V, Tc, Tg, Z, Y, X), physical

        if labels is None:
            return DatacubeForecastOutput(mean=mean, log_variance=log_variance)

        # 5. Loss: Gaussian NLL in tendency units + weighted physics terms on the physical mean
        labels_normalized = (labels - norm_mean) / norm_std  # (B, V, Tc, Tg, Z, Y, X)
        labels_valid = _check_mask("labels_valid", labels_valid, labels)
        nll = _gaussian_nll(labels_normalized / scale, mean_normalized / scale, log_variance_tendency, labels_valid)
        if self.physics is not None:
            physics_loss, physics_terms = self.physics(mean, **constants, valid=labels_valid)
        else:
            physics_loss, physics_terms = torch.zeros((), device=mean.device, dtype=mean.dtype), {}
        loss = nll + physics_loss

        return DatacubeForecastOutput(
            loss=loss,
            mean=mean,
            log_variance=log_variance,
            nll=nll,
            physics_loss=physics_loss,
            physics_terms=physics_terms,
        )

    def _planet_constants(self, batch_size: int, *values) -> dict[str, float | torch.Tensor]:
        """Per-sample constants: a float or a (B,) tensor each; the config default when None."""
        constants = {}
        for name, value in zip(_PLANET_CONSTANTS, values):
            if value is None:
                value = getattr(self.config, name)
            elif isinstance(value, torch.Tensor):
                if value.ndim == 0:
                    value = value.reshape(1).expand(batch_size)
                if tuple(value.shape) != (batch_size,):
                    raise ValueError(
                        f"{name}: expected a float or a tensor of shape (B,) = ({batch_size},), got {tuple(value.shape)}"
                    )
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
            else:
                raise ValueError(f"{name}: expected a float or a tensor of shape (B,) = ({batch_size},), got {value!r}")
            constants[name] = value
        return constants


__all__ = [
    "build_physics_constraints",
    "DatacubeForecastOutput",
    "DatacubeUNetModelOutput",
    "DatacubeUNetPreTrainedModel",
    "DatacubeUNetModel",
    "DatacubeUNetForForecast",
]
