"""Evaluation harness of a trained ``ClimateDiffusionPipeline``: sampler x steps x guidance sweep.

``evaluate_run(run_dir)`` (what ``astrobio-hf eval diffusion RUN_DIR`` runs) loads
``RUN_DIR/pipeline`` and the dataset recorded in ``RUN_DIR/run_config.json``, sweeps the samplers,
numbers of inference steps and guidance scales with fixed seeds, and writes ``RUN_DIR/eval/``
(``sweep.md``, ``sweep.json`` and plots). Two sweeps with the same arguments give identical numbers
(on one machine and device).

What is compared. The held-out split (default ``"test"``: planets never seen in training) is read as
single climate frames; frames are grouped by **condition** = (planet, geological epoch), each condition
holding one real frame per climate step. For every condition the pipeline generates
``samples_per_condition`` frames with that planet's parameters and epoch label. Metrics (see
:mod:`astrobio_hf.diffusion.features` for the formulas):

- ``conditional_error``: latitude-weighted RMSE between the mean generated field and the mean real field
  of the same planet/epoch, per channel, divided by the model's normalisation std (so channels average);
  the main number: does the model produce the climate of *this* planet? Reference: the same error of
  the training-set mean field (a generator that ignores the condition).
- ``frechet_distance`` and ``kid`` between all generated and all real held-out frames, on the
  coefficients of the leading EOFs of the training frames (:class:`~astrobio_hf.diffusion.features.EOFEncoder`;
  why this encoder: see that module). Reference: the same distances between the even and odd climate
  steps of the real frames (the sampling floor of the estimators at that set size).
- ``mean_error`` / ``std_error``: |difference| of the area-weighted mean and standard deviation per
  channel, in physical units (and, for the summary, divided by the normalisation std).
- ``spectrum_error``: mean over radial wavenumbers of |log10 P_gen - log10 P_real| per channel.
- ``physics/<constraint>/generated`` beside ``physics/<constraint>/real``: the mean dimensionless
  residual of :class:`~astrobio_hf.physics.constraints.PhysicsConstraints` on generated and on real
  frames (ideal gas and horizontal mass continuity on one level; hydrostatic balance and lapse rate too
  when several levels are generated).
- ``seconds_per_sample``: wall time of the pipeline calls (CUDA synchronised) divided by the samples.

Seeds: the noise of batch ``b`` comes from ``torch.Generator("cpu").manual_seed(seed + b)`` for every
setting (common random numbers: settings differ by the sampler, not by the noise draw), and KID's
subsets from ``seed``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .features import (
    EOFEncoder,
    conditional_error,
    frechet_distance,
    kernel_inception_distance,
    mean_std_error,
    power_spectrum_error,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SAMPLERS",
    "ENCODER_FILE",
    "HeldOutFrames",
    "best_row",
    "channel_names_for",
    "evaluate_run",
    "level_indices_for",
    "fit_or_load_encoder",
    "load_frames",
    "run_sweep",
    "write_sweep_report",
]

DEFAULT_SAMPLERS = ("ddim", "dpmsolver++", "unipc")
ENCODER_FILE = "eof_encoder.safetensors"
_FRAME_CONSTRAINTS = ("hydrostatic", "ideal_gas", "lapse_rate", "mass_continuity")
_MULTI_LEVEL_CONSTRAINTS = ("hydrostatic", "lapse_rate")
_CONSTANTS = ("gravity", "gas_constant", "heat_capacity", "planet_radius")


# --------------------------------------------------------------------------------------------------
# Real frames
# --------------------------------------------------------------------------------------------------


@dataclass
class HeldOutFrames:
    """Real frames of one split, grouped by condition.

    ``fields`` (N, C, Y, X) float32 physical; ``condition`` (N,) index into ``conditions``, each a dict with
    ``planet_id``, ``class_label`` (geological epoch index), ``planet_params`` (P,) float32 and the planet
    constants; ``channel_names`` (C,); the grid ``lat_deg``, ``lon_deg``, ``levels``, ``level_unit``;
    ``variable_names`` (V,) with ``C = V * len(levels)``.
    """

    fields: Tensor
    condition: Tensor
    conditions: list[dict]
    channel_names: list[str]
    variable_names: list[str]
    lat_deg: list[float]
    lon_deg: list[float]
    levels: list[float]
    level_unit: str

    def condition_means(self) -> Tensor:
        """(K, C, Y, X) float64 mean real field of every condition."""
        k = len(self.conditions)
        sums = torch.zeros(k, *self.fields.shape[1:], dtype=torch.float64).index_add_(0, self.condition, self.fields.double())
        counts = torch.bincount(self.condition, minlength=k).double()
        return sums / counts.view(-1, 1, 1, 1)


def channel_names_for(variable_names: Sequence[str], levels: Sequence[float], level_unit: str) -> list[str]:
    """Names of the (variable, level) channels: the variable name for one level, ``T@1000m`` for several."""
    if len(levels) == 1:
        return [str(v) for v in variable_names]
    return [f"{v}@{lev:g}{level_unit}" for v in variable_names for lev in levels]


def level_indices_for(schema, level_values: Sequence[float]) -> list[int]:
    """Indices into ``schema.level_values`` of the model's levels (``ValueError`` when one is missing)."""
    ref = np.asarray(schema.level_values, dtype=np.float64)
    out = []
    for lev in level_values:
        hits = np.flatnonzero(np.isclose(ref, float(lev), rtol=1e-6, atol=1e-6))
        if hits.size == 0:
            raise ValueError(f"the model generates level {lev:g} {schema.level_unit}, the dataset has levels {ref.tolist()}")
        out.append(int(hits[0]))
    return out


