"""The small shared training core: argument parsing, parameter groups, checkpoints, EMA, guards, logging,
and the one loop (`fit`) every recipe calls. Not a Trainer: the recipe keeps its data, its loss and the
batch-to-model mapping visible and hands them to `fit`.
"""

from .args import TrainingArguments, parse_recipe_args
from .checkpoint import CheckpointManager, TrainingState
from .ema import create_ema, ema_weights
from .guards import NonFiniteGuard, NonFiniteLossError, guarded_optimizer_step
from .loop import FitResult, fit, finish_run, start_run, steps_per_run
from .optim import create_optimizer, micro_batches_per_epoch, parameter_groups

__all__ = [
    "CheckpointManager",
    "FitResult",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "TrainingArguments",
    "TrainingState",
    "create_ema",
    "create_optimizer",
    "ema_weights",
    "finish_run",
    "fit",
    "micro_batches_per_epoch",
    "guarded_optimizer_step",
    "parameter_groups",
    "parse_recipe_args",
    "start_run",
    "steps_per_run",
]
