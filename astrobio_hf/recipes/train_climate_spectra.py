"""Train the climate + spectra multi-task model with Accelerate on streamed Parquet shards with spectra.

    accelerate launch recipes/train_climate_spectra.py [recipes/configs/climate_spectra/<name>.yaml] [--key value ...]

With no arguments it uses the planet population in data/planets (the embedded default of the planet-level families:
96 synthetic planets with spectra and regime labels, 8 climate steps each; synthesised on first use, ~30 s), trains, then evaluates the EMA weights of the best checkpoint on the held-out test
planets and writes to runs/climate_spectra: config.json, model.safetensors, README.md (model card), metrics.json,
plots/ (predicted vs true spectra with error bars, loss curves), logs/ and checkpoints/.

    accelerate launch recipes/train_climate_spectra.py recipes/configs/climate_spectra/wasp43b.yaml

trains on WASP-43b instead: (perturbed GCM cube, phase-resolved Fp/Fs) pairs built into data/wasp43b on first use
by astrobio_hf.data.spectra (nemesispy's GCM and forward model, ~5 s per sample; only this build step and the
unperturbed GCM's cube, gcm_cube.npy, import nemesispy); the test metrics then add chi-squared of the predicted
phase spectra against the observed HST/Spitzer spectra (from the unperturbed GCM's cube and per test sample),
beside the forward model's own, and the card a predicted-vs-observed phase-spectrum plot with error bars.

A sample is Tc consecutive climate frames (B, V, Tc, Tg, Z, Y, X) and their spectra (B, Tc, P, W): the windows of
`build_window_dataset(..., forecast=False)` (every step of a series, also the n_time = 1 WASP-43b samples). Every training
micro-batch gives the model both modalities, or (with probability `modality_dropout`, half each) only the cube or
only the spectra; both heads are always trained. Evaluation measures the two cross-modal tasks: spectra predicted
from the cube alone (emulation of the radiative model: spectral angle, NRMSE, R2) and climate fields retrieved
from the spectra alone (latitude-weighted RMSE, SSIM), against the train-mean baseline.
The best checkpoint is picked on the validation cross-modal loss (normalised MSE of both cross-modal tasks), not on
the multi-task training loss, whose learned uncertainty weights keep lowering it whatever the tasks do.

Order (DESIGN.md section 4): Accelerator; logging; data schema; config and model; EMA; optimizer; dataset; lr
schedule; prepare; resume; loop; save_pretrained; card; end.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.schema import DatasetSchema
from astrobio_hf.data.spectra import GCM_CUBE_FILE, load_wasp43b_reference, write_gcm_cube
from astrobio_hf.data.streaming import build_window_dataset, collate_windows, count_windows
from astrobio_hf.data.synth import PLANET_POPULATION, PLANET_POPULATION_DIR, ensure_planet_population
from astrobio_hf.evaluation.climate_spectra import TASKS, evaluate, fit_spectrum_ridge, model_inputs, write_report
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.models.climate_spectra import ClimateSpectraConfig, ClimateSpectraForMultiTask
from astrobio_hf.training import (
    TrainingArguments,
    create_optimizer,
    ema_weights,
    finish_run,
    fit,
    micro_batches_per_epoch,
    parse_recipe_args,
    start_run,
)
from astrobio_hf.training.args import json_option, resolved_config

logger = logging.getLogger("astrobio_hf.recipes.train_climate_spectra")

DEFAULT_DATA_DIR = PLANET_POPULATION_DIR
RECIPE_DEFAULTS = {"output_dir": "runs/climate_spectra", "num_epochs": 40}


@dataclass
class DataArguments:
    """Where the shards (with spectra) are and how windows are cut from them."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Shards + schema.json with spectra; the embedded default is (re)synthesised here when it has none."})
    dataset: str = field(default="synthetic", metadata={"help": "synthetic | wasp43b: the builder that makes data_dir on first use (wasp43b: astrobio_hf.data.spectra, nemesispy's GCM + forward model)."})
    n_planets: int = field(default=PLANET_POPULATION["n_planets"], metadata={"help": "Planets of the embedded default (the planet population; used when it is synthesised)."})
    n_climate_steps: int = field(default=PLANET_POPULATION["n_climate_steps"], metadata={"help": "Climate steps per planet of the embedded default."})
    n_samples: int = field(default=40, metadata={"help": "Perturbed GCMs of a WASP-43b dataset built on first use (~5 s each)."})
    context_steps: int = field(default=2, metadata={"help": "Tc: climate steps per sample (the window's target frames)."})
    stride: int = field(default=1, metadata={"help": "Climate steps between consecutive training windows."})
    shuffle_buffer: int = field(default=256, metadata={"help": "Windows in the streaming shuffle buffer (0 = stream order)."})