def load_frames(data_dir, split: str, level_indices: Sequence[int], *, max_conditions: int | None = None, rows_per_batch: int = 16) -> HeldOutFrames:
    """Read every frame of ``split`` (stored order) at ``level_indices`` with ``build_frame_dataset``/``collate_frames``.

    Conditions are sorted by (planet_id, class_label); ``max_conditions`` keeps the first ones.
    """
    from astrobio_hf.data.frames import build_frame_dataset, collate_frames
    from astrobio_hf.data.schema import DatasetSchema

    schema = DatasetSchema.from_dir(data_dir)
    ds = build_frame_dataset(data_dir, split, schema=schema)
    fields, keys, params, consts = [], [], {}, {}

    def flush(rows):
        batch = collate_frames(rows, level_indices=list(level_indices))
        f = batch["fields"]
        if f.ndim == 4:
            f = f.unsqueeze(2)  # (N, V, 1, Y, X)
        fields.append(f.reshape(f.shape[0], -1, *f.shape[-2:]))  # (N, V*Z', Y, X), variable-major
        for i, (pid, lab) in enumerate(zip(batch["planet_id"], batch["class_labels"].tolist())):
            key = (str(pid), int(lab))
            keys.append(key)
            params.setdefault(key, batch["planet_params"][i].clone())
            consts.setdefault(key, {c: float(batch[c][i]) for c in _CONSTANTS})

    rows = []
    for row in ds:
        rows.append(row)
        if len(rows) == rows_per_batch:
            flush(rows)
            rows = []
    if rows:
        flush(rows)
    if not fields:
        raise ValueError(f"split {split!r} of {os.fspath(data_dir)!r} has no frames")
    order = sorted(set(keys))
    if max_conditions is not None:
        if max_conditions < 1:
            raise ValueError(f"expected max_conditions >= 1, got {max_conditions}")
        order = order[:max_conditions]
    index = {k: i for i, k in enumerate(order)}
    keep = [i for i, k in enumerate(keys) if k in index]
    all_fields = torch.cat(fields)[keep]
    levels = [float(schema.level_values[i]) for i in level_indices]
    return HeldOutFrames(
        fields=all_fields.float().contiguous(),
        condition=torch.tensor([index[keys[i]] for i in keep], dtype=torch.long),
        conditions=[{"planet_id": k[0], "class_label": k[1], "planet_params": params[k], **consts[k]} for k in order],
        channel_names=channel_names_for(schema.variable_names, levels, schema.level_unit),
        variable_names=list(schema.variable_names),
        lat_deg=[float(v) for v in schema.lat_values],
        lon_deg=[float(v) for v in schema.lon_values],
        levels=levels,
        level_unit=schema.level_unit,
    )


def _norm_stats(config, n_channels: int) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(np.asarray(config.norm_mean, dtype=np.float64)).reshape(-1)
    std = torch.tensor(np.asarray(config.norm_std, dtype=np.float64)).reshape(-1)
    if mean.numel() != n_channels or std.numel() != n_channels:
        raise ValueError(f"expected norm_mean/norm_std with V x Z' = {n_channels} values in the model config, got {mean.numel()} and {std.numel()}")
    return mean, std


