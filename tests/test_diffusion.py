"""Diffusion: scheduler factory, classifier-free guidance, loss helpers and the sampling pipeline (tiny, on CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)
from diffusers.guiders.guider_utils import rescale_noise_cfg

from astrobio_hf import ClimateDiffusionModel
from astrobio_hf.diffusion import (
    SAMPLERS,
    ClimateDiffusionPipeline,
    cfg_combine,
    condition_dropout_mask,
    diffusion_loss_target,
    make_scheduler,
    min_snr_weights,
    predicted_clean_sample,
)

try:
    from .test_modeling_climate_diffusion import tiny_config
except ImportError:  # tests/ is not a package
    from test_modeling_climate_diffusion import tiny_config


PLANET = torch.tensor([[1361.0, 400.0], [1200.0, 800.0]])
LABELS = torch.tensor([0, 2])


def _pipeline(prediction_type="v_prediction", zero_terminal_snr=True, levels=(0.0,), sampler="ddpm", seed=0):
    torch.manual_seed(seed)
    denoiser = ClimateDiffusionModel(tiny_config(levels=levels, prediction_type=prediction_type)).eval()
    scheduler = make_scheduler(sampler, prediction_type=prediction_type, zero_terminal_snr=zero_terminal_snr)
    pipe = ClimateDiffusionPipeline(denoiser=denoiser, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# Schedulers
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "cls", "algorithm"),
    [
        ("ddpm", DDPMScheduler, None),
        ("ddim", DDIMScheduler, None),
        ("dpmsolver++", DPMSolverMultistepScheduler, "dpmsolver++"),
        ("dpmsolver++-sde", DPMSolverMultistepScheduler, "sde-dpmsolver++"),
        ("unipc", UniPCMultistepScheduler, None),
    ],
)
def test_make_scheduler_builds_the_diffusers_class_from_one_config(name, cls, algorithm):
    scheduler = make_scheduler(name, prediction_type="v_prediction", zero_terminal_snr=True, thresholding=True)
    assert type(scheduler) is cls
    config = scheduler.config
    assert config.prediction_type == "v_prediction" and config.rescale_betas_zero_snr
    assert config.timestep_spacing == "trailing" and config.thresholding
    if algorithm is not None:
        assert config.algorithm_type == algorithm
    scheduler.set_timesteps(4)
    assert int(scheduler.timesteps[0]) == 999  # sampling starts from the pure-noise step
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpmsolver++", "dpmsolver++-sde", "unipc"}


def test_zero_terminal_snr_gives_pure_noise_at_the_last_step():
    scheduler = make_scheduler("ddpm", prediction_type="v_prediction", zero_terminal_snr=True)
    assert float(scheduler.alphas_cumprod[-1]) == 0.0
    assert float(make_scheduler("ddpm", prediction_type="epsilon").alphas_cumprod[-1]) > 0.0


def test_zero_terminal_snr_with_epsilon_is_refused():
    with pytest.raises(ValueError, match="epsilon") as error:
        make_scheduler("ddim", prediction_type="epsilon", zero_terminal_snr=True)
    assert "divides by zero" in str(error.value) and "v_prediction" in str(error.value)


def test_make_scheduler_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="unipc"):
        make_scheduler("euler", prediction_type="epsilon")
    with pytest.raises(ValueError, match="solver_order"):
        make_scheduler("ddim", prediction_type="epsilon", solver_order=3)
    with pytest.raises(ValueError, match="prediction_type"):
        make_scheduler("ddim", prediction_type="noise")
    assert make_scheduler("unipc", prediction_type="sample", solver_order=3).config.solver_order == 3


# ---------------------------------------------------------------------------------------------------------------
# Guidance
# ---------------------------------------------------------------------------------------------------------------
def test_condition_dropout_mask_drops_exactly_the_expected_examples():
    mask = condition_dropout_mask(8, 0.5, generator=_generator(3))
    expected = torch.rand(8, generator=_generator(3)) >= 0.5  # one uniform draw per example
    assert mask.dtype == torch.bool and mask.shape == (8,)
    assert torch.equal(mask, expected)
    assert mask.tolist() == [False, False, False, False, False, False, True, True]  # examples 0-5 dropped, 6-7 kept
    assert mask.any() and not mask.all()  # this seed keeps some examples and drops others
    # the same seed gives the same mask; p = 0 keeps all, p = 1 drops all
    assert torch.equal(condition_dropout_mask(8, 0.5, generator=_generator(3)), mask)
    assert condition_dropout_mask(8, 0.0, generator=_generator(3)).all()
    assert not condition_dropout_mask(8, 1.0, generator=_generator(3)).any()


def test_condition_dropout_is_per_example_never_per_batch():
    # mixed batches are the rule with a per-example draw (a per-batch coin would give none)
    masks = torch.stack([condition_dropout_mask(16, 0.3, generator=_generator(seed)) for seed in range(50)])
    mixed = (masks.any(1) & ~masks.all(1)).float().mean()
    assert mixed > 0.9
    assert abs(1 - masks.float().mean() - 0.3) < 0.05  # dropped fraction close to p
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        condition_dropout_mask(4, 1.5)


@pytest.mark.parametrize("rescale", [0.0, 0.7, 1.0])
def test_cfg_combine_matches_diffusers(rescale):
    generator = _generator(0)
    cond, uncond = torch.randn(2, 3, 8, 16, generator=generator), torch.randn(2, 3, 8, 16, generator=generator)
    guided = uncond + 3.0 * (cond - uncond)
    expected = rescale_noise_cfg(guided, cond, guidance_rescale=rescale) if rescale else guided
    torch.testing.assert_close(cfg_combine(cond, uncond, 3.0, rescale=rescale), expected)
    torch.testing.assert_close(cfg_combine(cond, uncond, 1.0), cond)


def test_fused_guidance_forward_equals_two_separate_forwards():
    """The pipeline runs the conditional and unconditional passes as one forward of 2B per step; the same loop with
    two separate forwards (condition kept / dropped) combined by hand gives the same samples."""
    pipe = _pipeline(sampler="ddim")
    denoiser, scale, rescale, steps = pipe.denoiser, 2.5, 0.5, 3
    batch_sizes = []
    handle = denoiser.register_forward_hook(lambda module, args, kwargs, out: batch_sizes.append(kwargs["sample"].shape[0]), with_kwargs=True)
    fused = pipe(PLANET, LABELS, num_inference_steps=steps, guidance_scale=scale, guidance_rescale=rescale,
                 generator=_generator(1), output_type="normalized").samples
    handle.remove()
    assert batch_sizes == [4] * steps  # one batched forward (2B) per step

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    sample = torch.randn((2, *denoiser.config.sample_shape), generator=_generator(1))
    with torch.no_grad():
        for t in scheduler.timesteps:
            cond = denoiser(sample=sample, timestep=t, planet_params=PLANET, class_labels=LABELS).sample
            uncond = denoiser(sample=sample, timestep=t, planet_params=PLANET, class_labels=LABELS,
                              condition_mask=torch.zeros(2, dtype=torch.bool)).sample
            guided = uncond + scale * (cond - uncond)
            guided = rescale_noise_cfg(guided, cond, guidance_rescale=rescale)
            sample = scheduler.step(guided, t, sample).prev_sample
    torch.testing.assert_close(fused, sample, atol=1e-5, rtol=1e-5)

    # guidance_scale = 1: the conditional model alone, one forward of B per step
    batch_sizes.clear()
    handle = denoiser.register_forward_hook(lambda module, args, kwargs, out: batch_sizes.append(kwargs["sample"].shape[0]), with_kwargs=True)
    pipe(PLANET, LABELS, num_inference_steps=steps, generator=_generator(1))
    handle.remove()
    assert batch_sizes == [2] * steps


# ---------------------------------------------------------------------------------------------------------------
# Loss helpers
# ---------------------------------------------------------------------------------------------------------------
def _training_tensors(prediction_type, zero_terminal_snr):
    scheduler = make_scheduler("ddpm", prediction_type=prediction_type, zero_terminal_snr=zero_terminal_snr)
    generator = _generator(0)
    clean, noise = torch.randn(4, 3, 8, 16, generator=generator), torch.randn(4, 3, 8, 16, generator=generator)
    timesteps = torch.tensor([0, 250, 800, 999])
    return scheduler, clean, noise, timesteps


def test_v_target_equals_scheduler_get_velocity():
    scheduler, clean, noise, timesteps = _training_tensors("v_prediction", True)
    target = diffusion_loss_target(scheduler, clean, noise, timesteps)
    torch.testing.assert_close(target, scheduler.get_velocity(clean, noise, timesteps))
    alpha_bar = scheduler.alphas_cumprod[timesteps].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(target, alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * clean)
    torch.testing.assert_close(target[-1], -clean[-1])  # zero terminal SNR: v = -x0 at the last step


def test_epsilon_and_sample_targets():
    scheduler, clean, noise, timesteps = _training_tensors("epsilon", False)
    assert diffusion_loss_target(scheduler, clean, noise, timesteps) is noise
    scheduler, clean, noise, timesteps = _training_tensors("sample", True)
    assert diffusion_loss_target(scheduler, clean, noise, timesteps) is clean


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_min_snr_weights_are_finite_at_zero_snr(prediction_type):
    scheduler, _, _, timesteps = _training_tensors("v_prediction", True)  # alpha_bar = 0 at t = 999
    gamma = 5.0
    weights = min_snr_weights(scheduler, timesteps, gamma=gamma, prediction_type=prediction_type)
    assert weights.shape == (4,) and torch.isfinite(weights).all()
    alpha_bar = scheduler.alphas_cumprod[timesteps[:-1]].double()
    snr = alpha_bar / (1 - alpha_bar)
    expected = {
        "epsilon": torch.clamp(snr, max=gamma) / snr,
        "v_prediction": torch.clamp(snr, max=gamma) / (snr + 1),
        "sample": torch.clamp(snr, max=gamma),
    }[prediction_type]
    torch.testing.assert_close(weights[:-1].double(), expected, rtol=1e-5, atol=1e-7)
    assert float(weights[-1]) == {"epsilon": 1.0, "v_prediction": 0.0, "sample": 0.0}[prediction_type]


@pytest.mark.parametrize(("prediction_type", "zero_snr"), [("epsilon", False), ("sample", True), ("v_prediction", True)])
def test_predicted_clean_sample_inverts_the_target_with_gradient(prediction_type, zero_snr):
    scheduler, clean, noise, timesteps = _training_tensors(prediction_type, zero_snr)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    output = diffusion_loss_target(scheduler, clean, noise, timesteps).clone().requires_grad_(True)
    x0 = predicted_clean_sample(scheduler, noisy, output, timesteps)
    torch.testing.assert_close(x0, clean, atol=1e-3, rtol=1e-3)
    x0.pow(2).sum().backward()
    assert output.grad is not None and torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [(0.0,), (0.0, 2000.0)])
def test_pipeline_save_load_round_trip_gives_identical_samples(tmp_path, monkeypatch, levels):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = _pipeline(sampler="dpmsolver++-sde", levels=levels)
    kwargs = dict(num_inference_steps=4, guidance_scale=2.0, guidance_rescale=0.3)
    before = pipe(PLANET, LABELS, generator=_generator(7), **kwargs).samples
    pipe.save_pretrained(tmp_path)

    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["denoiser"] == ["astrobio_hf.models.climate_diffusion.modeling_climate_diffusion", "ClimateDiffusionModel"]
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    assert (tmp_path / "denoiser" / "config.json").is_file() and (tmp_path / "denoiser" / "model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.py"))

    loaded = ClimateDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.denoiser) is ClimateDiffusionModel and type(loaded.scheduler) is DPMSolverMultistepScheduler
    assert loaded.scheduler.config.algorithm_type == "sde-dpmsolver++"
    after = loaded(PLANET, LABELS, generator=_generator(7), **kwargs).samples
    assert before.shape == (2, *pipe.denoiser.config.sample_shape)
    assert torch.equal(before, after)


@pytest.mark.parametrize(("prediction_type", "zero_snr"), [("epsilon", False), ("sample", True), ("v_prediction", True)])
def test_every_scheduler_samples_from_the_same_model(prediction_type, zero_snr):
    pipe = _pipeline(prediction_type=prediction_type, zero_terminal_snr=zero_snr)
    config = pipe.denoiser.config
    mean = torch.tensor(config.norm_mean).reshape(1, 3, 1, 1)
    std = torch.tensor(config.norm_std).reshape(1, 3, 1, 1)
    swaps = [
        (DDPMScheduler, {}),
        (DDIMScheduler, {}),
        (DPMSolverMultistepScheduler, {}),
        (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
        (UniPCMultistepScheduler, {}),
    ]
    for cls, extra in swaps:
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
        assert pipe.scheduler.config.prediction_type == prediction_type
        physical = pipe(PLANET, LABELS, num_inference_steps=4, guidance_scale=1.5, generator=_generator(2)).samples
        normalized = pipe(PLANET, LABELS, num_inference_steps=4, guidance_scale=1.5, generator=_generator(2),
                          output_type="normalized").samples
        name = f"{cls.__name__}{extra}"
        assert physical.shape == (2, 3, 8, 16), name
        assert torch.isfinite(physical).all(), name
        # physical units: the normalised sample mapped through the variables' statistics
        torch.testing.assert_close(physical, normalized * std + mean, msg=lambda m, n=name: f"{n}: {m}")
        if prediction_type != "epsilon":  # x0 from v or x0 itself stays bounded even for an untrained network
            assert (normalized.abs() < 100).all(), name


def test_thresholding_bounds_the_predicted_clean_sample():
    pipe = _pipeline(sampler="ddim")
    pipe.scheduler = make_scheduler("ddim", prediction_type="v_prediction", zero_terminal_snr=True, thresholding=True,
                                    sample_max_value=1.0, dynamic_thresholding_ratio=0.5)
    samples = pipe(PLANET, LABELS, num_inference_steps=3, generator=_generator(0), output_type="normalized").samples
    assert torch.isfinite(samples).all() and samples.abs().max() <= 1.0 + 1e-5


def test_pipeline_errors():
    pipe = _pipeline()
    pipe.scheduler = make_scheduler("ddim", prediction_type="epsilon")
    with pytest.raises(ValueError, match="prediction_type='epsilon'.*'v_prediction'"):
        pipe(PLANET, LABELS, num_inference_steps=2)
    pipe = _pipeline()
    with pytest.raises(ValueError, match=r"planet_params: expected \(B, P\) with B=2, P=2"):
        pipe(PLANET[:, :1], LABELS, num_inference_steps=2)
    with pytest.raises(ValueError, match="output_type"):
        pipe(PLANET, LABELS, num_inference_steps=2, output_type="pil")
    with pytest.raises(ValueError, match="class_labels"):
        pipe(PLANET, None, num_inference_steps=2)
