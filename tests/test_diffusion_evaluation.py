"""Sample-quality metrics against hand-computed cases; the EOF encoder; an end-to-end sweep on a tiny pipeline."""

from __future__ import annotations

import json
import math

import pytest
import torch

from astrobio_hf.diffusion.features import (
    EOFEncoder,
    channel_moments,
    conditional_error,
    frechet_distance,
    frechet_distance_from_moments,
    kernel_inception_distance,
    mean_std_error,
    power_spectrum_error,
    radial_power_spectrum,
)

LAT = [-60.0, -20.0, 20.0, 60.0]


# ---------------------------------------------------------------------------------------- FD and KID


def test_frechet_distance_identical_sets_is_zero():
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert frechet_distance(x, x.clone()) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_shifted_gaussians_identity_covariance():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([3.0, -1.0, 2.5])
    eye = torch.eye(3, dtype=torch.float64)
    expected = float((mu1 - mu2).square().sum())  # 9 + 4 + 0.25
    assert frechet_distance_from_moments(mu1, eye, mu2, eye) == pytest.approx(expected, rel=1e-12)
    # isotropic covariances a^2 I and b^2 I add d (a - b)^2
    assert frechet_distance_from_moments(mu1, 4 * eye, mu2, 9 * eye) == pytest.approx(expected + 3 * (2 - 3) ** 2, rel=1e-12)
    # from samples: a shifted copy has the same covariance, so FD = |shift|^2 exactly
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert frechet_distance(x, x + (mu2 - mu1)) == pytest.approx(expected, rel=1e-9)


def test_kid_zero_for_same_distribution_positive_when_shifted():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(400, 4, generator=g, dtype=torch.float64)
    b = torch.randn(400, 4, generator=g, dtype=torch.float64)
    same, same_std = kernel_inception_distance(a, b, num_subsets=20, subset_size=200, seed=0)
    shifted, _ = kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200, seed=0)
    assert abs(same) < 3 * same_std + 0.01
    assert shifted > 0.5 and shifted > 20 * abs(same)
    # seeded subsets: the same value twice
    assert kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200, seed=0)[0] == shifted


def test_kid_unbiased_formula_by_hand():
    a = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    b = torch.tensor([[2.0], [3.0]], dtype=torch.float64)
    k = lambda x, y: (x * y / 1 + 1) ** 3  # noqa: E731  (d = 1)
    kxx = 2 * k(0, 1) / 2
    kyy = 2 * k(2, 3) / 2
    kxy = (k(0, 2) + k(0, 3) + k(1, 2) + k(1, 3)) / 4
    value, std = kernel_inception_distance(a, b, num_subsets=3, subset_size=2)
    assert value == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------- spectra


@pytest.mark.parametrize("ky,kx,expected_bin", [(0, 3, 3), (4, 3, 5), (2, 0, 2)])
def test_power_spectrum_single_fourier_mode_lands_in_its_bin(ky, kx, expected_bin):
    ny, nx = 16, 32
    y, x = torch.meshgrid(torch.arange(ny, dtype=torch.float64), torch.arange(nx, dtype=torch.float64), indexing="ij")
    field = torch.cos(2 * math.pi * (ky * y / ny + kx * x / nx))
    k, power = radial_power_spectrum(field.view(1, 1, ny, nx))
    assert k.tolist() == list(range(1, 9))
    assert int(k[power[0].argmax()]) == expected_bin
    others = torch.cat([power[0, : expected_bin - 1], power[0, expected_bin:]])
    assert float(others.max()) < 1e-20
    # total power of cos is 1/2 (two modes of amplitude 1/2 each), spread over the bin's modes
    ky_f, kx_f = torch.meshgrid(torch.fft.fftfreq(ny, 1 / ny), torch.fft.fftfreq(nx, 1 / nx), indexing="ij")
    n_modes = int((torch.round(torch.sqrt(ky_f**2 + kx_f**2)) == expected_bin).sum())
    assert float(power[0, expected_bin - 1]) == pytest.approx(0.5 / n_modes, rel=1e-10)