def fit_or_load_encoder(
    config, data_dir, *, path: str | os.PathLike | None = None, num_components: int = 32, level_indices: Sequence[int] | None = None
) -> EOFEncoder:
    """The run's EOF encoder: loaded from ``path`` when it exists, else fitted on the TRAIN split and saved there.

    ``config`` is the denoiser's config (variables, levels, grid and normalisation statistics).
    """
    from astrobio_hf.data.schema import DatasetSchema

    schema = DatasetSchema.from_dir(data_dir)
    if level_indices is None:
        level_indices = level_indices_for(schema, config.level_values)
    names = channel_names_for(schema.variable_names, [schema.level_values[i] for i in level_indices], schema.level_unit)
    shape = (len(names), len(schema.lat_values), len(schema.lon_values))
    if path is not None and Path(path).exists():
        enc = EOFEncoder.load(path)
        enc.check_compatible(names, schema.lat_values, shape)
        logger.info("EOF encoder loaded from %s (%d EOFs, fitted on %d training frames)", path, enc.num_components, enc.num_fit_frames)
        return enc
    train = load_frames(data_dir, "train", level_indices)
    cm, cs = _norm_stats(config, len(names))
    enc = EOFEncoder.fit(train.fields, channel_mean=cm, channel_std=cs, lat_deg=train.lat_deg, num_components=num_components, channel_names=names)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        enc.save(path)
        logger.info("EOF encoder saved to %s", path)
    return enc


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def _make_sampler(pipeline, name: str, zero_terminal_snr: bool):
    from .schedulers import make_scheduler

    # the noise schedule the model was trained with comes from the pipeline's scheduler; the sampler's own
    # settings (algorithm, order) from make_scheduler
    base = dict(pipeline.scheduler.config)
    kwargs = {k: base[k] for k in ("num_train_timesteps", "beta_schedule", "thresholding") if k in base}
    overrides = {k: base[k] for k in ("beta_start", "beta_end", "sample_max_value", "dynamic_thresholding_ratio", "timestep_spacing") if k in base}
    return make_scheduler(
        name,
        prediction_type=pipeline.denoiser.config.prediction_type,
        zero_terminal_snr=zero_terminal_snr,
        **kwargs,
        **overrides,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate(pipeline, params: Tensor, labels: Tensor | None, *, steps: int, guidance: float, seed: int, batch_size: int) -> tuple[Tensor, float]:
    """All samples of one setting as (N, C, Y, X) float32 on CPU, and the seconds spent in the pipeline."""
    device = torch.device(pipeline.device)
    out, seconds = [], 0.0
    for b, start in enumerate(range(0, params.shape[0], batch_size)):
        p = params[start : start + batch_size].to(device)
        lab = None if labels is None else labels[start : start + batch_size].to(device)
        generator = torch.Generator("cpu").manual_seed(int(seed) + b)
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            res = pipeline(
                planet_params=p, class_labels=lab, num_inference_steps=int(steps), guidance_scale=float(guidance),
                generator=generator, output_type="physical",
            )
        _sync(device)
        seconds += time.perf_counter() - t0
        s = torch.as_tensor(res.samples).detach().float().cpu()
        if s.ndim == 4:
            s = s.unsqueeze(2)  # (B, V, 1, Y, X)
        out.append(s.reshape(s.shape[0], -1, *s.shape[-2:]))  # (B, V*Z', Y, X)
    return torch.cat(out), seconds


def _physics(constraints, names, frames: Tensor, consts: dict[str, Tensor], n_vars: int) -> dict[str, float]:
    b, c, y, x = frames.shape
    cube = frames.double().reshape(b, n_vars, c // n_vars, y, x)[:, :, None, None]  # (B, V, 1, 1, Z', Y, X)
    with torch.no_grad():
        res = constraints.residuals(cube, **{k: v.double() for k, v in consts.items()})
    return {n: float(res[n].mean()) for n in names}


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------


def run_sweep(
    pipeline,
    data_dir,
    *,
    samplers: Sequence[str] = DEFAULT_SAMPLERS,
    steps: Sequence[int] = (10, 20, 50),
    guidance_scales: Sequence[float] = (1.0, 2.0),
    samples_per_condition: int = 8,
    split: str = "test",
    seed: int = 0,
    zero_terminal_snr: bool | None = None,
    encoder: EOFEncoder | None = None,
    encoder_path: str | os.PathLike | None = None,
    num_eof_components: int = 32,
    max_conditions: int | None = None,
    batch_size: int = 64,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> list[dict]:
    """Sweep samplers x inference steps x guidance scales on the held-out ``split``; one row per setting.

    Args:
        pipeline: a ``ClimateDiffusionPipeline`` (its scheduler is swapped per sampler and restored after).
        data_dir: the run's dataset directory.
        samplers: names known to ``astrobio_hf.diffusion.schedulers.make_scheduler``.
        samples_per_condition: samples generated per (planet, epoch) of the split.
        seed: seed of the noise (batch ``b`` uses ``seed + b``, the same for every setting) and of KID.
        zero_terminal_snr: sampler schedules with zero terminal SNR; None reads the pipeline scheduler's
            ``rescale_betas_zero_snr`` (what the model was trained with).
        encoder / encoder_path / num_eof_components: the EOF encoder, or the file to load it from (fitted on
            the train split and saved there when missing; not saved when None).
        max_conditions: evaluate only the first conditions (sorted by planet id, epoch).
        batch_size: samples per pipeline call. kid_subsets / kid_subset_size: KID's subsets.

    Returns:
        rows of flat JSON-able metrics (``sampler``, ``num_inference_steps``, ``guidance_scale``,
        ``conditional_error``, ``conditional_error/<channel>``, ``frechet_distance``, ``kid``, ``kid_std``,
        ``mean_error/<channel>``, ``std_error/<channel>``, ``spectrum_error/<channel>``,
        ``physics/<constraint>/generated|real``, ``seconds_per_sample``, ``reference/...``, ...) plus a
        private ``_artifacts`` dict of arrays for the plots of :func:`write_sweep_report`.
    """
    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.physics.constraints import PhysicsConstraints

    if samples_per_condition < 1 or batch_size < 1:
        raise ValueError(f"expected samples_per_condition >= 1 and batch_size >= 1, got {samples_per_condition} and {batch_size}")
    if not samplers or not steps or not guidance_scales:
        raise ValueError(f"expected non-empty samplers, steps and guidance_scales, got {samplers}, {steps}, {guidance_scales}")
    config = pipeline.denoiser.config

    # 1. real held-out frames at the model's levels, grouped by condition
    schema = DatasetSchema.from_dir(data_dir)
    if list(config.variable_names) != list(schema.variable_names):
        raise ValueError(f"the model generates variables {list(config.variable_names)}, the dataset has {list(schema.variable_names)}")
    level_indices = level_indices_for(schema, config.level_values)
    real = load_frames(data_dir, split, level_indices, max_conditions=max_conditions)
    n_vars, n_ch = len(real.variable_names), len(real.channel_names)
    if tuple(real.fields.shape[2:]) != (len(config.lat_values), len(config.lon_values)):
        raise ValueError(f"the model generates {len(config.lat_values)} x {len(config.lon_values)} maps, the dataset has {tuple(real.fields.shape[2:])}")
    norm_mean, norm_std = _norm_stats(config, n_ch)
    K = len(real.conditions)
    logger.info("evaluating on %d real frames of %d conditions (planet, epoch) of split %r", real.fields.shape[0], K, split)

    # 2. the fixed encoder and everything about the real frames computed once
    if encoder is None:
        encoder = fit_or_load_encoder(config, data_dir, path=encoder_path, num_components=num_eof_components, level_indices=level_indices)
    encoder.check_compatible(real.channel_names, real.lat_deg, tuple(real.fields.shape[1:]))
    real_feats = encoder.encode(real.fields)
    real_means = real.condition_means()  # (K, C, Y, X)
    ranks = torch.zeros_like(real.condition)
    for k in range(K):
        idx = torch.nonzero(real.condition == k).flatten()
        ranks[idx] = torch.arange(idx.numel())
    even, odd = real_feats[ranks % 2 == 0], real_feats[ranks % 2 == 1]
    reference = {
        "reference/frechet_distance_real_even_vs_odd": frechet_distance(even, odd) if min(len(even), len(odd)) >= 2 else float("nan"),
        "reference/kid_real_even_vs_odd": kernel_inception_distance(even, odd, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)[0]
        if min(len(even), len(odd)) >= 2 else float("nan"),
    }
    train_mean = (encoder.mean.reshape(n_ch, *real.fields.shape[2:]) / encoder.row_weights.view(1, -1, 1)) * encoder.channel_std.view(-1, 1, 1) + encoder.channel_mean.view(-1, 1, 1)
    ref_cond = conditional_error(train_mean.expand(K, -1, -1, -1), real_means, real.lat_deg, norm_std)
    reference["reference/conditional_error_train_mean_field"] = float(ref_cond.mean())
    constraints = PhysicsConstraints(real.variable_names, {}, lat_deg=real.lat_deg, lon_deg=real.lon_deg, levels=real.levels, level_unit=real.level_unit)
    phys_names = [n for n in _FRAME_CONSTRAINTS if n in constraints.available() and (len(real.levels) > 1 or n not in _MULTI_LEVEL_CONSTRAINTS)]
    real_consts = {c: torch.tensor([real.conditions[int(i)][c] for i in real.condition]) for c in _CONSTANTS}
    real_phys = _physics(constraints, phys_names, real.fields, real_consts, n_vars)

    # 3. the conditions of the generated samples: each condition repeated samples_per_condition times
    n = int(samples_per_condition)
    gen_condition = torch.arange(K).repeat_interleave(n)
    params = torch.stack([c["planet_params"] for c in real.conditions]).float()[gen_condition]
    labels = None
    if int(getattr(config, "num_class_labels", 0) or 0) > 0:
        labels = torch.tensor([c["class_label"] for c in real.conditions], dtype=torch.long)[gen_condition]
    gen_consts = {c: torch.tensor([real.conditions[int(i)][c] for i in gen_condition]) for c in _CONSTANTS}
    if zero_terminal_snr is None:
        zero_terminal_snr = bool(pipeline.scheduler.config.get("rescale_betas_zero_snr", False))

    # 4. the sweep (a one-step warm-up call first, so that CUDA/kernel start-up is not timed)
    original = pipeline.scheduler
    if hasattr(pipeline, "set_progress_bar_config"):
        pipeline.set_progress_bar_config(disable=True)
    rows: list[dict] = []
    try:
        pipeline.scheduler = _make_sampler(pipeline, samplers[0], zero_terminal_snr)
        _generate(pipeline, params[:1], None if labels is None else labels[:1], steps=1, guidance=1.0, seed=seed, batch_size=1)
        for name in samplers:
            pipeline.scheduler = _make_sampler(pipeline, name, zero_terminal_snr)
            for n_steps in steps:
                for g in guidance_scales:
                    gen, seconds = _generate(pipeline, params, labels, steps=n_steps, guidance=g, seed=seed, batch_size=batch_size)
                    row = {"sampler": name, "num_inference_steps": int(n_steps), "guidance_scale": float(g),
                           "split": split, "seed": int(seed), "zero_terminal_snr": bool(zero_terminal_snr),
                           "n_conditions": K, "n_generated": int(gen.shape[0]), "n_real": int(real.fields.shape[0]),
                           "eof_components": encoder.num_components,
                           "seconds_per_sample": seconds / gen.shape[0]}
                    row.update(_setting_metrics(gen, gen_condition, real, real_feats, real_means, encoder, norm_std,
                                                constraints, phys_names, gen_consts, real_phys, n_vars,
                                                seed=seed, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size))
                    row.update(reference)
                    rows.append(row)
                    logger.info(
                        "%s, %d steps, guidance %g: conditional error %.4g, FD %.4g, KID %.4g, %.4g s/sample",
                        name, n_steps, g, row["conditional_error"], row["frechet_distance"], row["kid"], row["seconds_per_sample"],
                    )
    finally:
        pipeline.scheduler = original
    return rows


def _setting_metrics(gen, gen_condition, real: HeldOutFrames, real_feats, real_means, encoder, norm_std, constraints,
                     phys_names, gen_consts, real_phys, n_vars, *, seed, kid_subsets, kid_subset_size) -> dict[str, Any]:
    names = real.channel_names
    bad = ~torch.isfinite(gen).reshape(gen.shape[0], -1).all(dim=1)
    out: dict[str, Any] = {"non_finite_samples": int(bad.sum())}
    if bool(bad.any()):
        # reported, not dropped: every metric of this setting is NaN and the count says why
        logger.warning("%d of %d generated samples have NaN/Inf values: this setting's metrics are NaN", int(bad.sum()), gen.shape[0])
        nan = float("nan")
        out.update({"conditional_error": nan, "frechet_distance": nan, "kid": nan, "kid_std": nan,
                    "spectrum_error": nan, "mean_error_normalized": nan, "std_error_normalized": nan})
        for ch in names:
            out.update({f"conditional_error/{ch}": nan, f"mean_error/{ch}": nan, f"std_error/{ch}": nan, f"spectrum_error/{ch}": nan})
        for p in phys_names:
            out[f"physics/{p}/generated"], out[f"physics/{p}/real"] = nan, real_phys[p]
        return out
    K = len(real.conditions)
    gen_means = torch.zeros(K, *gen.shape[1:], dtype=torch.float64).index_add_(0, gen_condition, gen.double())
    gen_means /= torch.bincount(gen_condition, minlength=K).double().view(-1, 1, 1, 1)
    cond = conditional_error(gen_means, real_means, real.lat_deg, norm_std)
    ms = mean_std_error(gen, real.fields, real.lat_deg)
    spec = power_spectrum_error(gen, real.fields)
    feats = encoder.encode(gen)
    kid, kid_std = kernel_inception_distance(feats, real_feats, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed) \
        if gen.shape[0] >= 2 else (float("nan"), float("nan"))
    out.update({
        "conditional_error": float(cond.mean()),
        "frechet_distance": frechet_distance(feats, real_feats) if gen.shape[0] >= 2 else float("nan"),
        "kid": kid,
        "kid_std": kid_std,
        "spectrum_error": float(spec["spectrum_error"].mean()),
        "mean_error_normalized": float((ms["mean_error"] / norm_std).mean()),
        "std_error_normalized": float((ms["std_error"] / norm_std).mean()),
    })
    for i, ch in enumerate(names):
        out[f"conditional_error/{ch}"] = float(cond[i])
        out[f"mean_error/{ch}"] = float(ms["mean_error"][i])
        out[f"std_error/{ch}"] = float(ms["std_error"][i])
        out[f"spectrum_error/{ch}"] = float(spec["spectrum_error"][i])
    gen_phys = _physics(constraints, phys_names, gen, gen_consts, n_vars)
    for p in phys_names:
        out[f"physics/{p}/generated"], out[f"physics/{p}/real"] = gen_phys[p], real_phys[p]
    # arrays for the plots (first level of every variable; condition 0)
    z = len(real.levels)
    first_level = [v * z for v in range(n_vars)]
    sel0 = torch.nonzero(gen_condition == 0).flatten()
    real0 = torch.nonzero(real.condition == 0).flatten()
    out["_artifacts"] = {
        "channel_names": [names[i] for i in first_level],
        "wavenumbers": spec["wavenumbers"].numpy(),
        "power_generated": spec["power_generated"][first_level].numpy(),
        "power_real": spec["power_real"][first_level].numpy(),
        "lat_deg": np.asarray(real.lat_deg), "lon_deg": np.asarray(real.lon_deg),
        "condition": {k: v for k, v in real.conditions[0].items() if k in ("planet_id", "class_label")},
        "generated_maps": gen[sel0[:3]][:, first_level].numpy(),
        "generated_mean": gen_means[0, first_level].float().numpy(),
        "real_maps": real.fields[real0[:1]][:, first_level].numpy(),
        "real_mean": real_means[0, first_level].float().numpy(),
    }
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def best_row(rows: Sequence[dict]) -> dict:
    """The setting with the lowest conditional error (ties: lowest Frechet distance); NaN rows last."""
    def key(r):
        c, f = r.get("conditional_error", float("nan")), r.get("frechet_distance", float("nan"))
        return (math.isnan(c), c if not math.isnan(c) else 0.0, f if not math.isnan(f) else float("inf"))
    return min(rows, key=key)


def write_sweep_report(rows: Sequence[dict], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``sweep.md`` (tables), ``sweep.json`` (the rows without plot arrays) and the plots to ``out_dir``.

    Plots: ``conditional_error_vs_steps.png`` (conditional error and FD against the number of steps, one
    line per sampler, one column per guidance scale), ``power_spectra.png`` (generated vs real radial
    spectra of the best setting) and ``maps.png`` (real vs generated maps of one held-out planet, best
    setting). Returns ``(markdown_path, json_path)``.
    """
    if not rows:
        raise ValueError("write_sweep_report got no rows")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "sweep.json", out / "sweep.md"
    public = [_public(r) for r in rows]
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(public, indent=2, allow_nan=True))
    os.replace(tmp, json_path)

    plots = _plot_all(rows, out)
    best = best_row(rows)
    first = public[0]
    channels = [k.split("/", 1)[1] for k in first if k.startswith("conditional_error/")]
    phys = sorted({k.split("/")[1] for k in first if k.startswith("physics/")})
    setting = lambda r: [r["sampler"], r["num_inference_steps"], r["guidance_scale"]]  # noqa: E731

    parts = [
        "# Diffusion sample-quality sweep",
        "",
        f"Held-out split `{first['split']}`: {first['n_conditions']} conditions (planet, geological epoch), "
        f"{first['n_real']} real frames, {first['n_generated']} generated samples per setting; seed {first['seed']}, "
        f"zero terminal SNR {first['zero_terminal_snr']}. Best setting (lowest conditional error): "
        f"**{best['sampler']}, {best['num_inference_steps']} steps, guidance {best['guidance_scale']:g}**.",
        "",
        "- *cond. error*: latitude-weighted RMSE between the mean generated and the mean real field of each planet/epoch, "
        "divided by the normalisation std, averaged over channels (reference: the training-mean field scores "
        f"{_fmt(first['reference/conditional_error_train_mean_field'])}).",
        f"- *FD*, *KID*: Frechet distance and kernel inception distance (cubic kernel) on the {first['eof_components']} leading EOF "
        "coefficients of the training frames (area-weighted, normalised; the physical modes of variability of these climates, "
        "fitted on training planets only; an ImageNet Inception network knows nothing of lat-lon climate fields). "
        f"Sampling floor, even vs odd real climate steps: FD {_fmt(first['reference/frechet_distance_real_even_vs_odd'])}, "
        f"KID {_fmt(first['reference/kid_real_even_vs_odd'])}.",
        "- *spectrum err.*: mean over radial wavenumbers of |log10 P_gen - log10 P_real| (2-D FFT, longitude periodic, "
        "latitude treated as a plane), averaged over channels.",
        "- *mean / std err.*: |difference| of the area-weighted mean / standard deviation, divided by the normalisation std, "
        "averaged over channels (physical units per variable below).",
        "",
        "## Summary",
        "",
        _table(
            ["sampler", "steps", "guidance", "cond. error", "FD", "KID", "spectrum err.", "mean err.", "std err.", "s/sample", "non-finite"],
            [setting(r) + [r["conditional_error"], r["frechet_distance"], r["kid"], r["spectrum_error"], r["mean_error_normalized"],
                           r["std_error_normalized"], r["seconds_per_sample"], r["non_finite_samples"]] for r in public],
        ),
        "",
        "## Physics residuals (mean dimensionless residual: generated / real)",
        "",
        _table(["sampler", "steps", "guidance"] + phys,
               [setting(r) + [f"{_fmt(r[f'physics/{p}/generated'])} / {_fmt(r[f'physics/{p}/real'])}" for p in phys] for r in public]),
    ]
    for metric, what in (
        ("conditional_error", "Conditional error per channel (normalised RMSE)"),
        ("mean_error", "Mean error per channel (physical units)"),
        ("std_error", "Standard-deviation error per channel (physical units)"),
        ("spectrum_error", "Power-spectrum error per channel (mean |log10 ratio|)"),
    ):
        parts += ["", f"## {what}", "", _table(["sampler", "steps", "guidance"] + channels,
                                                [setting(r) + [r[f"{metric}/{c}"] for c in channels] for r in public])]
    if plots:
        parts += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    md_path.write_text("\n".join(parts) + "\n")
    logger.info("sweep report written to %s (%d settings)", md_path, len(rows))
    return md_path, json_path


def _plot_all(rows: Sequence[dict], out: Path) -> list[Path]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    # 1. conditional error and FD against the number of steps
    guidances = sorted({r["guidance_scale"] for r in rows})
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    fig, axes = plt.subplots(2, len(guidances), figsize=(4.5 * len(guidances), 6.5), squeeze=False, sharex=True)
    for j, g in enumerate(guidances):
        for s in samplers:
            pts = sorted((r["num_inference_steps"], r["conditional_error"], r["frechet_distance"]) for r in rows if r["sampler"] == s and r["guidance_scale"] == g)
            if pts:
                axes[0, j].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=s)
                axes[1, j].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=s)
        ref = rows[0].get("reference/conditional_error_train_mean_field")
        if ref is not None and not math.isnan(ref):
            axes[0, j].axhline(ref, color="gray", ls="--", lw=1, label="training-mean field")
        ref_fd = rows[0].get("reference/frechet_distance_real_even_vs_odd")
        if ref_fd is not None and not math.isnan(ref_fd):
            axes[1, j].axhline(ref_fd, color="gray", ls=":", lw=1, label="real even vs odd")
        axes[0, j].set_title(f"guidance scale {g:g}")
        axes[0, j].set_ylabel("conditional error (normalised RMSE)")
        axes[1, j].set_ylabel("Frechet distance (EOF features)")
        axes[1, j].set_xlabel("inference steps")
        all_steps = sorted({r["num_inference_steps"] for r in rows})
        for ax in axes[:, j]:
            ax.set_xscale("log")
            ax.set_xticks(all_steps)
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "conditional_error_vs_steps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    best = best_row(rows)
    art = best.get("_artifacts")
    if not art:
        return paths
    title = f"{best['sampler']}, {best['num_inference_steps']} steps, guidance {best['guidance_scale']:g}"
    names = art["channel_names"]
    # 2. power spectra of the best setting
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3 * nrow), squeeze=False)
    k = art["wavenumbers"]
    for i, name in enumerate(names):
        ax = axes.flat[i]
        ax.loglog(k, art["power_real"][i], "k-", label="real (held-out)")
        ax.loglog(k, art["power_generated"][i], "C1--", label="generated")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("radial wavenumber")
        ticks = [int(v) for v in k if v in (1, 2, 4, 8, 16, 32, 64, 128, 256)]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("power")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Radially averaged power spectra ({title})", fontsize=10)
    fig.tight_layout()
    paths.append(out / "power_spectra.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 3. real vs generated maps of one held-out planet/epoch
    cols = [("real frame", art["real_maps"][0]), ("real mean", art["real_mean"])]
    cols += [(f"generated #{i}", m) for i, m in enumerate(art["generated_maps"])]
    cols += [("generated mean", art["generated_mean"])]
    lat, lon = art["lat_deg"], art["lon_deg"]
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.6 * len(cols), 1.7 * len(names) + 0.6), squeeze=False)
    for v, name in enumerate(names):
        lo = min(float(np.min(c[1][v])) for c in cols[:2])
        hi = max(float(np.max(c[1][v])) for c in cols[:2])
        if hi <= lo:
            hi = lo + 1e-12
        for j, (label, maps) in enumerate(cols):
            ax = axes[v, j]
            im = ax.pcolormesh(lon, lat, maps[v], vmin=lo, vmax=hi, cmap="viridis", shading="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if v == 0:
                ax.set_title(label, fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
        fig.colorbar(im, ax=axes[v, :].tolist(), fraction=0.02, pad=0.01)
    cond = art["condition"]
    fig.suptitle(f"{cond['planet_id']}, epoch {cond['class_label']}: real vs generated ({title}; colour scale of the real maps)", fontsize=10)
    paths.append(out / "maps.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _find_key(d: Any, key: str):
    """``d[key]`` or the first ``key`` one level down (``{"config": {"data_args": {"data_dir": ...}}}`` style)."""
    if not isinstance(d, dict):
        return None
    if key in d:
        return d[key]
    for v in d.values():
        if isinstance(v, dict):
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def _resolve_data_dir(run_dir: Path) -> Path:
    """The dataset of a run: ``data_dir`` of ``run_config.json`` (else of the config stored in ``metrics.json``).

    A relative path is taken from the working directory, else from the run directory.
    """
    found, source = None, None
    for name in ("run_config.json", "metrics.json"):
        path = run_dir / name
        if path.exists():
            found = _find_key(json.loads(path.read_text()), "data_dir")
            if found is not None:
                source = path
                break
    if found is None:
        raise ValueError(f"{run_dir} has no run_config.json (or metrics.json) recording 'data_dir', the run's dataset directory")
    data_dir = Path(found)
    if not data_dir.is_absolute() and not data_dir.exists() and (run_dir / data_dir).exists():
        data_dir = run_dir / data_dir
    if not (data_dir / "schema.json").exists():
        raise ValueError(f"the data_dir {str(data_dir)!r} recorded in {source} has no schema.json")
    logger.info("dataset %s (from %s)", data_dir, source)
    return data_dir


def evaluate_run(run_dir: str | os.PathLike, *, device: str | torch.device | None = None, out_dir: str | os.PathLike | None = None, **sweep_kwargs) -> list[dict]:
    """``astrobio-hf eval diffusion RUN_DIR``: sweep the run's pipeline and write ``RUN_DIR/eval/``.

    Loads ``ClimateDiffusionPipeline.from_pretrained(RUN_DIR / "pipeline")`` on ``device`` (default: CUDA
    when available), the dataset recorded in ``RUN_DIR/run_config.json`` (``data_dir``), the EOF encoder
    ``RUN_DIR/eof_encoder.safetensors`` (fitted on the train split and saved there the first time), runs
    :func:`run_sweep` with ``sweep_kwargs`` and writes :func:`write_sweep_report` to ``out_dir``
    (default ``RUN_DIR/eval``). Returns the rows.
    """
    from .pipeline_climate_diffusion import ClimateDiffusionPipeline

    run_dir = Path(run_dir)
    if not (run_dir / "pipeline").is_dir():
        raise ValueError(f"{run_dir} has no pipeline/ directory (expected a saved ClimateDiffusionPipeline)")
    data_dir = _resolve_data_dir(run_dir)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    pipeline = ClimateDiffusionPipeline.from_pretrained(run_dir / "pipeline").to(device)
    sweep_kwargs.setdefault("encoder_path", run_dir / ENCODER_FILE)
    rows = run_sweep(pipeline, data_dir, **sweep_kwargs)
    write_sweep_report(rows, out_dir if out_dir is not None else run_dir / "eval")
    return rows
