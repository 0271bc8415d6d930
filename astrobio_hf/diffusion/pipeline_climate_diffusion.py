"""`ClimateDiffusionPipeline`: samples climate fields for given planet parameters with a trained denoiser.

A `diffusers.DiffusionPipeline` with two components: `denoiser`, a transformers `ClimateDiffusionModel`, and
`scheduler`, any diffusers scheduler of `astrobio_hf.diffusion.schedulers` (swap one in with
`pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config)`).

Saving writes `model_index.json`, `scheduler/scheduler_config.json` and `denoiser/` (`config.json` +
`model.safetensors`, a transformers model). `model_index.json` records the denoiser as
`["astrobio_hf.models.climate_diffusion.modeling_climate_diffusion", "ClimateDiffusionModel"]`: diffusers loads a
component of a library it does not know from `sys.modules` only (it never imports a module a repository names),
and this module imports that one, so `ClimateDiffusionPipeline.from_pretrained(dir)` works offline, without
`trust_remote_code` or `custom_pipeline`; the denoiser is then read with `PreTrainedModel.from_pretrained`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..models.climate_diffusion.modeling_climate_diffusion import ClimateDiffusionModel
from .guidance import cfg_combine


OUTPUT_TYPES = ("physical", "normalized")


@dataclass
class ClimateDiffusionPipelineOutput(BaseOutput):
    """
    Output of [`ClimateDiffusionPipeline`].

    Args:
        samples (`torch.FloatTensor` of shape `(B, V, Y, X)` or `(B, V, Z, Y, X)`):
            Generated fields, physical units (`output_type="physical"`) or normalised units (`"normalized"`).
    """

    samples: torch.Tensor


class ClimateDiffusionPipeline(DiffusionPipeline):
    r"""
    Sampling of climate fields conditioned on planet parameters (and a class label when the denoiser has labels).

    Args:
        denoiser ([`ClimateDiffusionModel`]): the trained denoiser.
        scheduler ([`SchedulerMixin`]): a diffusers scheduler whose `prediction_type` is the denoiser's.
    """

    model_cpu_offload_seq = "denoiser"

    def __init__(self, denoiser: ClimateDiffusionModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        planet_params: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "physical",
        batch_size: int | None = None,
        eta: float = 0.0,
        return_dict: bool = True,
    ) -> ClimateDiffusionPipelineOutput | tuple:
        """
        Args:
            planet_params (`torch.FloatTensor` of shape `(B, P)`): physical planet parameters of each sample, in
                the order of `denoiser.config.planet_param_names`; `None` for a model without planet parameters
                (then give `batch_size`).
            class_labels (`torch.LongTensor` of shape `(B,)`): class label of each sample; required when the
                denoiser has labels.
            num_inference_steps (`int`, defaults to 50): denoising steps.
            guidance_scale (`float`, defaults to 1.0): classifier-free guidance scale `w` of
                `uncond + w * (cond - uncond)`; 1 samples the conditional model alone (one forward per step), any
                other value runs the conditional and unconditional passes in one batched forward of 2B.
            guidance_rescale (`float`, defaults to 0.0): CFG-rescale factor in [0, 1] (Lin et al. 2023).
            generator (`torch.Generator` or a list of B of them, *optional*): for the initial noise and the
                stochastic schedulers' steps.
            output_type (`str`, defaults to `"physical"`): `"physical"` (denormalised) or `"normalized"`.
            batch_size (`int`, *optional*): B, when no `planet_params` give it; must agree with them otherwise.
            eta (`float`, defaults to 0.0): DDIM's eta (ignored by schedulers without it).
            return_dict (`bool`, defaults to True): return a `ClimateDiffusionPipelineOutput` or a tuple.
        """
        denoiser, scheduler = self.denoiser, self.scheduler
        config = denoiser.config
        device, dtype = self._execution_device, denoiser.dtype

        # 1. Check the arguments
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}")
        if scheduler.config.prediction_type != config.prediction_type:
            raise ValueError(
                f"the scheduler predicts prediction_type={scheduler.config.prediction_type!r} but the denoiser was "
                f"trained with prediction_type={config.prediction_type!r}; build the scheduler with the denoiser's"
            )
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        B = self._batch_size(planet_params, batch_size)
        do_guidance = guidance_scale != 1.0
        if do_guidance and not config.has_condition:
            raise ValueError(f"guidance_scale={guidance_scale} needs a conditional denoiser; this one has no condition")
        if planet_params is not None:
            planet_params = planet_params.to(device=device, dtype=torch.float32)
        if class_labels is not None:
            class_labels = class_labels.to(device)

        # 2. Condition: for guidance, the conditional and unconditional halves of one batch of 2B
        condition_mask = None
        if do_guidance:
            condition_mask = torch.cat([torch.ones(B, dtype=torch.bool), torch.zeros(B, dtype=torch.bool)]).to(device)
            planet_params = None if planet_params is None else torch.cat([planet_params, planet_params])
            class_labels = None if class_labels is None else torch.cat([class_labels, class_labels])

        # 3. Initial noise and timesteps
        sample = randn_tensor((B, *config.sample_shape), generator=generator, device=device, dtype=dtype)
        sample = sample * scheduler.init_noise_sigma
        scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = self._step_kwargs(generator, eta)

        # 4. Denoising loop
        for t in self.progress_bar(scheduler.timesteps):
            model_input = torch.cat([sample, sample]) if do_guidance else sample  # (2B or B, ...)
            model_input = scheduler.scale_model_input(model_input, t)
            prediction = denoiser(
                sample=model_input,
                timestep=t,
                planet_params=planet_params,
                class_labels=class_labels,
                condition_mask=condition_mask,
            ).sample
            if do_guidance:
                cond, uncond = prediction.chunk(2)
                prediction = cfg_combine(cond, uncond, guidance_scale, rescale=guidance_rescale)
            sample = scheduler.step(prediction, t, sample, **step_kwargs).prev_sample

        # 5. Output
        samples = denoiser.denormalize(sample) if output_type == "physical" else sample
        self.maybe_free_model_hooks()
        if not return_dict:
            return (samples,)
        return ClimateDiffusionPipelineOutput(samples=samples)

    def _batch_size(self, planet_params, batch_size) -> int:
        config = self.denoiser.config
        if planet_params is not None:
            if not isinstance(planet_params, torch.Tensor) or planet_params.ndim != 2:
                found = tuple(planet_params.shape) if isinstance(planet_params, torch.Tensor) else planet_params
                raise ValueError(
                    f"planet_params: expected (B, P) with P={config.num_planet_params} {config.planet_param_names}, "
                    f"got {found}"
                )
            if batch_size is not None and batch_size != planet_params.shape[0]:
                raise ValueError(f"batch_size={batch_size} but planet_params has B={planet_params.shape[0]}")
            return planet_params.shape[0]
        if config.num_planet_params > 0:
            raise ValueError(
                f"planet_params: expected (B, P) with P={config.num_planet_params} {config.planet_param_names}, got None"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer (no planet_params give it), got {batch_size!r}")
        return batch_size

    def _step_kwargs(self, generator, eta: float) -> dict:
        """The keyword arguments `scheduler.step` accepts: the generator (stochastic schedulers) and DDIM's eta."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "generator" in accepted:
            kwargs["generator"] = generator
        if "eta" in accepted:
            kwargs["eta"] = eta
        return kwargs


__all__ = ["ClimateDiffusionPipeline", "ClimateDiffusionPipelineOutput", "OUTPUT_TYPES"]
