"""Climate diffusion denoiser: a diffusers `UNet2DModel` over climate fields, conditioned on planet parameters.

Sample axes: V variable, Z level (only when the config generates several levels), Y latitude, X longitude. The
levels are folded into the channels (`n v z y x -> n (v z) y x`) of a 2-D U-Net. The network works in normalised
units (per variable per level mean/std of the config); `normalize`/`denormalize` convert physical fields.

Conditioning: an MLP of the normalised planet parameters, plus an embedding of the class label when the config has
labels, gives a vector of the width of the U-Net's timestep embedding; `UNet2DModel(class_embed_type="identity")`
adds it to the timestep embedding. Where `condition_mask` is False a learned null embedding replaces it, which is
what classifier-free guidance trains (condition dropout) and samples (the unconditional pass).

Longitude is periodic: with `config.periodic_longitude` every spatial convolution of the U-Net pads X circularly
(a forward pre-hook) and Y with zeros (its own padding), so a shift in longitude by a multiple of the coarsest cell
shifts the output by the same amount.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from einops import rearrange
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from ..loading import ClearLoadingErrorsMixin
from ..normalisation import normalisation_tensors
from .configuration_climate_diffusion import ClimateDiffusionConfig


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
@dataclass
class ClimateDiffusionOutput(ModelOutput):
    """
    Output of [`ClimateDiffusionModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `target` is given):
            Mean over examples of `loss_weights * mean((sample - target)**2)` (weights 1 when not given).
        sample (`torch.FloatTensor` of shape `(B, V, Y, X)` or `(B, V, Z, Y, X)`):
            The model prediction (noise, clean sample or velocity, after `config.prediction_type`), normalised
            units.
    """

    loss: torch.FloatTensor | None = None
    sample: torch.FloatTensor | None = None


# ------------------------------------------------------------------------------------------------------------
# Private helpers
# ------------------------------------------------------------------------------------------------------------
def _expected_sample(config: ClimateDiffusionConfig) -> str:
    dims = dict(zip(("V", "Z", "Y", "X") if config.num_levels > 1 else ("V", "Y", "X"), config.sample_shape))
    sizes = ", ".join(f"{k}={v}" for k, v in dims.items())
    return f"{config.sample_axes} with {sizes} (variable_names={config.variable_names})"


def _check_sample(name: str, tensor, config: ClimateDiffusionConfig, batch_size: int | None = None) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor {_expected_sample(config)}, got {type(tensor).__name__}")
    if tensor.ndim != 1 + len(config.sample_shape) or tuple(tensor.shape[1:]) != config.sample_shape:
        raise ValueError(f"{name}: expected {_expected_sample(config)}, got {tuple(tensor.shape)}")
    if batch_size is not None and tensor.shape[0] != batch_size:
        raise ValueError(f"{name}: expected batch size B={batch_size} (from sample), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {tensor.dtype}")


def _pad_longitude(module: nn.Module, args: tuple, width: int) -> tuple:
    """Forward pre-hook of a Conv2d: pad the last axis (longitude) circularly by `width` on each side."""
    (hidden_states, *rest) = args
    return (F.pad(hidden_states, (width, width, 0, 0), mode="circular"), *rest)


def _make_longitude_periodic(unet: nn.Module) -> None:
    """Every zero-padded Conv2d of `unet` pads X circularly (pre-hook) and keeps its zero padding in Y only."""
    for module in unet.modules():
        if not isinstance(module, nn.Conv2d) or module.padding_mode != "zeros" or isinstance(module.padding, str):
            continue
        pad_y, pad_x = module.padding
        if pad_x == 0:
            continue
        module.padding = (pad_y, 0)
        module.register_forward_pre_hook(functools.partial(_pad_longitude, width=pad_x))


def _build_unet(config: ClimateDiffusionConfig) -> UNet2DModel:
    attention = config.attention_blocks or [False] * len(config.block_out_channels)
    return UNet2DModel(
        sample_size=(config.num_lat, config.num_lon),
        in_channels=config.in_channels,
        out_channels=config.in_channels,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        add_attention=config.mid_block_attention,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
        dropout=config.dropout,
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
        class_embed_type="identity" if config.has_condition else None,
    )


# ------------------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------------------
class ClimateDiffusionConditionEmbedding(nn.Module):
    """Condition -> vector added to the timestep embedding: MLP(normalised planet parameters) [+ label embedding];
    a learned null embedding where the condition is dropped."""

    def __init__(self, config: ClimateDiffusionConfig):
        super().__init__()
        width = config.time_embed_dim
        self.planet_in = nn.Linear(config.num_planet_params, width) if config.num_planet_params else None
        self.planet_out = nn.Linear(width, width) if config.num_planet_params else None
        self.label_embedding = nn.Embedding(config.num_class_labels, width) if config.num_class_labels else None
        self.null_embedding = nn.Parameter(torch.zeros(width))

    def forward(
        self,
        planet_params: torch.Tensor | None,
        class_labels: torch.Tensor | None,
        condition_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        parts = []
        if self.planet_in is not None:
            parts.append(self.planet_out(F.silu(self.planet_in(planet_params))))  # (N, D)
        if self.label_embedding is not None:
            parts.append(self.label_embedding(class_labels))  # (N, D)
        embedding = torch.stack(parts).sum(0)  # (N, D)
        if condition_mask is None:
            return embedding
        null = self.null_embedding.to(embedding.dtype).expand_as(embedding)
        return torch.where(condition_mask[:, None], embedding, null)  # (N, D)


# ------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ------------------------------------------------------------------------------------------------------------
class ClimateDiffusionPreTrainedModel(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = ClimateDiffusionConfig
    config: ClimateDiffusionConfig
    base_model_prefix = "climate_diffusion"
    main_input_name = "sample"
    # the diffusers blocks of the U-Net carry `gradient_checkpointing` flags that transformers sets
    supports_gradient_checkpointing = True
    _no_split_modules = ["ResnetBlock2D"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) condition embedding and null embedding; the normalisation buffers (not saved)
        recomputed from the config, so that `from_pretrained` (which builds the model on the meta device) gets them
        right. The U-Net's layers keep PyTorch's default initialisation, as in diffusers."""
        std = self.config.initializer_range
        if isinstance(module, ClimateDiffusionConditionEmbedding):
            for layer in (module.planet_in, module.planet_out, module.label_embedding):
                if layer is None:
                    continue
                init.normal_(layer.weight, mean=0.0, std=std)
                if getattr(layer, "bias", None) is not None:
                    init.zeros_(layer.bias)
            init.normal_(module.null_embedding, mean=0.0, std=std)
        elif isinstance(module, ClimateDiffusionModel):
            with torch.device("cpu"):
                stats = normalisation_tensors(self.config)
            for name, value in stats.items():
                init.copy_(getattr(module, name), value)


# ------------------------------------------------------------------------------------------------------------
# Denoiser
# ------------------------------------------------------------------------------------------------------------
class ClimateDiffusionModel(ClimateDiffusionPreTrainedModel):
    """Denoiser: noisy normalised sample, timestep and condition -> prediction after `config.prediction_type`;
    computes its own (weighted) mean squared error when `target` is given."""

    def __init__(self, config: ClimateDiffusionConfig):
        super().__init__(config)
        config._validate()
        # Normalisation statistics: config values, not saved with the weights (the config is the source of truth)
        for name, value in normalisation_tensors(config).items():
            self.register_buffer(name, value, persistent=False)
        self.condition_embedding = ClimateDiffusionConditionEmbedding(config) if config.has_condition else None
        self.unet = _build_unet(config)
        if config.periodic_longitude:
            _make_longitude_periodic(self.unet)
        self.post_init()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        planet_params: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        condition_mask: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
    ) -> ClimateDiffusionOutput:
        """
        Args:
            sample (`torch.FloatTensor` of shape `(B, V, Y, X)` or `(B, V, Z, Y, X)`): noisy sample, NORMALISED
                units (`normalize` of physical fields, plus noise).
            timestep (`torch.Tensor` of shape `(B,)` or `()`, or a number): diffusion timestep of each example.
            planet_params (`torch.FloatTensor` of shape `(B, P)`): physical planet parameters in the order of
                `config.planet_param_names`; required when P > 0.
            class_labels (`torch.LongTensor` of shape `(B,)`): label in `[0, config.num_class_labels)`; required when
                the config has labels.
            condition_mask (`torch.BoolTensor` of shape `(B,)`, *optional*): True keeps an example's condition,
                False replaces it by the learned null embedding; `None` keeps all.
            target (`torch.FloatTensor`, same shape as `sample`, *optional*): what the prediction is trained to
                match (see `astrobio_hf.diffusion.training.diffusion_loss_target`); when given, `loss` is returned.
            loss_weights (`torch.FloatTensor` of shape `(B,)`, *optional*): per-example weights of the loss (e.g.
                min-SNR-gamma weights); 1 when not given.
        """
        config = self.config
        _check_sample("sample", sample, config)
        if sample.dtype != self.dtype:
            raise ValueError(f"sample: expected dtype {self.dtype} (the model's), got {sample.dtype}")
        B = sample.shape[0]
        timestep = self._check_timestep(timestep, B, sample.device)
        condition = self._check_condition(planet_params, class_labels, condition_mask, B)
        if target is not None:
            _check_sample("target", target, config, batch_size=B)
        if loss_weights is not None and (
            not isinstance(loss_weights, torch.Tensor) or tuple(loss_weights.shape) != (B,)
        ):
            found = tuple(loss_weights.shape) if isinstance(loss_weights, torch.Tensor) else type(loss_weights).__name__
            raise ValueError(f"loss_weights: expected a tensor of shape (B,) = ({B},), got {found}")

        # 1. Fold the levels into the channels
        hidden = sample if config.num_levels == 1 else rearrange(sample, "b v z y x -> b (v z) y x")  # (B, C, Y, X)

        # 2. Condition embedding (null where the condition is dropped), added to the timestep embedding
        embedding = None
        if self.condition_embedding is not None:
            embedding = self.condition_embedding(*condition).to(hidden.dtype)  # (B, 4 * block_out_channels[0])

        # 3. U-Net
        hidden = self.unet(hidden, timestep, class_labels=embedding).sample  # (B, C, Y, X)

        # 4. Unfold the levels
        if config.num_levels > 1:
            hidden = rearrange(hidden, "b (v z) y x -> b v z y x", z=config.num_levels)  # (B, V, Z, Y, X)

        if target is None:
            return ClimateDiffusionOutput(sample=hidden)

        # 5. Loss: per-example mean squared error, weighted, averaged over the batch
        per_example = (hidden.float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
        if loss_weights is not None:
            per_example = per_example * loss_weights.to(per_example)
        return ClimateDiffusionOutput(loss=per_example.mean(), sample=hidden)

    # ----------------------------------------------------------------------------------------------------------
    def normalize(self, fields: torch.Tensor) -> torch.Tensor:
        """Physical fields (B, V, Y, X) or (B, V, Z, Y, X) -> normalised units."""
        _check_sample("fields", fields, self.config)
        mean, std = self._statistics(fields)
        return (fields - mean) / std

    def denormalize(self, fields: torch.Tensor) -> torch.Tensor:
        """Normalised fields (B, V, Y, X) or (B, V, Z, Y, X) -> physical units."""
        _check_sample("fields", fields, self.config)
        mean, std = self._statistics(fields)
        return fields * std + mean

    def _statistics(self, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pattern = "v 1 -> 1 v 1 1" if self.config.num_levels == 1 else "v z -> 1 v z 1 1"  # to (B, V, [Z,] Y, X)
        mean = rearrange(self.norm_mean, pattern).to(device=fields.device, dtype=fields.dtype)
        std = rearrange(self.norm_std, pattern).to(device=fields.device, dtype=fields.dtype)
        return mean, std

    def _check_timestep(self, timestep, batch_size: int, device) -> torch.Tensor:
        if isinstance(timestep, (int, float)) and not isinstance(timestep, bool):
            return torch.tensor(timestep, device=device)
        if not isinstance(timestep, torch.Tensor) or timestep.ndim > 1 or (
            timestep.ndim == 1 and timestep.shape[0] != batch_size
        ):
            found = tuple(timestep.shape) if isinstance(timestep, torch.Tensor) else type(timestep).__name__
            raise ValueError(f"timestep: expected a number or a tensor of shape () or (B,) = ({batch_size},), got {found}")
        return timestep.to(device)

    def _check_condition(self, planet_params, class_labels, condition_mask, batch_size: int):
        config = self.config
        P = config.num_planet_params
        if P > 0:
            expected = f"(B, P) with B={batch_size}, P={P} {config.planet_param_names}"
            if not isinstance(planet_params, torch.Tensor) or tuple(planet_params.shape) != (batch_size, P):
                found = tuple(planet_params.shape) if isinstance(planet_params, torch.Tensor) else planet_params
                raise ValueError(f"planet_params: expected {expected}, got {found}")
            if not planet_params.is_floating_point():
                raise ValueError(f"planet_params: expected a floating-point tensor, got dtype {planet_params.dtype}")
            planet_params = (planet_params.float() - self.planet_mean) / self.planet_std  # (B, P), normalised
        elif planet_params is not None:
            raise ValueError(f"planet_params: expected None (the config has no planet_param_names), got {planet_params!r}")

        L = config.num_class_labels
        if L > 0:
            expected = f"an integer tensor of shape (B,) = ({batch_size},) with values in [0, {L})"
            if (
                not isinstance(class_labels, torch.Tensor)
                or tuple(class_labels.shape) != (batch_size,)
                or class_labels.is_floating_point()
                or class_labels.dtype == torch.bool
            ):
                found = (
                    f"{tuple(class_labels.shape)} {class_labels.dtype}"
                    if isinstance(class_labels, torch.Tensor)
                    else class_labels
                )
                raise ValueError(f"class_labels: expected {expected}, got {found}")
            if batch_size and (class_labels.min() < 0 or class_labels.max() >= L):
                raise ValueError(f"class_labels: expected {expected}, got values {class_labels.unique().tolist()}")
        elif class_labels is not None:
            raise ValueError(f"class_labels: expected None (the config has num_class_labels=0), got {class_labels!r}")

        if condition_mask is not None:
            if not config.has_condition:
                raise ValueError("condition_mask: expected None (the model has no condition), got a mask")
            if (
                not isinstance(condition_mask, torch.Tensor)
                or condition_mask.dtype != torch.bool
                or tuple(condition_mask.shape) != (batch_size,)
            ):
                found = (
                    f"{tuple(condition_mask.shape)} {condition_mask.dtype}"
                    if isinstance(condition_mask, torch.Tensor)
                    else condition_mask
                )
                raise ValueError(f"condition_mask: expected a bool tensor of shape (B,) = ({batch_size},), got {found}")
        return planet_params, class_labels, condition_mask


__all__ = [
    "ClimateDiffusionOutput",
    "ClimateDiffusionConditionEmbedding",
    "ClimateDiffusionPreTrainedModel",
    "ClimateDiffusionModel",
]
