"""Configuration of the climate + spectra multi-task model (`model_type = "climate_spectra"`). Torch-free."""

from __future__ import annotations

import numbers
from dataclasses import field

from transformers.configuration_utils import PreTrainedConfig

from ..config_checks import (
    GridSizesMixin,
    check_grid,
    check_norm_table,
    finite_float,
    float_list,
    merge_schema_fields,
    reject_unknown_keys,
    str_list,
)

LOSS_MODES = ("fixed", "uncertainty", "adaptive")
TASK_NAMES = ("climate", "spectrum")


def _default_variable_names() -> list[str]:
    return ["T", "p", "rho", "q", "u", "v"]


def _default_level_values() -> list[float]:
    return [0.0, 2400.0, 4800.0, 7200.0, 9600.0, 12000.0]


def _default_lat_values() -> list[float]:
    return [-90.0 + 180.0 / 16 * (i + 0.5) for i in range(16)]


def _default_lon_values() -> list[float]:
    return [360.0 / 32 * i for i in range(32)]


def _default_wavelengths() -> list[float]:
    return [3.0 * 5.0 ** (i / 47) for i in range(48)]


def _default_task_weights() -> dict[str, float]:
    return {"climate": 1.0, "spectrum": 1.0}


class ClimateSpectraConfig(GridSizesMixin, PreTrainedConfig):
    r"""
    Configuration of [`ClimateSpectraForMultiTask`]: encoders for climate frames `(B, V, Tc, Tg, Z, Y, X)` and for
    their spectra `(B, Tc, P, W)`, a fused latent per climate step, and two heads (climate fields, spectra).

    Data-dependent values come from the dataset schema through [`~ClimateSpectraConfig.from_schema`]: variables,
    grid, Tg, wavelengths, phases and the normalisation statistics; every layer size is derived from them.

    Args:
        variable_names, variable_units, level_values, level_unit, lat_values, lon_values:
            Variables and grid of the cube (as in `DatacubeUNetConfig`); `len(lat_values)` and `len(lon_values)`
            must be divisible by 4 (two stride-2 stages).
        context_steps (`int`, defaults to 4): Tc, climate steps per sample (each gets its own latent).
        geological_steps (`int`, defaults to 2): Tg of the cube.
        norm_mean, norm_std (`list[list[float]]`, *optional*): (V x Z) statistics of the cube; identity if None.
        spectrum_wavelengths (`list[float]`): W wavelengths [micron].
        spectrum_phases (`list[float]`, *optional*): P orbital phases [degree]; None means one spectrum (P = 1).
        spectrum_units (`str`, defaults to `"W m-2 um-1"`): unit of the spectra (informative).
        spectrum_mean, spectrum_std (`list[float]`, *optional*): (W,) statistics of the spectra; identity if None.
        cube_channels (`int`, defaults to 16): channels of the first cube-encoder stage (the second has twice).
        hidden_size (`int`, defaults to 64): width of the modality embeddings and the fused latent.
        num_fusion_layers (`int`, defaults to 2): residual MLP blocks on the fused latent.
        norm_groups (`int`, defaults to 4): GroupNorm groups; must divide `cube_channels`.
        column_pathway (`bool`, defaults to `True`): add a per-column emission network straight from the normalised
            cube to the spectra (when the cube is given): every (latitude, longitude) column's channels (variable,
            geological step, level) go through 1x1 convolutions to a (P, W) emission, and the disc integral is a
            weighted sum over columns: cos(latitude) area weights with one phase, learned weights per phase
            (initialised at the area weights) with several. This is the structure of disc-integrated emission
            (columns emit, the observer sums the visible disc) and generalises from few planets where the
            convolutional encoder alone does not.
        column_hidden_size (`int`, defaults to 64): width of the column network's two hidden 1x1 layers; 0 makes it
            linear, i.e. a linear map of the area-weighted global-mean profile of every normalised channel.
        loss_mode (`str`, defaults to `"uncertainty"`): how the task losses are combined: `"fixed"` (the
            `task_weights`), `"uncertainty"` (Kendall et al. 2018: learned log-variances s_i,
            `sum_i exp(-s_i) L_i + s_i`, s_i initialised at `-log(task_weights[i])`), or `"adaptive"`
            (dynamic weight averaging on running loss averages: `w_i = sum(w0) * w0_i exp(r_i/T) / sum_j w0_j exp(r_j/T)`
            with `r_i` = fast / slow running average of task i's loss; the first `adaptive_warmup_steps` training
            steps use the initial `task_weights`).
        task_weights (`dict[str, float]`, defaults to 1 each): initial weight of `"climate"` and `"spectrum"`.
        adaptive_temperature (`float`, defaults to 2.0): T of the adaptive mode.
        adaptive_warmup_steps (`int`, defaults to 20): training steps that use the initial weights (adaptive mode).
        cross_modal_weight (`float`, defaults to 0.0): with both modalities and both targets, also decode the latent
            of each modality alone (the fusion blocks on one embedding) into the other modality, and add this weight
            times the sum of the two cross-modal losses (spectra from the cube alone, climate fields from the spectra
            alone; normalised MSE) to the loss: the tasks the evaluation measures, trained on every such batch.
        consistency_weight (`float`, defaults to 0.1): weight of the mean squared distance between the cube and
            spectrum embeddings (0 when fewer than two modalities are given).
        smoothness_weight (`float`, defaults to 0.01): final weight of the smoothness (physics) term: mean squared
            first differences of the predicted normalised cube along level, latitude and (periodic) longitude.
        physics_warmup_steps (`int`, defaults to 0): the smoothness weight ramps linearly from 0 to
            `smoothness_weight` over this many training steps (0: full weight from the start).
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation.
    """

    model_type = "climate_spectra"

    # 1. Variables and grid (from the dataset schema)
    variable_names: list[str] = field(default_factory=_default_variable_names)
    variable_units: list[str] | None = None
    level_values: list[float] = field(default_factory=_default_level_values)
    level_unit: str = "m"
    lat_values: list[float] = field(default_factory=_default_lat_values)
    lon_values: list[float] = field(default_factory=_default_lon_values)
    context_steps: int = 4
    geological_steps: int = 2
    norm_mean: list[list[float]] | None = None
    norm_std: list[list[float]] | None = None
    # 2. Spectra (from the dataset schema)
    spectrum_wavelengths: list[float] = field(default_factory=_default_wavelengths)
    spectrum_phases: list[float] | None = None
    spectrum_units: str = "W m-2 um-1"
    spectrum_mean: list[float] | None = None
    spectrum_std: list[float] | None = None
    # 3. Network size
    cube_channels: int = 16
    hidden_size: int = 64
    num_fusion_layers: int = 2
    norm_groups: int = 4
    column_pathway: bool = True
    column_hidden_size: int = 64
    # 4. Losses
    loss_mode: str = "uncertainty"
    task_weights: dict[str, float] = field(default_factory=_default_task_weights)
    adaptive_temperature: float = 2.0
    adaptive_warmup_steps: int = 20
    cross_modal_weight: float = 0.0
    consistency_weight: float = 0.1
    smoothness_weight: float = 0.01
    physics_warmup_steps: int = 0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        reject_unknown_keys(ClimateSpectraConfig, kwargs)
        super().__post_init__(**kwargs)
        self._validate()

    @classmethod
    def from_schema(cls, schema, **kwargs) -> ClimateSpectraConfig:
        """Config whose data-dependent fields come from a dataset schema with spectra (read by attribute)."""
        if getattr(schema, "spectrum_wavelengths", None) is None:
            raise ValueError("expected a dataset schema with spectra (spectrum_wavelengths), got one without")
        units = getattr(schema, "units", None)
        from_schema = {
            "variable_names": schema.variable_names,
            "variable_units": [units[v] for v in schema.variable_names] if units else None,
            "level_values": schema.level_values,
            "level_unit": schema.level_unit,
            "lat_values": schema.lat_values,
            "lon_values": schema.lon_values,
            "geological_steps": len(schema.geological_time_values),
            "norm_mean": schema.norm_mean,
            "norm_std": schema.norm_std,
            "spectrum_wavelengths": schema.spectrum_wavelengths,
            "spectrum_phases": schema.spectrum_phases,
            "spectrum_units": schema.spectrum_units,
            "spectrum_mean": schema.spectrum_mean,
            "spectrum_std": schema.spectrum_std,
        }
        return cls(**merge_schema_fields(from_schema, kwargs))

    # derived values

    @property
    def num_wavelengths(self) -> int:
        return len(self.spectrum_wavelengths)

    @property
    def num_phases(self) -> int:
        return 1 if self.spectrum_phases is None else len(self.spectrum_phases)

    @property
    def cube_shape(self) -> tuple[int, int, int, int, int, int]:
        """(V, Tc, Tg, Z, Y, X) after the batch axis."""
        return (self.num_variables, self.context_steps, self.geological_steps, self.num_levels, self.num_lat, self.num_lon)

    @property
    def spectrum_shape(self) -> tuple[int, int, int]:
        """(Tc, P, W) after the batch axis."""
        return (self.context_steps, self.num_phases, self.num_wavelengths)

    def _validate(self) -> None:
        self.variable_names = str_list("variable_names", self.variable_names)
        if not self.variable_names:
            raise ValueError("variable_names must name at least one variable, got []")
        self.variable_units, self.level_values, self.lat_values, self.lon_values = check_grid(
            self.variable_names, self.variable_units, self.level_values, self.level_unit, self.lat_values, self.lon_values
        )
        for name in ("context_steps", "geological_steps", "cube_channels", "hidden_size", "num_fusion_layers", "norm_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))
        for name in ("adaptive_warmup_steps", "physics_warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            setattr(self, name, int(value))
        if not isinstance(self.column_pathway, bool):
            raise TypeError(f"column_pathway must be a bool, got {self.column_pathway!r}")
        if isinstance(self.column_hidden_size, bool) or not isinstance(self.column_hidden_size, numbers.Integral) or self.column_hidden_size < 0:
            raise ValueError(f"column_hidden_size must be an integer >= 0, got {self.column_hidden_size!r}")
        self.column_hidden_size = int(self.column_hidden_size)
        if self.cube_channels % self.norm_groups != 0:
            raise ValueError(f"cube_channels={self.cube_channels} must be divisible by norm_groups={self.norm_groups}")
        if self.num_lat % 4 or self.num_lon % 4:
            raise ValueError(
                f"len(lat_values)={self.num_lat} and len(lon_values)={self.num_lon} must be divisible by 4 "
                "(two stride-2 encoder stages)"
            )
        self.norm_mean, self.norm_std = check_norm_table(self.norm_mean, self.norm_std, self.variable_names, self.num_levels)
        # spectra
        self.spectrum_wavelengths = float_list("spectrum_wavelengths", self.spectrum_wavelengths)
        if not self.spectrum_wavelengths or min(self.spectrum_wavelengths) <= 0:
            raise ValueError(f"spectrum_wavelengths must be non-empty and positive, got {self.spectrum_wavelengths}")
        if self.spectrum_phases is not None:
            self.spectrum_phases = float_list("spectrum_phases", self.spectrum_phases)
            if not self.spectrum_phases:
                raise ValueError("spectrum_phases must be None (one spectrum) or non-empty, got []")
        if (self.spectrum_mean is None) != (self.spectrum_std is None):
            raise ValueError(
                f"spectrum_mean and spectrum_std are given together or not at all, got "
                f"spectrum_mean={self.spectrum_mean} and spectrum_std={self.spectrum_std}"
            )
        if self.spectrum_mean is not None:
            self.spectrum_mean = float_list("spectrum_mean", self.spectrum_mean)
            self.spectrum_std = float_list("spectrum_std", self.spectrum_std)
            W = self.num_wavelengths
            if len(self.spectrum_mean) != W or len(self.spectrum_std) != W or min(self.spectrum_std) <= 0:
                raise ValueError(
                    f"spectrum_mean/spectrum_std must hold W={W} values (len(spectrum_wavelengths)), std positive, got "
                    f"{len(self.spectrum_mean)} and {len(self.spectrum_std)} values"
                )
        self.spectrum_units = str(self.spectrum_units)
        # losses
        if self.loss_mode not in LOSS_MODES:
            raise ValueError(f"loss_mode must be one of {list(LOSS_MODES)}, got {self.loss_mode!r}")
        if not isinstance(self.task_weights, dict) or sorted(self.task_weights) != sorted(TASK_NAMES):
            raise ValueError(f"task_weights must be a dict with keys {list(TASK_NAMES)}, got {self.task_weights!r}")
        weights = {}
        for key in TASK_NAMES:
            value = finite_float(f"task_weights[{key!r}]", self.task_weights[key])
            if value <= 0:
                raise ValueError(f"task_weights[{key!r}] must be > 0 (loss_mode={self.loss_mode!r}), got {value}")
            weights[key] = value
        self.task_weights = weights
        for name in ("adaptive_temperature", "initializer_range"):
            value = finite_float(name, getattr(self, name))
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
            setattr(self, name, value)
        for name in ("cross_modal_weight", "consistency_weight", "smoothness_weight"):
            value = finite_float(name, getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
            setattr(self, name, value)


__all__ = ["ClimateSpectraConfig"]