def test_power_spectrum_error_zero_for_same_and_log_ratio_for_scaled():
    x = torch.randn(3, 2, 16, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert power_spectrum_error(x, x.clone())["spectrum_error"].abs().max() < 1e-12
    # amplitude x10 -> power x100 -> |log10 ratio| = 2 in every bin
    assert torch.allclose(power_spectrum_error(10 * x, x)["spectrum_error"], torch.full((2,), 2.0, dtype=torch.float64))


# ---------------------------------------------------------------------------------------- moments and conditional error


def test_mean_std_error_exact_on_constructed_tensors():
    real = torch.ones(4, 2, 4, 8, dtype=torch.float64)  # constant 1: mean 1, std 0
    real[:, 1] = torch.tensor([-1.0, 1.0, -1.0, 1.0]).view(4, 1, 1)  # channel 1: +-1, mean 0, std 1
    gen = real.clone()
    gen[:, 0] += 2.5  # mean off by 2.5
    gen[:, 1] *= 3.0  # std 3 instead of 1
    out = mean_std_error(gen, real, LAT)
    assert torch.allclose(out["mean_error"], torch.tensor([2.5, 0.0], dtype=torch.float64))
    assert torch.allclose(out["std_error"], torch.tensor([0.0, 2.0], dtype=torch.float64))


def test_channel_moments_are_area_weighted():
    frames = torch.zeros(1, 1, 2, 3, dtype=torch.float64)
    frames[0, 0, 1] = 1.0  # northern row 1, southern row 0
    lat = [0.0, 60.0]  # rows at the equator and 60N: the north edge is the pole (within one spacing), the south
    # edge half a spacing below the equator row (a grid that stops short of the south pole): bounds -30, 30, 90
    w0, w1 = 2 * math.sin(math.radians(30)), 1 - math.sin(math.radians(30))
    mean, std = channel_moments(frames, lat)
    expected = w1 / (w0 + w1)
    assert float(mean[0]) == pytest.approx(expected, rel=1e-12)
    assert float(std[0]) == pytest.approx(math.sqrt(expected * (1 - expected)), rel=1e-12)


def test_conditional_error_zero_when_generated_equals_real_and_normalised():
    real = torch.randn(3, 2, 4, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    scale = torch.tensor([2.0, 5.0])
    assert torch.allclose(conditional_error(real, real.clone(), LAT, scale), torch.zeros(2, dtype=torch.float64))
    err = conditional_error(real + torch.tensor([1.0, 10.0]).view(1, 2, 1, 1), real, LAT, scale)  # constant offsets
    assert torch.allclose(err, torch.tensor([0.5, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape|one generated"):
        conditional_error(real[:2], real, LAT, scale)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match=r"\(N, C, Y, X\)"):
        mean_std_error(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), LAT)
    bad = torch.zeros(2, 1, 4, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        power_spectrum_error(bad, torch.zeros(2, 1, 4, 8))
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(torch.zeros(3, 2), torch.zeros(3, 4))


# ---------------------------------------------------------------------------------------- EOF encoder


def _modes_frames(n=60, seed=5):
    """Frames made of two known spatial patterns with amplitudes of std 3 and 1, plus small noise."""
    g = torch.Generator().manual_seed(seed)
    lat = torch.tensor(LAT, dtype=torch.float64)
    lon = torch.arange(8, dtype=torch.float64) * 45
    p1 = torch.cos(torch.deg2rad(lat)).view(-1, 1).expand(4, 8)  # equator-pole gradient
    p2 = torch.sin(torch.deg2rad(lon)).view(1, -1).expand(4, 8)  # wave number 1
    a = torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0])
    frames = a[:, 0].view(-1, 1, 1, 1) * p1 + a[:, 1].view(-1, 1, 1, 1) * p2
    frames = frames.expand(n, 2, 4, 8).clone() + 0.01 * torch.randn(n, 2, 4, 8, generator=g, dtype=torch.float64)
    return frames * torch.tensor([10.0, 1.0]).view(1, 2, 1, 1) + torch.tensor([250.0, 1e5]).view(1, 2, 1, 1)


def test_eof_encoder_deterministic_and_save_load_identical(tmp_path):
    frames = _modes_frames()
    kw = dict(channel_mean=[250.0, 1e5], channel_std=[10.0, 1.0], lat_deg=LAT, num_components=4, channel_names=["T", "p"])
    enc = EOFEncoder.fit(frames, **kw)
    again = EOFEncoder.fit(frames.clone(), **kw)
    assert torch.equal(enc.components, again.components) and enc.feature_scale == again.feature_scale
    # two planted modes carry nearly all the variance; the first is the larger one
    ratio = enc.explained_variance_ratio
    assert float(ratio[:2].sum()) > 0.99 and float(ratio[0]) > float(ratio[1])
    # orthonormal EOFs
    assert torch.allclose(enc.components @ enc.components.T, torch.eye(4, dtype=torch.float64), atol=1e-10)
    feats = enc.encode(frames)
    assert feats.shape == (60, 4)
    assert torch.allclose(feats.var(dim=0) * enc.feature_scale**2, enc.explained_variance, rtol=1e-8)
    path = tmp_path / "eof_encoder.safetensors"
    enc.save(path)
    loaded = EOFEncoder.load(path)
    assert torch.equal(loaded.encode(frames), feats)
    assert loaded.channel_names == ["T", "p"] and loaded.num_fit_frames == 60
    with pytest.raises(ValueError, match="channels"):
        loaded.check_compatible(["T", "q"], LAT, (2, 4, 8))
    (tmp_path / "broken.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="could not read"):
        EOFEncoder.load(tmp_path / "broken.safetensors")


# ---------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny synthetic dataset and an untrained tiny pipeline saved as a run directory."""
    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.data.synth import synthesize_planets
    from astrobio_hf.diffusion.pipeline_climate_diffusion import ClimateDiffusionPipeline
    from astrobio_hf.diffusion.schedulers import make_scheduler
    from astrobio_hf.models.climate_diffusion import ClimateDiffusionConfig, ClimateDiffusionModel

    root = tmp_path_factory.mktemp("diffusion_eval")
    data_dir = root / "data"
    synthesize_planets(data_dir, n_planets=6, n_climate_steps=5, n_levels=2, n_lat=8, n_lon=16, seed=0)
    schema = DatasetSchema.from_dir(data_dir)
    torch.manual_seed(0)
    config = ClimateDiffusionConfig.from_schema(schema, level_indices=[0], block_out_channels=[8, 16], layers_per_block=1,
                                                norm_num_groups=4, attention_blocks=[False, False])
    pipe = ClimateDiffusionPipeline(denoiser=ClimateDiffusionModel(config).eval(),
                                    scheduler=make_scheduler("ddpm", prediction_type=config.prediction_type))
    run_dir = root / "run"
    pipe.save_pretrained(run_dir / "pipeline")
    (run_dir / "run_config.json").write_text(json.dumps({"data_dir": str(data_dir)}))
    return run_dir, data_dir, schema


SWEEP = dict(samplers=("ddim", "unipc"), steps=(2, 3), guidance_scales=(1.0, 2.0), samples_per_condition=2,
             num_eof_components=6, kid_subsets=5, seed=0)


def test_evaluate_run_writes_report_and_is_reproducible(tiny_run):
    from astrobio_hf.diffusion.evaluation import evaluate_run

    run_dir, _, _ = tiny_run
    rows = evaluate_run(run_dir, device="cpu", **SWEEP)
    out = run_dir / "eval"
    for name in ("sweep.md", "sweep.json", "conditional_error_vs_steps.png", "power_spectra.png", "maps.png"):
        assert (out / name).stat().st_size > 0, name
    assert (run_dir / "eof_encoder.safetensors").exists()
    table = json.loads((out / "sweep.json").read_text())
    assert len(table) == len(rows) == 2 * 2 * 2
    assert {(r["sampler"], r["num_inference_steps"], r["guidance_scale"]) for r in table} == {
        (s, n, g) for s in ("ddim", "unipc") for n in (2, 3) for g in (1.0, 2.0)
    }
    row = table[0]
    assert row["n_conditions"] == 2 and row["n_generated"] == 4  # 1 test planet x 2 epochs, 2 samples each
    variables = ["T", "p", "rho", "q", "u", "v"]
    for key in ["conditional_error", "frechet_distance", "kid", "spectrum_error", "seconds_per_sample"] + [
        f"{m}/{v}" for m in ("conditional_error", "mean_error", "std_error", "spectrum_error") for v in variables
    ]:
        assert math.isfinite(row[key]), key
    assert row["seconds_per_sample"] > 0 and row["non_finite_samples"] == 0
    # one level: ideal gas and mass continuity, real fields beside generated ones
    assert {k for k in row if k.startswith("physics/")} == {
        f"physics/{c}/{w}" for c in ("ideal_gas", "mass_continuity") for w in ("generated", "real")
    }
    assert row["physics/ideal_gas/real"] < 1e-6  # the synthetic atmospheres obey p = rho R T
    md = (out / "sweep.md").read_text()
    assert md.count("\n| ddim |") >= 4 and "EOF" in md and "![maps](maps.png)" in md
    # guidance changes the samples of a conditional model
    by = {(r["sampler"], r["num_inference_steps"], r["guidance_scale"]): r for r in table}
    assert by[("ddim", 3, 1.0)]["conditional_error"] != by[("ddim", 3, 2.0)]["conditional_error"]

    # same seed, second run (encoder reloaded from the run directory): identical numbers
    again = evaluate_run(run_dir, device="cpu", out_dir=run_dir / "eval2", **SWEEP)
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds_per_sample" and not k.startswith("_")}  # noqa: E731
    assert [strip(r) for r in again] == [strip(r) for r in rows]


def test_run_sweep_on_several_levels_adds_vertical_constraints(tiny_run):
    from astrobio_hf.diffusion.evaluation import run_sweep
    from astrobio_hf.diffusion.pipeline_climate_diffusion import ClimateDiffusionPipeline
    from astrobio_hf.diffusion.schedulers import make_scheduler
    from astrobio_hf.models.climate_diffusion import ClimateDiffusionConfig, ClimateDiffusionModel

    _, data_dir, schema = tiny_run
    torch.manual_seed(0)
    config = ClimateDiffusionConfig.from_schema(schema, level_indices=[0, 1], block_out_channels=[8, 16], layers_per_block=1,
                                                norm_num_groups=4, attention_blocks=[False, False])
    pipe = ClimateDiffusionPipeline(denoiser=ClimateDiffusionModel(config).eval(),
                                    scheduler=make_scheduler("ddpm", prediction_type=config.prediction_type))
    rows = run_sweep(pipe, data_dir, samplers=("dpmsolver++",), steps=(2,), guidance_scales=(1.0,), samples_per_condition=2,
                     num_eof_components=4, kid_subsets=3)
    (row,) = rows
    assert "conditional_error/T@0m" in row and "conditional_error/v@12000m" in row
    for c in ("hydrostatic", "ideal_gas", "lapse_rate", "mass_continuity"):
        assert math.isfinite(row[f"physics/{c}/generated"]) and math.isfinite(row[f"physics/{c}/real"]), c
    assert row["physics/hydrostatic/real"] < 1e-2
    assert pipe.scheduler.__class__.__name__ == "DDPMScheduler"  # the pipeline's own scheduler is restored


def test_evaluate_run_clear_errors(tmp_path):
    from astrobio_hf.diffusion.evaluation import evaluate_run

    with pytest.raises(ValueError, match="pipeline"):
        evaluate_run(tmp_path)
    (tmp_path / "pipeline").mkdir()
    with pytest.raises(ValueError, match="run_config.json"):
        evaluate_run(tmp_path)
