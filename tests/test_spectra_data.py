"""WASP-43b (cube, spectrum) data from nemesispy: forward model, perturbations, dataset, observations.

The first run in a fresh environment compiles nemesispy's numba kernels (~30-50 s on a loaded 2-core
machine); ``enable_numba_cache`` keeps them on disk, so later runs take ~15 s.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("nemesispy")

from astrobio_hf.cli import build_parser
from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.spectra import (
    PLANET_PARAM_NAMES,
    UNPERTURBED,
    VARIABLE_NAMES,
    Wasp43bModel,
    build_spectra_dataset,
    chi_squared,
    load_observations,
    load_pairs,
    perturb,
)

PHASES = [3, 7]  # 90 deg (quadrature) and 180 deg (secondary eclipse): a subset keeps the test fast


@pytest.fixture(scope="module")
def model():
    return Wasp43bModel()


@pytest.fixture(scope="module")
def dataset(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("wasp43b")
    schema = build_spectra_dataset(out, n_samples=4, seed=0, phase_index=PHASES, model=model)
    return out, schema


def test_forward_model_reproduces_nemesis_reference(model):
    # nemesispy's own example (create_curves_example.py): the GCM with global-average VMRs against the
    # Fortran NEMESIS spectra of Irwin et al. (2020), which the example plots beside the Python model.
    spec = model.spectra(model.tmap_mod, model.vmrmap_mod, PHASES)
    ref = model.irwin2020[PHASES] * 1e6
    assert spec.shape == (len(PHASES), 17)
    assert np.abs(spec / ref - 1).max() < 0.02


def test_unperturbed_parameters_are_the_identity(model):
    t, vmr = perturb(model.tmap, model.vmrmap, model.gcm_lat, model.gcm_p, UNPERTURBED)
    np.testing.assert_allclose(t, np.clip(model.tmap, 100, 2950), atol=1e-9)
    np.testing.assert_allclose(vmr, model.vmrmap, rtol=1e-5, atol=1e-12)


def test_warmer_atmosphere_emits_more(model):
    base = model.spectra(model.tmap, model.vmrmap, PHASES)
    params = UNPERTURBED.copy()
    params[2:6] = 100.0  # +100 K on every layer
    t, vmr = perturb(model.tmap, model.vmrmap, model.gcm_lat, model.gcm_p, params)
    assert np.all(t >= model.tmap)
    assert np.all(model.spectra(t, vmr, PHASES) > base)


def test_abundance_scaling_keeps_vmr_sum(model):
    params = UNPERTURBED.copy()
    params[6:] = [1.0, -1.0, 0.5, 1.0]
    _, vmr = perturb(model.tmap, model.vmrmap, model.gcm_lat, model.gcm_p, params)
    np.testing.assert_allclose(vmr[..., 0], model.vmrmap[..., 0] * 10.0, rtol=1e-12)
    np.testing.assert_allclose(vmr.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(vmr[..., 4] / vmr[..., 5], model.vmrmap[..., 4] / model.vmrmap[..., 5], rtol=1e-12)


def test_schema_has_spectra_fields(dataset):
    out, schema = dataset
    loaded = DatasetSchema.from_dir(out)
    for s in (schema, loaded):
        assert s.has_spectra
        assert s.spectrum_shape == (len(PHASES), 17)
        assert s.spectrum_units == "ppm"
        assert s.spectrum_phases == [90.0, 180.0]
        assert len(s.spectrum_mean) == len(s.spectrum_std) == 17
        assert s.spectrum_model and "nemesispy" in s.spectrum_model
        assert s.variable_names == list(VARIABLE_NAMES)
        assert s.planet_param_names == list(PLANET_PARAM_NAMES)
        assert s.cube_shape == (7, 30, 32, 64)
        assert s.level_unit == "Pa"
    lon = np.asarray(schema.lon_values)
    assert lon.min() >= 0 and lon.max() < 360
    np.testing.assert_allclose(np.diff(lon), 5.625, rtol=1e-12)
    np.testing.assert_allclose(np.diff(schema.lat_values), 5.625, rtol=1e-12)
    assert sorted(schema.split_names) == ["test", "train", "val"]


def test_rows_carry_cube_and_spectrum(dataset):
    out, schema = dataset
    table = pq.read_table(out / schema.shard_files("train")[0])
    row = table.slice(0, 1).to_pylist()[0]
    spec = np.asarray(row["spectrum"], dtype=np.float32).reshape(1, len(PHASES), 17)
    cube = np.asarray(row["fields"], dtype=np.float32).reshape(7, 1, 1, 30, 32, 64)
    assert np.all(np.isfinite(spec)) and np.all(spec[:, :, -1] > 0)  # 4.5 um is the brightest band
    assert 100 <= cube[0].min() and cube[0].max() <= 2950  # T [K]
    assert np.all(cube[1:] <= 0)  # log10 VMR
    assert row["gravity"] == pytest.approx(47.4, rel=0.01)


def test_load_pairs(dataset):
    out, schema = dataset
    pairs = load_pairs(out, "train")
    n = len(schema.planet_ids("train"))
    assert pairs["fields"].shape == (n, 7, 30, 32, 64)
    assert pairs["spectrum"].shape == (n, len(PHASES), 17)
    assert pairs["planet_params"].shape == (n, len(PLANET_PARAM_NAMES))
    assert pairs["planet_id"] == schema.planet_ids("train")


def test_observations_and_gcm_chi_squared(dataset):
    out, _ = dataset
    obs = load_observations(out)
    assert obs["spectrum"].shape == obs["error"].shape == obs["gcm_spectrum"].shape == (len(PHASES), 17)
    assert np.all(obs["error"] > 0)
    chi2 = chi_squared(obs["gcm_spectrum"], obs["spectrum"], obs["error"])
    assert math.isfinite(chi2) and chi2 > 0
    assert chi2 == pytest.approx(obs["gcm_chi_squared"])
    assert math.isfinite(obs["irwin2020_chi_squared"])
    print(f"unperturbed GCM chi2 = {chi2:.1f} over {obs['n_points']} points (reduced {chi2 / obs['n_points']:.2f})")
    json.loads((out / "observations.json").read_text())  # plain JSON


def test_chi_squared_known_answer_and_errors():
    obs = np.zeros((2, 3))
    err = np.full((2, 3), 2.0)
    assert chi_squared(obs + 2.0, obs, err) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="expected"):
        chi_squared(np.zeros((2, 2)), obs, err)
    with pytest.raises(ValueError, match="expected positive"):
        chi_squared(obs, obs, np.zeros((2, 3)))


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="expected n_samples"):
        build_spectra_dataset(tmp_path, n_samples=2, model=model)
    with pytest.raises(ValueError, match="expected phase indices"):
        build_spectra_dataset(tmp_path, n_samples=3, phase_index=[15], model=model)
    with pytest.raises(ValueError, match="expected 10 perturbation parameters"):
        perturb(model.tmap, model.vmrmap, model.gcm_lat, model.gcm_p, [1.0])


def test_cli_parses_data_spectra():
    args = build_parser().parse_args(["data", "spectra", "--output", "x", "--n-samples", "5", "--seed", "3"])
    assert (args.data_command, args.output, args.n_samples, args.seed) == ("spectra", "x", 5, 3)
    assert build_parser().parse_args(["data", "spectra"]).output == "data/wasp43b"
