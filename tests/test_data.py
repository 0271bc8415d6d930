"""Tests of the dataset format (schema.py), window streaming (streaming.py) and inspection (inspect.py)."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
import torch

from astrobio_hf.data.inspect import dataset_statistics, describe_dataset
from astrobio_hf.data.schema import DatasetSchema, Series, write_dataset
from astrobio_hf.data.streaming import build_window_dataset, collate_windows, count_windows

V, T, TG, Z, Y, X = 2, 10, 1, 2, 4, 8
CONSTANTS = dict(gravity=9.8, gas_constant=287.0, heat_capacity=1004.0, planet_radius=6.4e6)


def make_series(planet: int, segment: int = 0, n_time: int = T, seed: int = 0) -> Series:
    rng = np.random.default_rng([seed, planet, segment])
    fields = rng.normal(size=(V, n_time, TG, Z, Y, X)).astype(np.float32)
    # encode (planet, time) in the first value of every step so that windows can be checked exactly
    fields[0, :, 0, 0, 0, 0] = 1000 * planet + np.arange(n_time)
    return Series(f"planet-{planet:03d}", segment, fields, np.array([planet, 1.5], np.float32), dict(CONSTANTS))


def write(out, splits, **overrides):
    kwargs = dict(
        variable_names=["T", "u"],
        units={"T": "K", "u": "m s-1"},
        level_values=[0.0, 1000.0],
        level_unit="m",
        lat_values=[-67.5, -22.5, 22.5, 67.5],
        lon_values=list(np.arange(X) * 45.0),
        climate_time_step=1.0,
        climate_time_unit="day",
        geological_time_values=[0.0],
        geological_time_unit="Myr",
        planet_param_names=["index", "albedo"],
        planet_param_units=["1", "1"],
        split_by="planet",
        source="test",
        series_per_shard=2,
    )
    kwargs.update(overrides)
    return write_dataset(out, splits, **kwargs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    splits = {
        "train": [make_series(i) for i in range(8)],  # 4 shards (even)
        "val": [make_series(i) for i in range(8, 13)],  # 3 shards (odd)
        "test": [make_series(13, n_time=7)],
    }
    return out, write(out, splits), splits


def window_ids(ds):
    return [(str(ex["planet_id"]), int(ex["segment"]), int(ex["start"])) for ex in ds]


# ---------------------------------------------------------------------------------------------- schema
def test_schema_round_trip_and_statistics(dataset):
    out, schema, splits = dataset
    assert sorted(os.listdir(out)) == sorted(
        ["schema.json"]
        + [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
        + [f"val-{i:05d}-of-00003.parquet" for i in range(3)]
        + ["test-00000-of-00001.parquet"]
    )
    loaded = DatasetSchema.from_dir(out)
    assert loaded == schema
    assert loaded.cube_shape == (V, Z, Y, X)
    assert loaded.series_shape(5) == (V, 5, TG, Z, Y, X)
    assert loaded.axis_names == ["variable", "climate_time", "geological_time", "level", "lat", "lon"]
    assert loaded.planet_ids("val") == [f"planet-{i:03d}" for i in range(8, 13)]
    # statistics come from the train split only
    train = np.stack([s.fields for s in splits["train"]]).astype(np.float64)  # (N, V, T, Tg, Z, Y, X)
    np.testing.assert_allclose(loaded.norm_mean, train.mean(axis=(0, 2, 3, 5, 6)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.norm_std, train.std(axis=(0, 2, 3, 5, 6)), rtol=1e-5)
    params = np.stack([s.planet_params for s in splits["train"]])
    assert loaded.planet_param_mean[0] == pytest.approx(params[:, 0].mean())
    # the constant parameter (albedo 1.5 everywhere) has its std stored as 1 and recorded
    assert loaded.planet_param_std[1] == 1.0
    assert loaded.constant_statistics == ["planet_param_std[albedo]"]
    raw = json.loads((out / "schema.json").read_text())
    assert raw["splits"]["train"][0]["planet_ids"] == ["planet-000", "planet-001"]


def test_write_dataset_rejects_bad_series(tmp_path):
    bad = make_series(0)
    bad.fields[1, 3, 0, 1, 2, 2] = np.nan
    bad.fields[1, 4, 0, 1, 2, 2] = np.inf
    with pytest.raises(ValueError, match=r"planet-000/0 .*non-finite.*u: 2"):
        write(tmp_path, {"train": [bad]})
    with pytest.raises(ValueError, match=r"expected fields \(V, T, Tg, Z, Y, X\) with V=2.*got \(3,"):
        s = make_series(0)
        s.fields = np.zeros((3, T, TG, Z, Y, X), np.float32)
        write(tmp_path, {"train": [s]})
    with pytest.raises(ValueError, match=r"no units given for variables \['u'\]"):
        write(tmp_path, {"train": [make_series(0)]}, units={"T": "K"})
    with pytest.raises(ValueError, match="lat_values must be ascending"):
        write(tmp_path, {"train": [make_series(0)]}, lat_values=[67.5, 22.5, -22.5, -67.5])


# ---------------------------------------------------------------------------------- bad shard catalogue
def _copy_dataset(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_schema_json(dataset, tmp_path):
    out = _copy_dataset(dataset[0], tmp_path / "d")
    (out / "schema.json").unlink()
    with pytest.raises(ValueError, match=r"schema.json is missing"):
        DatasetSchema.from_dir(out)
    with pytest.raises(ValueError, match=r"schema.json is missing"):
        build_window_dataset(out, "train", context_steps=2)


def test_zero_byte_shard(dataset, tmp_path):
    out = _copy_dataset(dataset[0], tmp_path / "d")
    (out / "val-00001-of-00003.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"val-00001-of-00003.parquet of split 'val' is empty \(0 bytes\)"):
        DatasetSchema.from_dir(out)


def test_zero_row_shard(dataset, tmp_path):
    import pyarrow.parquet as pq

    out = _copy_dataset(dataset[0], tmp_path / "d")
    path = out / "train-00002-of-00004.parquet"
    pq.write_table(pq.read_table(path).slice(0, 0), path)
    with pytest.raises(ValueError, match=r"train-00002-of-00004.parquet of split 'train' has 0 rows, expected 2"):
        DatasetSchema.from_dir(out)


def test_corrupted_shard(dataset, tmp_path):
    out = _copy_dataset(dataset[0], tmp_path / "d")
    (out / "train-00003-of-00004.parquet").write_bytes(os.urandom(3000))
    with pytest.raises(ValueError, match=r"train-00003-of-00004.parquet of split 'train' is corrupted"):
        DatasetSchema.from_dir(out)
    # truncated: the right magic at the start but cut in the middle
    out2 = _copy_dataset(dataset[0], tmp_path / "d2")
    path = out2 / "train-00000-of-00004.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"train-00000-of-00004.parquet of split 'train' is corrupted"):
        DatasetSchema.from_dir(out2)


def test_missing_shard(dataset, tmp_path):
    out = _copy_dataset(dataset[0], tmp_path / "d")
    (out / "test-00000-of-00001.parquet").unlink()
    with pytest.raises(ValueError, match=r"test-00000-of-00001.parquet of split 'test' is listed in schema.json but missing"):
        DatasetSchema.from_dir(out)


def test_schema_shape_mismatch(dataset, tmp_path):
    out = _copy_dataset(dataset[0], tmp_path / "d")
    raw = json.loads((out / "schema.json").read_text())
    raw["lon_values"] = raw["lon_values"] + [359.0]
    (out / "schema.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"first row has 1280 field values, schema.json expects .*\(2, 10, 1, 2, 4, 9\) = 1440"):
        DatasetSchema.from_dir(out)
    # rows are checked again while streaming (every row, not only the first of a shard)
    schema = DatasetSchema.from_dir(out, check_shards=False)
    ds = build_window_dataset(out, "train", context_steps=2, schema=schema)
    with pytest.raises(ValueError, match=r"planet-000/0: row has 1280 field values, schema.json expects"):
        next(iter(ds))
    # inconsistent statistics in schema.json
    raw["lon_values"] = raw["lon_values"][:-1]
    raw["norm_mean"] = raw["norm_mean"][:1]
    (out / "schema.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"norm_mean has shape \(1, 2\), expected \(2, 2\)"):
        DatasetSchema.from_dir(out)


def test_schema_unknown_split_and_keys(dataset, tmp_path):
    out, schema, _ = dataset
    with pytest.raises(ValueError, match=r"unknown split 'validation'.*\['test', 'train', 'val'\]"):
        build_window_dataset(out, "validation", context_steps=2)
    out2 = _copy_dataset(out, tmp_path / "d")
    raw = json.loads((out2 / "schema.json").read_text())
    raw["colour"] = "blue"
    (out2 / "schema.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        DatasetSchema.from_dir(out2)


# ---------------------------------------------------------------------------------------------- windows
def test_windows_content_and_count(dataset):
    out, schema, splits = dataset
    Tc, stride = 3, 2
    rows = list(build_window_dataset(out, "train", context_steps=Tc, stride=stride))
    assert len(rows) == count_windows(schema, "train", Tc, stride) == 8 * len(range(0, T - 2 * Tc + 1, stride))
    by_planet = {s.planet_id: s for s in splits["train"]}
    for ex in rows:
        assert ex["inputs"].dtype == np.float32
        cube = by_planet[str(ex["planet_id"])].fields
        s = int(ex["start"])
        np.testing.assert_array_equal(ex["inputs"].reshape(V, Tc, TG, Z, Y, X), cube[:, s : s + Tc])
        np.testing.assert_array_equal(ex["labels"].reshape(V, Tc, TG, Z, Y, X), cube[:, s + Tc : s + 2 * Tc])
        assert tuple(ex["window_shape"]) == (V, Tc, TG, Z, Y, X)
        assert ex["gravity"] == CONSTANTS["gravity"]
    # a series shorter than 2*Tc gives no window; a split with none at all is an error
    assert count_windows(schema, "test", 3) == 2
    with pytest.raises(ValueError, match=r"split 'test' has no window of 2\*context_steps = 8.*n_time = \[7\]"):
        build_window_dataset(out, "test", context_steps=4)
    with pytest.raises(ValueError, match=r"expected 0 <= rank < world_size=2, got rank=2"):
        count_windows(schema, "train", 3, rank=2, world_size=2)
    with pytest.raises(ValueError, match="context_steps must be a positive integer"):
        build_window_dataset(out, "train", context_steps=0)


def test_collate_windows(dataset):
    import torch

    out, schema, _ = dataset
    rows = list(build_window_dataset(out, "train", context_steps=2))[:5]
    batch = collate_windows(rows)
    assert batch["inputs"].shape == (5, V, 2, TG, Z, Y, X) and batch["inputs"].dtype == torch.float32
    assert batch["labels"].shape == (5, V, 2, TG, Z, Y, X)
    assert batch["planet_params"].shape == (5, 2)
    for c in CONSTANTS:
        assert batch[c].shape == (5,)
    assert batch["planet_id"] == [str(r["planet_id"]) for r in rows]
    torch.testing.assert_close(batch["inputs"][1], torch.from_numpy(rows[1]["inputs"].reshape(V, 2, TG, Z, Y, X)))
    with pytest.raises(ValueError, match=r"expected window shape"):
        collate_windows(rows, window_shape=(V, 3, TG, Z, Y, X))
    bad = dict(rows[2])
    bad["labels"] = bad["labels"].copy()
    bad["labels"][7] = np.nan
    with pytest.raises(ValueError, match=r"non-finite \(NaN/Inf\) values in labels of 1 window\(s\) of planet\(s\) \['planet-000'\]"):
        collate_windows([rows[0], bad])


def test_dataloader_batches(dataset):
    import torch

    out, schema, _ = dataset
    ds = build_window_dataset(out, "val", context_steps=2, shuffle_buffer=16, seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_windows)
    n = sum(b["inputs"].shape[0] for b in loader)
    assert n == count_windows(schema, "val", 2)


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_and_epoch_give_the_same_order(dataset):
    out, _, _ = dataset

    def order(seed, epoch, buffer=12):
        ds = build_window_dataset(out, "train", context_steps=2, shuffle_buffer=buffer, seed=seed)
        ds.set_epoch(epoch)
        return window_ids(ds)

    first = order(0, 0)
    assert order(0, 0) == first
    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != first
    assert order(1, 0) != first
    assert sorted(order(0, 1)) == sorted(first)  # a permutation: nothing lost, nothing repeated
    # without a buffer the stored order is kept
    unshuffled = order(0, 0, buffer=0)
    assert unshuffled == sorted(unshuffled, key=lambda w: (w[0], w[2]))
    assert first != unshuffled


# ------------------------------------------------------------------------------------------ distributed
@pytest.mark.parametrize("split,n_shards", [("train", 4), ("val", 3)])
@pytest.mark.parametrize("shuffle_buffer", [0, 12])
def test_two_ranks_cover_every_window_exactly_once(dataset, split, n_shards, shuffle_buffer):
    out, schema, _ = dataset
    assert len(schema.splits[split]) == n_shards
    per_rank = []
    for rank in range(2):
        ds = build_window_dataset(out, split, context_steps=2, shuffle_buffer=shuffle_buffer, seed=7, rank=rank, world_size=2)
        ds.set_epoch(1)
        per_rank.append(window_ids(ds))
    union = Counter(per_rank[0]) + Counter(per_rank[1])
    single = window_ids(build_window_dataset(out, split, context_steps=2))
    assert len(single) == count_windows(schema, split, 2)
    assert set(union) == set(single)
    assert max(union.values()) == 1, "a window went to both ranks"
    for rank in range(2):  # whole equal shards (even) or 1 window of 2 (odd): the count is exact here
        assert len(per_rank[rank]) == count_windows(schema, split, 2, rank=rank, world_size=2)


# ---------------------------------------------------------------------------------------------- inspect
def test_describe_dataset(dataset):
    out, schema, splits = dataset
    stats = dataset_statistics(out)
    every = np.concatenate([np.stack([s.fields[1].ravel() for s in splits[k]]).ravel() for k in splits])
    assert stats["u"]["min"] == pytest.approx(every.min())
    assert stats["u"]["max"] == pytest.approx(every.max())
    assert stats["u"]["mean"] == pytest.approx(every.mean(), abs=1e-9)
    assert stats["u"]["std"] == pytest.approx(every.std(), rel=1e-6)
    text = describe_dataset(out)
    for piece in ("variables: T [K], u [m s-1]", "split by: planet", "train: 4 shards, 8 series", "val: 3 shards, 5 series",
                  "statistics over all shards:", "lat: [-67.5, -22.5, 22.5, 67.5] deg (4)"):
        assert piece in text, piece
    assert f"{stats['u']['max']:.6g}" in text


# ---------------------------------------------------------------------------------------------- spectra
P_PH, W_WL = 2, 3


def with_spectrum(s: Series, offset: float = 0.0) -> Series:
    """Attach a (T, P, W) spectrum whose values encode (planet, time, phase, wavelength)."""
    planet = int(s.planet_id.split("-")[1])
    t = np.arange(s.n_time)[:, None, None]
    s.spectrum = (1000.0 * planet + 10.0 * t + np.arange(P_PH)[None, :, None] + 0.1 * np.arange(W_WL) + offset).astype(np.float32)
    return s


SPECTRUM_KW = {
    "spectrum_wavelengths": [1.0, 2.0, 4.5],
    "spectrum_phases": [0.0, 180.0],
    "spectrum_units": "W m-2 um-1",
    "spectrum_model": "a made-up test spectrum",
}


@pytest.fixture(scope="module")
def spectral_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds_spec")
    splits = {
        "train": [with_spectrum(make_series(i)) for i in range(4)],
        "test": [with_spectrum(make_series(13, n_time=7))],
    }
    return out, write(out, splits, **SPECTRUM_KW), splits


def test_old_schema_without_spectrum_keys_still_loads(dataset, tmp_path):
    out = _copy_dataset(dataset[0], tmp_path / "d")
    raw = json.loads((out / "schema.json").read_text())
    for key in [k for k in raw if k.startswith("spectrum_")]:
        raw.pop(key)
    (out / "schema.json").write_text(json.dumps(raw))
    schema = DatasetSchema.from_dir(out)
    assert not schema.has_spectra and schema.num_phases == 0
    row = next(iter(build_window_dataset(out, "train", context_steps=2)))
    assert "spectrum" not in row and "spectrum" not in collate_windows([row])
    with pytest.raises(ValueError, match="has no spectra"):
        schema.spectrum_shape  # noqa: B018


def test_spectrum_schema_round_trip_and_statistics(spectral_dataset):
    out, schema, splits = spectral_dataset
    loaded = DatasetSchema.from_dir(out)
    assert loaded == schema and loaded.has_spectra
    assert loaded.spectrum_shape == (P_PH, W_WL)
    assert loaded.spectrum_units == "W m-2 um-1" and loaded.spectrum_phases == [0.0, 180.0]
    train = np.concatenate([s.spectrum.reshape(-1, W_WL) for s in splits["train"]]).astype(np.float64)
    np.testing.assert_allclose(loaded.spectrum_mean, train.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(loaded.spectrum_std, train.std(axis=0), rtol=1e-5)


def test_windows_carry_the_target_spectra(spectral_dataset):
    import torch

    out, _, splits = spectral_dataset
    Tc = 3
    rows = list(build_window_dataset(out, "train", context_steps=Tc, stride=2))
    by_planet = {s.planet_id: s for s in splits["train"]}
    for ex in rows:
        st = int(ex["start"])
        expected = by_planet[str(ex["planet_id"])].spectrum[st + Tc : st + 2 * Tc]  # target frames
        np.testing.assert_array_equal(ex["spectrum"].reshape(Tc, P_PH, W_WL), expected)
        assert tuple(ex["spectrum_shape"]) == (Tc, P_PH, W_WL)
    batch = collate_windows(rows[:4])
    assert batch["spectrum"].shape == (4, Tc, P_PH, W_WL) and batch["spectrum"].dtype == torch.float32
    torch.testing.assert_close(batch["spectrum"][2], torch.from_numpy(rows[2]["spectrum"].reshape(Tc, P_PH, W_WL)))
    bad = dict(rows[1])
    bad["spectrum"] = bad["spectrum"].copy()
    bad["spectrum"][0] = np.inf
    with pytest.raises(ValueError, match=r"non-finite \(NaN/Inf\) values in spectrum of 1 window"):
        collate_windows([rows[0], bad])


def test_write_dataset_rejects_bad_spectra(tmp_path):
    with pytest.raises(ValueError, match=r"expected spectrum \(T, P, W\) = \(10, 2, 3\), got \(10, 3\)"):
        s = make_series(0)
        s.spectrum = np.zeros((T, 3), np.float32)
        write(tmp_path, {"train": [s]}, **SPECTRUM_KW)
    with pytest.raises(ValueError, match=r"has no spectrum; expected one of shape"):
        write(tmp_path, {"train": [with_spectrum(make_series(0)), make_series(1)]}, **SPECTRUM_KW)
    with pytest.raises(ValueError, match=r"has a spectrum but write_dataset got no spectrum_wavelengths"):
        write(tmp_path, {"train": [with_spectrum(make_series(0))]})
    with pytest.raises(ValueError, match=r"non-finite \(NaN/Inf\) spectrum values: 1"):
        s = with_spectrum(make_series(0))
        s.spectrum[2, 1, 0] = np.nan
        write(tmp_path, {"train": [s]}, **SPECTRUM_KW)
    with pytest.raises(ValueError, match=r"spectra need spectrum_units and spectrum_model"):
        write(tmp_path, {"train": [with_spectrum(make_series(0))]}, **{**SPECTRUM_KW, "spectrum_model": None})


def test_spectrum_shape_mismatch_in_schema(spectral_dataset, tmp_path):
    out = _copy_dataset(spectral_dataset[0], tmp_path / "d")
    raw = json.loads((out / "schema.json").read_text())
    raw["spectrum_wavelengths"] = raw["spectrum_wavelengths"] + [8.0]
    raw["spectrum_mean"] = raw["spectrum_mean"] + [0.0]
    raw["spectrum_std"] = raw["spectrum_std"] + [1.0]
    (out / "schema.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"first row has 60 spectrum values, schema.json expects \(T, P, W\) = \(10, 2, 4\) = 80"):
        DatasetSchema.from_dir(out)
    schema = DatasetSchema.from_dir(out, check_shards=False)
    with pytest.raises(ValueError, match=r"planet-000/0: row has 60 spectrum values"):
        next(iter(build_window_dataset(out, "train", context_steps=2, schema=schema)))
    raw["spectrum_std"] = raw["spectrum_std"][:2]
    (out / "schema.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"spectrum_std has shape \(2,\), expected \(4,\)"):
        DatasetSchema.from_dir(out)


# ---------------------------------------------------------------------------------- masks, CF times, checksums
def test_old_schema_without_times_masks_and_checksums_still_loads(dataset, tmp_path):
    out = _copy_dataset(dataset[0], tmp_path / "d")
    raw = json.loads((out / "schema.json").read_text())
    for key in ("climate_time_units", "climate_time_calendar", "masked_values"):
        raw.pop(key)
    for shards in raw["splits"].values():
        for s in shards:
            s.pop("sha256")
    (out / "schema.json").write_text(json.dumps(raw))
    schema = DatasetSchema.from_dir(out)
    assert schema.climate_time_units is None and schema.masked_values is None and not schema.has_masked_values
    assert all(i.sha256 is None for i in schema.splits["train"])
    row = next(iter(build_window_dataset(out, "train", context_steps=2)))
    assert "label_times" not in row and "label_times" not in collate_windows([row])


def test_masked_values_statistics_and_collate(tmp_path):
    series = [make_series(i) for i in range(2)]
    series[0].fields[0, :, 0, 1, 0, :] = np.nan  # T, level 1, one latitude row masked at every step
    series[1].fields[1, 3, 0, 0, 2, 5] = np.nan  # u, one cell at one step
    with pytest.raises(ValueError, match=r"non-finite \(NaN/Inf\) values: T: 80 .*allow_masked=True"):
        write(tmp_path / "a", {"train": series})
    schema = write(tmp_path / "b", {"train": series, "test": [make_series(5)]}, allow_masked=True)
    assert schema.masked_values == {"T": 80, "u": 1} and schema.has_masked_values
    assert DatasetSchema.from_dir(tmp_path / "b").masked_values == {"T": 80, "u": 1}
    f = np.stack([s.fields for s in series]).astype(np.float64)  # (S, V, T, Tg, Z, Y, X)
    assert schema.norm_mean[0][1] == pytest.approx(np.nanmean(f[:, 0, :, :, 1]), rel=1e-9)
    assert schema.norm_std[1][0] == pytest.approx(np.nanstd(f[:, 1, :, :, 0]), rel=1e-9)
    d = np.diff(f, axis=2)  # valid consecutive pairs only
    assert schema.tendency_std[1][0] == pytest.approx(np.sqrt(np.nanmean(d[:, 1, :, :, 0] ** 2)), rel=1e-9)
    bad = make_series(0)
    bad.fields[1, 4, 0, 1, 2, 2] = np.inf
    with pytest.raises(ValueError, match=r"infinite \(Inf\) values: u: 1"):
        write(tmp_path / "c", {"train": [bad]}, allow_masked=True)
    allnan = make_series(0)
    allnan.fields[1, :, :, 1] = np.nan
    with pytest.raises(ValueError, match=r"no valid \(non-masked\) value in split 'train' for \['u level 1'\]"):
        write(tmp_path / "d", {"train": [allnan]}, allow_masked=True)
    rows = list(build_window_dataset(tmp_path / "b", "train", context_steps=2))
    with pytest.raises(ValueError, match=r"declares no masked values"):
        collate_windows(rows)
    batch = collate_windows(rows, masked=True)
    assert batch["inputs_valid"].dtype == torch.bool and batch["labels_valid"].shape == batch["labels"].shape
    assert int((~batch["inputs_valid"]).sum()) > 0 and not torch.isnan(batch["inputs"]).any()
    assert (batch["inputs"][~batch["inputs_valid"]] == 0).all()
    rows[0]["labels"][3] = np.inf
    with pytest.raises(ValueError, match=r"infinite \(Inf\) values in labels"):
        collate_windows(rows, masked=True)


def test_climate_times_label_times_and_calendar(tmp_path):
    from astrobio_hf.data.schema import calendar_index, climate_time_kind

    series = [make_series(0), make_series(1, n_time=7)]
    for s in series:
        s.times = 15.0 + 30.0 * np.arange(s.n_time)
    kw = dict(climate_time_step=30.0, climate_time_units="days since 0000-01-01 00:00:00", climate_time_calendar="360_day")
    with pytest.raises(ValueError, match=r"expected times \(T,\) = \(10,\)"):
        write(tmp_path / "a", {"train": [make_series(0)]}, **kw)
    schema = write(tmp_path / "b", {"train": series}, **kw)
    assert schema.has_climate_times and climate_time_kind(schema) == "month"
    rows = list(build_window_dataset(tmp_path / "b", "train", context_steps=2))
    np.testing.assert_array_equal(rows[1]["label_times"], [15.0 + 30 * 3, 15.0 + 30 * 4])
    batch = collate_windows(rows[:3])
    assert batch["label_times"].dtype == torch.float64 and tuple(batch["label_times"].shape) == (3, 2)
    assert calendar_index(batch["label_times"].numpy(), kw["climate_time_units"], "360_day", "month").tolist() == [[2, 3], [3, 4], [4, 5]]
    assert calendar_index([0.0, 359.0], kw["climate_time_units"], "360_day", "day").tolist() == [0, 359]


def test_regional_longitudes_and_sha256(tmp_path):
    schema = write(tmp_path / "r", {"train": [make_series(0)]}, lon_values=list(330.0 + 10 * np.arange(X)))
    assert schema.lon_values[-1] == 400.0
    with pytest.raises(ValueError, match=r"lon_values must be ascending within \[-180, 720\) and span less than 360"):
        write(tmp_path / "x", {"train": [make_series(0)]}, lon_values=list(np.arange(X) * 60.0))
    info = schema.splits["train"][0]
    from astrobio_hf.data.schema import file_sha256

    assert info.sha256 == file_sha256(tmp_path / "r" / info.file)
