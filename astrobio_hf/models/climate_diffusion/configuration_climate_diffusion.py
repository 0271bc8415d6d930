"""Configuration of the climate diffusion denoiser (`model_type = "climate_diffusion"`). Torch-free at import."""

from __future__ import annotations

from dataclasses import field

from transformers.configuration_utils import PreTrainedConfig

from ..config_checks import (
    GridSizesMixin,
    as_list,
    check_grid,
    check_norm_table,
    check_planet_stats,
    finite_float,
    int_at_least,
    merge_schema_fields,
    reject_unknown_keys,
    str_list,
)


def _default_variable_names() -> list[str]:
    return ["T", "p", "rho", "q", "u", "v"]


def _default_lat_values() -> list[float]:
    # 16 cell centres, no poles: -84.375 ... 84.375
    return [-90.0 + 180.0 / 16 * (i + 0.5) for i in range(16)]


def _default_lon_values() -> list[float]:
    # 32 uniform columns: 0 ... 348.75
    return [360.0 / 32 * i for i in range(32)]


PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class ClimateDiffusionConfig(GridSizesMixin, PreTrainedConfig):
    r"""
    Configuration of [`ClimateDiffusionModel`], a denoiser over climate fields conditioned on planet parameters
    and, optionally, a class label (e.g. the geological epoch).

    A sample is one level of the datacube, all variables, `(V, Y, X)`, when `level_values` holds one level, or
    several levels `(V, Z, Y, X)` otherwise (Z is folded into the channels of a 2-D U-Net, `C = V * Z`). The
    backbone is a diffusers `UNet2DModel`; the condition embedding (MLP of the normalised planet parameters, plus a
    label embedding) is added to its timestep embedding, and a learned null embedding replaces it where the
    condition is dropped (classifier-free guidance).

    Data-dependent values (variable names, grid, planet parameter names, normalisation statistics) come from the
    dataset schema (`from_schema`). Counts are derived from the name lists (`num_variables`, `num_levels`, ...);
    they are properties, never fields. All checks live in `_validate()`; an invalid combination raises `ValueError`
    naming both values, and an unknown key raises `ValueError` listing the valid ones.

    Args:
        variable_names (`list[str]`, defaults to `["T", "p", "rho", "q", "u", "v"]`):
            Names of the variables along axis V, in order.
        variable_units (`list[str]`, *optional*):
            SI unit of each variable, in the order of `variable_names` (informative: plots and model cards).
        level_values (`list[float]`, defaults to `[0.0]`):
            The levels the model generates: one level gives samples `(V, Y, X)`, several give `(V, Z, Y, X)`.
            Strictly monotonic.
        level_unit (`str`, defaults to `"m"`):
            Unit of `level_values`: `"m"` (height) or `"Pa"` (pressure).
        lat_values (`list[float]`, defaults to 16 cell centres -84.375 ... 84.375):
            Latitude of each row along axis Y in degrees, ascending, strictly inside (-90, 90).
        lon_values (`list[float]`, defaults to 32 columns 0 ... 348.75):
            Longitude of each column along axis X in degrees, uniform and covering 360 degrees.
        planet_param_names (`list[str]`, defaults to `[]`):
            Names of the planet parameters given to `forward` as `planet_params` (N, P), physical units.
        planet_param_mean (`list[float]`, *optional*):
            Mean of each planet parameter (P values); `None` means 0.
        planet_param_std (`list[float]`, *optional*):
            Standard deviation of each planet parameter (P values, positive); `None` means 1.
        num_class_labels (`int`, defaults to 0):
            Number of class labels (e.g. geological epochs) the model is conditioned on; 0 means no label.
        norm_mean (`list[list[float]]`, *optional*):
            Per variable per generated level mean (V x Z, physical units); `None` means 0. The model works on
            `(fields - norm_mean) / norm_std`.
        norm_std (`list[list[float]]`, *optional*):
            Per variable per generated level standard deviation (V x Z, positive); `None` means 1.
        block_out_channels (`list[int]`, defaults to `[64, 128, 256]`):
            Channels of each U-Net resolution level; the grid is halved `len(block_out_channels) - 1` times, so
            `len(lat_values)` and `len(lon_values)` must be divisible by `2**(len(block_out_channels) - 1)`.
        layers_per_block (`int`, defaults to 2):
            Residual blocks per resolution level (the decoder has one more, as in `UNet2DModel`).
        attention_blocks (`list[bool]`, *optional*):
            Self-attention on or off at each resolution level (encoder and decoder), one flag per entry of
            `block_out_channels`; `None` means no attention anywhere. Keep it to the coarsest levels: attention
            is quadratic in the number of grid cells.
        mid_block_attention (`bool`, defaults to `False`):
            Self-attention in the middle block (coarsest resolution).
        attention_head_dim (`int`, defaults to 8):
            Channels per attention head; must divide the channels of every level with attention.
        norm_num_groups (`int`, defaults to 8):
            Groups of every GroupNorm; must divide every entry of `block_out_channels`.
        dropout (`float`, defaults to 0.0):
            Dropout inside the residual blocks.
        periodic_longitude (`bool`, defaults to `True`):
            Pad every spatial convolution circularly in longitude (X) and with zeros in latitude (Y); `False` keeps
            the zero padding of `UNet2DModel` on both axes.
        condition_dropout (`float`, *optional*):
            Probability, per training example, that its condition is replaced by the learned null embedding
            (classifier-free guidance); in [0, 1). Used by the training recipe (see
            `astrobio_hf.diffusion.guidance.condition_dropout_mask`). `None` resolves to 0.1 for a conditional model
            and 0.0 for an unconditional one; a positive value for a model without condition is an error.
        prediction_type (`str`, defaults to `"v_prediction"`):
            What the network predicts: `"epsilon"` (the noise), `"sample"` (the clean sample) or `"v_prediction"`
            (the velocity of Salimans & Ho 2022). The schedulers are built with the same value.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of the condition embedding and the null embedding (the
            U-Net keeps the default initialisation of its PyTorch layers, as in diffusers).

    Example:

    ```python
    >>> from astrobio_hf import ClimateDiffusionConfig, ClimateDiffusionModel
    >>> config = ClimateDiffusionConfig(variable_names=["T", "u", "v"], planet_param_names=["stellar_flux"],
    ...     lat_values=[-67.5, -22.5, 22.5, 67.5], lon_values=[0.0, 90.0, 180.0, 270.0], block_out_channels=[16, 32])
    >>> model = ClimateDiffusionModel(config)
    ```
    """

    model_type = "climate_diffusion"

    # 1. Variables and grid (from the dataset schema)
    variable_names: list[str] = field(default_factory=_default_variable_names)
    variable_units: list[str] | None = None
    level_values: list[float] = field(default_factory=lambda: [0.0])
    level_unit: str = "m"
    lat_values: list[float] = field(default_factory=_default_lat_values)
    lon_values: list[float] = field(default_factory=_default_lon_values)
    # 2. Condition
    planet_param_names: list[str] = field(default_factory=list)
    planet_param_mean: list[float] | None = None
    planet_param_std: list[float] | None = None
    num_class_labels: int = 0
    # 3. Normalisation statistics of the generated levels (from the dataset schema, train split)
    norm_mean: list[list[float]] | None = None
    norm_std: list[list[float]] | None = None
    # 4. U-Net backbone
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    layers_per_block: int = 2
    attention_blocks: list[bool] | None = None
    mid_block_attention: bool = False
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    dropout: float = 0.0
    periodic_longitude: bool = True
    # 5. Diffusion
    condition_dropout: float | None = None
    prediction_type: str = "v_prediction"
    # 6. Initialisation
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        reject_unknown_keys(ClimateDiffusionConfig, kwargs)
        super().__post_init__(**kwargs)
        self._validate()

    @classmethod
    def from_schema(cls, schema, level_indices=None, **kwargs) -> "ClimateDiffusionConfig":
        """Config whose data-dependent fields come from a dataset schema (`astrobio_hf.data.DatasetSchema`, read by
        attribute so that models do not import `data`): variable names and units, the grid, the planet parameter
        names and statistics, and `norm_mean`/`norm_std` of the generated levels.

        `level_indices` picks the levels to generate (indices into `schema.level_values`, as for
        `collate_frames(level_indices=...)`): one index gives samples (V, Y, X), several (V, Z', Y, X); `None`
        means all levels. `num_class_labels` defaults to the number of geological epochs when the schema has more
        than one (0 otherwise); `kwargs` may override it and set the other fields (network size, diffusion). Giving
        a schema field in `kwargs` is an error, as is an unknown key."""
        levels_all = list(schema.level_values)
        levels = list(range(len(levels_all))) if level_indices is None else [int(k) for k in level_indices]
        if not levels or min(levels) < 0 or max(levels) >= len(levels_all) or len(set(levels)) != len(levels):
            raise ValueError(
                f"level_indices: expected distinct indices in [0, {len(levels_all)}) (schema level_values="
                f"{levels_all}), got {level_indices}"
            )
        units = getattr(schema, "units", None)
        from_schema = {
            "variable_names": list(schema.variable_names),
            "variable_units": [units[name] for name in schema.variable_names] if units else None,
            "level_values": [levels_all[k] for k in levels],
            "level_unit": schema.level_unit,
            "lat_values": list(schema.lat_values),
            "lon_values": list(schema.lon_values),
            "planet_param_names": list(schema.planet_param_names),
            "planet_param_mean": schema.planet_param_mean,
            "planet_param_std": schema.planet_param_std,
            "norm_mean": [[as_list(row)[k] for k in levels] for row in as_list(schema.norm_mean)],
            "norm_std": [[as_list(row)[k] for k in levels] for row in as_list(schema.norm_std)],
        }
        epochs = len(getattr(schema, "geological_time_values", []) or [])
        kwargs.setdefault("num_class_labels", epochs if epochs > 1 else 0)
        return cls(**merge_schema_fields(from_schema, kwargs))

    # ----------------------------------------------------------------------------------------------------------
    # derived values (never stored: the name lists are the one source of truth)

    @property
    def num_planet_params(self) -> int:
        return len(self.planet_param_names)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample after the batch axis: (V, Y, X) for one level, (V, Z, Y, X) for several."""
        if self.num_levels == 1:
            return (self.num_variables, self.num_lat, self.num_lon)
        return (self.num_variables, self.num_levels, self.num_lat, self.num_lon)

    @property
    def sample_axes(self) -> str:
        """The axes of a batch of samples, e.g. `"(B, V, Y, X)"`."""
        return "(B, V, Y, X)" if self.num_levels == 1 else "(B, V, Z, Y, X)"

    @property
    def in_channels(self) -> int:
        """Channels of the U-Net: V * Z (levels folded into channels)."""
        return self.num_variables * self.num_levels

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding of `UNet2DModel` (and of the condition embedding added to it)."""
        return 4 * self.block_out_channels[0]

    @property
    def has_condition(self) -> bool:
        """Whether the model is conditioned (planet parameters and/or a class label)."""
        return self.num_planet_params > 0 or self.num_class_labels > 0

    # ----------------------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        """Every check of this config, in one place. Normalises containers to JSON types (lists, floats)."""
        # 1. Variables and grid
        self.variable_names = str_list("variable_names", self.variable_names)
        if not self.variable_names:
            raise ValueError("variable_names must name at least one variable, got []")
        self.variable_units, self.level_values, self.lat_values, self.lon_values = check_grid(
            self.variable_names, self.variable_units, self.level_values, self.level_unit, self.lat_values, self.lon_values
        )

        # 2. Condition
        self.planet_param_names = str_list("planet_param_names", self.planet_param_names)
        self.planet_param_mean, self.planet_param_std = check_planet_stats(self.planet_param_mean, self.planet_param_std, self.planet_param_names)
        self.num_class_labels = int_at_least("num_class_labels", self.num_class_labels, minimum=0)

        # 3. Normalisation statistics
        self.norm_mean, self.norm_std = check_norm_table(self.norm_mean, self.norm_std, self.variable_names, self.num_levels, "generated level")

        # 4. Backbone
        channels = as_list(self.block_out_channels)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, (list, tuple)) or not channels:
            raise ValueError(f"block_out_channels must be a non-empty list of positive integers, got {channels!r}")
        self.block_out_channels = [int_at_least(f"block_out_channels[{i}]", c, minimum=1) for i, c in enumerate(channels)]
        self.layers_per_block = int_at_least("layers_per_block", self.layers_per_block, minimum=1)
        self.attention_head_dim = int_at_least("attention_head_dim", self.attention_head_dim, minimum=1)
        self.norm_num_groups = int_at_least("norm_num_groups", self.norm_num_groups, minimum=1)
        not_divisible = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if not_divisible:
            raise ValueError(
                f"every entry of block_out_channels={self.block_out_channels} must be divisible by "
                f"norm_num_groups={self.norm_num_groups}, got {not_divisible}"
            )
        factor = 2 ** (len(self.block_out_channels) - 1)
        for axis, count in (("lat_values", self.num_lat), ("lon_values", self.num_lon)):
            if count % factor:
                raise ValueError(
                    f"len({axis})={count} must be divisible by 2**(len(block_out_channels)-1)={factor} "
                    f"(block_out_channels={self.block_out_channels} halves the grid {factor.bit_length() - 1} times)"
                )
        if self.attention_blocks is None:
            attention = [False] * len(self.block_out_channels)
        else:
            attention = list(as_list(self.attention_blocks))
            if len(attention) != len(self.block_out_channels) or any(not isinstance(a, bool) for a in attention):
                raise ValueError(
                    f"attention_blocks must hold one bool per entry of block_out_channels={self.block_out_channels}, "
                    f"got {self.attention_blocks!r}"
                )
            self.attention_blocks = attention
        for name in ("mid_block_attention", "periodic_longitude"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        with_attention = [c for c, a in zip(self.block_out_channels, attention) if a]
        if self.mid_block_attention:
            with_attention.append(self.block_out_channels[-1])
        bad_heads = [c for c in with_attention if c % self.attention_head_dim]
        if bad_heads:
            raise ValueError(
                f"attention_head_dim={self.attention_head_dim} must divide the channels of every level with attention "
                f"(block_out_channels={self.block_out_channels}, attention_blocks={self.attention_blocks}, "
                f"mid_block_attention={self.mid_block_attention}), got {bad_heads}"
            )
        self.dropout = finite_float("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

        # 5. Diffusion
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {self.prediction_type!r}")
        if self.condition_dropout is None:
            self.condition_dropout = 0.1 if self.has_condition else 0.0
        self.condition_dropout = finite_float("condition_dropout", self.condition_dropout)
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.condition_dropout > 0 and not self.has_condition:
            raise ValueError(
                f"condition_dropout={self.condition_dropout} needs a condition to drop, but planet_param_names="
                f"{self.planet_param_names} and num_class_labels={self.num_class_labels}; set condition_dropout=0.0 "
                "for an unconditional model"
            )
        self.initializer_range = finite_float("initializer_range", self.initializer_range)
        if self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be positive, got {self.initializer_range}")


__all__ = ["ClimateDiffusionConfig", "PREDICTION_TYPES"]
