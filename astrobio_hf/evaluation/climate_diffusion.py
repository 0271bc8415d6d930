"""Evaluation of a climate-diffusion run: the held-out denoising loss, sample grids, and what a diffusion run leaves
for a person: metrics.json, plots, and the model card with the sweep table (the sweep itself is
astrobio_hf.diffusion.evaluation)."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import torch

from astrobio_hf.diffusion.training import diffusion_step
from astrobio_hf.hub import build_model_card, markdown_table
from astrobio_hf.hub.init_from import describe_origin
from astrobio_hf.hub.plots import plot_loss_curves

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------------
# Validation loss and sample grids (during training)
# ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def validation_loss(model, noise_scheduler, loader, device, args, seed: int) -> float:
    """Mean denoising loss on held-out frames with a fixed noise seed (comparable between evaluations)."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    no_dropout = copy.copy(args)
    no_dropout.condition_dropout = 0.0
    total, count = 0.0, 0
    for batch in loader:
        loss, _, _ = diffusion_step(model, noise_scheduler, batch, device, no_dropout, generator=generator)
        n = batch["fields"].shape[0]
        total, count = total + loss.item() * n, count + n
    model.train()
    return total / max(count, 1)


def plot_sample_grid(pipeline, batch, path: Path, args, seed: int, num_steps: int) -> None:
    """True frames of 4 held-out conditions beside samples generated for the same planet and epoch (`args`: the
    recipe's DiffusionArguments; `use_class_labels` is read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(4, batch["fields"].shape[0])
    generator = torch.Generator(device=pipeline.device).manual_seed(seed)
    samples = pipeline(
        planet_params=batch["planet_params"][:n], class_labels=batch["class_labels"][:n] if args.use_class_labels else None,
        num_inference_steps=num_steps, guidance_scale=1.5, generator=generator,
    ).samples.cpu()
    real = batch["fields"][:n]
    config = pipeline.denoiser.config
    names = config.variable_names
    show = [names.index(v) for v in ("T", "u") if v in names] or [0]
    fig, axes = plt.subplots(len(show) * 2, n, figsize=(3.2 * n, 2.2 * len(show) * 2), squeeze=False)
    for r, v in enumerate(show):
        for i in range(n):
            t = real[i, v] if real.dim() == 4 else real[i, v, 0]
            s = samples[i, v] if samples.dim() == 4 else samples[i, v, 0]
            lo, hi = float(t.min()), float(t.max())
            for k, (field_, label) in enumerate(((t, "real"), (s, "generated"))):
                ax = axes[2 * r + k, i]
                ax.imshow(field_.numpy(), origin="lower", vmin=lo, vmax=hi, cmap="viridis", aspect="auto")
                ax.set_title(f"{names[v]} {label} ({batch['planet_id'][i]}, epoch {int(batch['class_labels'][i])})", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(f"Held-out planets: real vs generated (DPM-Solver++ {num_steps} steps, guidance 1.5)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------
# Report: metrics.json, plots, model card with the sweep table
# ------------------------------------------------------------------------------------------------------
SWEEP_COLUMNS = (
    ("sampler", "sampler"),
    ("steps", "num_inference_steps"),
    ("guidance", "guidance_scale"),
    ("cond. error", "conditional_error"),
    ("EOF-FD", "frechet_distance"),
    ("EOF-KID", "kid"),
    ("mean err.", "mean_error_normalized"),
    ("std err.", "std_error_normalized"),
    ("spectrum err.", "spectrum_error"),
    ("s/sample", "seconds_per_sample"),
)


def sweep_table(rows: list[dict]) -> str:
    """The sampler x steps x guidance table of `astrobio_hf.diffusion.evaluation.run_sweep` rows."""
    header = [title for title, _ in SWEEP_COLUMNS]
    body = [[row.get(key, float("nan")) for _, key in SWEEP_COLUMNS] for row in rows]
    return markdown_table(header, body)


def write_card(run_dir: Path, config, training: dict, rows: list[dict] | None) -> None:
    """Write (or rewrite, after `astrobio-hf eval diffusion`) the model card of a diffusion run."""
    run_dir = Path(run_dir)
    names = ", ".join(config.variable_names)
    shape = "(V, Y, X)" if len(config.level_values) == 1 else "(V, Z, Y, X)"
    sections = {}
    if rows:
        best = min(rows, key=lambda r: (math.isnan(r["conditional_error"]), r["conditional_error"]))
        first = rows[0]
        physics = sorted({k.split("/")[1] for k in first if k.startswith("physics/")})
        sections["Evaluation on held-out planets"] = (
            f"Sampler x steps x guidance sweep with fixed seeds (`astrobio-hf eval diffusion`) on the "
            f"`{first.get('split')}` planets: {first.get('n_conditions')} conditions (planet, epoch), "
            f"{first.get('n_generated')} generated samples per setting. Conditional error: latitude-weighted RMSE "
            "between the mean generated and the mean true field of the same planet and epoch, in units of each "
            "variable's standard deviation, averaged over variables (the training-mean field scores "
            f"{first.get('reference/conditional_error_train_mean_field', float('nan')):.3g}). EOF-FD / EOF-KID: "
            "Frechet distance and KID on the leading EOF (principal-component) coefficients of the training "
            "fields, a fixed encoder of these climates' modes of variability (sampling floor, real vs real: FD "
            f"{first.get('reference/frechet_distance_real_even_vs_odd', float('nan')):.3g}). Mean/std error: "
            "area-weighted, normalised. Spectrum error: mean |log10| ratio of radially averaged power spectra. "
            "Full tables and plots: `eval/sweep.md`.\n\n"
            + sweep_table(rows)
            + f"\n\nBest conditional error: {best['sampler']}, {best['num_inference_steps']} steps, guidance "
            f"{best['guidance_scale']:g}. Physics residuals of its samples beside the real fields: "
            + ", ".join(f"{p} {best[f'physics/{p}/generated']:.3g} vs {best[f'physics/{p}/real']:.3g}" for p in physics)
            + "."
        )
    else:
        sections["Evaluation on held-out planets"] = "Not run yet: `astrobio-hf eval diffusion " + str(run_dir) + "`."
    sections["Training"] = (
        f"{training.get('global_step')} optimizer steps; best validation denoising loss {training.get('best_val_loss')}; "
        f"prediction type `{config.prediction_type}`, condition dropout {config.condition_dropout}. "
        + (describe_origin(training["init_from"]) + " " if training.get("init_from") else "")
        + "Full configuration in `metrics.json`."
    )
    sections["How to use"] = (
        "```python\nimport torch, astrobio_hf\n"
        "from astrobio_hf.diffusion.pipeline_climate_diffusion import ClimateDiffusionPipeline\n"
        "from diffusers import UniPCMultistepScheduler\n"
        f"pipe = ClimateDiffusionPipeline.from_pretrained(\"{run_dir / 'pipeline'}\")\n"
        "pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)\n"
        "out = pipe(planet_params=params, class_labels=epochs, num_inference_steps=20, guidance_scale=2.0,\n"
        "           generator=torch.Generator().manual_seed(0))\nout.samples  # physical units\n```"
    )
    sections["Plots"] = "![loss](plots/loss_curves.png)\n\n![samples](plots/samples_latest.png)"
    card = build_model_card(
        model_name="climate-diffusion",
        summary=(
            f"A conditional diffusion model (`ClimateDiffusionModel`, astrobio-hf; a diffusers UNet2DModel backbone) "
            f"that generates {shape} climate fields of {names} for given planet parameters"
            + (" and geological epoch" if config.num_class_labels else "")
            + ", sampled with diffusers schedulers and classifier-free guidance."
        ),
        sections=sections,
        eval_results=[
            (metric, f"{metric} {r['sampler']} {r['num_inference_steps']} steps guidance {r['guidance_scale']:g}", r[metric])
            for r in (rows or [])
            for metric in ("conditional_error", "frechet_distance")
            if not math.isnan(r[metric])
        ],
        task_type="climate-generation",
        tags=["climate", "diffusion", "exoplanets"],
    )
    card.save(str(run_dir / "README.md"))


def write_training_report(run_dir, model, state, result: dict, seconds: float, run_config: dict) -> None:
    run_dir = Path(run_dir)
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    plot_loss_curves(state.history, run_dir / "plots" / "loss_curves.png", title="Climate diffusion training", ylabel="denoising loss")
    payload = {**result, "train_seconds": seconds, "history": state.history, "config": run_config}
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2, default=float))
    write_card(run_dir, model.config, result, rows=None)
    logger.info("wrote %s, metrics.json and plots/", run_dir / "README.md")


def evaluate_and_report(run_dir, **sweep_kwargs) -> list[dict]:
    """`astrobio-hf eval diffusion RUN_DIR`: the sweep (astrobio_hf.diffusion.evaluation), its report in
    RUN_DIR/eval/, and the model card rewritten with the table."""
    from astrobio_hf.diffusion.evaluation import evaluate_run
    from astrobio_hf.models.climate_diffusion import ClimateDiffusionConfig

    run_dir = Path(run_dir)
    rows = evaluate_run(run_dir, **sweep_kwargs)
    config = ClimateDiffusionConfig.from_pretrained(run_dir)
    metrics_path = run_dir / "metrics.json"
    training = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    training["evaluation"] = public
    metrics_path.write_text(json.dumps(training, indent=2, default=float))
    write_card(run_dir, config, training, public)
    return public
