"""Climate + spectra multi-task model: climate frames and their spectra share one latent per climate step.

Modalities: the cube `(B, V, Tc, Tg, Z, Y, X)` (physical units) and the spectra `(B, Tc, P, W)` (the dataset's
spectrum units). Either or both are given; each is normalised with the schema statistics and encoded into a
`hidden_size` embedding per climate step; the embeddings of the given modalities are averaged into the fused
latent, refined by residual MLP blocks, and decoded by two heads: the climate fields (all variables, levels and
the grid) and the spectra. Given the cube only, the spectrum head is an emulator of the radiative model; given
the spectra only, the climate head is a retrieval.

Loss (all in normalised units): task losses (mean squared error of each head) combined by
[`ClimateSpectraLossCombiner`] (fixed / uncertainty / adaptive, see the config), plus a consistency term between
the two modality embeddings (0, on the latent's device, with fewer than two modalities) and a smoothness term over
level, latitude and longitude of the predicted cube whose weight follows a linear warm-up schedule.
"""

from __future__ import annotations

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
from ..normalisation import statistics_table
from .configuration_climate_spectra import TASK_NAMES, ClimateSpectraConfig

_FAST_DECAY, _SLOW_DECAY = 0.5, 0.9  # running averages of the adaptive mode


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------
@dataclass
class ClimateSpectraModelOutput(ModelOutput):
    """
    Output of [`ClimateSpectraModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(B, Tc, D)`): fused latent per climate step.
        cube_embedding (`torch.FloatTensor` of shape `(B, Tc, D)`, *optional*): embedding of the cube, if given.
        spectrum_embedding (`torch.FloatTensor` of shape `(B, Tc, D)`, *optional*): embedding of the spectra.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cube_embedding: torch.FloatTensor | None = None
    spectrum_embedding: torch.FloatTensor | None = None


@dataclass
class ClimateSpectraOutput(ModelOutput):
    """
    Output of [`ClimateSpectraForMultiTask`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with targets): combined task losses + consistency + smoothness.
        cube (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`): predicted climate fields, physical units.
        spectrum (`torch.FloatTensor` of shape `(B, Tc, P, W)`): predicted spectra, the dataset's spectrum units.
        task_losses (`dict[str, torch.FloatTensor]`, with targets): unweighted loss of each task with a target.
        task_weights (`dict[str, torch.FloatTensor]`, with targets): the weight each task loss had (detached).
        consistency_loss, smoothness_loss (`torch.FloatTensor` of shape `()`, with targets): unweighted terms.
        cross_modal_loss (`torch.FloatTensor` of shape `()`, with targets): unweighted sum of the two cross-modal
            losses (0 unless both modalities and targets are given and `config.cross_modal_weight` > 0).
        smoothness_weight (`torch.FloatTensor` of shape `()`, with targets): the scheduled smoothness weight.
        latent (`torch.FloatTensor` of shape `(B, Tc, D)`): the fused latent.
    """

    loss: torch.FloatTensor | None = None
    cube: torch.FloatTensor | None = None
    spectrum: torch.FloatTensor | None = None
    task_losses: dict[str, torch.FloatTensor] | None = None
    task_weights: dict[str, torch.FloatTensor] | None = None
    consistency_loss: torch.FloatTensor | None = None
    smoothness_loss: torch.FloatTensor | None = None
    cross_modal_loss: torch.FloatTensor | None = None
    smoothness_weight: torch.FloatTensor | None = None
    latent: torch.FloatTensor | None = None


# ------------------------------------------------------------------------------------------------------------
# Private helpers
# ------------------------------------------------------------------------------------------------------------
def _pad_sphere(hidden: torch.Tensor) -> torch.Tensor:
    """Pad (N, C, Y, X) by one cell: circular in longitude, replicate in latitude."""
    hidden = torch.cat([hidden[..., -1:], hidden, hidden[..., :1]], dim=-1)
    return F.pad(hidden, (0, 0, 1, 1), mode="replicate")


def _check_tensor(name: str, tensor, shape: tuple[int, ...], described: str, batch_size: int | None) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor {described}, got {type(tensor).__name__}")  # noqa: TRY004
    if tensor.ndim != len(shape) + 1 or tuple(tensor.shape[1:]) != shape:
        raise ValueError(f"{name}: expected {described}, got {tuple(tensor.shape)}")
    if batch_size is not None and tensor.shape[0] != batch_size:
        raise ValueError(f"{name}: expected batch size B={batch_size}, got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {tensor.dtype}")


def smoothness_penalty(cube: torch.Tensor) -> torch.Tensor:
    """Mean squared first difference of a (B, V, Tc, Tg, Z, Y, X) cube along every spatial axis: level (Z),
    latitude (Y) and longitude (X, periodic: the last column is differenced with the first)."""
    terms = [
        (cube[..., 1:, :, :] - cube[..., :-1, :, :]).pow(2).mean() if cube.shape[-3] > 1 else cube.new_zeros(()),
        (cube[..., 1:, :] - cube[..., :-1, :]).pow(2).mean(),
        (torch.roll(cube, shifts=-1, dims=-1) - cube).pow(2).mean(),
    ]
    return torch.stack(terms).sum()


def physics_weight_schedule(step, final_weight: float, warmup_steps: int, device=None) -> torch.Tensor:
    """Linear warm-up of a loss weight: `final_weight * min(1, step / warmup_steps)` (full weight when
    `warmup_steps` is 0 or `step` is None), as a tensor on `device`."""
    if step is None or warmup_steps == 0:
        return torch.tensor(final_weight, device=device)
    step = torch.as_tensor(step, device=device, dtype=torch.float32)
    return final_weight * torch.clamp(step / warmup_steps, max=1.0)


# ------------------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------------------
class ClimateSpectraLossCombiner(nn.Module):
    """Combines the task losses `{task: L_i}` of the tasks that have a target.

    - `fixed`: `sum_i w0_i L_i`.
    - `uncertainty` (Kendall, Gal & Cipolla 2018): `sum_i exp(-s_i) L_i + s_i` with learned `s_i` (log-variances,
      initialised at `-log w0_i`, so the first weights are `w0`); at the optimum `exp(s_i) = L_i`.
    - `adaptive` (dynamic weight averaging on running averages): `w_i = sum_j(w0_j) * w0_i exp(r_i/T) /
      sum_j w0_j exp(r_j/T)`, `r_i = fast_i / slow_i` (running averages with decays 0.5 and 0.9 of task i's loss,
      updated on every training call): a task whose loss falls more slowly gets more weight; equal ratios give
      `w0`. The first `warmup_steps` training calls use `w0`. State lives in buffers (saved with checkpoints).

    Returns `(total, weights)`; `weights` are detached tensors. No `.item()`: nothing leaves the device.
    """

    def __init__(self, mode: str, initial_weights: dict[str, float], temperature: float = 2.0, warmup_steps: int = 0):
        super().__init__()
        self.mode = mode
        self.tasks = tuple(TASK_NAMES)
        self.temperature = float(temperature)
        self.warmup_steps = int(warmup_steps)
        w0 = torch.tensor([float(initial_weights[t]) for t in self.tasks])
        self.register_buffer("initial_weights", w0, persistent=False)
        if mode == "uncertainty":
            self.log_variances = nn.Parameter(-torch.log(w0.clone()))
        if mode == "adaptive":
            self.register_buffer("fast_average", torch.zeros(len(self.tasks)))
            self.register_buffer("slow_average", torch.zeros(len(self.tasks)))
            self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.mode == "uncertainty":
                self.log_variances.copy_(-torch.log(self.initial_weights))
            if self.mode == "adaptive":
                self.fast_average.zero_()
                self.slow_average.zero_()
                self.num_updates.zero_()

    def current_weights(self) -> torch.Tensor:
        """(num_tasks,) weights the next call would use (detached)."""
        w0 = self.initial_weights
        if self.mode == "fixed":
            return w0
        if self.mode == "uncertainty":
            return torch.exp(-self.log_variances.detach())
        ratio = self.fast_average / self.slow_average.clamp_min(1e-12)
        adaptive = w0.sum() * torch.softmax(torch.log(w0) + ratio / self.temperature, dim=0)
        ready = (self.num_updates >= max(self.warmup_steps, 1)) & (self.slow_average > 0).all()
        return torch.where(ready, adaptive, w0)

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        present = [i for i, t in enumerate(self.tasks) if t in losses]
        if not present:
            raise ValueError(f"expected at least one task loss among {list(self.tasks)}, got none")
        unknown = sorted(set(losses) - set(self.tasks))
        if unknown:
            raise ValueError(f"expected task losses among {list(self.tasks)}, got unknown {unknown}")
        weights = self.current_weights().to(next(iter(losses.values())).device)
        terms = []
        for i in present:
            loss = losses[self.tasks[i]]
            if self.mode == "uncertainty":
                s = self.log_variances[i]
                terms.append(torch.exp(-s) * loss + s)
            else:
                terms.append(weights[i] * loss)
        if self.mode == "adaptive" and self.training:
            self._update_averages({self.tasks[i]: losses[self.tasks[i]] for i in present})
        return torch.stack(terms).sum(), {self.tasks[i]: weights[i].detach() for i in present}

    @torch.no_grad()
    def _update_averages(self, losses: dict[str, torch.Tensor]) -> None:
        for name, loss in losses.items():
            i = self.tasks.index(name)
            value = loss.detach().float()
            first = self.slow_average[i] == 0
            self.fast_average[i] = torch.where(first, value, _FAST_DECAY * self.fast_average[i] + (1 - _FAST_DECAY) * value)
            self.slow_average[i] = torch.where(first, value, _SLOW_DECAY * self.slow_average[i] + (1 - _SLOW_DECAY) * value)
        self.num_updates += 1


class ClimateSpectraCubeEncoder(nn.Module):
    """(B*Tc, V*Tg*Z, Y, X) normalised frames -> (B*Tc, D): two stride-2 convolutions on the sphere + linear."""

    def __init__(self, config: ClimateSpectraConfig):
        super().__init__()
        c = config.cube_channels
        in_channels = config.num_variables * config.geological_steps * config.num_levels
        self.conv1 = nn.Conv2d(in_channels, c, kernel_size=3, stride=2)
        self.norm1 = nn.GroupNorm(config.norm_groups, c)
        self.conv2 = nn.Conv2d(c, 2 * c, kernel_size=3, stride=2)
        self.norm2 = nn.GroupNorm(config.norm_groups, 2 * c)
        self.proj = nn.Linear(2 * c * (config.num_lat // 4) * (config.num_lon // 4), config.hidden_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.norm1(self.conv1(_pad_sphere(frames))))  # (N, C, Y/2, X/2)
        hidden = F.silu(self.norm2(self.conv2(_pad_sphere(hidden))))  # (N, 2C, Y/4, X/4)
        return self.proj(hidden.flatten(1))  # (N, D)


class ClimateSpectraSpectrumEncoder(nn.Module):
    """(B*Tc, P*W) normalised spectra -> (B*Tc, D): two-layer MLP."""

    def __init__(self, config: ClimateSpectraConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.num_phases * config.num_wavelengths, config.hidden_size)
        self.fc_out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, spectra: torch.Tensor) -> torch.Tensor:
        return self.fc_out(F.silu(self.fc_in(spectra)))


class ClimateSpectraFusionBlock(GradientCheckpointingLayer):
    """Pre-norm residual MLP on the fused latent."""

    def __init__(self, config: ClimateSpectraConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.fc_in = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.fc_out = nn.Linear(2 * config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.fc_out(F.silu(self.fc_in(self.norm(hidden_states))))


class ClimateSpectraClimateHead(nn.Module):
    """(N, D) latent -> (N, V*Tg*Z, Y, X) normalised frames: linear to a (2C, Y/4, X/4) map, two x2 upsamplings."""

    def __init__(self, config: ClimateSpectraConfig):
        super().__init__()
        c = config.cube_channels
        self.grid = (config.num_lat // 4, config.num_lon // 4)
        self.proj = nn.Linear(config.hidden_size, 2 * c * self.grid[0] * self.grid[1])
        self.conv1 = nn.Conv2d(2 * c, c, kernel_size=3)
        self.norm1 = nn.GroupNorm(config.norm_groups, c)
        self.conv2 = nn.Conv2d(c, config.num_variables * config.geological_steps * config.num_levels, kernel_size=3)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        hidden = rearrange(self.proj(latent), "n (c y x) -> n c y x", y=self.grid[0], x=self.grid[1])
        hidden = F.interpolate(hidden, scale_factor=2, mode="nearest")  # (N, 2C, Y/2, X/2)
        hidden = F.silu(self.norm1(self.conv1(_pad_sphere(hidden))))  # (N, C, Y/2, X/2)
        hidden = F.interpolate(hidden, scale_factor=2, mode="nearest")  # (N, C, Y, X)
        return self.conv2(_pad_sphere(hidden))  # (N, V*Tg*Z, Y, X)


class ClimateSpectraColumnHead(nn.Module):
    """(N, V*Tg*Z, Y, X) normalised frames -> (N, P*W) normalised spectra: a per-column emission network (1x1
    convolutions: each column's channels -> a (P, W) emission) and the disc integral as a weighted sum over columns.

    With one phase the weights are the fixed cos(latitude) area weights over the grid, so the output is invariant to
    reordering the columns within a latitude band (a rotation in longitude); with several phases every phase has its
    own learned weights over (Y, X), initialised at the area weights (each phase sees another hemisphere). With
    `column_hidden_size = 0` the network is linear and the head is a linear map of the area-weighted global-mean
    profile of every channel.
    """

    def __init__(self, config: ClimateSpectraConfig):
        super().__init__()
        in_channels = config.num_variables * config.geological_steps * config.num_levels
        out_channels = config.num_phases * config.num_wavelengths
        hidden = config.column_hidden_size
        if hidden:
            self.emission = nn.Sequential(
                nn.Conv2d(in_channels, hidden, kernel_size=1), nn.SiLU(),
                nn.Conv2d(hidden, hidden, kernel_size=1), nn.SiLU(),
                nn.Conv2d(hidden, out_channels, kernel_size=1),
            )
        else:
            self.emission = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.num_phases = config.num_phases
        if config.num_phases > 1:
            self.disc_weights = nn.Parameter(self.area_weights(config))  # (P, Y, X), learned
        else:
            self.register_buffer("disc_weights", self.area_weights(config), persistent=False)  # (1, Y, X), fixed

    @staticmethod
    def area_weights(config: ClimateSpectraConfig) -> torch.Tensor:
        """(P, Y, X) initial disc weights: cos(latitude) area weights summing to 1, the same for every phase."""
        area = _lat_weights(config.lat_values)[:, None].expand(config.num_lat, config.num_lon) / config.num_lon
        return area[None].repeat(config.num_phases, 1, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        emission = rearrange(self.emission(frames), "n (p w) y x -> n p w y x", p=self.num_phases)  # per column
        return rearrange(torch.einsum("npwyx,pyx->npw", emission, self.disc_weights), "n p w -> n (p w)")


# ------------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ------------------------------------------------------------------------------------------------------------
def _statistics(config: ClimateSpectraConfig) -> dict[str, torch.Tensor]:
    V, Z, W = config.num_variables, config.num_levels, config.num_wavelengths
    return {
        "norm_mean": statistics_table(config.norm_mean, (V, Z), 0.0),
        "norm_std": statistics_table(config.norm_std, (V, Z), 1.0),
        "spectrum_mean": statistics_table(config.spectrum_mean, (W,), 0.0),
        "spectrum_std": statistics_table(config.spectrum_std, (W,), 1.0),
    }


def _lat_weights(lat_values) -> torch.Tensor:
    """(Y,) cos(latitude) weights summing to 1 (area weights of the global mean)."""
    w = torch.cos(torch.deg2rad(torch.tensor(lat_values, dtype=torch.float64))).clamp_min(0)
    return (w / w.sum()).float()


class ClimateSpectraPreTrainedModel(ClearLoadingErrorsMixin, PreTrainedModel):
    config_class = ClimateSpectraConfig
    config: ClimateSpectraConfig
    base_model_prefix = "encoder"
    main_input_name = "cube"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ClimateSpectraFusionBlock"]  # noqa: RUF012

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ClimateSpectraModel):
            with torch.device("cpu"):
                stats = _statistics(self.config)
            for name, value in stats.items():
                init.copy_(getattr(module, name), value)
        elif isinstance(module, ClimateSpectraColumnHead):
            with torch.device("cpu"):
                area = module.area_weights(self.config)
            init.copy_(module.disc_weights, area)
        elif isinstance(module, ClimateSpectraLossCombiner):
            with torch.device("cpu"):
                w0 = torch.tensor([self.config.task_weights[t] for t in TASK_NAMES])
            init.copy_(module.initial_weights, w0)
            if module.mode == "uncertainty":
                init.copy_(module.log_variances, -torch.log(w0))
            if module.mode == "adaptive":
                init.zeros_(module.fast_average)
                init.zeros_(module.slow_average)
                init.zeros_(module.num_updates)


# ------------------------------------------------------------------------------------------------------------
# Base model
# ------------------------------------------------------------------------------------------------------------
class ClimateSpectraModel(ClimateSpectraPreTrainedModel):
    """Normalisation, the two modality encoders and the fusion blocks; returns the fused latent."""

    def __init__(self, config: ClimateSpectraConfig):
        super().__init__(config)
        config._validate()
        for name, value in _statistics(config).items():
            self.register_buffer(name, value, persistent=False)
        self.cube_encoder = ClimateSpectraCubeEncoder(config)
        self.spectrum_encoder = ClimateSpectraSpectrumEncoder(config)
        self.fusion = nn.ModuleList([ClimateSpectraFusionBlock(config) for _ in range(config.num_fusion_layers)])
        self.post_init()

    def check_inputs(self, cube, spectrum) -> int:
        """Validate the modalities at the public boundary (shape, batch size, the model's dtype); returns the batch size."""
        config = self.config
        if cube is None and spectrum is None:
            raise ValueError("expected at least one modality (cube and/or spectrum), got neither")
        V, Tc, Tg, Z, Y, X = config.cube_shape
        batch_size = None
        if cube is not None:
            _check_tensor("cube", cube, config.cube_shape,
                          f"(B, V, Tc, Tg, Z, Y, X) with V={V} {config.variable_names}, Tc={Tc}, Tg={Tg}, Z={Z}, Y={Y}, X={X}", None)
            batch_size = cube.shape[0]
        if spectrum is not None:
            _check_tensor("spectrum", spectrum, config.spectrum_shape,
                          f"(B, Tc, P, W) = (B, {', '.join(map(str, config.spectrum_shape))})", batch_size)
            batch_size = spectrum.shape[0]
        for name, tensor in (("cube", cube), ("spectrum", spectrum)):
            if tensor is not None and tensor.dtype != self.dtype:
                raise ValueError(f"{name}: expected dtype {self.dtype} (the model's), got {tensor.dtype}")
        return batch_size

    def normalize_cube(self, cube: torch.Tensor) -> torch.Tensor:
        mean = rearrange(self.norm_mean, "v z -> 1 v 1 1 z 1 1")
        std = rearrange(self.norm_std, "v z -> 1 v 1 1 z 1 1")
        return (cube - mean) / std

    def normalize_spectrum(self, spectrum: torch.Tensor) -> torch.Tensor:
        return (spectrum - self.spectrum_mean) / self.spectrum_std

    def fuse(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        """The fused latent (B, Tc, D) of the given modality embeddings: their mean through the fusion blocks."""
        hidden = torch.stack(embeddings).mean(dim=0)
        for block in self.fusion:
            hidden = block(hidden)
        return hidden

    def forward(self, cube: torch.Tensor | None = None, spectrum: torch.Tensor | None = None) -> ClimateSpectraModelOutput:
        """
        Args:
            cube (`torch.FloatTensor` of shape `(B, V, Tc, Tg, Z, Y, X)`, *optional*): climate frames, physical units.
            spectrum (`torch.FloatTensor` of shape `(B, Tc, P, W)`, *optional*): their spectra.
        """
        B = self.check_inputs(cube, spectrum)
        Tc = self.config.context_steps
        embeddings = []

        # 1. Cube encoder: every climate step on its own, (geological step, variable, level) as channels
        cube_embedding = None
        if cube is not None:
            frames = rearrange(self.normalize_cube(cube), "b v tc tg z y x -> (b tc) (v tg z) y x")
            cube_embedding = rearrange(self.cube_encoder(frames), "(b tc) d -> b tc d", b=B, tc=Tc)  # (B, Tc, D)
            embeddings.append(cube_embedding)

        # 2. Spectrum encoder: phases x wavelengths of each climate step
        spectrum_embedding = None
        if spectrum is not None:
            spectra = rearrange(self.normalize_spectrum(spectrum), "b tc p w -> (b tc) (p w)")
            spectrum_embedding = rearrange(self.spectrum_encoder(spectra), "(b tc) d -> b tc d", b=B, tc=Tc)  # (B, Tc, D)
            embeddings.append(spectrum_embedding)

        # 3. Fusion: mean of the given modality embeddings, residual MLP blocks
        hidden = self.fuse(embeddings)  # (B, Tc, D)
        return ClimateSpectraModelOutput(
            last_hidden_state=hidden, cube_embedding=cube_embedding, spectrum_embedding=spectrum_embedding,
        )


# ------------------------------------------------------------------------------------------------------------
# Multi-task heads
# ------------------------------------------------------------------------------------------------------------
class ClimateSpectraForMultiTask(ClimateSpectraPreTrainedModel):
    """Encoders + fused latent + climate and spectrum heads; computes its own multi-task loss."""

    def __init__(self, config: ClimateSpectraConfig):
        super().__init__(config)
        self.encoder = ClimateSpectraModel(config)
        self.climate_head = ClimateSpectraClimateHead(config)
        # per-column emission summed over the disc, straight from the cube to the spectra (with the cube)
        self.column_head = ClimateSpectraColumnHead(config) if config.column_pathway else None
        self.spectrum_head = nn.Sequential(
            nn.LayerNorm(config.hidden_size), nn.Linear(config.hidden_size, config.num_phases * config.num_wavelengths)
        )
        self.loss_combiner = ClimateSpectraLossCombiner(
            config.loss_mode, config.task_weights, config.adaptive_temperature, config.adaptive_warmup_steps
        )
        self.post_init()

    def decode(self, latent: torch.Tensor, frames: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised climate fields (B, V, Tc, Tg, Z, Y, X) and spectra (B, Tc, P, W) of a latent (B, Tc, D), plus
        the column pathway of the normalised frames (B*Tc, V*Tg*Z, Y, X) when given."""
        V, Tc, Tg, Z = self.config.cube_shape[:4]
        B = latent.shape[0]
        flat = rearrange(latent, "b tc d -> (b tc) d")
        cube_normalized = rearrange(
            self.climate_head(flat), "(b tc) (v tg z) y x -> b v tc tg z y x", b=B, tc=Tc, v=V, tg=Tg, z=Z
        )
        spectrum_flat = self.spectrum_head(flat)  # (B*Tc, P*W)
        if frames is not None:
            spectrum_flat = spectrum_flat + self.column_head(frames)
        return cube_normalized, rearrange(spectrum_flat, "(b tc) (p w) -> b tc p w", b=B, tc=Tc, p=self.config.num_phases)

    def forward(
        self,
        cube: torch.Tensor | None = None,
        spectrum: torch.Tensor | None = None,
        cube_labels: torch.Tensor | None = None,
        spectrum_labels: torch.Tensor | None = None,
        training_step: int | torch.Tensor | None = None,
    ) -> ClimateSpectraOutput:
        """
        Args:
            cube (`(B, V, Tc, Tg, Z, Y, X)`, *optional*), spectrum (`(B, Tc, P, W)`, *optional*): the given
                modalities (at least one), physical units.
            cube_labels, spectrum_labels (*optional*): targets of the climate and spectrum heads (same shapes);
                with at least one, the loss terms are returned.
            training_step (*optional*): optimizer step for the smoothness weight schedule (full weight if None).
        """
        config = self.config
        V, Tc, Tg, Z, Y, X = config.cube_shape
        P, W = config.num_phases, config.num_wavelengths

        # 1. Encoders and fused latent
        encoded = self.encoder(cube=cube, spectrum=spectrum)
        latent = encoded.last_hidden_state  # (B, Tc, D)
        B = latent.shape[0]
        if cube_labels is not None:
            _check_tensor("cube_labels", cube_labels, config.cube_shape, f"(B, V, Tc, Tg, Z, Y, X) = (B, {V}, {Tc}, {Tg}, {Z}, {Y}, {X})", B)
        if spectrum_labels is not None:
            _check_tensor("spectrum_labels", spectrum_labels, config.spectrum_shape, f"(B, Tc, P, W) = (B, {Tc}, {P}, {W})", B)

        # 2. Heads, in normalised units
        frames = None
        if self.column_head is not None and cube is not None:
            frames = rearrange(self.encoder.normalize_cube(cube), "b v tc tg z y x -> (b tc) (v tg z) y x")
        cube_normalized, spectrum_normalized = self.decode(latent, frames)

        # 3. Physical units
        enc = self.encoder
        cube_out = cube_normalized * rearrange(enc.norm_std, "v z -> 1 v 1 1 z 1 1") + rearrange(enc.norm_mean, "v z -> 1 v 1 1 z 1 1")
        spectrum_out = spectrum_normalized * enc.spectrum_std + enc.spectrum_mean
        if cube_labels is None and spectrum_labels is None:
            return ClimateSpectraOutput(cube=cube_out, spectrum=spectrum_out, latent=latent)

        # 4. Task losses (normalised units) and their combination
        task_losses = {}
        if cube_labels is not None:
            task_losses["climate"] = F.mse_loss(cube_normalized, enc.normalize_cube(cube_labels))
        if spectrum_labels is not None:
            task_losses["spectrum"] = F.mse_loss(spectrum_normalized, enc.normalize_spectrum(spectrum_labels))
        combined, task_weights = self.loss_combiner(task_losses)

        # 5. Consistency between modality embeddings: 0 on the latent's device with fewer than two modalities
        if encoded.cube_embedding is not None and encoded.spectrum_embedding is not None:
            consistency = F.mse_loss(encoded.cube_embedding, encoded.spectrum_embedding)
        else:
            consistency = torch.zeros((), device=latent.device, dtype=latent.dtype)

        # 6. Smoothness over level, latitude and longitude of the predicted cube, with its weight schedule
        smoothness = smoothness_penalty(cube_normalized)
        smooth_weight = physics_weight_schedule(training_step, config.smoothness_weight, config.physics_warmup_steps, latent.device)
        loss = combined + config.consistency_weight * consistency + smooth_weight * smoothness

        # 7. Cross-modal losses: each modality's latent alone decoded into the other modality
        cross_modal = torch.zeros((), device=latent.device, dtype=latent.dtype)
        both = encoded.cube_embedding is not None and encoded.spectrum_embedding is not None
        if config.cross_modal_weight > 0 and both and cube_labels is not None and spectrum_labels is not None:
            _, spectrum_from_cube = self.decode(self.encoder.fuse([encoded.cube_embedding]), frames)
            cube_from_spectrum, _ = self.decode(self.encoder.fuse([encoded.spectrum_embedding]), None)
            cross_modal = F.mse_loss(spectrum_from_cube, enc.normalize_spectrum(spectrum_labels)) + F.mse_loss(
                cube_from_spectrum, enc.normalize_cube(cube_labels)
            )
            loss = loss + config.cross_modal_weight * cross_modal
        return ClimateSpectraOutput(
            loss=loss,
            cube=cube_out,
            spectrum=spectrum_out,
            task_losses={k: v.detach() for k, v in task_losses.items()},
            task_weights=task_weights,
            consistency_loss=consistency.detach(),
            smoothness_loss=smoothness.detach(),
            cross_modal_loss=cross_modal.detach(),
            smoothness_weight=smooth_weight.detach(),
            latent=latent,
        )


__all__ = [
    "ClimateSpectraClimateHead",
    "ClimateSpectraColumnHead",
    "ClimateSpectraCubeEncoder",
    "ClimateSpectraForMultiTask",
    "ClimateSpectraFusionBlock",
    "ClimateSpectraLossCombiner",
    "ClimateSpectraModel",
    "ClimateSpectraModelOutput",
    "ClimateSpectraOutput",
    "ClimateSpectraPreTrainedModel",
    "ClimateSpectraSpectrumEncoder",
    "physics_weight_schedule",
    "smoothness_penalty",
]
