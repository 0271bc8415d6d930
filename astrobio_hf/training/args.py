"""Recipe arguments: dataclasses parsed by `HfArgumentParser` from an optional YAML file and flags.

YAML keys are exactly the dataclass field names; flags given after the YAML file override it. Hardware
(processes, mixed precision, FSDP/DeepSpeed) lives only in `accelerate_configs/`, never here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


@dataclass
class TrainingArguments:
    """Optimisation, checkpointing and logging settings shared by every recipe."""

    output_dir: str = field(default="runs/run", metadata={"help": "Where the model, card, plots, logs and checkpoints go (each recipe sets runs/<family>)."})
    seed: int = field(default=0, metadata={"help": "Seed for weights, dropout and the data order."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate after warmup."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW decay; never applied to biases and norms."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of the optimizer steps spent in linear warmup."})
    num_epochs: int = field(default=6, metadata={"help": "Passes over the training windows (ignored when max_steps > 0)."})
    max_steps: int = field(default=0, metadata={"help": "Optimizer steps to run; 0 = from num_epochs and the data size."})
    per_device_batch_size: int = field(default=8, metadata={"help": "Windows per process per micro-batch."})
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the global gradient norm (0 = no clipping)."})
    ema_decay: float = field(default=0.995, metadata={"help": "EMA decay (0 = no EMA). Evaluation and the saved model use the EMA weights."})
    checkpoint_every: int = field(default=50, metadata={"help": "Optimizer steps between checkpoints."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Step checkpoints kept besides `best`."})
    eval_every: int = field(default=50, metadata={"help": "Optimizer steps between validation passes (0 = each epoch end only)."})
    early_stopping_patience: int = field(default=0, metadata={"help": "Stop after this many validations without improvement (0 = never)."})
    log_every: int = field(default=10, metadata={"help": "Optimizer steps between tracker logs."})
    report_to: str = field(default="tensorboard", metadata={"help": "Comma list of trackers: tensorboard, wandb (offline works), or none."})
    resume: str = field(
        default="auto",
        metadata={
            "help": "'auto' resumes from the last checkpoint in output_dir if any; a checkpoint path; a Hub repo id "
            "(owner/name[@revision]) whose last-checkpoint/ was pushed with hub_strategy=checkpoint; or 'none'."
        },
    )
    max_nonfinite_steps: int = field(default=5, metadata={"help": "Consecutive non-finite steps tolerated before the run stops."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    torch_compile: bool = field(default=False, metadata={"help": "Compile the model with torch.compile."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in the backward pass (families that declare supports_gradient_checkpointing)."})
    channels_last: bool = field(default=False, metadata={"help": "channels_last (2-D convolutions) or channels_last_3d (3-D) memory format; refused for a model without convolutions."})
    # The Hub. The token comes only from HF_TOKEN or `hf auth login`: there is deliberately no token field,
    # so none can end up in run_config.json, metrics.json or a tracker.
    push_to_hub: str = field(default="", metadata={"help": "Hub repo id (owner/name) to push the run to while it trains; empty = no push."})
    hub_strategy: str = field(
        default="end",
        metadata={
            "help": "end: push the final model and card once; every_save: also the weights at every checkpoint; "
            "checkpoint: also the full training state under last-checkpoint/ (resume elsewhere with --resume REPO_ID)."
        },
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the push_to_hub repository as private."})
    init_from: str = field(
        default="",
        metadata={"help": "Start from these weights: a local release or run folder, or a Hub repo id owner/name[@revision]."},
    )
    # Differential privacy (DP-SGD with Opacus, astrobio_hf.training.privacy): --max_grad_norm is the per-sample clipping norm.
    dp: bool = field(default=False, metadata={"help": "Train with DP-SGD (Opacus): per-sample clipping to --max_grad_norm, Gaussian noise, Poisson sampling of the global batch, an accountant; --gradient_accumulation_steps are Opacus virtual steps."})
    target_epsilon: float = field(default=0.0, metadata={"help": "With --dp: the privacy budget; Opacus picks the noise for the run's epochs (0 = give --noise_multiplier)."})
    target_delta: float = field(default=0.0, metadata={"help": "With --dp: delta; 0 = 1 / (number of training examples)."})
    noise_multiplier: float = field(default=0.0, metadata={"help": "With --dp: noise std / clipping norm, instead of --target_epsilon."})
    dp_accountant: str = field(default="rdp", metadata={"help": "With --dp: rdp or prv (Opacus' accountants)."})
    dp_clipping: str = field(default="flat", metadata={"help": "With --dp: flat (one norm over all parameters) or per_layer (the norm split evenly)."})

    def __post_init__(self):
        """Every recipe's shared arguments are checked here, once, before any work starts."""
        if self.hub_strategy not in HUB_STRATEGIES:
            raise ValueError(f"expected hub_strategy one of {list(HUB_STRATEGIES)}, got {self.hub_strategy!r}")
        checks = {
            "learning_rate": self.learning_rate >= 0, "weight_decay": self.weight_decay >= 0,
            "adam_beta1": 0 <= self.adam_beta1 < 1, "adam_beta2": 0 <= self.adam_beta2 < 1,
            "warmup_ratio": 0 <= self.warmup_ratio < 1, "num_epochs": self.num_epochs >= 1,
            "max_steps": self.max_steps >= 0, "per_device_batch_size": self.per_device_batch_size >= 1,
            "gradient_accumulation_steps": self.gradient_accumulation_steps >= 1, "max_grad_norm": self.max_grad_norm >= 0,
            "ema_decay": 0 <= self.ema_decay < 1, "checkpoint_every": self.checkpoint_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1, "eval_every": self.eval_every >= 0,
            "early_stopping_patience": self.early_stopping_patience >= 0, "log_every": self.log_every >= 1,
            "max_nonfinite_steps": self.max_nonfinite_steps >= 1, "num_workers": self.num_workers >= 0,
        }
        expected = {
            "learning_rate": ">= 0", "weight_decay": ">= 0", "adam_beta1": "in [0, 1)", "adam_beta2": "in [0, 1)",
            "warmup_ratio": "in [0, 1)", "num_epochs": ">= 1", "max_steps": ">= 0 (0 = from num_epochs)",
            "per_device_batch_size": ">= 1", "gradient_accumulation_steps": ">= 1", "max_grad_norm": ">= 0 (0 = no clipping)",
            "ema_decay": "in [0, 1) (0 = no EMA)", "checkpoint_every": ">= 1", "keep_checkpoints": ">= 1",
            "eval_every": ">= 0 (0 = at epoch ends)", "early_stopping_patience": ">= 0 (0 = never)", "log_every": ">= 1",
            "max_nonfinite_steps": ">= 1", "num_workers": ">= 0",
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and value != value):
                raise ValueError(f"expected --{name} {expected[name]}, got {value!r}")
        if self.dp:
            if self.target_epsilon < 0 or self.noise_multiplier < 0 or (self.target_epsilon > 0) == (self.noise_multiplier > 0):
                raise ValueError(
                    f"expected --dp with exactly one of --target_epsilon > 0 and --noise_multiplier > 0, got "
                    f"--target_epsilon {self.target_epsilon} and --noise_multiplier {self.noise_multiplier}"
                )
            if not self.max_grad_norm > 0:
                raise ValueError(f"expected --max_grad_norm > 0 with --dp (the per-sample clipping norm), got {self.max_grad_norm}")
            if not 0 <= self.target_delta < 1:
                raise ValueError(f"expected --target_delta in [0, 1) (0 = 1/N), got {self.target_delta}")
        unknown = [n for n in self.trackers if n not in TRACKERS]
        if unknown:
            raise ValueError(f"expected --report_to a comma list of {list(TRACKERS)} or 'none', got {self.report_to!r}")

    @property
    def trackers(self) -> list[str]:
        """The tracker names of `report_to` ('none' and empty entries dropped)."""
        return [n.strip() for n in self.report_to.split(",") if n.strip() and n.strip() != "none"]


