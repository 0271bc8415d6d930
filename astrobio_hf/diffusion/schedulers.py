"""Scheduler factory: every scheduler is a diffusers class built from one common training configuration.

Training adds noise with DDPM; sampling may use DDPM, DDIM, DPM-Solver++ (multistep, ODE or SDE) or UniPC. They
are all built with `from_config` of the same DDPM configuration (noise schedule, prediction type, zero terminal SNR,
thresholding), so a model trained with one samples with any of the others, and
`OtherScheduler.from_config(pipe.scheduler.config)` swaps one in.
"""

from __future__ import annotations

import inspect

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    SchedulerMixin,
    UniPCMultistepScheduler,
)


SAMPLERS = ("ddpm", "ddim", "dpmsolver++", "dpmsolver++-sde", "unipc")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

# name -> (class, its own settings on top of the common configuration)
_SAMPLER_CLASSES = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmsolver++-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {"solver_order": 2}),
}

# Largest |x0| (normalised units, i.e. standard deviations) dynamic thresholding may keep. diffusers' default of
# 1.0 is meant for images in [-1, 1]; normalised climate fields reach several standard deviations.
DEFAULT_SAMPLE_MAX_VALUE = 5.0


def make_scheduler(
    name: str,
    *,
    prediction_type: str,
    zero_terminal_snr: bool = False,
    num_train_timesteps: int = 1000,
    beta_schedule: str = "linear",
    thresholding: bool = False,
    **overrides,
) -> SchedulerMixin:
    """A diffusers scheduler `name` (one of `SAMPLERS`) from the common training configuration.

    Args:
        name: `"ddpm"` (training noise, ancestral sampling), `"ddim"`, `"dpmsolver++"` (multistep, 2nd order),
            `"dpmsolver++-sde"` (`algorithm_type="sde-dpmsolver++"`) or `"unipc"`.
        prediction_type: what the denoiser predicts: `"epsilon"`, `"sample"` or `"v_prediction"`.
        zero_terminal_snr: rescale the betas so that the last timestep is pure noise (`rescale_betas_zero_snr`,
            Lin et al. 2023). Refused with `"epsilon"`. Sampling always starts from the last timestep
            (`timestep_spacing="trailing"`, with or without zero terminal SNR; override it in `overrides`).
        num_train_timesteps, beta_schedule: the noise schedule: `"linear"` (DDPM's, diffusers' default),
            `"scaled_linear"` or `"squaredcos_cap_v2"` (cosine, Nichol & Dhariwal 2021). The cosine schedule ends at
            alpha_bar_T = 2.4e-9, nearly zero SNR: with `"epsilon"` the first sampling step then multiplies the
            network's error by 1/sqrt(alpha_bar_T) = 2e4 (prefer `"v_prediction"` with it).
        thresholding: dynamic thresholding of the predicted clean sample (Saharia et al. 2022), the schedulers' own
            option; `sample_max_value` defaults to `DEFAULT_SAMPLE_MAX_VALUE` (override it in `overrides`).
        overrides: any other argument of the scheduler class (e.g. `solver_order=3`, `timestep_spacing="leading"`,
            `sample_max_value=3.0`, `dynamic_thresholding_ratio=0.99`); an unknown one is an error.
    """
    if name not in _SAMPLER_CLASSES:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {list(SAMPLERS)}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {prediction_type!r}")
    if zero_terminal_snr and prediction_type == "epsilon":
        raise ValueError(
            "zero_terminal_snr=True cannot be used with prediction_type='epsilon': at the last timestep alpha_bar_T = 0, "
            "and the clean sample recovered from a noise prediction, x0 = (x_t - sqrt(1 - alpha_bar) * eps) / "
            "sqrt(alpha_bar), divides by zero (the noise carries no information about x0 there). Use "
            "prediction_type='v_prediction' or 'sample', or zero_terminal_snr=False."
        )
    cls, own = _SAMPLER_CLASSES[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"{cls.__name__} has no argument(s) {unknown}; its arguments are {sorted(accepted)}")

    # The common training configuration: the noise schedule every sampler shares with the DDPM used in training
    common = dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,  # normalised fields are not images in [-1, 1]
        thresholding=thresholding,
        sample_max_value=DEFAULT_SAMPLE_MAX_VALUE,
        rescale_betas_zero_snr=zero_terminal_snr,
        timestep_spacing="trailing",  # sampling starts at the last training timestep (Lin et al. 2023)
    )
    training = DDPMScheduler(**common)
    return cls.from_config(training.config, **{**own, **overrides})


__all__ = ["DEFAULT_SAMPLE_MAX_VALUE", "PREDICTION_TYPES", "SAMPLERS", "make_scheduler"]
