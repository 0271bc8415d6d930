"""Configuration of the datacube U-Net forecaster (`model_type = "datacube_unet"`).

Torch-free at import. The constraint names and the variables each constraint needs are read lazily from
`astrobio_hf.physics.constraints` (which imports torch) only when `physics_weights` is not empty, so that the
physics module stays their one source of truth.
"""

from __future__ import annotations

import numbers
from dataclasses import field

from transformers.configuration_utils import PreTrainedConfig

from ..config_checks import (
    GridSizesMixin,
    as_list,
    check_grid,
    check_norm_table,
    check_planet_stats,
    finite_float,
    float_list,
    merge_schema_fields,
    reject_unknown_keys,
    str_list,
)


def _default_variable_names() -> list[str]:
    return ["T", "p", "rho", "q", "u", "v"]


def _default_level_values() -> list[float]:
    return [0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10000.0]


def _default_lat_values() -> list[float]:
    # 16 cell centres, no poles: -84.375 ... 84.375
    return [-90.0 + 180.0 / 16 * (i + 0.5) for i in range(16)]


def _default_lon_values() -> list[float]:
    # 32 uniform columns: 0 ... 348.75
    return [360.0 / 32 * i for i in range(32)]


_SCHEMA_FIELDS = (
    "variable_names",
    "level_values",
    "level_unit",
    "lat_values",
    "lon_values",
    "planet_param_names",
    "norm_mean",
    "norm_std",
    "planet_param_mean",
    "planet_param_std",
    "tendency_std",
)
_BOUNDARY_PADDINGS = ("zeros", "replicate")