HUB_STRATEGIES = ("end", "every_save", "checkpoint")
TRACKERS = ("tensorboard", "wandb")


def json_option(name: str, value: str, expected: type = dict) -> Any:
    """Parse a JSON-valued option (e.g. --physics_weights) with an error that names the option."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as err:
        raise ValueError(f"expected --{name} to be JSON (e.g. '{{\"name\": 0.1}}'), got {value!r}: {err}") from None
    if not isinstance(parsed, expected):
        raise ValueError(f"expected --{name} to be a JSON {expected.__name__}, got {type(parsed).__name__} {value!r}")
    return parsed


def parse_recipe_args(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """Parse `[config.yaml] [--key value ...]` into instances of `dataclass_types`.

    `defaults` are the recipe's own defaults for shared fields (e.g. its output_dir and learning rate);
    the YAML file overrides them and flags override the file. An unknown YAML key or flag is an error
    that names it and lists the valid ones.
    """
    argv = list(argv or [])
    parser = HfArgumentParser(list(dataclass_types))
    if defaults:
        known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(f"unknown recipe defaults {unknown}; valid keys: {sorted(known)}")
        parser.set_defaults(**defaults)
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = Path(argv.pop(0))
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"expected a YAML mapping of field names in {path}, found a syntax error{line}: {problem}") from None
        if not isinstance(values, dict):
            raise ValueError(f"expected a mapping of field names in {path}, found {type(values).__name__}")
        known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {path}; valid keys: {sorted(known)}")
        parser.set_defaults(**{k: json.dumps(v) if isinstance(v, dict) else v for k, v in values.items()})
    *outputs, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True, look_for_args_file=False)
    if remaining:
        raise ValueError(f"unknown arguments {remaining}; run with --help for the valid ones")
    return tuple(outputs)


def resolved_config(*instances: Any) -> dict[str, Any]:
    """The resolved configuration as plain JSON-serialisable values, for trackers and the run directory."""
    out: dict[str, Any] = {}
    for obj in instances:
        out.update(dataclasses.asdict(obj))
    return json.loads(json.dumps(out, default=str))
