"""Tests of NetCDF ingestion on a real file shipped by ``iris-sample-data`` and on small files written here."""

from __future__ import annotations

import os

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
iris_sample_data = pytest.importorskip("iris_sample_data")

from astrobio_hf.data.ingest import ingest_netcdf  # noqa: E402
from astrobio_hf.data.inspect import describe_dataset  # noqa: E402
from astrobio_hf.data.schema import DatasetSchema  # noqa: E402
from astrobio_hf.data.streaming import build_window_dataset, collate_windows, count_windows  # noqa: E402

SAMPLE = iris_sample_data.path
A1B = os.path.join(SAMPLE, "A1B_north_america.nc")  # HadCM3 1.5 m air temperature, 240 years x 37 x 49


@pytest.fixture(scope="module")
def hadcm3(tmp_path_factory):
    out = tmp_path_factory.mktemp("hadcm3")
    return out, ingest_netcdf(A1B, out)


def test_hadcm3_air_temperature(hadcm3):
    out, schema = hadcm3
    raw = xr.open_dataset(A1B)["air_temperature"]  # (time, latitude, longitude), K
    assert schema.variable_names == ["T"] and schema.units == {"T": "K"}
    assert schema.cube_shape == (1, 1, 37, 49)  # no level axis: Z = 1 at the 1.5 m scalar height
    assert schema.level_values == [1.5] and schema.level_unit == "m"
    assert schema.num_geological_steps == 1
    np.testing.assert_allclose(schema.lat_values, raw.latitude.values)  # already ascending
    np.testing.assert_allclose(schema.lon_values, raw.longitude.values)  # 225 .. 315, already in [0, 360)
    assert schema.climate_time_step == 360.0 and schema.climate_time_unit == "day"  # yearly, 360-day calendar
    assert schema.split_by == "time_block"
    # contiguous blocks 70/15/15 of 240 years, each a series with its own segment
    assert {k: schema.series_lengths(k) for k in schema.splits} == {"train": [168], "validation": [36], "test": [36]}
    assert [i.segments for k in ("train", "validation", "test") for i in schema.splits[k]] == [[0], [1], [2]]
    assert schema.planet_ids("train") == ["A1B_north_america"]
    assert schema.planet_param_names == ["gravity", "gas_constant", "heat_capacity", "planet_radius"]
    # values unchanged (already K); statistics of the train block
    train = raw.values[:168].astype(np.float64)
    assert schema.norm_mean[0][0] == pytest.approx(train.mean(), rel=1e-6)
    assert schema.norm_std[0][0] == pytest.approx(train.std(), rel=1e-4)
    # the test block streams back exactly
    rows = list(build_window_dataset(out, "test", context_steps=4, stride=8))
    assert len(rows) == count_windows(schema, "test", 4, 8) == 4
    np.testing.assert_allclose(rows[1]["inputs"].reshape(4, 37, 49), raw.values[204 + 8 : 204 + 12], rtol=1e-6)
    np.testing.assert_allclose(rows[1]["labels"].reshape(4, 37, 49), raw.values[204 + 12 : 204 + 16], rtol=1e-6)
    batch = collate_windows(rows)
    assert tuple(batch["inputs"].shape) == (4, 1, 4, 1, 1, 37, 49)
    assert float(batch["gravity"][0]) == pytest.approx(9.80665)
    text = describe_dataset(out)
    assert "T [K]" in text and "split by: time_block" in text


def test_several_files_concatenate_along_time(tmp_path):
    ds = xr.open_dataset(A1B)
    ds.isel(time=slice(0, 100)).to_netcdf(tmp_path / "part1.nc")
    ds.isel(time=slice(100, 240)).to_netcdf(tmp_path / "part2.nc")
    whole = ingest_netcdf(A1B, tmp_path / "whole", planet_id="earth", segment_steps=50)
    parts = ingest_netcdf([tmp_path / "part1.nc", tmp_path / "part2.nc"], tmp_path / "parts", planet_id="earth", segment_steps=50)
    assert parts.norm_mean == whole.norm_mean and parts.series_lengths("train") == whole.series_lengths("train") == [50, 50, 50, 18]
    assert [i.segments for i in whole.splits["train"]] == [[0, 1, 2, 3]]
    assert [i.segments for i in whole.splits["validation"]] == [[4]]
    # the same years twice (two scenarios): time does not increase -> error, no silent merge
    with pytest.raises(ValueError, match=r"climate time 'time' must increase strictly"):
        ingest_netcdf([A1B, os.path.join(SAMPLE, "E1_north_america.nc")], tmp_path / "both")


