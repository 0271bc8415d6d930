"""Planet world SCM: the stated graph against the equations, determinism, counterfactuals, the written dataset."""

from __future__ import annotations

import importlib
import json
import math
import sys
import types

import numpy as np
import pandas as pd
import pytest

from astrobio_hf.data import planet_world as pw
from astrobio_hf.data.planet_world import (
    UNITS,
    VARIABLES,
    counterfactual_truth,
    planet_world_edges,
    sample_noise,
    sample_planet_world,
    synthesize,
    write_planet_world_dataset,
)

EDGES = planet_world_edges()
PARENTS = {v: {p for p, c in EDGES if c == v} for v in VARIABLES}


def _descendants(v: str) -> set[str]:
    out, stack = set(), [v]
    while stack:
        u = stack.pop()
        for p, c in EDGES:
            if p == u and c not in out:
                out.add(c)
                stack.append(c)
    return out


def _ancestors(v: str) -> set[str]:
    return {u for u in VARIABLES if v in _descendants(u)}


@pytest.fixture(scope="module")
def noise():
    return sample_noise(64, np.random.default_rng(3))


@pytest.fixture(scope="module")
def factual(noise):
    return synthesize(noise)


def _other(factual: pd.DataFrame, v: str) -> np.ndarray:
    """Another planet's value of ``v`` for every row: a valid, (almost surely) different value."""
    return np.roll(factual[v].to_numpy(), 1)


def test_variables_units_and_edges_form_a_dag():
    assert len(set(VARIABLES)) == len(VARIABLES) == 14
    assert set(UNITS) == set(VARIABLES)
    assert len(set(EDGES)) == len(EDGES)
    position = {v: i for i, v in enumerate(VARIABLES)}
    for p, c in EDGES:
        assert p in position and c in position and p != c
        assert position[p] < position[c], f"{p} -> {c} breaks the topological column order"  # so acyclic
    roots = [v for v in VARIABLES if not PARENTS[v]]
    assert roots == list(pw.ROOT_RANGES)
    assert {v: set(ps) for v, ps in pw.PARENTS.items()} == PARENTS
    assert all(v in pw.NOISE_SD for v in VARIABLES if PARENTS[v])


@pytest.mark.parametrize("child", [v for v in VARIABLES if PARENTS[v]])
def test_every_edge_is_a_direct_effect_and_nothing_else_is(child, factual, noise):
    parents = PARENTS[child]
    held = {p: factual[p].to_numpy() for p in parents}
    base = synthesize(noise, held)[child].to_numpy()
    np.testing.assert_array_equal(base, factual[child].to_numpy())
    for p in parents:  # changing one parent, the others held, changes the child
        moved = synthesize(noise, {**held, p: _other(factual, p)})[child].to_numpy()
        assert np.mean(np.abs(moved - base) > 1e-12) > 0.9, f"{p} -> {child} has no effect"
    for q in set(VARIABLES) - parents - {child} - _descendants(child):  # with the parents held nothing else acts
        moved = synthesize(noise, {**held, q: _other(factual, q)})[child].to_numpy()
        np.testing.assert_array_equal(moved, base, err_msg=f"{q} acts on {child} but is not its parent")
    for q in set(VARIABLES) - _ancestors(child) - {child} - _descendants(child):  # non-ancestors: no effect at all
        moved = synthesize(noise, {q: _other(factual, q)})[child].to_numpy()
        np.testing.assert_array_equal(moved, base, err_msg=f"{q} acts on {child} but is not its ancestor")


def test_no_variable_is_a_deterministic_function_of_its_parents(noise, factual):
    quiet = noise.copy()
    for j, v in enumerate(VARIABLES):
        if PARENTS[v]:
            quiet[:, j] = 0.0
    mean = synthesize(quiet)
    for v in VARIABLES:
        if PARENTS[v]:  # with its parents held at the factual values, the residual is exactly its noise
            held = {p: factual[p].to_numpy() for p in PARENTS[v]}
            residual = factual[v].to_numpy() - synthesize(quiet, held)[v].to_numpy()
            np.testing.assert_allclose(residual, noise[:, VARIABLES.index(v)], atol=1e-9)
            assert np.std(residual) > 0.5 * pw.NOISE_SD[v]
    assert np.isfinite(mean.to_numpy()).all()


