"""The small shared training core: what every recipe would otherwise copy, as tested functions.

Not a Trainer: the recipe keeps the loop, the loss and the batch-to-model mapping visible; it calls
these pieces for argument parsing, parameter groups, checkpoints, EMA, guards and logging.
"""

from .args import TrainingArguments, parse_recipe_args
from .checkpoint import CheckpointManager, TrainingState
from .ema import create_ema, ema_weights
from .guards import NonFiniteGuard, NonFiniteLossError, guarded_optimizer_step
from .optim import create_optimizer, parameter_groups

__all__ = [
    "CheckpointManager",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "TrainingArguments",
    "TrainingState",
    "create_ema",
    "create_optimizer",
    "ema_weights",
    "guarded_optimizer_step",
    "parameter_groups",
    "parse_recipe_args",
]
