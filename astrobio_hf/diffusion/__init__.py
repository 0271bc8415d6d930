"""Diffusion: the scheduler factory, classifier-free guidance, loss helpers and the sampling pipeline.

Schedulers come from diffusers (never re-implemented here); the denoiser is the `climate_diffusion` model family.
"""

from .guidance import cfg_combine, condition_dropout_mask
from .pipeline_climate_diffusion import ClimateDiffusionPipeline, ClimateDiffusionPipelineOutput
from .schedulers import SAMPLERS, make_scheduler
from .training import compute_snr, diffusion_loss_target, diffusion_step, min_snr_weights, predicted_clean_sample


__all__ = [
    "SAMPLERS",
    "ClimateDiffusionPipeline",
    "ClimateDiffusionPipelineOutput",
    "cfg_combine",
    "compute_snr",
    "condition_dropout_mask",
    "diffusion_loss_target",
    "diffusion_step",
    "make_scheduler",
    "min_snr_weights",
    "predicted_clean_sample",
]