def test_synthesize_is_deterministic_and_sampling_is_seeded(noise):
    pd.testing.assert_frame_equal(synthesize(noise), synthesize(noise.copy()))
    a, b = sample_planet_world(50, seed=7), sample_planet_world(50, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.to_numpy(), sample_planet_world(50, seed=8).to_numpy())
    assert list(a.columns) == list(VARIABLES) and (a.dtypes == np.float64).all()


def test_counterfactual_with_the_unchanged_value_is_the_factual_row(noise, factual):
    for v in VARIABLES:
        same = counterfactual_truth(noise, {v: factual[v].to_numpy()})
        pd.testing.assert_frame_equal(same, factual, check_exact=True)


@pytest.mark.parametrize("variable", VARIABLES)
def test_do_leaves_non_descendants_unchanged(variable, noise, factual):
    value = _other(factual, variable)
    out = synthesize(noise, {variable: value})
    np.testing.assert_array_equal(out[variable].to_numpy(), value)
    for v in set(VARIABLES) - _descendants(variable) - {variable}:
        np.testing.assert_array_equal(out[v].to_numpy(), factual[v].to_numpy(), err_msg=v)
    for c in (c for p, c in EDGES if p == variable):
        assert not np.allclose(out[c].to_numpy(), factual[c].to_numpy(), rtol=0, atol=1e-12), c


def test_scalar_interventions_and_errors(noise):
    out = synthesize(noise, {"log10_co2_bar": 0.0, "surface_temperature_k": 300.0})
    assert (out["log10_co2_bar"] == 0.0).all() and (out["surface_temperature_k"] == 300.0).all()
    with pytest.raises(KeyError, match="unknown planet-world variable"):
        synthesize(noise, {"albedo": 0.3})
    with pytest.raises(ValueError, match="finite"):
        synthesize(noise, {"log10_co2_bar": math.nan})
    with pytest.raises(ValueError, match="ocean_fraction"):
        synthesize(noise, {"ocean_fraction": 1.5})
    with pytest.raises(ValueError, match="shape"):
        synthesize(noise, {"log10_co2_bar": np.zeros(3)})
    with pytest.raises(ValueError, match="noise of shape"):
        synthesize(noise[:, :5])


def test_physics_anchors_earth_and_regimes():
    earth = np.zeros((1, len(VARIABLES)))
    for v, x in {"star_teff_k": 5772.0, "log10_orbit_au": 0.0, "log10_planet_mass_mearth": 0.0,
                 "log10_co2_bar": math.log10(4e-4), "ocean_fraction": 0.71}.items():
        earth[0, VARIABLES.index(v)] = x
    row = synthesize(earth).iloc[0]
    assert row["log10_star_radius_rsun"] == pytest.approx(0.0, abs=1e-12)
    assert row["log10_insolation_earth"] == pytest.approx(0.0, abs=1e-9)
    assert row["surface_temperature_k"] == pytest.approx(288.0, abs=3.0)
    assert row["climate_regime_index"] == pytest.approx(1.0, abs=0.05)
    assert 10 ** row["log10_h2o_bar"] == pytest.approx(0.012, rel=0.3)  # ~12 hPa of water vapour
    assert 10 ** row["log10_surface_gravity_ms2"] == pytest.approx(9.80665 / 1.07**2, rel=1e-9)
    world = sample_planet_world(2000, seed=0)
    regime = world["climate_regime_index"]
    for share in ((regime < 0.5).mean(), ((regime >= 0.5) & (regime < 1.5)).mean(), (regime >= 1.5).mean()):
        assert share > 0.15  # snowball, temperate and hot planets all present
    more_co2 = sample_planet_world(2000, seed=0, interventions={"log10_co2_bar": 0.5})
    assert (more_co2["surface_temperature_k"] > world["surface_temperature_k"] - 1e-9).mean() > 0.99


def _table_module(monkeypatch):
    """The real ``astrobio_hf.data.table`` if it exists, otherwise a stand-in that writes schema.json only."""
    try:
        return importlib.import_module("astrobio_hf.data.table")
    except ModuleNotFoundError as error:
        if error.name != "astrobio_hf.data.table":
            raise
    table = types.ModuleType("astrobio_hf.data.table")

    def write_table_dataset(output_dir, frame, **kwargs):
        output_dir.mkdir(parents=True, exist_ok=True)
        schema = {"columns": list(frame.columns), "n_rows": len(frame), "regime_targets": kwargs["regime_targets"]}
        (output_dir / "schema.json").write_text(json.dumps(schema))
        return schema

    table.write_table_dataset = write_table_dataset
    monkeypatch.setitem(sys.modules, "astrobio_hf.data.table", table)
    return table