@dataclass
class ModelArguments:
    """Model sizes and loss terms (written into ClimateSpectraConfig)."""

    cube_channels: int = 16
    hidden_size: int = 128
    num_fusion_layers: int = 2
    norm_groups: int = 4
    column_pathway: bool = field(default=True, metadata={"help": "Per-column emission network from the cube straight to the spectra, summed over the disc."})
    column_hidden_size: int = field(default=128, metadata={"help": "Hidden width of the column network (0: linear in the area-weighted mean profiles)."})
    loss_mode: str = field(default="uncertainty", metadata={"help": "fixed | uncertainty | adaptive"})
    task_weights: str = field(default='{"climate": 1.0, "spectrum": 1.0}', metadata={"help": "JSON dict task -> initial weight."})
    adaptive_temperature: float = 2.0
    adaptive_warmup_steps: int = 20
    cross_modal_weight: float = field(default=1.0, metadata={"help": "Weight of the cross-modal losses (each modality's latent alone decoded into the other) on batches with both modalities."})
    consistency_weight: float = 0.1
    smoothness_weight: float = 0.01
    physics_warmup_steps: int = 50
    modality_dropout: float = field(default=0.6, metadata={"help": "Probability that a training batch gives one modality only."})
    selection_metric: str = field(default="cross_modal_loss", metadata={"help": "Validation metric that picks the best checkpoint: cross_modal_loss (normalised MSE of spectra from the cube + cube from the spectra: the evaluated tasks, independent of the loss weights) | loss (the multi-task training loss with both modalities)."})


ARGUMENT_TYPES = (DataArguments, ModelArguments, TrainingArguments)


# ------------------------------------------------------------------------------------------------------
# Data on first use
# ------------------------------------------------------------------------------------------------------
def ensure_dataset(data_args: DataArguments) -> None:
    """Build data_dir on first use (main process only): the embedded default (synthetic planets with spectra), or
    a WASP-43b dataset with nemesispy's forward model plus the unperturbed GCM's cube (gcm_cube.npy)."""
    path = Path(data_args.data_dir) / "schema.json"
    if data_args.dataset == "wasp43b":
        if not path.is_file():
            from astrobio_hf.data.spectra import build_spectra_dataset

            logger.info("building the WASP-43b dataset (%d perturbed GCMs, ~5 s each) into %s", data_args.n_samples, data_args.data_dir)
            build_spectra_dataset(data_args.data_dir, n_samples=data_args.n_samples, seed=0)
        if not (Path(data_args.data_dir) / GCM_CUBE_FILE).is_file():
            write_gcm_cube(data_args.data_dir)
    elif data_args.data_dir == DEFAULT_DATA_DIR:
        ensure_planet_population(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, n_climate_steps=data_args.n_climate_steps)


# ------------------------------------------------------------------------------------------------------
# Modalities and data (the batch -> model mapping, model_inputs, and the evaluation are in
# astrobio_hf.evaluation.climate_spectra)
# ------------------------------------------------------------------------------------------------------
def draw_modalities(probability: float, device) -> str:
    """Seeded by the global torch RNG (restored on resume): both, or cube / spectrum only."""
    r = float(torch.rand(()))
    if r < probability / 2:
        return "cube"
    if r < probability:
        return "spectrum"
    return "both"


def make_loader(data_dir, split, schema, data_args, train_args, accelerator, shuffle: bool) -> DataLoader:
    dataset = build_window_dataset(
        data_dir, split, context_steps=data_args.context_steps,
        stride={"train": data_args.stride}.get(split, data_args.context_steps),
        shuffle_buffer=data_args.shuffle_buffer if shuffle else 0, seed=train_args.seed,
        rank=accelerator.process_index, world_size=accelerator.num_processes, schema=schema, forecast=False,
    )
    return DataLoader(dataset, batch_size=train_args.per_device_batch_size, collate_fn=collate_windows, num_workers=train_args.num_workers)


