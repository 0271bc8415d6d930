"""Train the CNN-ViT hybrid to infer planet parameters from climate datacube windows, with Accelerate.

    accelerate launch recipes/train_cnn_vit.py [recipes/configs/cnn_vit/<name>.yaml] [--key value ...]

With no arguments it uses the planet population in data/planets (the embedded default of the planet-level families:
96 synthetic planets, 8 climate steps each; synthesised on first use, ~30 s), trains,
and evaluates the EMA weights of the best checkpoint on the held-out test planets: R2 and RMSE per parameter and
the calibration of the predicted uncertainty, beside a ridge regression on pooled cube features fitted in the same
run on the same training windows. When the dataset has planet regime labels (the schema's `planet_regime_names`; the
planet population has frozen / temperate / warm by global-mean surface temperature), the model also classifies the
regime (cross-entropy x `regime_loss_weight` in the loss) and the test reports accuracy, macro-F1 and a confusion
matrix beside two baselines fitted in the same run: the majority class of the training windows and a multinomial
logistic regression on the ridge's pooled cube features. Writes to runs/cnn_vit: config.json, model.safetensors, README.md (card with
parity plots), metrics.json, plots/, logs/ and checkpoints/.

Defaults that matter on the 16 training planets of the embedded default (see the card for the numbers): log channels
of T, p, rho and q beside the linear ones (gas constant and gravity become differences), no GroupNorm in the stem
(it removed the spatial means that carry the planet parameters), the input's global levels projected into [CLS],
a random longitude roll of each training batch, the best checkpoint chosen by validation NRMSE (the NLL rises
early from over-confident variances), and the predicted variances rescaled at test time by their mean z^2 on the
validation planets (both calibrations are reported).

Order (DESIGN.md section 4): Accelerator; logging; data schema; config and model (+ --init_from); EMA; optimizer
(separate learning rates for the CNN and the ViT parts, no decay on biases, norms and token embeddings); dataset;
lr schedule (warmup + cosine per optimizer step); prepare; resume; loop; save_pretrained; card; end; push.
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
from astrobio_hf.data.streaming import build_window_dataset, collate_windows, count_windows
from astrobio_hf.data.synth import PLANET_POPULATION, PLANET_POPULATION_DIR, ensure_planet_population
from astrobio_hf.evaluation.cnn_vit import BEST_METRICS, evaluate, fit_regime_baselines, fit_ridge, model_inputs, write_report
from astrobio_hf.hub.init_from import init_weights_from
from astrobio_hf.models.cnn_vit import CnnVitConfig, CnnVitForParameterRegression
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

logger = logging.getLogger("astrobio_hf.recipes.train_cnn_vit")

DEFAULT_DATA_DIR = PLANET_POPULATION_DIR
NO_DECAY_NAMES = ("cls_token", "position_embeddings")
RECIPE_DEFAULTS = {"output_dir": "runs/cnn_vit", "num_epochs": 60}


@dataclass
class DataArguments:
    """Where the shards are and how windows are cut from them."""

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Shards + schema.json; the embedded default is synthesised here when missing."})
    n_planets: int = field(default=PLANET_POPULATION["n_planets"], metadata={"help": "Planets of the embedded default (the planet population; used when it is synthesised)."})
    n_climate_steps: int = field(default=PLANET_POPULATION["n_climate_steps"], metadata={"help": "Climate steps per planet of the embedded default."})
    context_steps: int = field(default=4, metadata={"help": "Tc: climate steps in each input window."})
    stride: int = field(default=1, metadata={"help": "Climate steps between consecutive training windows."})
    shuffle_buffer: int = field(default=256, metadata={"help": "Windows in the streaming shuffle buffer (0 = stream order)."})
    lon_roll: bool = field(default=True, metadata={"help": "Augment training batches with a random circular shift in longitude (the origin of longitude is arbitrary)."})


@dataclass
class ModelArguments:
    """Model sizes, loss terms and the per-part learning rates (written into CnnVitConfig / the optimizer)."""

    stem_channels: int = 32
    stem_norm: str = field(default="none", metadata={"help": "Stem normalisation: none, or group (GroupNorm per sample over space, which removes the global levels that carry the planet parameters)."})
    global_token: bool = field(default=True, metadata={"help": "Project the input's global levels (stem input averaged over lat/lon) into the [CLS] token."})
    stem_downsample: int = 1
    patch_size: int = 2
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.0
    log_variables: str = field(default="T,p,rho,q", metadata={"help": "Comma-separated positive variables also fed as log channels ('' = none)."})
    predict_variance: bool = True
    regime_loss_weight: float = field(
        default=1.0, metadata={"help": "Weight of the regime cross-entropy in the loss (datasets with planet regime labels only)."}
    )
    physics_weights: str = field(
        default='{"cross_scale": 0.1, "ideal_gas": 0.05, "hydrostatic": 0.05}',
        metadata={"help": "JSON dict term -> weight (terms: cross_scale, ideal_gas, hydrostatic)."},
    )
    cnn_lr_multiplier: float = field(default=1.0, metadata={"help": "Learning rate of the CNN part (stem + CNN head) / learning_rate."})
    vit_lr_multiplier: float = field(default=0.5, metadata={"help": "Learning rate of the ViT part (tokens + encoder) / learning_rate."})
    best_metric: str = field(
        default="nrmse",
        metadata={"help": "Validation metric that picks the best checkpoint (lower is better): nrmse (RMSE / training "
                  "std, averaged over the parameters) or loss (Gaussian NLL + physics; it rises as soon as the predicted "
                  "variances shrink on the few training planets, long before the means stop improving)."},
    )


ARGUMENT_TYPES = (DataArguments, ModelArguments, TrainingArguments)


# ------------------------------------------------------------------------------------------------------
# Data, augmentation and learning rates (the batch -> model mapping, model_inputs, and the evaluation are in
# astrobio_hf.evaluation.cnn_vit)
# ------------------------------------------------------------------------------------------------------
def ensure_dataset(data_args: DataArguments) -> None:
    """Synthesise the planet population (the embedded default of the planet-level families) on first use, and again
    when it was written by an older version or with other settings (main process only); other data_dirs as they are."""
    if data_args.data_dir == DEFAULT_DATA_DIR:
        ensure_planet_population(DEFAULT_DATA_DIR, n_planets=data_args.n_planets, n_climate_steps=data_args.n_climate_steps)


def roll_longitude(inputs: dict) -> dict:
    """Training augmentation: the cube shifted circularly in longitude by a random number of columns (the global
    torch generator, whose state the checkpoints carry); the planet parameters do not depend on the origin."""
    shift = int(torch.randint(inputs["inputs"].shape[-1], ()))
    return {**inputs, "inputs": torch.roll(inputs["inputs"], shifts=shift, dims=-1)}


def lr_multipliers(model_args: ModelArguments) -> dict[str, float]:
    """Module-name prefixes -> learning-rate factors: the CNN part and the ViT part (the ViT head follows the ViT)."""
    return {
        "cnn_vit.stem": model_args.cnn_lr_multiplier,
        "cnn_head": model_args.cnn_lr_multiplier,
        "cnn_vit.embeddings": model_args.vit_lr_multiplier,
        "cnn_vit.layers": model_args.vit_lr_multiplier,
        "cnn_vit.final_norm": model_args.vit_lr_multiplier,
        "vit_head": model_args.vit_lr_multiplier,
        "regime_head": model_args.vit_lr_multiplier,  # reads the ViT's [CLS] token, like vit_head
    }


def make_loader(data_dir, split, schema, data_args, train_args, shuffle: bool, rank: int, world_size: int,
                in_memory: bool = False) -> DataLoader:
    """A split's windows, streamed and split across processes; `in_memory` (the training split under --dp): every
    window of the split in a list on every process, for Opacus' Poisson sampling by index (it shards the sampling)."""
    dataset = build_window_dataset(
        data_dir,
        split,
        context_steps=data_args.context_steps,
        stride={"train": data_args.stride, "validation": data_args.context_steps}.get(split, 2),
        shuffle_buffer=data_args.shuffle_buffer if shuffle and not in_memory else 0,
        seed=train_args.seed,
        rank=0 if in_memory else rank,
        world_size=1 if in_memory else world_size,
        schema=schema,
    )
    if in_memory:
        dataset = list(dataset)
    return DataLoader(dataset, batch_size=train_args.per_device_batch_size, collate_fn=collate_windows, num_workers=train_args.num_workers)


