"""Tests of NetCDF ingestion on a real file shipped by ``iris-sample-data`` and on small files written here."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

xr = pytest.importorskip("xarray")
iris_sample_data = pytest.importorskip("iris_sample_data")

from astrobio_hf.data.ingest import ingest_netcdf  # noqa: E402
from astrobio_hf.data.inspect import describe_dataset  # noqa: E402
from astrobio_hf.data.schema import DatasetSchema  # noqa: E402
from astrobio_hf.data.streaming import build_window_dataset, collate_windows, count_windows  # noqa: E402

try:
    from . import netcdf_cases as cases  # noqa: E402
except ImportError:
    import netcdf_cases as cases  # noqa: E402

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


def test_nan_in_data_is_kept_as_masked(tmp_path):
    _write_cube(tmp_path / "nan.nc", nan=7)
    schema = ingest_netcdf(tmp_path / "nan.nc", tmp_path / "out")
    assert schema.masked_values == {"T": 7, "u": 0, "tracer": 0} and schema.has_masked_values
    assert schema.extra["ingest"]["masked_values"]["T"]["count"] == 7
    # a real masked field: OSTIA sea surface temperature is masked over land
    ostia = ingest_netcdf(os.path.join(SAMPLE, "ostia_monthly.nc"), tmp_path / "out2")
    assert sum(ostia.masked_values.values()) == 110970
    assert "masked values: " in describe_dataset(tmp_path / "out2")


def test_rotated_pole_grid_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"rotated-pole coordinate"):
        ingest_netcdf(os.path.join(SAMPLE, "hybrid_height.nc"), tmp_path / "out")


def test_too_few_steps_for_the_blocks(tmp_path):
    ds = xr.open_dataset(A1B)
    ds.isel(time=slice(0, 4)).to_netcdf(tmp_path / "short.nc")
    with pytest.raises(ValueError, match=r"4 climate steps cannot be split into blocks"):
        ingest_netcdf(tmp_path / "short.nc", tmp_path / "out", split_fractions=(0.9, 0.05, 0.05))


# ---------------------------------------------------------------------------- every kind of CF file
@pytest.mark.parametrize("case", cases.ALL_CASES, ids=lambda f: f.__name__)
def test_every_kind_ingests_and_streams(tmp_path, case):
    src = tmp_path / "src"
    src.mkdir()
    paths = case(src)
    overrides = {"units": {"T": "degC"}} if case is cases.unit_c else {}
    schema = ingest_netcdf(paths, tmp_path / "out", **overrides)
    assert DatasetSchema.from_dir(tmp_path / "out") == schema
    assert all(i.sha256 for shards in schema.splits.values() for i in shards)
    for split in ("train", "validation", "test"):
        rows = list(build_window_dataset(tmp_path / "out", split, context_steps=2))
        assert rows, split
        batch = collate_windows(rows, masked=schema.has_masked_values)
        assert tuple(batch["label_times"].shape) == (len(rows), 2)
        assert batch["label_times"].dtype == torch.float64
        assert np.isfinite(batch["inputs"].numpy()).all()
    assert schema.climate_time_calendar is not None and schema.climate_time_units is not None
    temps = [v for v in schema.variable_names if v == "T"]
    for v in temps:
        i = schema.variable_names.index(v)
        assert 200 < min(schema.norm_mean[i]) and max(schema.norm_mean[i]) < 320


def test_cmip_files_merge_by_variable(tmp_path, caplog):
    paths = cases.cmip_per_variable(tmp_path)
    with caplog.at_level("INFO"):
        schema = ingest_netcdf(paths, tmp_path / "out")
    assert schema.variable_names == ["T", "u", "v"]
    assert schema.cube_shape == (3, 1, 12, 24)  # surface fields: Z = 1
    assert schema.climate_time_calendar == "standard" and schema.climate_time_units.startswith("days since 2000-01-01")
    assert schema.climate_time_step == pytest.approx(30.44, abs=0.01)
    from astrobio_hf.data.schema import calendar_index, climate_time_kind

    assert climate_time_kind(schema) == "month"
    rows = list(build_window_dataset(tmp_path / "out", "train", context_steps=2))
    months = calendar_index(rows[0]["label_times"], schema.climate_time_units, schema.climate_time_calendar, "month")
    assert months.tolist() == [2, 3]  # labels of the first window: March and April 2000
    # tas at 2 m, uas/vas at 10 m: kept per variable in provenance, said in the log
    assert schema.extra["ingest"]["scalar_coordinates"]["tas"] == {"height": "2 m"}  # by NetCDF name
    assert schema.extra["ingest"]["scalar_coordinates"]["uas"] == {"height": "10 m"}
    assert "scalar coordinate 'height' differs" in caplog.text
    # same variables split in time + another variable: concatenated, then merged
    ds = xr.open_dataset(paths[0])
    ds.isel(time=slice(0, 12)).to_netcdf(tmp_path / "tas_a.nc")
    ds.isel(time=slice(12, 30)).to_netcdf(tmp_path / "tas_b.nc")
    mixed = ingest_netcdf([tmp_path / "tas_a.nc", tmp_path / "tas_b.nc", paths[1]], tmp_path / "mixed")
    assert mixed.variable_names == ["T", "u"] and mixed.series_lengths("train") == schema.series_lengths("train")
    assert mixed.norm_mean[:2] == schema.norm_mean[:2]


def test_mismatched_grids_and_times_name_both_files(tmp_path):
    paths = cases.cmip_per_variable(tmp_path)
    xr.open_dataset(paths[1]).isel(lat=slice(0, 11)).to_netcdf(tmp_path / "uas_b.nc")
    with pytest.raises(ValueError, match=r"tas_Amon_model_200001-200112.nc and uas_b.nc have different latitudes: 12 values -82.5..82.5 vs 11 values"):
        ingest_netcdf([paths[0], tmp_path / "uas_b.nc"], tmp_path / "out")
    xr.open_dataset(paths[1]).isel(time=slice(0, 20)).to_netcdf(tmp_path / "uas_short.nc")
    with pytest.raises(ValueError, match=r"tas_Amon_model_200001-200112.nc and uas_short.nc have different times: 30 values .* vs 20 values"):
        ingest_netcdf([paths[0], tmp_path / "uas_short.nc"], tmp_path / "out")


def test_year0_360_day_times(tmp_path):
    schema = ingest_netcdf(cases.year0_times(tmp_path), tmp_path / "out")
    assert schema.climate_time_calendar == "360_day"
    assert schema.climate_time_units == "hours since 0000-01-01 00:00:00"
    assert schema.climate_time_step == 30.0 and schema.climate_time_unit == "day"
    import pyarrow.parquet as pq

    times = pq.read_table(tmp_path / "out" / "train-00000-of-00001.parquet").column("climate_times")[0].as_py()
    assert times[:2] == [360.0, 1080.0]  # (15 + 30 k) days in hours
    from astrobio_hf.data.schema import calendar_index

    assert calendar_index(times[:13], schema.climate_time_units, "360_day", "month").tolist() == list(range(12)) + [0]


def test_masked_field_counts_and_statistics(tmp_path, caplog):
    paths = cases.masked_field(tmp_path)
    raw = xr.open_dataset(paths[0])["tos"].values
    with caplog.at_level("INFO"):
        schema = ingest_netcdf(paths, tmp_path / "out")
    n_nan = int(np.isnan(raw).sum())
    assert n_nan > 0 and schema.masked_values == {"tos": n_nan} and schema.has_masked_values
    assert schema.extra["ingest"]["masked_values"]["tos"]["fraction"] == pytest.approx(n_nan / raw.size)
    assert "masked" in caplog.text
    train = raw[: schema.series_lengths("train")[0]]
    assert schema.norm_mean[0][0] == pytest.approx(np.nanmean(train), rel=1e-6)
    assert schema.norm_std[0][0] == pytest.approx(np.nanstd(train.astype(np.float64)), rel=1e-4)
    rows = list(build_window_dataset(tmp_path / "out", "train", context_steps=2))
    with pytest.raises(ValueError, match=r"declares no masked values"):
        collate_windows(rows)
    batch = collate_windows(rows, masked=True)
    valid = batch["inputs_valid"].numpy()
    assert valid.dtype == bool and (~valid).any() and valid.any()
    assert (batch["inputs"].numpy()[~valid] == 0).all()


def test_unit_override_and_rename(tmp_path, caplog):
    paths = cases.unit_c(tmp_path)
    with pytest.raises(ValueError, match=r"variable 'T' in temp_C.nc: .*unit"):
        ingest_netcdf(paths, tmp_path / "bad")  # "C" is coulomb to pint: not a temperature
    with caplog.at_level("INFO"):
        schema = ingest_netcdf(paths, tmp_path / "out", units={"air_temperature": "degC"})
    assert schema.extra["ingest"]["unit_overrides"] == {"T": {"file_units": "C", "used": "degC"}}
    assert "units of T overridden" in caplog.text
    assert 250 < schema.norm_mean[0][0] < 300  # K
    with pytest.raises(ValueError, match=r"units override names \['TT'\], not a variable of temp_C.nc; they hold \['T'\]"):
        ingest_netcdf(paths, tmp_path / "x", units={"TT": "degC"})
    # a variable without a standard name, renamed
    ds = xr.open_dataset(paths[0])
    ds["T"].attrs.pop("standard_name")
    ds = ds.rename({"T": "TEMP"})
    ds["TEMP"].attrs["units"] = "degC"
    ds.to_netcdf(tmp_path / "nostd.nc")
    renamed = ingest_netcdf(tmp_path / "nostd.nc", tmp_path / "renamed", rename={"TEMP": "T"})
    assert renamed.variable_names == ["T"] and renamed.extra["ingest"]["renames"] == {"TEMP": "T"}
    with pytest.raises(ValueError, match=r"rename override names \['UWND'\]"):
        ingest_netcdf(tmp_path / "nostd.nc", tmp_path / "x", rename={"UWND": "u"})


def test_cli_ingest_with_units_and_rename(tmp_path, capsys):
    from astrobio_hf.cli import main

    paths = cases.unit_c(tmp_path)
    assert main(["data", "ingest", *paths, "--output", str(tmp_path / "out"), "--units", "T=degC", "--rename", "T=temp"]) == 0
    schema = DatasetSchema.from_dir(tmp_path / "out")
    assert schema.variable_names == ["temp"] and schema.units == {"temp": "K"}
    assert schema.extra["ingest"]["unit_overrides"] == {"temp": {"file_units": "C", "used": "degC"}}
    assert main(["data", "ingest", *paths, "--output", str(tmp_path / "x"), "--units", "Q=kg"]) == 2
    assert "units override names ['Q']" in capsys.readouterr().err
    assert main(["data", "ingest", *paths, "--output", str(tmp_path / "x"), "--units", "T"]) == 2


def test_undecodable_time_falls_back_to_steps(tmp_path, caplog):
    import netCDF4

    paths = cases.unit_c(tmp_path)
    with netCDF4.Dataset(paths[0], "a") as nc:
        nc["time"].units = "furlongs since whenever"
    with caplog.at_level("WARNING"):
        schema = ingest_netcdf(paths, tmp_path / "out", units={"T": "degC"})
    assert "cannot be decoded" in caplog.text and "step indices" in caplog.text
    assert schema.climate_time_unit == "step" and schema.climate_time_step == 1.0
    assert schema.climate_time_units is None and schema.climate_time_calendar is None
    assert schema.extra["ingest"]["time_decoding"].startswith("failed: unable to decode time units")


def test_single_level_pole_odd_and_regional_grids(tmp_path):
    single = ingest_netcdf(cases.single_level(tmp_path), tmp_path / "single")
    assert single.cube_shape == (1, 1, 8, 16) and single.climate_time_calendar == "noleap"
    from astrobio_hf.data.schema import climate_time_kind

    assert climate_time_kind(single) == "day"
    poles = ingest_netcdf(cases.pole_grid(tmp_path), tmp_path / "poles")
    assert poles.lat_values[0] == -90.0 and poles.lat_values[-1] == 90.0 and poles.cube_shape == (1, 3, 19, 36)
    assert poles.level_values == [100000.0, 85000.0, 50000.0]
    odd = ingest_netcdf(cases.odd_grid(tmp_path), tmp_path / "odd")
    assert odd.cube_shape == (1, 2, 13, 30) and odd.level_values == [2.0, 1000.0]
    regional = ingest_netcdf(cases.regional_grid(tmp_path), tmp_path / "regional")
    lon = np.asarray(regional.lon_values)
    np.testing.assert_allclose(lon, np.linspace(330, 400, 15))  # -30 .. 40: contiguous, not wrapped
    assert regional.extra["ingest"]["longitude_grid"].startswith("regional")
    raw = xr.open_dataset(cases.regional_grid(tmp_path)[0])["tas"].values
    import pyarrow.parquet as pq

    f = np.asarray(pq.read_table(tmp_path / "regional" / "train-00000-of-00001.parquet").column("fields")[0].values)
    np.testing.assert_allclose(f.reshape(2, -1, 9, 15)[0, 0], raw[0], rtol=1e-6)  # same order as the file


def test_corrupted_page_is_named(tmp_path):
    from astrobio_hf.cli import main

    schema = ingest_netcdf(cases.pole_grid(tmp_path), tmp_path / "out")
    shard = tmp_path / "out" / schema.splits["train"][0].file
    data = bytearray(shard.read_bytes())
    start = len(data) // 3  # inside the data pages of the fields column, far from the footer
    data[start : start + 2000] = bytes((b + 1) % 256 for b in data[start : start + 2000])
    shard.write_bytes(bytes(data))
    # the page checksum fails on reading (or, for bytes no read touches, the sha256 differs)
    with pytest.raises(ValueError, match=r"train-00000-of-00001.parquet of split 'train' is corrupted: .*(checksum|sha256)"):
        DatasetSchema.from_dir(tmp_path / "out")
    # bytes of a page that from_dir does not read (the last row group's fields): the sha256 names it
    schema2 = ingest_netcdf(cases.pole_grid(tmp_path), tmp_path / "out2", segment_steps=3)
    shard2 = tmp_path / "out2" / schema2.splits["train"][-1].file
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(shard2).metadata
    col = meta.row_group(meta.num_row_groups - 1).column(3)  # fields of the last row group
    data2 = bytearray(shard2.read_bytes())
    start2 = col.data_page_offset + 100
    data2[start2 : start2 + 2000] = bytes((b + 1) % 256 for b in data2[start2 : start2 + 2000])
    shard2.write_bytes(bytes(data2))
    with pytest.raises(ValueError, match=r"shard train-00001-of-00002.parquet of split 'train' is corrupted: sha256 [0-9a-f]+ differs from schema.json"):
        DatasetSchema.from_dir(tmp_path / "out2")
    assert main(["data", "inspect", str(tmp_path / "out")]) == 2
    from astrobio_hf.data.schema import read_parquet_file

    with pytest.raises(OSError, match=r"(?i)checksum|corrupt|invalid|crc"):
        read_parquet_file(shard).read()


def test_undeclared_netcdf_default_fill_is_masked_with_a_warning(tmp_path, caplog):
    """A file written without _FillValue holds netCDF's default fill (9.97e36) where nothing was written (as 14
    CMIP6 models of esmvaltool-sample-data do below the surface): masked, warned about, recorded."""
    import logging

    import numpy as np
    import xarray as xr

    from astrobio_hf.data.ingest import ingest_netcdf

    lat, lon = np.linspace(-60, 60, 6), np.arange(12) * 30.0
    data = 280.0 + np.random.default_rng(0).normal(size=(30, 6, 12)).astype(np.float32)
    data[:, 0, :3] = 9.969209968386869e36
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), data, {"standard_name": "air_temperature", "units": "K"})},
        coords={"time": ("time", np.arange(30.0), {"units": "days since 2000-01-01", "calendar": "noleap"}),
                "lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})},
    )
    path = tmp_path / "nofill.nc"
    ds.to_netcdf(path, encoding={"tas": {"_FillValue": None}})
    with caplog.at_level(logging.WARNING, logger="astrobio_hf.data.ingest"):
        schema = ingest_netcdf(path, tmp_path / "out")
    assert schema.masked_values == {"T": 90}
    assert schema.extra["ingest"]["undeclared_default_fill"] == {"tas": 90}
    assert any("default fill value" in r.message for r in caplog.records)
