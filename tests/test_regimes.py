"""Planet regime labels: the rule of the synthetic planets on hand-built fields, the schema and window plumbing (old
schemas without labels still load), the CNN-ViT regime head (loss, errors, the common model checks) and a tiny
in-process recipe run that writes the classification metrics beside their two baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from astrobio_hf.data.schema import DatasetSchema, Series, write_dataset
from astrobio_hf.data.streaming import build_window_dataset, collate_windows
from astrobio_hf.data.synth import (
    REGIME_NAMES,
    global_mean_surface_temperature,
    planet_regime,
    synthesize_planets,
)
from astrobio_hf.models.cnn_vit import CnnVitConfig, CnnVitForParameterRegression

try:
    from .model_mixin import ModelTesterMixin
    from .test_modeling_cnn_vit import hydrostatic_cube, tiny_config
except ImportError:  # tests/ is not a package
    from model_mixin import ModelTesterMixin
    from test_modeling_cnn_vit import hydrostatic_cube, tiny_config

torch.set_num_threads(1)
REGIMES = ["frozen", "temperate", "warm"]
LABELS = torch.tensor([[8.5, 30.0, 1300.0], [10.0, 28.0, 1400.0]])


# ------------------------------------------------------------------------------------------------ the rule
def _fields(surface_by_lat, n_time=3, n_levels=2, n_lon=4, aloft=400.0):
    """(Tc, Z, Y, X) temperatures: the given surface temperature per latitude row, `aloft` on the levels above."""
    T = np.full((n_time, n_levels, len(surface_by_lat), n_lon), aloft)
    T[:, 0] = np.asarray(surface_by_lat, dtype=np.float64)[None, :, None]
    return T


@pytest.mark.parametrize(
    ("surface", "expected"),
    [(250.0, 0), (273.0, 0), (273.15, 1), (280.0, 1), (287.99, 1), (288.0, 2), (310.0, 2)],
)
def test_rule_thresholds_on_uniform_surfaces(surface, expected):
    lat = np.array([-45.0, 0.0, 45.0])
    T = _fields([surface] * 3)
    assert global_mean_surface_temperature(T, lat) == pytest.approx(surface, abs=1e-9)
    assert planet_regime(T, lat) == expected
    assert REGIME_NAMES[expected] == REGIMES[expected]


def test_rule_weights_latitudes_by_area_and_reads_the_surface_only():
    """Rows at -60, 0, 60 degrees weigh 0.5, 1, 0.5: (0.5*260 + 290 + 0.5*260) / 2 = 275 K (temperate), while the
    unweighted mean, 270 K, would be frozen. The 400 K levels aloft do not count."""
    lat = np.array([-60.0, 0.0, 60.0])
    T = _fields([260.0, 290.0, 260.0])
    assert global_mean_surface_temperature(T, lat) == pytest.approx(275.0, rel=1e-12)
    assert planet_regime(T, lat) == 1
    # a time-varying surface: the mean over climate time
    T2 = T.copy()
    T2[0, 0] -= 30.0  # first of 3 steps 30 K colder -> mean 10 K colder
    assert global_mean_surface_temperature(T2, lat) == pytest.approx(265.0, rel=1e-12)
    assert planet_regime(T2, lat) == 0
    with pytest.raises(ValueError, match=r"expected T \(\.\.\., Z, Y, X\).*got"):
        global_mean_surface_temperature(T, np.array([0.0, 10.0]))


# ------------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def tiny_regime_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_regimes")
    schema = synthesize_planets(out, n_planets=6, n_climate_steps=8, n_levels=3, n_lat=4, n_lon=8, seed=0)
    return out, schema


def test_synthetic_schema_and_shards_carry_the_rule(tiny_regime_data):
    out, _ = tiny_regime_data
    loaded = DatasetSchema.from_dir(out)
    assert loaded.planet_regime_names == REGIMES and loaded.has_regimes and loaded.num_regimes == 3
    assert "273.15 K" in loaded.planet_regime_rule and "288 K" in loaded.planet_regime_rule
    lat = np.asarray(loaded.lat_values)
    for split in loaded.split_names:
        for path in loaded.shard_files(split):
            table = pq.read_table(path)
            assert table.column_names[-1] == "planet_regime"
            for row in table.to_pylist():  # the label is the rule applied to the stored present-epoch temperatures
                cube = np.asarray(row["fields"], dtype=np.float32).reshape(loaded.series_shape(row["n_time"]))
                assert row["planet_regime"] == planet_regime(cube[0, :, -1], lat)


def test_windows_carry_the_label(tiny_regime_data):
    out, schema = tiny_regime_data
    by_planet = {
        row["planet_id"]: row["planet_regime"]
        for path in schema.shard_files("train")
        for row in pq.read_table(path, columns=["planet_id", "planet_regime"]).to_pylist()
    }
    rows = list(build_window_dataset(out, "train", context_steps=2, stride=2, schema=schema))
    batch = collate_windows(rows)
    assert batch["planet_regime"].dtype == torch.int64 and batch["planet_regime"].shape == (len(rows),)
    assert batch["planet_regime"].tolist() == [by_planet[p] for p in batch["planet_id"]]


def _series(planet: int, regime=None) -> Series:
    rng = np.random.default_rng(planet)
    fields = (280.0 + rng.standard_normal((1, 4, 1, 2, 3, 4))).astype(np.float32)
    constants = {"gravity": 9.8, "gas_constant": 287.0, "heat_capacity": 1004.0, "planet_radius": 6.4e6}
    return Series(f"planet-{planet}", 0, fields, np.array([planet], np.float32), constants, planet_regime=regime)


def _write(out, regimes=None, **kwargs):
    series = {"train": [_series(0, regimes and regimes[0]), _series(1, regimes and regimes[1])]}
    return write_dataset(
        out, series, variable_names=["T"], units={"T": "K"}, level_values=[0.0, 1000.0], level_unit="m",
        lat_values=[-60.0, 0.0, 60.0], lon_values=[0.0, 90.0, 180.0, 270.0], climate_time_step=1.0,
        climate_time_unit="day", geological_time_values=[0.0], geological_time_unit="Myr",
        planet_param_names=["x"], planet_param_units=["1"], split_by="planet", source="test", **kwargs,
    )


def test_old_schema_without_regime_keys_loads_and_gives_no_head(tmp_path):
    _write(tmp_path)
    raw = json.loads((tmp_path / "schema.json").read_text())
    for key in ("planet_regime_names", "planet_regime_rule"):
        raw.pop(key)  # a schema.json written before these keys existed
    (tmp_path / "schema.json").write_text(json.dumps(raw))
    schema = DatasetSchema.from_dir(tmp_path)
    assert not schema.has_regimes and schema.num_regimes == 0
    rows = list(build_window_dataset(tmp_path, "train", context_steps=2, schema=schema))
    assert "planet_regime" not in rows[0] and "planet_regime" not in collate_windows(rows)
    kwargs = {"stem_channels": 8, "hidden_size": 16, "num_heads": 2, "stem_downsample": 0, "patch_size": 1, "physics_weights": {}}
    config = CnnVitConfig.from_schema(schema, context_steps=2, **kwargs)
    assert config.regime_names is None and config.num_regimes == 0
    assert CnnVitForParameterRegression(config).regime_head is None


def test_bad_regime_metadata_and_labels_raise(tmp_path):
    with pytest.raises(ValueError, match=r"expected planet_regime an integer in \[0, 2\).*got 5"):
        _write(tmp_path / "a", regimes=[0, 5], planet_regime_names=["cold", "hot"], planet_regime_rule="by T")
    with pytest.raises(ValueError, match="planet_regime_rule"):
        _write(tmp_path / "b", regimes=[0, 1], planet_regime_names=["cold", "hot"])
    with pytest.raises(ValueError, match="no planet_regime_names"):
        _write(tmp_path / "c", regimes=[0, 1])
    schema = _write(tmp_path / "d", regimes=[0, 1], planet_regime_names=["cold", "hot"], planet_regime_rule="by T")
    assert DatasetSchema.from_dir(tmp_path / "d").planet_regime_names == ["cold", "hot"]
    raw = schema.to_dict()
    raw["planet_regime_names"] = ["cold"]
    with pytest.raises(ValueError, match=r"expected planet_regime_names .*>= 2.*got \['cold'\]"):
        DatasetSchema.from_dict(raw)


# ------------------------------------------------------------------------------------------------ model
class TestCnnVitWithRegimeHead(ModelTesterMixin):
    config_class = CnnVitConfig
    model_class = CnnVitForParameterRegression

    def prepare_config_and_inputs(self):
        config = tiny_config(regime_names=REGIMES)
        return config, {"inputs": hydrostatic_cube(config).float(), "labels": LABELS, "regime_labels": torch.tensor([0, 2])}

    def expected_output_shapes(self, config, inputs):
        B, P = inputs["inputs"].shape[0], config.num_planet_params
        return {"mean": (B, P), "log_variance": (B, P), "cnn_mean": (B, P), "regime_logits": (B, 3)}

    def wrong_shape_inputs(self, config, inputs):
        return [
            *super().wrong_shape_inputs(config, inputs),
            ("regime labels of the wrong shape", dict(inputs, regime_labels=torch.tensor([[0], [2]]))),
        ]


def test_regime_loss_matches_cross_entropy_on_constructed_logits():
    config = tiny_config(regime_names=REGIMES, regime_loss_weight=0.5)
    model = CnnVitForParameterRegression(config)
    assert config.num_regimes == 3 and model.regime_head.out_features == 3
    bias = torch.tensor([2.0, -1.0, 0.5])
    with torch.no_grad():  # logits = bias for every sample
        model.regime_head.weight.zero_()
        model.regime_head.bias.copy_(bias)
    regime_labels = torch.tensor([1, 2])
    cube = hydrostatic_cube(config).float()
    out = model(inputs=cube, labels=LABELS, regime_labels=regime_labels)
    expected = F.cross_entropy(bias.expand(2, 3), regime_labels)
    manual = -(bias[[1, 2]] - torch.logsumexp(bias, 0)).mean()
    assert out.regime_loss.item() == pytest.approx(expected.item(), rel=1e-6) == pytest.approx(manual.item(), rel=1e-6)
    torch.testing.assert_close(out.regime_logits, bias.expand(2, 3))
    assert out.loss.item() == pytest.approx(out.nll.item() + out.physics_loss.item() + 0.5 * expected.item(), rel=1e-6)
    # without regime labels: logits, no regime loss, the loss as before
    plain = model(inputs=cube, labels=LABELS)
    assert plain.regime_loss is None and plain.regime_logits.shape == (2, 3)
    assert plain.loss.item() == pytest.approx(out.nll.item() + out.physics_loss.item(), rel=1e-6)
    # regime labels alone: the weighted cross-entropy is the loss
    alone = model(inputs=cube, regime_labels=regime_labels)
    assert alone.loss.item() == pytest.approx(0.5 * expected.item(), rel=1e-6)


def test_bad_regime_labels_raise():
    config = tiny_config(regime_names=REGIMES)
    model = CnnVitForParameterRegression(config)
    cube = hydrostatic_cube(config).float()
    cases = [
        (torch.tensor([0, 3]), r"values in \[0, 3\).*got values \[3\]"),
        (torch.tensor([-1, 0]), r"got values \[-1\]"),
        (torch.tensor([0.0, 1.0]), r"expected an int64 tensor \(B,\) with B=2.*got torch.float32 \(2,\)"),
        (torch.tensor([0, 1, 2]), r"got torch.int64 \(3,\)"),
        ([0, 1], r"expected an int64 tensor.*got list"),
    ]
    for labels, match in cases:
        with pytest.raises(ValueError, match=match):
            model(inputs=cube, labels=LABELS, regime_labels=labels)
    headless = CnnVitForParameterRegression(tiny_config())
    assert headless.config.num_regimes == 0 and headless.regime_head is None
    assert headless(inputs=cube).regime_logits is None
    with pytest.raises(ValueError, match=r"expected None for a model without a regime head.*got \(2,\)"):
        headless(inputs=cube, labels=LABELS, regime_labels=torch.tensor([0, 1]))
    for bad in (["frozen"], ["a", "a"]):
        with pytest.raises(ValueError, match="regime_names"):
            tiny_config(regime_names=bad)
    with pytest.raises(ValueError, match="regime_loss_weight"):
        tiny_config(regime_names=REGIMES, regime_loss_weight=-1.0)


# ------------------------------------------------------------------------------------------------ recipe
def test_planet_population_is_synthesised_once_and_again_when_outdated(tmp_path):
    """ensure_planet_population writes the population when missing, leaves a current one alone, and writes it again
    when its settings differ or when it was written without regime labels (real synthesis of tiny planets)."""
    from astrobio_hf.data.synth import ensure_planet_population

    small = {"n_planets": 3, "n_climate_steps": 2, "n_levels": 2, "n_lat": 4, "n_lon": 8}
    schema_file = tmp_path / "schema.json"
    schema = ensure_planet_population(tmp_path, **small)  # missing
    assert schema.planet_regime_names == list(REGIMES) and schema.spectrum_wavelengths is not None
    written = schema_file.stat().st_mtime_ns
    ensure_planet_population(tmp_path, **small)  # current: left alone
    assert schema_file.stat().st_mtime_ns == written
    stale = json.loads(schema_file.read_text())
    stale.pop("planet_regime_names")
    stale.pop("planet_regime_rule")
    schema_file.write_text(json.dumps(stale))  # no labels, and shards with a column this schema does not name
    assert ensure_planet_population(tmp_path, **small).planet_regime_names == list(REGIMES)  # unreadable: rewritten
    written = schema_file.stat().st_mtime_ns
    again = ensure_planet_population(tmp_path, **{**small, "n_climate_steps": 3})  # other settings: rewritten
    assert schema_file.stat().st_mtime_ns != written
    assert {n for shards in again.splits.values() for shard in shards for n in shard.n_time} == {3}


def test_tiny_recipe_reports_regime_metrics_against_baselines(tmp_path):
    from astrobio_hf.recipes.train_cnn_vit import main

    data = tmp_path / "data"
    schema = synthesize_planets(data, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=0)
    out = tmp_path / "run"
    test = main([
        "recipes/configs/cnn_vit/tiny.yaml", "--data_dir", str(data), "--output_dir", str(out),
        "--report_to", "none", "--max_steps", "4", "--eval_every", "2",
    ])
    for system in ("model", "majority", "logistic"):
        assert 0.0 <= test[f"regime/{system}/accuracy"] <= 1.0
        assert 0.0 <= test[f"regime/{system}/macro_f1"] <= 1.0
        matrix = np.asarray(test[f"regime/{system}/confusion_matrix"])
        assert matrix.shape == (3, 3) and matrix.sum() == test["samples"]
        assert test[f"regime/{system}/accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    # the majority baseline predicts one class only: its confusion matrix has a single non-zero column
    majority = np.asarray(test["regime/majority/confusion_matrix"])
    assert np.count_nonzero(majority.sum(axis=0)) == 1
    assert math.isfinite(test["regime/loss"]) and sum(test["regime/train_counts"]) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["regime/names"] == REGIMES
    card = (out / "README.md").read_text()
    assert "Planet regime classification" in card and "logistic regression" in card and "macro-F1" in card
    assert schema.planet_regime_rule in card
    config = json.loads((out / "config.json").read_text())
    assert config["regime_names"] == REGIMES
    loaded = CnnVitForParameterRegression.from_pretrained(out)
    assert loaded.regime_head is not None and loaded.config.num_regimes == 3
