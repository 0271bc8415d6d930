"""Named, differentiable physical constraints evaluated on fields in physical (SI) units.

Every residual is **dimensionless**, so the weights of different constraints are comparable, and is
returned per sample as the mean square over all other axes (shape ``(B,)``). What each residual is
normalised by is stated in its docstring. Fields are ``(B, V, Tc, Tg, Z, Y, X)`` = (batch, variable,
climate time, geological time, level, lat, lon), already de-normalised to SI units:
T [K], p [Pa], rho [kg m-3], q [kg kg-1], u, v [m s-1], z [m].

Planet constants (``gravity`` [m s-2], ``gas_constant`` [J kg-1 K-1], ``heat_capacity`` [J kg-1 K-1],
``planet_radius`` [m]) are python floats or ``(B,)`` tensors.

Constraints (``CONSTRAINT_NAMES``):

- ``hydrostatic``: dp/dz = -rho g, written with the ideal gas as dln(p)/dz = -g/(R T).
- ``ideal_gas``: p = rho R T.
- ``lapse_rate``: the lapse rate Gamma = -dT/dz must not exceed the dry adiabat g/cp (static stability).
- ``mass_continuity``: the horizontal mass flux (rho u, rho v) is non-divergent on the sphere.
- ``temporal_smoothness``: second difference along climate time Tc.
- ``geological_consistency``: change of the climate-time mean between geological epochs Tg.
- ``energy_drift``: relative change of the global-mean column energy per climate-time step.

Grids: latitudes may include the poles (area weights are cell areas, the zonal metric is finite there) and
longitudes may be regional (``SphereGrid.periodic`` False: no wrap). ``hydrostatic`` and ``lapse_rate`` are
vertical derivatives and need at least two levels (``LEVEL_CONSTRAINTS``): on a single-level grid they are
not available (``available()`` leaves them out) and weighting one is an error at construction.

Masks: every residual takes an optional validity mask ``valid`` (bool, the shape of the fields, True where a
value is real data). A residual point counts only when every value it is computed from is valid (both levels
of a layer, the cell and its four neighbours for a divergence, the three steps of a second difference, ...);
each per-sample mean is over those points only (0 for a sample that has none).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .grid import SphereGrid, cell_area_weights, inverse_cos_metric
from .operators import Constant, broadcast_constant, sphere_divergence

__all__ = ["CONSTRAINT_NAMES", "LEVEL_CONSTRAINTS", "PhysicsConstraints", "required_levels", "required_variables"]

CONSTRAINT_NAMES = (
    "hydrostatic",
    "ideal_gas",
    "lapse_rate",
    "mass_continuity",
    "temporal_smoothness",
    "geological_consistency",
    "energy_drift",
)

#: constraints that are vertical derivatives: they need at least two levels
LEVEL_CONSTRAINTS = ("hydrostatic", "lapse_rate")
#: constraints that are horizontal derivatives: they need at least 3 x 3 (lat x lon) cells
HORIZONTAL_CONSTRAINTS = ("mass_continuity",)

_RHO_U_FLOOR = 1e-12  # kg m-2 s-1, keeps the mass-continuity normalisation finite for a motionless field
# Floors for quantities that are divided by or logged: an unphysical prediction (p <= 0 or T <= 0, e.g.
# early in training) gives a large finite residual instead of NaN. Physical fields never reach them.
_P_FLOOR = 1e-3  # Pa
_T_FLOOR = 1e-3  # K


def required_variables(name: str, level_unit: str) -> tuple[str, ...]:
    """Variables a constraint needs on a grid with ``level_unit`` (``()`` means: any variables present)."""
    if name not in CONSTRAINT_NAMES:
        raise ValueError(f"unknown constraint {name!r}; known constraints are {CONSTRAINT_NAMES}")
    on_pressure = level_unit == "Pa"
    table = {
        "hydrostatic": ("T", "z") if on_pressure else ("T", "p"),
        "ideal_gas": ("T", "p", "rho"),
        "lapse_rate": ("T", "z") if on_pressure else ("T",),
        "mass_continuity": ("rho", "u", "v"),
        "temporal_smoothness": (),
        "geological_consistency": (),
        "energy_drift": ("T",) if on_pressure else ("T", "rho"),
    }
    return table[name]


def required_levels(name: str) -> int:
    """Levels a constraint needs (2 for the vertical derivatives in ``LEVEL_CONSTRAINTS``, else 1)."""
    if name not in CONSTRAINT_NAMES:
        raise ValueError(f"unknown constraint {name!r}; known constraints are {CONSTRAINT_NAMES}")
    return 2 if name in LEVEL_CONSTRAINTS else 1


def unavailable_reason(
    name: str, variable_names: Sequence[str], level_unit: str, num_levels: int, grid_shape: tuple[int, int] | None = None
) -> str | None:
    """Why a constraint cannot be computed on a dataset (missing variables, one level), or None when it can."""
    missing = [v for v in required_variables(name, level_unit) if v not in variable_names]
    if missing:
        return f"needs variables {list(required_variables(name, level_unit))} on {level_unit!r} levels, missing {missing}"
    if num_levels < required_levels(name):
        return f"is a vertical derivative and needs at least {required_levels(name)} levels, the grid has {num_levels}"
    if name in HORIZONTAL_CONSTRAINTS and grid_shape is not None and min(grid_shape) < 3:
        return f"is a horizontal divergence and needs at least 3 latitudes and 3 longitudes, the grid has {grid_shape[0]} x {grid_shape[1]}"
    return None


def _inverse_softplus(w: float) -> float:
    return w + math.log(-math.expm1(-w))  # log(exp(w) - 1), stable for large w


class PhysicsConstraints(nn.Module):
    """Weighted physical constraints on ``(B, V, Tc, Tg, Z, Y, X)`` fields in SI units.

    Args:
        variable_names: the names of the V variables, in order (canonical names: T, p, rho, q, u, v, z).
        weights: ``{constraint name: weight >= 0}``; only these constraints enter ``forward``. An unknown
            name raises ``ValueError``; so does a weighted constraint whose variables are missing.
        lat_deg, lon_deg: grid latitudes (ascending) and longitudes (uniform) in degrees.
        levels: level values in ``level_unit`` (``"m"``: heights ascending from the surface; ``"Pa"``: pressures).
        variable_scales: ``{variable: scale in its SI unit}`` used by ``temporal_smoothness`` and
            ``geological_consistency`` to make differences dimensionless (default 1 for every variable;
            pass e.g. the dataset's standard deviations).
        learnable: if True the weights are learnable: ``w = softplus(raw)`` with ``raw`` initialised so
            that ``w`` equals the given weight (which must then be > 0), and ``forward`` adds ``-log(w)``
            per term (``total = sum_k w_k L_k - log w_k``, minimised at ``w_k = 1/L_k``), so the weights
            cannot collapse to 0.
    """

    def __init__(
        self,
        variable_names: Sequence[str],
        weights: Mapping[str, float],
        *,
        lat_deg: Sequence[float],
        lon_deg: Sequence[float],
        levels: Sequence[float],
        level_unit: str,
        variable_scales: Optional[Mapping[str, float]] = None,
        learnable: bool = False,
    ) -> None:
        super().__init__()
        grid = SphereGrid(lat_deg=lat_deg, lon_deg=lon_deg, levels=levels, level_unit=level_unit)
        self.variable_names = tuple(str(v) for v in variable_names)
        if len(set(self.variable_names)) != len(self.variable_names):
            raise ValueError(f"expected unique variable names, got {self.variable_names}")
        self.level_unit = level_unit
        self.learnable = bool(learnable)

        # 1. weights: known names, non-negative, variables present
        weights = dict(weights)
        unknown = sorted(set(weights) - set(CONSTRAINT_NAMES))
        if unknown:
            raise ValueError(f"unknown constraint name(s) {unknown}; known constraints are {CONSTRAINT_NAMES}")
        for name, w in weights.items():
            if not np.isfinite(float(w)) or float(w) < 0:
                raise ValueError(f"expected a finite weight >= 0 for constraint {name!r}, got {w}")
            if self.learnable and float(w) <= 0:
                raise ValueError(f"learnable weights need a weight > 0 (softplus never reaches 0), got {name!r}={w}")
            reason = unavailable_reason(name, self.variable_names, level_unit, len(grid.levels), grid.shape[1:])
            if reason:
                raise ValueError(f"constraint {name!r} {reason} (variable_names {list(self.variable_names)})")
        self._names = tuple(n for n in CONSTRAINT_NAMES if n in weights)
        if self.learnable:
            self.raw_weights = nn.ParameterDict(
                {n: nn.Parameter(torch.tensor(_inverse_softplus(float(weights[n])), dtype=torch.float32)) for n in self._names}
            )
        else:
            self.register_buffer(
                "fixed_weights", torch.tensor([float(weights[n]) for n in self._names], dtype=torch.float32), persistent=False
            )

        # 2. variable scales
        scales = dict(variable_scales or {})
        unknown_vars = sorted(set(scales) - set(self.variable_names))
        if unknown_vars:
            raise ValueError(f"variable_scales names {unknown_vars} are not in variable_names {list(self.variable_names)}")
        for k, s in scales.items():
            if not np.isfinite(float(s)) or float(s) <= 0:
                raise ValueError(f"expected a positive finite variable scale for {k!r}, got {s}")
        self.register_buffer(
            "variable_scales",
            torch.tensor([float(scales.get(v, 1.0)) for v in self.variable_names], dtype=torch.float64),
            persistent=False,
        )

        # 3. grid buffers (float64; cast to the field dtype at use)
        self.register_buffer("lat_rad", grid.lat_rad(), persistent=False)
        self.register_buffer("lon_rad", grid.lon_rad(), persistent=False)
        self.register_buffer("levels", grid.level_tensor(), persistent=False)
        self.register_buffer("inverse_cos", inverse_cos_metric(grid.lat_rad()), persistent=False)
        self.register_buffer("area_weights", torch.from_numpy(cell_area_weights(grid.lat_deg)), persistent=False)
        self.grid_shape = grid.shape  # (Z, Y, X)
        self.periodic = grid.periodic

    # ------------------------------------------------------------------ public properties
    @property
    def names(self) -> tuple[str, ...]:
        """Names of the weighted constraints, in ``CONSTRAINT_NAMES`` order."""
        return self._names

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """Current weights by name (softplus of the raw parameters when learnable)."""
        if self.learnable:
            return {n: F.softplus(self.raw_weights[n]) for n in self._names}
        return {n: self.fixed_weights[i] for i, n in enumerate(self._names)}

    def available(self) -> tuple[str, ...]:
        """All constraints computable from the variables present (weighted or not)."""
        return tuple(
            n for n in CONSTRAINT_NAMES
            if unavailable_reason(n, self.variable_names, self.level_unit, self.grid_shape[0], self.grid_shape[1:]) is None
        )

    # ------------------------------------------------------------------ public API
    def forward(
        self,
        fields: torch.Tensor,
        *,
        gravity: Constant,
        gas_constant: Constant,
        heat_capacity: Constant,
        planet_radius: Constant,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted physics loss: ``(total, terms)``.

        ``terms[name]`` is the batch mean of the dimensionless residual of each weighted constraint
        (scalar tensors, for logging). ``total = sum_k w_k mean_b log1p(r_k[b])`` (learnable:
        ``+ sum_k -log w_k``): log1p equals the mean square for small residuals (the regime of a trained
        model) and keeps the gradient bounded when an early, untrained prediction is physically absurd
        (p near 0 gives an ideal-gas residual of 1e9), so one such sample cannot swamp the data loss.
        ``valid``: optional bool mask of the fields' shape; residuals use valid points only (module docstring).
        """
        per_sample = self._evaluate(fields, self._names, gravity, gas_constant, heat_capacity, planet_radius, valid)
        terms = {n: r.mean() for n, r in per_sample.items()}
        weights = self.weights
        total = fields.new_zeros((), dtype=self._dtype(fields))
        for name in self._names:
            w = weights[name].to(total.dtype)
            total = total + w * torch.log1p(per_sample[name]).mean()
            if self.learnable:
                total = total - torch.log(w)
        return total, terms

    def residuals(
        self,
        fields: torch.Tensor,
        *,
        gravity: Constant,
        gas_constant: Constant,
        heat_capacity: Constant,
        planet_radius: Constant,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample ``(B,)`` dimensionless mean-square residual of every constraint computable on this grid."""
        return self._evaluate(fields, self.available(), gravity, gas_constant, heat_capacity, planet_radius, valid)

    def diagnostics(
        self,
        fields: torch.Tensor,
        *,
        gravity: Constant,
        gas_constant: Constant,
        heat_capacity: Constant,
        planet_radius: Constant,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Residuals plus physical diagnostics, each ``(B,)``.

        Adds (when T, and on pressure levels z, are present, on two levels or more) ``mean_lapse_rate_K_per_km``
        (the mean of -dT/dz over all valid layer midpoints), ``max_lapse_rate_K_per_km`` and
        ``dry_adiabat_K_per_km`` (g/cp).
        """
        with torch.no_grad():
            out = self.residuals(
                fields, gravity=gravity, gas_constant=gas_constant, heat_capacity=heat_capacity,
                planet_radius=planet_radius, valid=valid,
            )
            if "lapse_rate" in self.available():
                x = self._check(fields)
                gamma = self._lapse_rate(x)  # (B, Tc, Tg, Z-1, Y, X) [K m-1]
                b = gamma.shape[0]
                ok = self._layer_valid(self._vars_valid(valid, ("T", "z") if self.level_unit == "Pa" else ("T",), x))
                if ok is None:
                    ok = torch.ones_like(gamma, dtype=torch.bool)
                n = ok.reshape(b, -1).sum(1).clamp_min(1)
                out["mean_lapse_rate_K_per_km"] = torch.where(ok, gamma, 0.0).reshape(b, -1).sum(1) / n * 1000.0
                out["max_lapse_rate_K_per_km"] = torch.where(ok, gamma, -torch.inf).reshape(b, -1).amax(1) * 1000.0
                dry = broadcast_constant(gravity, gamma, "gravity") / broadcast_constant(heat_capacity, gamma, "heat_capacity")
                out["dry_adiabat_K_per_km"] = dry.reshape(-1).expand(b) * 1000.0
        return out

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _dtype(fields: torch.Tensor) -> torch.dtype:
        return fields.dtype if fields.dtype in (torch.float32, torch.float64) else torch.float32

    def _check(self, fields: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(fields) or not fields.is_floating_point():
            raise ValueError(f"expected a floating-point tensor of shape (B, V, Tc, Tg, Z, Y, X), got {type(fields).__name__}"
                             f"{'' if not torch.is_tensor(fields) else ' of dtype ' + str(fields.dtype)}")
        z, y, x = self.grid_shape
        v = len(self.variable_names)
        if fields.dim() != 7 or fields.shape[1] != v or tuple(fields.shape[4:]) != (z, y, x):
            raise ValueError(
                f"expected (B, V, Tc, Tg, Z, Y, X) with V={v}, Z={z}, Y={y}, X={x}, got {tuple(fields.shape)}"
            )
        return fields.to(self._dtype(fields))

    def _var(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return x[:, self.variable_names.index(name)]  # (B, Tc, Tg, Z, Y, X)

    # ---- validity masks (None: every point valid)
    def _vars_valid(self, valid: torch.Tensor | None, names: Sequence[str], x: torch.Tensor) -> torch.Tensor | None:
        """(B, Tc, Tg, Z, Y, X) True where every named variable is valid (all variables for ``names=()``)."""
        if valid is None:
            return None
        if valid.shape != x.shape:
            raise ValueError(f"expected valid of the fields' shape {tuple(x.shape)}, got {tuple(valid.shape)}")
        idx = [self.variable_names.index(n) for n in names] if names else list(range(len(self.variable_names)))
        return valid[:, idx].all(dim=1)

    @staticmethod
    def _layer_valid(ok: torch.Tensor | None) -> torch.Tensor | None:
        """Valid at both levels of every layer: (B, Tc, Tg, Z-1, Y, X)."""
        return None if ok is None else ok[:, :, :, 1:] & ok[:, :, :, :-1]

    def _neighbours_valid(self, ok: torch.Tensor | None) -> torch.Tensor | None:
        """Valid at the cell and its four horizontal neighbours (what a centred divergence reads)."""
        if ok is None:
            return None
        out = ok.clone()
        out[..., 1:, :] &= ok[..., :-1, :]
        out[..., :-1, :] &= ok[..., 1:, :]
        if self.periodic:
            out &= torch.roll(ok, 1, dims=-1) & torch.roll(ok, -1, dims=-1)
        else:
            out[..., 1:] &= ok[..., :-1]
            out[..., :-1] &= ok[..., 1:]
        return out

    @staticmethod
    def _mean_square(r: torch.Tensor, ok: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample mean of r^2 over the valid points (all points when ``ok`` is None; 0 when none is valid)."""
        if ok is None:
            return r.pow(2).reshape(r.shape[0], -1).mean(1)
        ok = ok.expand_as(r)
        sq = torch.where(ok, r, 0.0).pow(2).reshape(r.shape[0], -1).sum(1)
        return sq / ok.reshape(r.shape[0], -1).sum(1).clamp_min(1)

    def _dz(self, like: torch.Tensor) -> torch.Tensor:
        """Layer thickness between consecutive levels, shaped to broadcast over (B, Tc, Tg, Z-1, Y, X)."""
        lev = self.levels.to(like.dtype)
        return (lev[1:] - lev[:-1]).reshape(-1, 1, 1)

    def _lapse_rate(self, x: torch.Tensor) -> torch.Tensor:
        """Gamma = -dT/dz [K m-1] at layer midpoints, (B, Tc, Tg, Z-1, Y, X)."""
        T = self._var(x, "T")
        dT = T[:, :, :, 1:] - T[:, :, :, :-1]
        if self.level_unit == "m":
            return -dT / self._dz(T)
        zh = self._var(x, "z")
        return -dT / (zh[:, :, :, 1:] - zh[:, :, :, :-1])

    def _evaluate(
        self,
        fields: torch.Tensor,
        names: Sequence[str],
        gravity: Constant,
        gas_constant: Constant,
        heat_capacity: Constant,
        planet_radius: Constant,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        x = self._check(fields)  # (B, V, Tc, Tg, Z, Y, X)
        if valid is not None:
            valid = valid.to(device=x.device, dtype=torch.bool)
        # constants broadcast against a (B, Tc, Tg, Z, Y, X) field
        like = x[:, 0]
        consts = {
            "g": broadcast_constant(gravity, like, "gravity"),
            "R": broadcast_constant(gas_constant, like, "gas_constant"),
            "cp": broadcast_constant(heat_capacity, like, "heat_capacity"),
            "a": broadcast_constant(planet_radius, like, "planet_radius"),
        }
        terms: dict[str, Callable[..., torch.Tensor]] = {
            "hydrostatic": self._hydrostatic,
            "ideal_gas": self._ideal_gas,
            "lapse_rate": self._lapse_rate_excess,
            "mass_continuity": self._mass_continuity,
            "temporal_smoothness": self._temporal_smoothness,
            "geological_consistency": self._geological_consistency,
            "energy_drift": self._energy_drift,
        }
        out = {}
        for n in names:
            ok = self._vars_valid(valid, required_variables(n, self.level_unit), x)
            out[n] = terms[n](x, consts, ok)
        return out

    # ---- the constraints (each returns (B,); ``ok`` is the validity of the variables it reads, or None)
    def _hydrostatic(self, x: torch.Tensor, c: dict, ok: torch.Tensor | None = None) -> torch.Tensor:
        """Hydrostatic balance, dimensionless, evaluated on layer midpoints; normalised by the scale height.

        Height levels: ``r = (R / (g <1/T>)) * dln(p)/dz + 1`` with ``<1/T> = 0.5 (1/T_k + 1/T_{k+1})``
        (the log-trapezoid rule: an atmosphere integrated as ``ln p_{k+1} = ln p_k - g dz <1/T> / R`` has
        r = 0 exactly). It is the relative error of the vertical gradient of ln p against -1/H.

        Pressure levels (needs ``z``): ``r = g dz / (R <T> dln(p)) + 1`` with ``<T> = 0.5 (T_k + T_{k+1})``
        (the hypsometric equation, trapezoid in ln p), i.e. the relative error of the layer thickness.
        """
        T = self._var(x, "T").clamp_min(_T_FLOOR)
        g, R = c["g"], c["R"]
        if self.level_unit == "m":
            p = self._var(x, "p").clamp_min(_P_FLOOR)
            dlnp = torch.log(p[:, :, :, 1:]) - torch.log(p[:, :, :, :-1])
            inv_t = 0.5 * (1.0 / T[:, :, :, 1:] + 1.0 / T[:, :, :, :-1])
            r = R * dlnp / (g * inv_t * self._dz(T)) + 1.0
        else:
            zh = self._var(x, "z")
            lnp = torch.log(self.levels.to(T.dtype))
            dlnp = (lnp[1:] - lnp[:-1]).reshape(-1, 1, 1)
            t_mid = 0.5 * (T[:, :, :, 1:] + T[:, :, :, :-1])
            r = g * (zh[:, :, :, 1:] - zh[:, :, :, :-1]) / (R * t_mid * dlnp) + 1.0
        return self._mean_square(r, self._layer_valid(ok))

    def _ideal_gas(self, x: torch.Tensor, c: dict, ok: torch.Tensor | None = None) -> torch.Tensor:
        """Ideal gas, ``r = 1 - rho R T / p`` (dimensionless: normalised by the pressure)."""
        T, p, rho = self._var(x, "T"), self._var(x, "p").clamp_min(_P_FLOOR), self._var(x, "rho")
        return self._mean_square(1.0 - rho * c["R"] * T / p, ok)

    def _lapse_rate_excess(self, x: torch.Tensor, c: dict, ok: torch.Tensor | None = None) -> torch.Tensor:
        """Static stability, ``r = relu(Gamma - g/cp) / (g/cp)`` with ``Gamma = -dT/dz`` at layer midpoints.

        Normalised by the dry adiabatic lapse rate g/cp; zero for any stable (sub-adiabatic) profile.
        """
        gamma = self._lapse_rate(x)
        dry = c["g"] / c["cp"]
        return self._mean_square(F.relu(gamma - dry) / dry, self._layer_valid(ok))

    def _mass_continuity(self, x: torch.Tensor, c: dict, ok: torch.Tensor | None = None) -> torch.Tensor:
        """Horizontal mass continuity, ``r = div_sphere(rho u, rho v) / (rms(rho |u|) / a)``.

        The divergence uses the cos(lat) metric (its finite cell-area form on pole rows) and the planet radius
        a, without wrap on a regional grid; it is normalised per sample, time and level by the horizontal RMS
        of the mass-flux magnitude (over valid cells) over the radius (the size of the divergence a field of
        that magnitude would have if it were not balanced).
        """
        rho, u, v = self._var(x, "rho"), self._var(x, "u"), self._var(x, "v")
        a = c["a"]
        fu, fv = rho * u, rho * v
        if ok is not None:  # masked cells enter no difference with a value (their residual is dropped below)
            fu, fv = torch.where(ok, fu, 0.0), torch.where(ok, fv, 0.0)
        div = sphere_divergence(
            fu, fv, self.lat_rad.to(x.dtype), self.lon_rad.to(x.dtype), a if a.dim() == 0 else a.reshape(-1), self.periodic
        )
        sq = fu.pow(2) + fv.pow(2)
        if ok is None:
            ms = sq.mean(dim=(-2, -1), keepdim=True)
        else:
            ms = sq.sum(dim=(-2, -1), keepdim=True) / ok.sum(dim=(-2, -1), keepdim=True).clamp_min(1)
        rms = torch.sqrt(ms.clamp_min(_RHO_U_FLOOR**2))
        return self._mean_square(div * a / rms, self._neighbours_valid(ok))

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.variable_scales.to(x.dtype).reshape(1, -1, 1, 1, 1, 1, 1)

    def _temporal_smoothness(self, x: torch.Tensor, c: dict, ok: torch.Tensor | None = None) -> torch.Tensor:
        """Second difference along climate time, ``r = (f[t+1] - 2 f[t] + f[t-1]) / scale`` (all variables).

        Normalised by ``variable_scales`` (default 1; pass the dataset's per-variable standard deviations so
        that variables in Pa and in K weigh alike). Zero (not an error) when Tc < 3.
        """
        if x.shape[2] < 3:
            return x.new_zeros(x.shape[0])
        s = self._scaled(x)
        r = s[:, :, 2:] - 2.0 * s[:, :, 1:-1] + s[:, :, :-2]  # (B, V, Tc-2, ...)
        ok3 = None if ok is None else (ok[:, 2:] & ok[:, 1:-1] & ok[:, :-2]).unsqueeze(1)
        return self._mean_square(r, ok3)

    def _geological_consistency(self, x: torch.Tensor, c: dict, ok: torch.Tensor | None = None) -> torch.Tensor:
        """Change between geological epochs of the climate-time mean, ``r = diff_Tg(mean_Tc f) / scale``.

        Normalised by ``variable_scales`` (default 1). Zero (not an error) when Tg < 2. With a mask, a cell
        counts when it is valid at every climate step of both epochs.
        """
        if x.shape[3] < 2:
            return x.new_zeros(x.shape[0])
        s = self._scaled(x)
        if ok is not None:
            s = torch.where(ok.unsqueeze(1), s, 0.0)
        m = s.mean(dim=2)  # (B, V, Tg, Z, Y, X)
        ok2 = None
        if ok is not None:
            full = ok.all(dim=1)  # (B, Tg, Z, Y, X)
            ok2 = (full[:, 1:] & full[:, :-1]).unsqueeze(1)
        return self._mean_square(m[:, :, 1:] - m[:, :, :-1], ok2)

    def _column_weights(self, like: torch.Tensor) -> torch.Tensor:
        """Trapezoid quadrature weights of the levels (|dz| in m or |dp| in Pa), shape (Z, 1, 1)."""
        lev = self.levels.to(like.dtype)
        w = torch.zeros_like(lev)
        if lev.shape[0] > 1:
            d = (lev[1:] - lev[:-1]).abs()
            w[:-1] += 0.5 * d
            w[1:] += 0.5 * d
        else:
            w = w + 1.0
        return w.reshape(-1, 1, 1)

    def _energy_drift(self, x: torch.Tensor, c: dict, ok: torch.Tensor | None = None) -> torch.Tensor:
        """Drift of the column (enthalpy) energy, relative change per climate-time step.

        ``E = sum_z cp T rho dz`` [J m-2] on height levels (``sum_p cp T dp / g`` on pressure levels), with
        trapezoid weights, averaged over the sphere with cell-area weights, per (sample, Tc, Tg).
        ``r = (E[t+1] - E[t]) / |E[t]|`` (normalised by the energy itself). Zero (not an error) when Tc < 2.
        With a mask, the mean is over the columns valid at every level and at both steps.
        """
        if x.shape[2] < 2:
            return x.new_zeros(x.shape[0])
        T = self._var(x, "T")  # (B, Tc, Tg, Z, Y, X)
        w = self._column_weights(T)
        density = self._var(x, "rho") if self.level_unit == "m" else 1.0 / c["g"]
        column = (c["cp"] * T * density * w).sum(dim=3)  # (B, Tc, Tg, Y, X)
        area = self.area_weights.to(T.dtype).reshape(-1, 1).expand(column.shape[-2:])  # (Y, X)
        if ok is None:
            energy = (column * area).sum(dim=(-2, -1)) / area.sum()  # (B, Tc, Tg)
            return self._mean_square((energy[:, 1:] - energy[:, :-1]) / energy[:, :-1].abs().clamp_min(1e-30))
        cols = ok.all(dim=3)  # (B, Tc, Tg, Y, X): valid at every level
        both = cols[:, 1:] & cols[:, :-1]  # the same columns at both steps
        aw = torch.where(both, area, 0.0)
        norm = aw.sum(dim=(-2, -1)).clamp_min(1e-30)
        e0 = (torch.where(both, column[:, :-1], 0.0) * aw).sum(dim=(-2, -1)) / norm
        e1 = (torch.where(both, column[:, 1:], 0.0) * aw).sum(dim=(-2, -1)) / norm
        any_valid = both.flatten(-2).any(-1)  # (B, Tc-1, Tg)
        return self._mean_square((e1 - e0) / e0.abs().clamp_min(1e-30), any_valid)
