"""Loss helpers of diffusion training: the regression target, min-SNR-gamma weights, the predicted clean sample,
and `diffusion_step`, the family's training loss on one batch (the recipe's loop and its validation loss call it).

All read the noise schedule (`alphas_cumprod`) and `prediction_type` of the diffusers scheduler used for training
(a `DDPMScheduler` from `make_scheduler("ddpm", ...)`), so there is one source of truth for both.
"""

from __future__ import annotations

import torch

from .guidance import condition_dropout_mask
from .schedulers import PREDICTION_TYPES


def _prediction_type(scheduler, prediction_type: str | None) -> str:
    kind = scheduler.config.prediction_type if prediction_type is None else prediction_type
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {kind!r}")
    return kind


def _alpha_bar(scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """alpha_bar at `timesteps` (N,), shaped (N, 1, ..., 1) to broadcast against `like` (N, ...)."""
    if not isinstance(timesteps, torch.Tensor) or timesteps.ndim != 1 or timesteps.shape[0] != like.shape[0]:
        found = tuple(timesteps.shape) if isinstance(timesteps, torch.Tensor) else type(timesteps).__name__
        raise ValueError(f"timesteps: expected a tensor of shape (B,) = ({like.shape[0]},), got {found}")
    alphas_cumprod = scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float32)
    alpha_bar = alphas_cumprod[timesteps.to(like.device).long()]
    return alpha_bar.reshape(-1, *([1] * (like.ndim - 1)))


def compute_snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at `timesteps` (N,); 0 at a zero-terminal-SNR last step."""
    alphas_cumprod = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)
    alpha_bar = alphas_cumprod[timesteps.long()]
    return alpha_bar / (1.0 - alpha_bar)


def diffusion_loss_target(
    scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the denoiser is trained to predict, after `scheduler.config.prediction_type`:
    the noise (`"epsilon"`), the clean sample (`"sample"`) or the velocity `scheduler.get_velocity(clean, noise,
    timesteps)` = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * clean (`"v_prediction"`)."""
    if clean.shape != noise.shape:
        raise ValueError(f"clean and noise: expected the same shape, got {tuple(clean.shape)} and {tuple(noise.shape)}")
    kind = _prediction_type(scheduler, None)
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return clean
    if not hasattr(scheduler, "get_velocity"):
        raise ValueError(
            f"prediction_type='v_prediction' needs scheduler.get_velocity, which {type(scheduler).__name__} lacks; "
            "train with the DDPM scheduler (make_scheduler('ddpm', ...))"
        )
    return scheduler.get_velocity(clean, noise, timesteps)


def min_snr_weights(
    scheduler, timesteps: torch.Tensor, gamma: float = 5.0, prediction_type: str | None = None
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) of each example (N,), for the loss on the model's own target.

    With snr = alpha_bar / (1 - alpha_bar): `"epsilon"` min(snr, gamma) / snr, `"v_prediction"`
    min(snr, gamma) / (snr + 1), `"sample"` min(snr, gamma). Finite at snr = 0 (zero terminal SNR): the epsilon
    weight there is its limit 1, the others are 0. `prediction_type` defaults to the scheduler's.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
        raise ValueError(f"gamma (min-SNR) must be a positive number, got {gamma!r}")
    kind = _prediction_type(scheduler, prediction_type)
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    if kind == "epsilon":
        return torch.clamp(gamma / snr, max=1.0)  # = min(snr, gamma) / snr; gamma / 0 = inf -> 1
    if kind == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped


def predicted_clean_sample(
    scheduler, noisy_sample: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The clean sample x0 implied by the model output at `timesteps` (N,), with its gradient kept (for a loss on x0,
    e.g. a physics term on `denoiser.denormalize(x0)`).

    `"epsilon"`: (x_t - sqrt(1 - alpha_bar) * eps) / sqrt(alpha_bar); `"sample"`: the output itself;
    `"v_prediction"`: sqrt(alpha_bar) * x_t - sqrt(1 - alpha_bar) * v.
    """
    if noisy_sample.shape != model_output.shape:
        raise ValueError(
            f"noisy_sample and model_output: expected the same shape, got {tuple(noisy_sample.shape)} and "
            f"{tuple(model_output.shape)}"
        )
    kind = _prediction_type(scheduler, None)
    if kind == "sample":
        return model_output
    alpha_bar = _alpha_bar(scheduler, timesteps, noisy_sample).to(model_output.dtype)
    if kind == "v_prediction":
        return alpha_bar.sqrt() * noisy_sample - (1.0 - alpha_bar).sqrt() * model_output
    if bool((alpha_bar == 0).any()):
        raise ValueError(
            "prediction_type='epsilon' cannot give x0 where alpha_bar = 0 (zero terminal SNR): "
            "x0 = (x_t - sqrt(1 - alpha_bar) * eps) / sqrt(alpha_bar) divides by zero"
        )
    return (noisy_sample - (1.0 - alpha_bar).sqrt() * model_output) / alpha_bar.sqrt()


def diffusion_step(model, noise_scheduler, batch, device, args, physics=None, generator=None):
    """Noise a batch of clean frames at random timesteps and return (loss, model output, physics terms).

    The target follows the prediction type; min-SNR-gamma weights the per-example loss; the condition is
    replaced by the learned null condition for a random subset of examples (classifier-free guidance);
    the optional physics term acts on the predicted clean sample, in physical units, with its gradient.
    `args`: the diffusion recipe's DiffusionArguments (prediction_type, min_snr_gamma, condition_dropout,
    use_class_labels are read).
    """
    unwrapped = model.module if hasattr(model, "module") else model
    clean = unwrapped.normalize(batch["fields"].to(device))  # (N, C..., Y, X), normalised
    n = clean.shape[0]
    noise = torch.randn(clean.shape, generator=generator, device=device, dtype=clean.dtype)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (n,), device=device, generator=generator)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    target = diffusion_loss_target(noise_scheduler, clean, noise, timesteps)
    weights = min_snr_weights(noise_scheduler, timesteps, args.min_snr_gamma, args.prediction_type) if args.min_snr_gamma > 0 else None
    keep = condition_dropout_mask(n, args.condition_dropout, generator=generator, device=device)
    out = model(
        sample=noisy,
        timestep=timesteps,
        planet_params=batch["planet_params"].to(device),
        class_labels=batch["class_labels"].to(device) if args.use_class_labels else None,
        condition_mask=keep,
        target=target,
        loss_weights=weights,
    )
    loss, terms = out.loss, {}
    if physics is not None:
        from astrobio_hf.data.frames import CONSTANT_KEYS  # here: importing astrobio_hf.diffusion imports no data/

        clean_pred = predicted_clean_sample(noise_scheduler, noisy, out.sample, timesteps)
        fields = unwrapped.denormalize(clean_pred)
        cube = fields.reshape(n, fields.shape[1], 1, 1, -1, *fields.shape[-2:])  # (N, V, 1, 1, Z, Y, X)
        physics_loss, terms = physics(cube, **{k: batch[k].to(device) for k in CONSTANT_KEYS})
        loss = loss + physics_loss
    return loss, out, terms


__all__ = ["compute_snr", "diffusion_loss_target", "diffusion_step", "min_snr_weights", "predicted_clean_sample"]