# ------------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, model_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    if model_args.selection_metric not in ("cross_modal_loss", "loss"):
        raise ValueError(f"expected --selection_metric 'cross_modal_loss' or 'loss', got {model_args.selection_metric!r}")
    if data_args.dataset not in ("synthetic", "wasp43b"):
        raise ValueError(f"expected --dataset 'synthetic' or 'wasp43b', got {data_args.dataset!r}")
    task_weights = json_option("task_weights", model_args.task_weights)
    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, model_args, train_args)

    # 1. The run: checks, the output-folder lock, Accelerator.
    accelerator = start_run(train_args)
    started = time.perf_counter()

    # 2. Data schema (the embedded default is (re)synthesised with spectra on first use, by one process).
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_dataset(data_args)
        schema = DatasetSchema.from_dir(data_args.data_dir)
        schema.refuse_masked_values("climate_spectra")
    if not schema.has_spectra:
        raise ValueError(f"expected a dataset with spectra in {data_args.data_dir}, got a schema without spectrum_wavelengths")
    observations = load_wasp43b_reference(data_args.data_dir, schema) if data_args.dataset == "wasp43b" else None

    # 3. Config and model; sizes come from the schema.
    config = ClimateSpectraConfig.from_schema(
        schema, context_steps=data_args.context_steps, cube_channels=model_args.cube_channels,
        hidden_size=model_args.hidden_size, num_fusion_layers=model_args.num_fusion_layers, norm_groups=model_args.norm_groups,
        column_pathway=model_args.column_pathway, column_hidden_size=model_args.column_hidden_size,
        loss_mode=model_args.loss_mode, task_weights=task_weights,
        adaptive_temperature=model_args.adaptive_temperature, adaptive_warmup_steps=model_args.adaptive_warmup_steps,
        cross_modal_weight=model_args.cross_modal_weight, consistency_weight=model_args.consistency_weight, smoothness_weight=model_args.smoothness_weight,
        physics_warmup_steps=model_args.physics_warmup_steps,
    )
    model = ClimateSpectraForMultiTask(config)
    if train_args.init_from:
        init_weights_from(model, train_args.init_from, accelerator)

    # 4. Optimizer (no decay on biases and norms).
    optimizer = create_optimizer(model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2))

    # 5. Datasets.
    def loader(split, shuffle=False):
        return make_loader(data_args.data_dir, split, schema, data_args, train_args, accelerator, shuffle=shuffle)

    val_split = "validation" if "validation" in schema.splits else "val"  # synthesize_planets / the WASP-43b builder
    with accelerator.main_process_first():
        train_loader, val_loader, test_loader = loader("train", shuffle=True), loader(val_split), loader("test")
    per_rank = [count_windows(schema, "train", data_args.context_steps, data_args.stride, rank=r, world_size=accelerator.num_processes, forecast=False)
                for r in range(accelerator.num_processes)]

    # 6. The family's part: both modalities, or (modality dropout) one; the multi-task loss with its terms.
    def compute_loss(model, batch, state):
        modalities = draw_modalities(model_args.modality_dropout, accelerator.device)
        out = model(**model_inputs(batch, accelerator.device, modalities), training_step=state.global_step)
        terms = {"consistency": out.consistency_loss, "smoothness": out.smoothness_loss, "cross_modal": out.cross_modal_loss,
                 "smoothness_weight": out.smoothness_weight}
        terms.update({f"loss_{t}": out.task_losses[t] for t in TASKS})
        terms.update({f"weight_{t}": out.task_weights[t] for t in TASKS})
        return out.loss, terms

    def validate(model, state):
        return evaluate(model, val_loader, accelerator)

    # 7. The loop; a one-modality micro-batch leaves the other encoder without gradient, which DDP is told.
    result = fit(
        accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
        micro_batches_per_epoch=micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps),
        run_config=run_config, project="climate_spectra", selection_metric=model_args.selection_metric,
        history_keys=("cross_modal_loss",), hooks=hooks, find_unused_parameters=True,
    )

    # 8. Final model = EMA weights of the best checkpoint; test on held-out planets beside the ridge baseline
    # (fitted on the same training windows; it uses only the fixed normalisation statistics of the model).
    ridge = fit_spectrum_ridge(loader("train"), val_loader, result.model, accelerator)
    with ema_weights(result.ema, result.model) as final:
        test = evaluate(final, test_loader, accelerator, with_ssim=True, observations=observations, ridge=ridge)
        if accelerator.is_main_process:
            final.save_pretrained(output_dir, safe_serialization=True)
            write_report(output_dir, final, test, result.state, schema, loader("test"), accelerator.device,
                         time.perf_counter() - started, run_config, observations, throughput=result.throughput)
    logger.info("test: %s", {k: v for k, v in test.items() if isinstance(v, float)})
    finish_run(result, test)
    return test


if __name__ == "__main__":
    main()