def _write_cube(path, *, t_units="degC", lat_descending=True, lon_signed=True, with_units=True, nan=0):
    """A small CF file: temperature in degC on pressure levels in hPa, lat descending, lon in [-180, 180)."""
    nt, nz, ny, nx = 12, 3, 5, 8
    rng = np.random.default_rng(0)
    lat = np.linspace(-60, 60, ny)[::-1] if lat_descending else np.linspace(-60, 60, ny)
    lon = np.arange(nx) * 45.0 - (180.0 if lon_signed else 0.0)
    temp = 15 + rng.normal(size=(nt, nz, ny, nx))
    if nan:
        temp.reshape(-1)[:nan] = np.nan
    wind = rng.normal(size=(nt, nz, ny, nx))
    ds = xr.Dataset(
        {
            "ta": (("time", "plev", "lat", "lon"), temp, {"standard_name": "air_temperature", **({"units": t_units} if with_units else {})}),
            "ua": (("time", "plev", "lat", "lon"), wind, {"standard_name": "eastward_wind", "units": "km h-1"}),
            "tracer": (("time", "plev", "lat", "lon"), wind ** 2, {"units": "1"}),
        },
        coords={
            "time": ("time", np.arange(nt) * 30.0, {"units": "days since 2000-01-01", "calendar": "360_day", "axis": "T"}),
            "plev": ("plev", [500.0, 850.0, 1000.0], {"units": "hPa", "standard_name": "air_pressure", "axis": "Z"}),
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    ds.to_netcdf(path)
    return temp, wind


def test_units_flips_and_names(tmp_path):
    temp, wind = _write_cube(tmp_path / "cube.nc")
    schema = ingest_netcdf(tmp_path / "cube.nc", tmp_path / "out", split_fractions=(0.5, 0.25, 0.25))
    assert schema.variable_names == ["T", "u", "tracer"]
    assert schema.units == {"T": "K", "u": "m s-1", "tracer": "1"}
    assert schema.level_unit == "Pa" and schema.level_values == [100000.0, 85000.0, 50000.0]  # from the surface up
    assert schema.lat_values == sorted(schema.lat_values) and schema.lat_values[0] == -60.0
    assert schema.lon_values == [0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0]
    assert schema.climate_time_step == 30.0
    assert schema.series_lengths("train") == [6] and schema.series_lengths("validation") == [3]
    import pyarrow.parquet as pq

    row = pq.read_table(os.path.join(out := str(tmp_path / "out"), "train-00000-of-00001.parquet"))
    fields = np.asarray(row.column("fields")[0].values).reshape(3, 6, 1, 3, 5, 8)  # (V, T, Tg, Z, Y, X)
    # expected: degC -> K, levels reversed (1000 hPa first), lat flipped, lon rolled (-180 -> 180)
    expect_t = (temp[:6] + 273.15)[:, ::-1, ::-1, :]
    expect_t = np.concatenate([expect_t[..., 4:], expect_t[..., :4]], axis=-1)
    np.testing.assert_allclose(fields[0, :, 0], expect_t, rtol=1e-6)
    expect_u = (wind[:6] / 3.6)[:, ::-1, ::-1, :]
    expect_u = np.concatenate([expect_u[..., 4:], expect_u[..., :4]], axis=-1)
    np.testing.assert_allclose(fields[1, :, 0], expect_u, rtol=1e-5, atol=1e-6)
    assert DatasetSchema.from_dir(out) == schema
    # variables chosen by NetCDF name, standard name or canonical name
    s2 = ingest_netcdf(tmp_path / "cube.nc", tmp_path / "out2", variables=["eastward_wind", "T"], split_fractions=(0.5, 0.25, 0.25))
    assert s2.variable_names == ["u", "T"]


def test_missing_units(tmp_path):
    _write_cube(tmp_path / "nounits.nc", with_units=False)
    with pytest.raises(ValueError, match=r"variable 'ta' in .*nounits.nc has no 'units' attribute"):
        ingest_netcdf(tmp_path / "nounits.nc", tmp_path / "out")


def test_unknown_units(tmp_path):
    _write_cube(tmp_path / "bad.nc", t_units="furlongs per fortnight squared")
    with pytest.raises(ValueError, match=r"variable 'ta' in .*bad.nc: .*unit"):
        ingest_netcdf(tmp_path / "bad.nc", tmp_path / "out")


def test_unknown_variable(tmp_path):
    with pytest.raises(ValueError, match=r"unknown variables \['precipitation'\] requested .*air_temperature"):
        ingest_netcdf(A1B, tmp_path / "out", variables=["T", "precipitation"])


def test_nan_in_data(tmp_path):
    _write_cube(tmp_path / "nan.nc", nan=7)
    with pytest.raises(ValueError, match=r"variable 'ta' .* has 7 non-finite \(NaN/Inf"):
        ingest_netcdf(tmp_path / "nan.nc", tmp_path / "out")
    # a real masked field: OSTIA sea surface temperature is masked over land
    with pytest.raises(ValueError, match=r"variable 'surface_temperature' .* has 110970 non-finite"):
        ingest_netcdf(os.path.join(SAMPLE, "ostia_monthly.nc"), tmp_path / "out2")
    assert not os.path.exists(tmp_path / "out2" / "schema.json")


def test_rotated_pole_grid_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"rotated-pole coordinate"):
        ingest_netcdf(os.path.join(SAMPLE, "hybrid_height.nc"), tmp_path / "out")


def test_too_few_steps_for_the_blocks(tmp_path):
    ds = xr.open_dataset(A1B)
    ds.isel(time=slice(0, 4)).to_netcdf(tmp_path / "short.nc")
    with pytest.raises(ValueError, match=r"4 climate steps cannot be split into blocks"):
        ingest_netcdf(tmp_path / "short.nc", tmp_path / "out", split_fractions=(0.9, 0.05, 0.05))