class DatacubeUNetConfig(GridSizesMixin, PreTrainedConfig):
    r"""
    Configuration of [`DatacubeUNetForForecast`], a 3-D U-Net that forecasts the next `context_steps` climate
    steps of a datacube `(B, V, Tc, Tg, Z, Y, X)` = (batch, variable, climate time, geological time, level,
    latitude, longitude) from the previous `context_steps` steps.

    Data-dependent values (variable names, grid, planet parameter names, normalisation statistics) come from
    the dataset schema and are written here before the model is built. Counts are derived from the name lists
    (`num_variables`, `num_planet_params`, `num_levels`, `num_lat`, `num_lon`); they are properties, never fields.
    All checks live in `_validate()`; an invalid combination raises `ValueError` naming both values, and a key that
    is not a field of this class (nor a standard `PreTrainedConfig` key) raises `ValueError` listing the valid ones.

    Args:
        variable_names (`list[str]`, defaults to `["T", "p", "rho", "q", "u", "v"]`):
            Names of the variables along axis V, in order (canonical names: T, p, rho, q, u, v, z, SI units).
        variable_units (`list[str]`, *optional*):
            SI unit of each variable, in the order of `variable_names` (from the dataset schema; informative:
            plots and model cards print it).
        level_values (`list[float]`, defaults to 6 heights 0 ... 10000 m):
            Coordinate of each vertical level along axis Z, strictly monotonic.
        level_unit (`str`, defaults to `"m"`):
            Unit of `level_values`: `"m"` (height, ascending from the surface) or `"Pa"` (pressure).
        lat_values (`list[float]`, defaults to 16 cell centres -84.375 ... 84.375):
            Latitude of each row along axis Y in degrees, ascending, within [-90, 90] (grids with pole rows work:
            area weights are cell areas and the sphere operators are finite there).
        lon_values (`list[float]`, defaults to 32 columns 0 ... 348.75):
            Longitude of each column along axis X in degrees, uniform and ascending: covering 360 degrees (a
            global grid; the axis is periodic and every convolution wraps around) or less (a regional grid:
            `periodic_lon` is False and longitude is padded like latitude, without wrap).
        base_channels (`int`, defaults to 32):
            Channels of the first U-Net stage; stage `i` has `base_channels * 2**i`.
        depth (`int`, defaults to 2):
            Number of (1, 2, 2) downsampling stages. A grid whose sizes are not multiples of `2**depth` is padded
            inside the network to `padded_shape` (latitude by edge replication, split between both edges; longitude
            by wrapping on a global grid, by edge replication on a regional one) and the output is cropped back, so
            the padding never enters the loss or any metric.
        norm_groups (`int`, defaults to 8):
            Groups of every GroupNorm; must divide `base_channels`.
        boundary_padding (`str`, defaults to `"replicate"`):
            Padding of the convolutions on the non-periodic axes Z and Y: `"replicate"` or `"zeros"`. Longitude is
            always padded circularly.
        planet_param_names (`list[str]`, defaults to `[]`):
            Names of the per-planet parameters given to `forward` as `planet_params` (B, P) for FiLM conditioning.
        use_film (`bool`, defaults to `True`):
            Modulate every residual block by FiLM (scale, shift) computed from the normalised planet parameters
            and a one-hot of the geological step index.
        conditioning_channels (`int`, defaults to 64):
            Width of the conditioning MLP that feeds the FiLM layers.
        calendar_conditioning (`bool`, defaults to `False`):
            Also condition FiLM on the position in the calendar year of every forecast step (sin and cos of
            2 pi x the year fraction, `label_phase` (B, Tc) given to `forward`), so that a seasonal forecast knows
            which months it forecasts. The datacube recipe turns it on when the data's time axis has a calendar
            and a monthly or daily step. Needs `use_film`.
        predict_variance (`bool`, defaults to `True`):
            Predict a per-element log-variance and train with the Gaussian NLL; when `False` the log-variance is 0
            and the loss is the NLL with unit variance (half the mean squared error, in normalised units).
        norm_mean (`list[list[float]]`, *optional*):
            Per variable per level mean (V x Z, physical units) used to normalise inputs; `None` means 0.
        norm_std (`list[list[float]]`, *optional*):
            Per variable per level standard deviation (V x Z, positive); `None` means 1. Given together with
            `norm_mean`.
        planet_param_mean (`list[float]`, *optional*):
            Mean of each planet parameter (P values); `None` means 0.
        planet_param_std (`list[float]`, *optional*):
            Standard deviation of each planet parameter (P values, positive); `None` means 1. Given together with
            `planet_param_mean`.
        tendency_std (`list[list[float]]`, *optional*):
            Per variable per level RMS of the one-step change along climate time (V x Z, positive), from the
            dataset schema. The head predicts the change from the last context frame, and its log-variance, in
            these units, so a variable whose forecast changes are tiny next to its spread across planets (pressure
            at a height level) is still learnt precisely. `None` means `norm_std` (changes in normalised units).
        context_steps (`int`, defaults to 4):
            Tc: climate steps in the input window and in the forecast (labels cover the next Tc steps).
        geological_steps (`int`, defaults to 1):
            Tg: geological time steps of the cube, processed as independent samples that share weights.
        physics_weights (`dict[str, float]`, defaults to `{}`):
            Weight of each physics constraint added to the loss (names from
            `astrobio_hf.physics.constraints.CONSTRAINT_NAMES`); `{}` disables the physics loss.
        physics_learnable (`bool`, defaults to `False`):
            Learn the physics weights (softplus-parametrised, initialised at the given values, with a -log(w)
            term per constraint so they cannot collapse to 0). Needs non-empty, positive `physics_weights`.
        gravity (`float`, defaults to 9.80665):
            Surface gravity [m s-2] used when `forward` receives none.
        gas_constant (`float`, defaults to 287.05):
            Specific gas constant [J kg-1 K-1] used when `forward` receives none.
        heat_capacity (`float`, defaults to 1004.6):
            Specific heat capacity at constant pressure [J kg-1 K-1] used when `forward` receives none.
        planet_radius (`float`, defaults to 6.371e6):
            Planet radius [m] used when `forward` receives none.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of convolution and linear weights.

    Example:

    ```python
    >>> from astrobio_hf import DatacubeUNetConfig, DatacubeUNetForForecast
    >>> config = DatacubeUNetConfig(variable_names=["T", "u", "v"], context_steps=2, base_channels=8, norm_groups=4)
    >>> model = DatacubeUNetForForecast(config)
    ```
    """

    model_type = "datacube_unet"

    # 1. Variables and grid (from the dataset schema)
    variable_names: list[str] = field(default_factory=_default_variable_names)
    variable_units: list[str] | None = None
    level_values: list[float] = field(default_factory=_default_level_values)
    level_unit: str = "m"
    lat_values: list[float] = field(default_factory=_default_lat_values)
    lon_values: list[float] = field(default_factory=_default_lon_values)
    # 2. Network size
    base_channels: int = 32
    depth: int = 2
    norm_groups: int = 8
    boundary_padding: str = "replicate"
    # 3. Conditioning
    planet_param_names: list[str] = field(default_factory=list)
    use_film: bool = True
    conditioning_channels: int = 64
    calendar_conditioning: bool = False
    # 4. Output
    predict_variance: bool = True
    # 5. Normalisation statistics (from the dataset schema, train split)
    norm_mean: list[list[float]] | None = None
    norm_std: list[list[float]] | None = None
    planet_param_mean: list[float] | None = None
    planet_param_std: list[float] | None = None
    tendency_std: list[list[float]] | None = None
    # 6. Time axes
    context_steps: int = 4
    geological_steps: int = 1
    # 7. Physics loss and default planet constants (SI)
    physics_weights: dict[str, float] = field(default_factory=dict)
    physics_learnable: bool = False
    gravity: float = 9.80665
    gas_constant: float = 287.05
    heat_capacity: float = 1004.6
    planet_radius: float = 6.371e6
    # 8. Initialisation
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        reject_unknown_keys(DatacubeUNetConfig, kwargs)
        super().__post_init__(**kwargs)
        self._validate()

    @classmethod
    def from_schema(cls, schema, **kwargs) -> "DatacubeUNetConfig":
        """Config whose data-dependent fields come from a dataset schema (`astrobio_hf.data.DatasetSchema`, read by
        attribute so that models do not import `data`): variable and planet parameter names, grid, normalisation
        statistics, and `geological_steps = len(schema.geological_time_values)`. `kwargs` set the other fields
        (sizes, `context_steps`, physics); giving a schema field there too is an error, as is an unknown key."""
        from_schema = {name: getattr(schema, name) for name in _SCHEMA_FIELDS if name != "tendency_std"}
        from_schema["tendency_std"] = getattr(schema, "tendency_std", None)  # absent from older schemas
        from_schema["geological_steps"] = len(schema.geological_time_values)
        units = getattr(schema, "units", None)
        from_schema["variable_units"] = [units[name] for name in schema.variable_names] if units else None
        return cls(**merge_schema_fields(from_schema, kwargs))

    # ----------------------------------------------------------------------------------------------------------
    # derived values (never stored: the name lists are the one source of truth)

    @property
    def num_planet_params(self) -> int:
        return len(self.planet_param_names)

    @property
    def cube_shape(self) -> tuple[int, int, int, int, int, int]:
        """(V, Tc, Tg, Z, Y, X) expected after the batch axis."""
        return (
            self.num_variables,
            self.context_steps,
            self.geological_steps,
            self.num_levels,
            self.num_lat,
            self.num_lon,
        )

    @property
    def periodic_lon(self) -> bool:
        """Whether the longitudes cover 360 degrees (a global grid: convolutions wrap around in longitude)."""
        spacing = (self.lon_values[-1] - self.lon_values[0]) / max(self.num_lon - 1, 1)
        return abs(self.num_lon * spacing - 360.0) <= 1e-6 * 360.0

    @property
    def padded_shape(self) -> tuple[int, int]:
        """(Y, X) inside the network: each grid size rounded up to a multiple of `2**depth`."""
        factor = 2**self.depth
        return (-(-self.num_lat // factor) * factor, -(-self.num_lon // factor) * factor)

    @property
    def conditioning_size(self) -> int:
        """Length of the conditioning vector: normalised planet parameters + one-hot geological step (+ sin and
        cos of the year phase of each of the Tc forecast steps with `calendar_conditioning`)."""
        return self.num_planet_params + self.geological_steps + (2 * self.context_steps if self.calendar_conditioning else 0)

    # ----------------------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        """Every check of this config, in one place. Normalises containers to JSON types (lists, floats)."""
        # 1-2. Variables and grid
        self.variable_names = str_list("variable_names", self.variable_names)
        if not self.variable_names:
            raise ValueError("variable_names must name at least one variable, got []")
        self.variable_units, self.level_values, self.lat_values, self.lon_values = check_grid(
            self.variable_names, self.variable_units, self.level_values, self.level_unit, self.lat_values, self.lon_values,
            allow_regional=True,
        )

        # 3. Network size
        for name in ("base_channels", "depth", "norm_groups", "conditioning_channels", "context_steps", "geological_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))
        if self.base_channels % self.norm_groups != 0:
            raise ValueError(
                f"base_channels={self.base_channels} must be divisible by norm_groups={self.norm_groups}"
            )
        if self.boundary_padding not in _BOUNDARY_PADDINGS:
            raise ValueError(
                f"boundary_padding must be one of {list(_BOUNDARY_PADDINGS)}, got {self.boundary_padding!r}"
            )
        for name in ("use_film", "predict_variance", "physics_learnable", "calendar_conditioning"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.calendar_conditioning and not self.use_film:
            raise ValueError("calendar_conditioning=True needs use_film=True (the year phase enters through FiLM), got use_film=False")

        # 4. Conditioning names
        self.planet_param_names = str_list("planet_param_names", self.planet_param_names)

        # 5. Normalisation statistics
        self.norm_mean, self.norm_std = check_norm_table(self.norm_mean, self.norm_std, self.variable_names, self.num_levels, "level")
        self.planet_param_mean, self.planet_param_std = check_planet_stats(self.planet_param_mean, self.planet_param_std, self.planet_param_names)
        if self.tendency_std is not None:
            table = as_list(self.tendency_std)
            rows = [float_list(f"tendency_std[{v!r}]", row) for v, row in zip(self.variable_names, table)]
            if len(table) != self.num_variables or any(len(r) != self.num_levels or min(r) <= 0 for r in rows):
                raise ValueError(
                    f"tendency_std must be {self.num_variables} rows (variable_names={self.variable_names}) of "
                    f"{self.num_levels} positive values (len(level_values)), got {table}"
                )
            self.tendency_std = rows

        # 6. Physics
        if not isinstance(self.physics_weights, dict):
            raise ValueError(f"physics_weights must be a dict name -> weight, got {self.physics_weights!r}")
        if self.physics_weights:
            # lazy import: the physics module owns the names and what each constraint needs (one source of truth)
            from astrobio_hf.physics.constraints import CONSTRAINT_NAMES, unavailable_reason

            unknown = sorted(k for k in self.physics_weights if k not in CONSTRAINT_NAMES)
            if unknown:
                raise ValueError(
                    f"physics_weights has unknown constraint name(s) {unknown}; known constraints are "
                    f"{list(CONSTRAINT_NAMES)}"
                )
            for key in self.physics_weights:
                reason = unavailable_reason(key, self.variable_names, self.level_unit, self.num_levels, (self.num_lat, self.num_lon))
                if reason:
                    raise ValueError(
                        f"physics_weights[{key!r}] cannot be computed on this data: the constraint {reason} "
                        f"(variable_names={self.variable_names}); drop it from physics_weights"
                    )
        weights = {}
        for key, value in self.physics_weights.items():
            value = finite_float(f"physics_weights[{key!r}]", value)
            if value < 0:
                raise ValueError(f"physics_weights[{key!r}] must be >= 0, got {value}")
            if self.physics_learnable and value <= 0:
                raise ValueError(
                    f"physics_learnable=True needs positive weights (softplus parametrisation), got "
                    f"physics_weights[{key!r}]={value}"
                )
            weights[str(key)] = value
        self.physics_weights = weights
        if self.physics_learnable and not self.physics_weights:
            raise ValueError("physics_learnable=True needs at least one physics weight, got physics_weights={}")
        for name in ("gravity", "gas_constant", "heat_capacity", "planet_radius", "initializer_range"):
            value = finite_float(name, getattr(self, name))
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
            setattr(self, name, value)


__all__ = ["DatacubeUNetConfig"]
