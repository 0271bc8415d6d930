"""The model grid with explicit units: latitude/longitude in degrees, levels in m or Pa, planet constants in SI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "LEVEL_UNITS",
    "SphereGrid",
    "cell_area_weights",
    "cell_centre_latitudes",
    "inverse_cos_metric",
    "is_periodic_longitude",
    "latitude_bounds",
    "latitude_bounds_rad",
    "uniform_longitudes",
]

LEVEL_UNITS = ("m", "Pa")


def cell_centre_latitudes(n_lat: int) -> np.ndarray:
    """``n_lat`` ascending cell-centre latitudes in degrees, without the poles (e.g. 16 -> -84.375 ... 84.375)."""
    if n_lat < 2:
        raise ValueError(f"expected n_lat >= 2, got {n_lat}")
    return -90.0 + (np.arange(n_lat) + 0.5) * (180.0 / n_lat)


def uniform_longitudes(n_lon: int) -> np.ndarray:
    """``n_lon`` uniform periodic longitudes in degrees starting at 0 (e.g. 32 -> 0 ... 348.75)."""
    if n_lon < 3:
        raise ValueError(f"expected n_lon >= 3, got {n_lon}")
    return np.arange(n_lon) * (360.0 / n_lon)


def latitude_bounds_rad(lat_rad: torch.Tensor) -> torch.Tensor:
    """``(Y + 1,)`` cell edges [rad] of ascending cell-centre latitudes [rad] (poles allowed), on their device.

    Interior edges are the midpoints between rows. An outer edge is the pole when the grid reaches it (the
    outer row lies within one row spacing of the pole: every global grid, cell-centred, pole-including or
    Gaussian, which is WeatherBench2's ``get_lat_weights``), otherwise half a spacing beyond the outer row (a
    regional grid). Written with ``torch.where`` only, so it never synchronises a GPU.
    """
    lat = lat_rad
    half_pi = torch.full((1,), np.pi / 2, dtype=lat.dtype, device=lat.device)
    if lat.numel() == 1:
        return torch.cat([-half_pi, half_pi])
    tol = 1e-9
    first, last = lat[1:2] - lat[:1], lat[-1:] - lat[-2:-1]
    south = torch.where(lat[:1] - first <= -half_pi + tol, -half_pi, lat[:1] - first / 2)
    north = torch.where(lat[-1:] + last >= half_pi - tol, half_pi, lat[-1:] + last / 2)
    return torch.cat([south, (lat[:-1] + lat[1:]) / 2, north])


def latitude_bounds(lat_deg: Sequence[float]) -> np.ndarray:
    """``(Y + 1,)`` cell edges in degrees of ascending cell-centre latitudes in degrees (see :func:`latitude_bounds_rad`)."""
    lat = torch.deg2rad(torch.as_tensor(np.asarray(lat_deg, dtype=np.float64), device="cpu"))  # not a meta device
    return torch.rad2deg(latitude_bounds_rad(lat)).numpy()


def cell_area_weights(lat_deg: Sequence[float]) -> np.ndarray:
    """``(Y,)`` area of each latitude row's cells per unit longitude, ``sin(b_{i+1}) - sin(b_i)``, normalised to
    mean 1 (:func:`latitude_bounds` gives the edges ``b``). Defined at the poles (a pole row is a polar cap of
    half a spacing), never a division by cos(90 degrees)."""
    b = np.deg2rad(latitude_bounds(lat_deg))
    w = np.sin(b[1:]) - np.sin(b[:-1])
    return w / w.mean()


def inverse_cos_metric(lat_rad: torch.Tensor) -> torch.Tensor:
    """``(Y,)`` the zonal metric factor ``1 / cos(phi)`` of the sphere operators, finite on every row.

    Rows away from the poles use ``1 / cos(phi)`` exactly. A pole row (|phi| within 1e-8 rad of 90 degrees)
    uses the cell-area form of the same factor, ``dphi / d(sin phi)`` over its polar cap (which tends to
    ``1 / cos(phi)`` as a cell shrinks): large but finite, so fields on a grid that includes the poles have
    finite gradients and divergences. ``torch.where`` only (no GPU synchronisation).
    """
    b = latitude_bounds_rad(lat_rad)
    cap = (b[1:] - b[:-1]) / (torch.sin(b[1:]) - torch.sin(b[:-1]))
    pole = (lat_rad.abs() - np.pi / 2).abs() < 1e-8
    return torch.where(pole, cap, 1.0 / torch.cos(lat_rad))


def is_periodic_longitude(lon_deg: Sequence[float]) -> bool:
    """Whether uniform longitudes cover the whole circle (``n * spacing`` = 360 degrees): a global grid whose
    last column neighbours the first. A regional grid (smaller span) is not periodic."""
    lon = np.asarray(lon_deg, dtype=np.float64)
    if lon.size < 3:  # a centred difference that wraps around needs 3 columns
        return False
    spacing = (lon[-1] - lon[0]) / (lon.size - 1)
    return abs(lon.size * spacing - 360.0) <= 1e-6 * 360.0 + 1e-9


def _as_1d(name: str, values: Any) -> np.ndarray:
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"expected {name} as a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"expected finite {name}, got {arr.tolist()}")
    return arr


@dataclass
class SphereGrid:
    """A latitude-longitude-level grid on a planet, with every unit explicit.

    Attributes:
        lat_deg: latitudes of the cell centres in degrees, ascending, within [-90, 90] (no poles needed).
        lon_deg: longitudes in degrees, uniform spacing; periodic when they cover 360 degrees (the last column
            is not repeated), otherwise a regional grid (``periodic`` is False: no wrap in longitude).
        levels: vertical level values, in ``level_unit``.
        level_unit: ``"m"`` (height above the surface, ascending) or ``"Pa"`` (pressure, any monotonic order).
        planet_radius: planet radius a [m].
        gravity: surface gravity g [m s-2].
        gas_constant: specific gas constant R = 8.314462618 / mu[kg mol-1] [J kg-1 K-1].
        heat_capacity: specific heat capacity at constant pressure cp [J kg-1 K-1].
    """

    lat_deg: Sequence[float]
    lon_deg: Sequence[float]
    levels: Sequence[float]
    level_unit: str
    planet_radius: float = 6.371e6
    gravity: float = 9.80665
    gas_constant: float = 287.05
    heat_capacity: float = 1004.6

    def __post_init__(self) -> None:
        lat = _as_1d("lat_deg", self.lat_deg)
        lon = _as_1d("lon_deg", self.lon_deg)
        lev = _as_1d("levels", self.levels)
        if lat.min() < -90.0 or lat.max() > 90.0:
            raise ValueError(f"expected lat_deg within [-90, 90], got range [{lat.min()}, {lat.max()}]")
        if lat.size > 1 and not np.all(np.diff(lat) > 0):
            raise ValueError(f"expected lat_deg strictly ascending, got {lat.tolist()}")
        dlon = np.diff(lon) if lon.size > 1 else np.array([360.0])
        if not np.all(dlon > 0) or not np.allclose(dlon, dlon[0], rtol=1e-6, atol=1e-9):
            raise ValueError(f"expected uniform ascending lon_deg, got spacings {np.unique(np.round(dlon, 9)).tolist()}")
        if lon.size > 1 and lon[-1] - lon[0] + dlon[0] > 360.0 + 1e-6:
            raise ValueError(
                f"expected lon_deg spanning at most 360 degrees without repeating the first column, "
                f"got {lon[0]} ... {lon[-1]} with spacing {dlon[0]}"
            )
        if self.level_unit not in LEVEL_UNITS:
            raise ValueError(f"expected level_unit in {LEVEL_UNITS}, got {self.level_unit!r}")
        if lev.size > 1:
            dlev = np.diff(lev)
            if self.level_unit == "m" and not np.all(dlev > 0):
                raise ValueError(f"expected height levels [m] strictly ascending, got {lev.tolist()}")
            if self.level_unit == "Pa" and not (np.all(dlev > 0) or np.all(dlev < 0)):
                raise ValueError(f"expected pressure levels [Pa] strictly monotonic, got {lev.tolist()}")
        if self.level_unit == "Pa" and np.any(lev <= 0):
            raise ValueError(f"expected positive pressure levels [Pa], got {lev.tolist()}")
        for name in ("planet_radius", "gravity", "gas_constant", "heat_capacity"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"expected a positive finite {name}, got {value}")
            setattr(self, name, value)
        self.lat_deg, self.lon_deg, self.levels = lat, lon, lev

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_schema(cls, schema: Any, **constants: float) -> "SphereGrid":
        """Build the grid from a dataset schema (``lat_values``, ``lon_values``, ``level_values``, ``level_unit``).

        Planet constants are taken from ``constants`` (keyword overrides) and default to Earth values.
        """
        missing = [k for k in ("lat_values", "lon_values", "level_values", "level_unit") if not hasattr(schema, k)]
        if missing:
            raise ValueError(f"expected a dataset schema with {missing}, got {type(schema).__name__} without them")
        return cls(
            lat_deg=schema.lat_values,
            lon_deg=schema.lon_values,
            levels=schema.level_values,
            level_unit=schema.level_unit,
            **constants,
        )

    # ------------------------------------------------------------------ accessors
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return (len(self.levels), len(self.lat_deg), len(self.lon_deg))

    def lat_rad(self, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
        """Latitudes in radians, shape ``(Y,)``."""
        return torch.deg2rad(torch.as_tensor(self.lat_deg, dtype=torch.float64)).to(dtype=dtype, device=device)

    def lon_rad(self, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
        """Longitudes in radians, shape ``(X,)``."""
        return torch.deg2rad(torch.as_tensor(self.lon_deg, dtype=torch.float64)).to(dtype=dtype, device=device)

    def level_tensor(self, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
        """Level values in ``level_unit``, shape ``(Z,)``."""
        return torch.as_tensor(self.levels, dtype=dtype, device=device)

    @property
    def periodic(self) -> bool:
        """Whether the longitudes cover the circle (see :func:`is_periodic_longitude`)."""
        return is_periodic_longitude(self.lon_deg)

    @property
    def dry_adiabatic_lapse_rate(self) -> float:
        """g / cp [K m-1]."""
        return self.gravity / self.heat_capacity