def test_written_dataset_regimes_targets_and_truth(tmp_path, monkeypatch):
    table = _table_module(monkeypatch)
    calls = []
    real = table.write_table_dataset

    def recording(output_dir, frame, **kwargs):
        calls.append((frame.copy(), kwargs))
        return real(output_dir, frame, **kwargs)

    monkeypatch.setattr(table, "write_table_dataset", recording)
    out = write_planet_world_dataset(tmp_path / "pw", n_planets=120, seed=1, n_interventional=20,
                                     n_counterfactual=10, n_interventional_truth=30)
    (frame, kwargs), = calls
    assert list(frame.columns) == list(VARIABLES) and len(frame) == 120 + 3 * 20
    regimes = np.asarray(kwargs["regimes"])
    assert len(regimes) == len(frame) and (regimes == "observational").sum() == 120
    assert kwargs["regime_targets"] == {"observational": [], "do_co2_1bar": ["log10_co2_bar"],
                                        "do_orbit_1au": ["log10_orbit_au"],
                                        "do_surface_temperature_300k": ["surface_temperature_k"]}
    for name, interventions in pw.TRAINING_INTERVENTIONS.items():
        rows = frame[regimes == name]
        assert len(rows) == 20
        for v, value in interventions.items():
            assert (rows[v] == value).all()
    assert kwargs["edges"] == EDGES and kwargs["units"] == UNITS
    assert set(kwargs["transforms"].values()) == {"identity"} and kwargs["notes"]
    assert (tmp_path / "pw" / "schema.json").exists()

    truth = json.loads((tmp_path / "pw" / "truth.json").read_text())
    assert out["truth"] == truth
    cf = pd.read_parquet(tmp_path / "pw" / "counterfactual_truth.parquet")
    assert len(cf) == 10 * len(pw.COUNTERFACTUAL_QUERIES)
    assert [q["name"] for q in truth["counterfactual"]["queries"]] == list(pw.COUNTERFACTUAL_QUERIES)
    noise_cols = [f"noise_{v}" for v in VARIABLES]
    for query, part in cf.groupby("query"):
        variable, shift = pw.COUNTERFACTUAL_QUERIES[query]
        assert (part["intervened_variable"] == variable).all()
        np.testing.assert_allclose(part["intervened_value"], part[f"factual_{variable}"] + shift)
        noise = part[noise_cols].to_numpy()
        factual = part[[f"factual_{v}" for v in VARIABLES]].to_numpy()
        np.testing.assert_array_equal(synthesize(noise).to_numpy(), factual)
        again = counterfactual_truth(noise, {variable: part["intervened_value"].to_numpy()})
        np.testing.assert_array_equal(again.to_numpy(), part[[f"counterfactual_{v}" for v in VARIABLES]].to_numpy())
    brighter = cf[cf["query"] == "insolation_plus_20pct_via_orbit"]  # the same noise: exactly +20% flux
    np.testing.assert_allclose(brighter["counterfactual_log10_insolation_earth"]
                               - brighter["factual_log10_insolation_earth"], math.log10(1.2), atol=1e-12)
    if "regimes" in out:  # the real table writer's schema
        assert [r["name"] for r in out["regimes"]] == list(kwargs["regime_targets"])
        assert [r["targets"] for r in out["regimes"]] == list(kwargs["regime_targets"].values())
    held_out = cf[cf["query"] == "co2_x10"]
    assert not np.isin(held_out["factual_star_teff_k"], frame["star_teff_k"]).any()  # not training planets

    inter = pd.read_parquet(tmp_path / "pw" / "interventional_truth.parquet")
    assert inter["query"].value_counts().to_dict() == {q: 30 for q in pw.INTERVENTIONAL_QUERIES}
    for q in truth["interventional"]["queries"]:
        assert (inter.loc[inter["query"] == q["name"], q["variable"]] == q["value"]).all()
        assert q["name"] not in kwargs["regime_targets"]