# ------------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None, hooks: Sequence = ()) -> dict:
    data_args, model_args, train_args = parse_recipe_args(ARGUMENT_TYPES, sys.argv[1:] if argv is None else argv, defaults=RECIPE_DEFAULTS)
    if model_args.best_metric not in BEST_METRICS:
        raise ValueError(f"expected --best_metric one of {sorted(BEST_METRICS)}, got {model_args.best_metric!r}")
    physics_weights = json_option("physics_weights", model_args.physics_weights)
    output_dir = Path(train_args.output_dir)
    run_config = resolved_config(data_args, model_args, train_args)

    # 1. The run: checks, the output-folder lock, Accelerator.
    accelerator = start_run(train_args)
    started = time.perf_counter()
    rank, world = accelerator.process_index, accelerator.num_processes

    # 2. Data schema (the embedded default is synthesised on first use, by one process).
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_dataset(data_args)
        schema = DatasetSchema.from_dir(data_args.data_dir)
        schema.refuse_masked_values("cnn_vit")

    # 3. Config and model; sizes, grid, targets and normalisation come from the schema.
    config = CnnVitConfig.from_schema(
        schema, context_steps=data_args.context_steps, stem_channels=model_args.stem_channels, stem_norm=model_args.stem_norm,
        global_token=model_args.global_token, stem_downsample=model_args.stem_downsample, patch_size=model_args.patch_size,
        hidden_size=model_args.hidden_size, num_layers=model_args.num_layers, num_heads=model_args.num_heads,
        dropout=model_args.dropout, log_variables=[n.strip() for n in model_args.log_variables.split(",") if n.strip()],
        predict_variance=model_args.predict_variance, physics_weights=physics_weights, regime_loss_weight=model_args.regime_loss_weight,
    )
    model = CnnVitForParameterRegression(config)
    init_origin = init_weights_from(model, train_args.init_from, accelerator) if train_args.init_from else None

    # 4. Optimizer: CNN and ViT parts at their own learning rates; no decay on biases, norms, [CLS] and positions.
    optimizer = create_optimizer(
        model, train_args.learning_rate, train_args.weight_decay, (train_args.adam_beta1, train_args.adam_beta2),
        lr_multipliers=lr_multipliers(model_args), no_decay_names=NO_DECAY_NAMES,
    )

    # 5. Datasets, streamed and split across processes; the ridge and regime baselines on the same training windows.
    def loader(split, shuffle=False, in_memory=False):
        return make_loader(data_args.data_dir, split, schema, data_args, train_args, shuffle, rank, world, in_memory=in_memory)

    with accelerator.main_process_first():
        train_loader, val_loader, test_loader = loader("train", shuffle=True, in_memory=train_args.dp), loader("validation"), loader("test")
    ridge = fit_ridge(loader("train"), val_loader, config, accelerator)
    regime_baselines = fit_regime_baselines(loader("train"), val_loader, config, accelerator) if config.num_regimes else None
    per_rank = [count_windows(schema, "train", data_args.context_steps, data_args.stride, rank=r, world_size=world) for r in range(world)]

    # 6. The family's part: Gaussian NLL + physics (+ regime cross-entropy) on longitude-rolled batches; validation.
    def compute_loss(model, batch, state):
        inputs = model_inputs(batch, accelerator.device)
        if data_args.lon_roll:
            inputs = roll_longitude(inputs)
        out = model(**inputs)
        terms = {"nll": out.nll, "physics_loss": out.physics_loss, **{f"physics/{k}": v for k, v in out.physics_terms.items()}}
        if out.regime_loss is not None:
            terms["regime_loss"] = out.regime_loss
        return out.loss, terms

    def validate(model, state):
        return evaluate(model, val_loader, accelerator)

    # 7. The loop.
    result = fit(
        accelerator, model, optimizer, train_loader, train_args, loss_fn=compute_loss, evaluate=validate,
        micro_batches_per_epoch=micro_batches_per_epoch(per_rank, train_args.per_device_batch_size, train_args.gradient_accumulation_steps),
        run_config=run_config, project="cnn_vit", selection_metric=BEST_METRICS[model_args.best_metric],
        history_keys=("model/nrmse_mean",), hooks=hooks,
    )

    # 8. Final model = EMA weights of the best checkpoint; test on held-out planets beside the baselines; card.
    with ema_weights(result.ema, result.model) as final:
        # the predicted variances, fitted on the training planets, are rescaled by their mean z^2 on validation
        scale = evaluate(final, val_loader, accelerator)["calibration/mean_z2"] if config.predict_variance else 1.0
        test = evaluate(final, test_loader, accelerator, ridge=ridge, variance_scale=scale, regime_baselines=regime_baselines)
        if accelerator.is_main_process:
            final.save_pretrained(output_dir, safe_serialization=True)
            write_report(
                output_dir, final, test, result.state, ridge=ridge,
                report_loader=make_loader(data_args.data_dir, "test", schema, data_args, train_args, False, 0, 1),
                device=accelerator.device, train_seconds=time.perf_counter() - started, throughput=result.throughput,
                run_config=run_config, schema=schema, init_origin=init_origin,
            )
    finish_run(result, test)
    return test


if __name__ == "__main__":
    main()
