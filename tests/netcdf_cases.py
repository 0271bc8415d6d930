"""Small real NetCDF files of the kinds climate models write, for the ingest tests.

Plain functions: each writes its files with xarray into a given directory and returns their paths. Values
are physically plausible (temperatures 200-320 K, winds within +-30 m/s) and carry a signal in time (a
seasonal cycle, a travelling wave and noise), so a model trained on them can learn something. Every case
has >= 30 climate steps (24 would leave the validation block 3 steps), enough for a datacube run with context_steps=2 to have windows in the 70/15/15 %
train/validation/test blocks.
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

N_TIME = 30


def _signal(kind: str, t_month: np.ndarray, lat: np.ndarray, lon: np.ndarray, levels: int = 1, seed: int = 0) -> np.ndarray:
    """(T, Z, Y, X) field: mean state + seasonal cycle + eastward travelling wave + noise."""
    rng = np.random.default_rng(seed)
    t = np.asarray(t_month, dtype=np.float64)[:, None, None, None]
    z = np.arange(levels, dtype=np.float64)[None, :, None, None]
    phi = np.radians(np.asarray(lat, dtype=np.float64))[None, None, :, None]
    lam = np.radians(np.asarray(lon, dtype=np.float64))[None, None, None, :]
    season = np.sin(2 * np.pi * t / 12.0) * np.sin(phi)
    wave = np.cos(3 * lam - 2 * np.pi * t / 6.0) * np.cos(phi)
    noise = rng.normal(size=(t.shape[0], levels, phi.shape[2], lam.shape[3]))
    if kind == "temperature":
        out = 288.0 - 30.0 * np.sin(phi) ** 2 - 6.0 * z + 8.0 * season + 3.0 * wave + 0.5 * noise
    elif kind == "u":
        out = 15.0 * np.cos(phi) ** 2 + 3.0 * z + 4.0 * season + 5.0 * wave + 1.0 * noise
    elif kind == "v":
        out = 6.0 * np.sin(2 * phi) + 5.0 * np.sin(3 * lam - 2 * np.pi * t / 6.0) * np.cos(phi) + 1.0 * noise
    elif kind == "sst":
        out = 300.0 - 28.0 * np.sin(phi) ** 2 + 2.0 * season + 1.0 * wave + 0.2 * noise
    else:
        raise ValueError(kind)
    return out


def _coords(lat, lon, time_values, time_units, calendar):
    return {
        "time": ("time", np.asarray(time_values, dtype=np.float64), {"units": time_units, "calendar": calendar, "axis": "T", "standard_name": "time"}),
        "lat": ("lat", np.asarray(lat, dtype=np.float64), {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
        "lon": ("lon", np.asarray(lon, dtype=np.float64), {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}),
    }


def _global(ny: int, nx: int):
    lat = -90 + (np.arange(ny) + 0.5) * 180.0 / ny
    lon = np.arange(nx) * 360.0 / nx
    return lat, lon


def _monthly_days(n: int = N_TIME, days_per_month: float = 30.0) -> np.ndarray:
    return 15.0 + np.arange(n) * days_per_month


def _surface_file(path, name, std, units, data, lat, lon, times, t_units, calendar, height=None):
    ds = xr.Dataset(
        {name: (("time", "lat", "lon"), data.astype(np.float32), {"standard_name": std, "units": units})},
        coords=_coords(lat, lon, times, t_units, calendar),
    )
    if height is not None:
        ds = ds.assign_coords(height=((), float(height), {"units": "m", "axis": "Z", "positive": "up", "standard_name": "height"}))
    ds.to_netcdf(path)
    return os.fspath(path)


def cmip_per_variable(directory) -> list[str]:
    """tas (2 m), uas and vas (10 m) in three CMIP-style files, 30 monthly steps on a 12 x 24 grid, standard calendar."""
    lat, lon = _global(12, 24)
    days = np.array([15.5 + 30.44 * i for i in range(N_TIME)])
    months = np.arange(N_TIME)
    t_units, cal = "days since 2000-01-01 00:00:00", "standard"
    tas = _signal("temperature", months, lat, lon, seed=1)[:, 0]
    uas = _signal("u", months, lat, lon, seed=2)[:, 0]
    vas = _signal("v", months, lat, lon, seed=3)[:, 0]
    return [
        _surface_file(os.path.join(directory, "tas_Amon_model_200001-200112.nc"), "tas", "air_temperature", "K", tas, lat, lon, days, t_units, cal, 2.0),
        _surface_file(os.path.join(directory, "uas_Amon_model_200001-200112.nc"), "uas", "eastward_wind", "m s-1", uas, lat, lon, days, t_units, cal, 10.0),
        _surface_file(os.path.join(directory, "vas_Amon_model_200001-200112.nc"), "vas", "northward_wind", "m s-1", vas, lat, lon, days, t_units, cal, 10.0),
    ]


def year0_times(directory) -> list[str]:
    """Monthly air temperature with times in 'hours since 0000-01-01' on the 360_day calendar (year 0)."""
    lat, lon = _global(8, 16)
    months = np.arange(N_TIME)
    hours = (15 + 30 * months) * 24.0
    data = _signal("temperature", months, lat, lon, seed=4)[:, 0]
    return [_surface_file(os.path.join(directory, "year0.nc"), "tas", "air_temperature", "K", data, lat, lon, hours, "hours since 0000-01-01 00:00:00", "360_day", 2.0)]


def masked_field(directory) -> list[str]:
    """Ocean-only sea surface temperature (K): NaN over a fixed land mask, stored with _FillValue, noleap calendar."""
    lat, lon = _global(10, 20)
    months = np.arange(N_TIME)
    data = _signal("sst", months, lat, lon, seed=5)[:, 0]
    land = (np.abs(lat)[:, None] < 40) & (lon[None, :] >= 90) & (lon[None, :] < 160)
    land |= lat[:, None] < -70  # Antarctica
    data[:, land] = np.nan
    ds = xr.Dataset(
        {"tos": (("time", "lat", "lon"), data.astype(np.float32), {"standard_name": "sea_surface_temperature", "units": "K"})},
        coords=_coords(lat, lon, _monthly_days(), "days since 1850-01-01", "noleap"),
    )
    path = os.path.join(directory, "tos_Omon.nc")
    ds.to_netcdf(path, encoding={"tos": {"_FillValue": np.float32(1e20)}})
    return [path]


def unit_c(directory) -> list[str]:
    """Air temperature whose units attribute is "C" (meant: degrees Celsius), 360_day calendar."""
    lat, lon = _global(8, 16)
    months = np.arange(N_TIME)
    data = _signal("temperature", months, lat, lon, seed=6)[:, 0] - 273.15
    return [_surface_file(os.path.join(directory, "temp_C.nc"), "T", "air_temperature", "C", data, lat, lon, _monthly_days(), "days since 2000-01-01", "360_day")]


def pole_grid(directory) -> list[str]:
    """Air temperature on 3 pressure levels (hPa) of a 19 x 36 grid whose latitudes include both poles (-90..90)."""
    lat = np.linspace(-90, 90, 19)
    lon = np.arange(36) * 10.0
    months = np.arange(N_TIME)
    data = _signal("temperature", months, lat, lon, levels=3, seed=7)
    ds = xr.Dataset(
        {"ta": (("time", "plev", "lat", "lon"), data.astype(np.float32), {"standard_name": "air_temperature", "units": "K"})},
        coords={
            **_coords(lat, lon, _monthly_days(), "days since 2000-01-01", "360_day"),
            "plev": ("plev", [1000.0, 850.0, 500.0], {"units": "hPa", "standard_name": "air_pressure", "axis": "Z", "positive": "down"}),
        },
    )
    path = os.path.join(directory, "ta_poles.nc")
    ds.to_netcdf(path)
    return [path]


def regional_grid(directory) -> list[str]:
    """Air temperature and eastward wind on a regional grid, lat 30..70, lon -30..40 (crossing 0, not global)."""
    lat = np.linspace(30, 70, 9)
    lon = np.linspace(-30, 40, 15)
    months = np.arange(N_TIME)
    ds = xr.Dataset(
        {
            "tas": (("time", "lat", "lon"), _signal("temperature", months, lat, lon, seed=8)[:, 0].astype(np.float32), {"standard_name": "air_temperature", "units": "K"}),
            "uas": (("time", "lat", "lon"), _signal("u", months, lat, lon, seed=9)[:, 0].astype(np.float32), {"standard_name": "eastward_wind", "units": "m s-1"}),
        },
        coords=_coords(lat, lon, _monthly_days(), "days since 2000-01-01", "360_day"),
    )
    path = os.path.join(directory, "europe.nc")
    ds.to_netcdf(path)
    return [path]


def odd_grid(directory) -> list[str]:
    """Air temperature on a 13 x 30 global grid (sizes not multiples of 4), 2 height levels."""
    lat = np.linspace(-84, 84, 13)
    lon = np.arange(30) * 12.0
    months = np.arange(N_TIME)
    data = _signal("temperature", months, lat, lon, levels=2, seed=10)
    ds = xr.Dataset(
        {"ta": (("time", "height", "lat", "lon"), data.astype(np.float32), {"standard_name": "air_temperature", "units": "K"})},
        coords={
            **_coords(lat, lon, _monthly_days(), "days since 2000-01-01", "360_day"),
            "height": ("height", [2.0, 1000.0], {"units": "m", "axis": "Z", "positive": "up", "standard_name": "height"}),
        },
    )
    path = os.path.join(directory, "odd.nc")
    ds.to_netcdf(path)
    return [path]


def single_level(directory) -> list[str]:
    """Surface air temperature (time, lat, lon) without any level coordinate, daily steps on the noleap calendar."""
    lat, lon = _global(8, 16)
    days = np.arange(30, dtype=np.float64)
    data = _signal("temperature", days / 30.0, lat, lon, seed=11)[:, 0]
    return [_surface_file(os.path.join(directory, "tas_day.nc"), "tas", "air_temperature", "K", data, lat, lon, days, "days since 2001-01-01", "noleap")]


ALL_CASES = (cmip_per_variable, year0_times, masked_field, unit_c, pole_grid, regional_grid, odd_grid, single_level)

__all__ = [f.__name__ for f in ALL_CASES] + ["ALL_CASES"]
