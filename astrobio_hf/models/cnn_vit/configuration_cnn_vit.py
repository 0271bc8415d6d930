"""Configuration of the CNN-ViT hybrid planet-parameter regressor (`model_type = "cnn_vit"`). Torch-free."""

from __future__ import annotations

import numbers
from dataclasses import field

from transformers.configuration_utils import PreTrainedConfig

from ..config_checks import (
    GridSizesMixin,
    check_grid,
    check_norm_table,
    check_planet_stats,
    finite_float,
    merge_schema_fields,
    reject_unknown_keys,
    str_list,
)

# Physics terms of the loss and what each needs (variables in the cube, planet parameters, level unit)
PHYSICS_TERMS = ("cross_scale", "ideal_gas", "hydrostatic")
_TERM_NEEDS = {
    "cross_scale": ((), ()),
    "ideal_gas": (("T", "p", "rho"), ("mean_molecular_weight",)),
    "hydrostatic": (("p", "rho"), ("gravity",)),
}
_SCHEMA_FIELDS = (
    "variable_names", "level_values", "level_unit", "lat_values", "lon_values", "planet_param_names",
    "norm_mean", "norm_std", "planet_param_mean", "planet_param_std",
)


class CnnVitConfig(GridSizesMixin, PreTrainedConfig):
    r"""
    Configuration of [`CnnVitForParameterRegression`]: a convolutional stem over a datacube window
    `(B, V, Tc, Tg, Z, Y, X)`, patch tokens into a ViT encoder, and heads that regress the planet parameters
    (normalised mean and log-variance per parameter) and, when the dataset has regime labels, classify the
    planet's regime.

    Data-dependent values (variables, grid, planet parameter names, normalisation statistics) come from the
    dataset schema (`from_schema`). Counts are derived properties. All checks live in `_validate()`.

    Args:
        variable_names (`list[str]`): variables along axis V (canonical names T, p, rho, q, u, v; SI units).
        variable_units (`list[str]`, *optional*): SI unit of each variable (informative).
        level_values (`list[float]`): level coordinates along Z, strictly monotonic.
        level_unit (`str`, defaults to `"m"`): `"m"` (height) or `"Pa"` (pressure).
        lat_values (`list[float]`): latitudes (degrees) along Y, ascending, inside (-90, 90).
        lon_values (`list[float]`): longitudes (degrees) along X, uniform and global (circular padding).
        planet_param_names (`list[str]`): the regression targets, in order (P outputs).
        planet_param_units (`list[str]`, *optional*): unit of each planet parameter (informative; cards and plots).
        regime_names (`list[str]`, *optional*): K >= 2 planet regime classes (the schema's `planet_regime_names`);
            `None` (default): no classification head. `num_regimes` (derived) is K, or 0 without a head.
        norm_mean, norm_std (`list[list[float]]`, *optional*): per variable per level mean/std (V x Z) of the inputs.
        planet_param_mean, planet_param_std (`list[float]`, *optional*): statistics that normalise the targets.
        log_variables (`list[str]`, defaults to `[]`): strictly positive variables (e.g. T, p, rho, q) whose logarithm
            is fed to the stem as extra channels beside the linear ones, normalised per level with the log-normal
            moments of `norm_mean`/`norm_std`. Ratios such as `p / (rho T)` (gas constant, hence the mean molecular
            weight) and `d ln p / dz` (gravity) become linear in these channels.
        context_steps (`int`, defaults to 4): Tc, climate steps in the input window.
        geological_steps (`int`, defaults to 1): Tg, geological epochs in the cube.
        stem_channels (`int`, defaults to 32): channels of the convolutional stem (2-D convolutions over
            (Y, X), circular in longitude; variables, time steps and levels are input channels).
        stem_norm (`str`, defaults to `"group"`): normalisation after each stem convolution: `"group"` (GroupNorm,
            per sample over space: it removes the spatial mean and scale of each group, which is where the global
            planet parameters live), `"none"` (the absolute levels reach the heads).
        global_token (`bool`, defaults to `False`): add to the [CLS] token a linear projection of the stem input
            averaged over (Y, X) (per variable, time step and level: the global levels that carry most planet
            parameters), so the ViT head sees them directly and not only through patches.
        stem_downsample (`int`, defaults to 1): stride-2 stem stages before patching (each halves Y and X).
        patch_size (`int`, defaults to 2): side of the square patches cut from the stem features; the grid after
            the stem must be divisible by it.
        hidden_size (`int`, defaults to 64): token width of the ViT encoder.
        num_layers (`int`, defaults to 2): ViT encoder layers (pre-norm `torch.nn.TransformerEncoderLayer`).
        num_heads (`int`, defaults to 4): attention heads; must divide `hidden_size`.
        mlp_ratio (`float`, defaults to 2.0): MLP width of each encoder layer as a multiple of `hidden_size`.
        dropout (`float`, defaults to 0.0): dropout inside the encoder layers.
        predict_variance (`bool`, defaults to `True`): predict a log-variance per parameter (Gaussian NLL);
            when `False` the loss is the NLL with unit variance.
        physics_weights (`dict[str, float]`, defaults to `{"cross_scale": 0.1}`): weight of each physics term
            (names in `PHYSICS_TERMS`): `cross_scale` = mean square difference (normalised units) between the
            ViT head's parameters (fine scale, patch tokens) and the CNN head's parameters (coarse scale, pooled
            stem features), a gradient path into both; `ideal_gas` = squared log-ratio of the gas constant implied
            by the predicted `mean_molecular_weight` [g mol-1] and the cube's `p / (rho T)`; `hydrostatic` =
            squared log-ratio of the predicted `gravity` [m s-2] and the cube's `-dp/dz / rho` (height levels).
        regime_loss_weight (`float`, defaults to 1.0): weight of the regime cross-entropy in the loss (used only
            with `regime_names` and when `regime_labels` are given).
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation of weights.
    """

    model_type = "cnn_vit"

    # 1. Data (from the schema)
    variable_names: list[str] = field(default_factory=lambda: ["T", "p", "rho", "q", "u", "v"])
    variable_units: list[str] | None = None
    level_values: list[float] = field(default_factory=lambda: [0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10000.0])
    level_unit: str = "m"
    lat_values: list[float] = field(default_factory=lambda: [-90.0 + 180.0 / 16 * (i + 0.5) for i in range(16)])
    lon_values: list[float] = field(default_factory=lambda: [360.0 / 32 * i for i in range(32)])
    planet_param_names: list[str] = field(default_factory=lambda: ["stellar_flux", "gravity"])
    planet_param_units: list[str] | None = None
    regime_names: list[str] | None = None
    norm_mean: list[list[float]] | None = None
    norm_std: list[list[float]] | None = None
    planet_param_mean: list[float] | None = None
    planet_param_std: list[float] | None = None
    context_steps: int = 4
    geological_steps: int = 1
    log_variables: list[str] = field(default_factory=list)
    # 2. Network
    stem_channels: int = 32
    stem_norm: str = "group"
    global_token: bool = False
    stem_downsample: int = 1
    patch_size: int = 2
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    # 3. Output and loss
    predict_variance: bool = True
    physics_weights: dict[str, float] = field(default_factory=lambda: {"cross_scale": 0.1})
    regime_loss_weight: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        reject_unknown_keys(CnnVitConfig, kwargs)
        super().__post_init__(**kwargs)
        self._validate()

    @classmethod
    def from_schema(cls, schema, **kwargs) -> CnnVitConfig:
        """Config whose data-dependent fields come from a dataset schema (read by attribute);
        `geological_steps = len(schema.geological_time_values)`, `regime_names` = the schema's `planet_regime_names`
        (None when it has none). A schema field in `kwargs` is an error."""
        from_schema = {name: getattr(schema, name) for name in _SCHEMA_FIELDS}
        from_schema["geological_steps"] = len(schema.geological_time_values)
        units = getattr(schema, "units", None)
        from_schema["variable_units"] = [units[n] for n in schema.variable_names] if units else None
        from_schema["planet_param_units"] = getattr(schema, "planet_param_units", None)
        from_schema["regime_names"] = getattr(schema, "planet_regime_names", None)
        return cls(**merge_schema_fields(from_schema, kwargs))

    # derived values

    @property
    def num_input_variables(self) -> int:
        """Variables fed to the stem: the linear ones plus the log channels."""
        return len(self.variable_names) + len(self.log_variables)

    @property
    def num_planet_params(self) -> int:
        return len(self.planet_param_names)

    @property
    def num_regimes(self) -> int:
        """K regime classes of the classification head, 0 without one."""
        return len(self.regime_names) if self.regime_names is not None else 0

    @property
    def cube_shape(self) -> tuple[int, int, int, int, int, int]:
        """(V, Tc, Tg, Z, Y, X) expected after the batch axis."""
        return (self.num_variables, self.context_steps, self.geological_steps, self.num_levels, self.num_lat, self.num_lon)

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, columns) of patch tokens."""
        factor = 2**self.stem_downsample * self.patch_size
        return self.num_lat // factor, self.num_lon // factor

    def _validate(self) -> None:
        self.variable_names = str_list("variable_names", self.variable_names)
        if not self.variable_names:
            raise ValueError("variable_names must name at least one variable, got []")
        self.variable_units, self.level_values, self.lat_values, self.lon_values = check_grid(
            self.variable_names, self.variable_units, self.level_values, self.level_unit, self.lat_values, self.lon_values
        )
        self.log_variables = str_list("log_variables", self.log_variables or [])
        unknown = [v for v in self.log_variables if v not in self.variable_names]
        if unknown or len(set(self.log_variables)) != len(self.log_variables):
            raise ValueError(
                f"log_variables must name distinct variables of variable_names={self.variable_names}, got {self.log_variables}"
            )
        self.planet_param_names = str_list("planet_param_names", self.planet_param_names)
        if not self.planet_param_names:
            raise ValueError("planet_param_names must name at least one regression target, got []")
        if self.planet_param_units is not None:
            self.planet_param_units = [str(u) for u in self.planet_param_units]
            if len(self.planet_param_units) != self.num_planet_params:
                raise ValueError(
                    f"planet_param_units must give one unit per parameter: expected {self.num_planet_params} "
                    f"(planet_param_names={self.planet_param_names}), got {len(self.planet_param_units)}"
                )
        if self.regime_names is not None:
            self.regime_names = str_list("regime_names", self.regime_names)
            if len(self.regime_names) < 2 or len(set(self.regime_names)) != len(self.regime_names):
                raise ValueError(f"regime_names must be None or >= 2 distinct class names, got {self.regime_names}")
        self.regime_loss_weight = finite_float("regime_loss_weight", self.regime_loss_weight)
        if self.regime_loss_weight < 0:
            raise ValueError(f"regime_loss_weight must be >= 0, got {self.regime_loss_weight}")
        self.norm_mean, self.norm_std = check_norm_table(self.norm_mean, self.norm_std, self.variable_names, self.num_levels)
        if self.norm_mean is not None:
            for name in self.log_variables:
                if min(self.norm_mean[self.variable_names.index(name)]) <= 0:
                    raise ValueError(f"log_variables: {name!r} has a non-positive mean in norm_mean; only positive variables can be logged")
        self.planet_param_mean, self.planet_param_std = check_planet_stats(
            self.planet_param_mean, self.planet_param_std, self.planet_param_names
        )
        for name in ("context_steps", "geological_steps", "stem_channels", "patch_size", "hidden_size", "num_layers", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))
        if isinstance(self.stem_downsample, bool) or not isinstance(self.stem_downsample, numbers.Integral) or self.stem_downsample < 0:
            raise ValueError(f"stem_downsample must be an integer >= 0, got {self.stem_downsample!r}")
        self.stem_downsample = int(self.stem_downsample)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        factor = 2**self.stem_downsample * self.patch_size
        for axis, size in (("len(lat_values)", self.num_lat), ("len(lon_values)", self.num_lon)):
            if size % factor:
                raise ValueError(
                    f"{axis}={size} must be divisible by 2**stem_downsample * patch_size = {factor} "
                    f"(stem_downsample={self.stem_downsample}, patch_size={self.patch_size})"
                )
        if self.stem_norm not in ("group", "none"):
            raise ValueError(f"stem_norm must be 'group' or 'none', got {self.stem_norm!r}")
        self.mlp_ratio = finite_float("mlp_ratio", self.mlp_ratio)
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        self.dropout = finite_float("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.initializer_range = finite_float("initializer_range", self.initializer_range)
        if self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be positive, got {self.initializer_range}")
        if not isinstance(self.global_token, bool):
            raise ValueError(f"global_token must be a bool, got {self.global_token!r}")  # noqa: TRY004 - config errors are ValueErrors
        if not isinstance(self.predict_variance, bool):
            raise ValueError(f"predict_variance must be a bool, got {self.predict_variance!r}")  # noqa: TRY004 - config errors are ValueErrors
        if not isinstance(self.physics_weights, dict):
            raise ValueError(f"physics_weights must be a dict name -> weight, got {self.physics_weights!r}")  # noqa: TRY004 - config errors are ValueErrors
        weights = {}
        for key, value in self.physics_weights.items():
            if key not in PHYSICS_TERMS:
                raise ValueError(f"physics_weights has unknown term {key!r}; expected one of {list(PHYSICS_TERMS)}")
            value = finite_float(f"physics_weights[{key!r}]", value)
            if value < 0:
                raise ValueError(f"physics_weights[{key!r}] must be >= 0, got {value}")
            variables, params = _TERM_NEEDS[key]
            missing = [v for v in variables if v not in self.variable_names] + [
                p for p in params if p not in self.planet_param_names
            ]
            if missing:
                raise ValueError(
                    f"physics_weights[{key!r}] needs variables {list(variables)} and planet parameters {list(params)}, "
                    f"but variable_names={self.variable_names} / planet_param_names={self.planet_param_names} lack {missing}"
                )
            if key == "hydrostatic" and (self.level_unit != "m" or self.num_levels < 2):
                raise ValueError(
                    f"physics_weights['hydrostatic'] needs >= 2 height levels (level_unit='m'), got level_unit="
                    f"{self.level_unit!r} with {self.num_levels} level(s)"
                )
            weights[str(key)] = value
        self.physics_weights = weights


__all__ = ["PHYSICS_TERMS", "CnnVitConfig"]
