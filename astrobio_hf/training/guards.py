"""The non-finite guard: a NaN/Inf loss or gradient skips the optimizer step instead of poisoning the
weights; each skip is counted and logged, and too many in a row stop the run with a clear error (the
last good checkpoint is left intact because nothing is saved after a bad step)."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised after `max_consecutive` non-finite steps in a row."""


class NonFiniteGuard:
    """Decide, identically on every process, whether this optimizer step is finite.

    `check(loss, grad_norm)` reduces one flag across processes (so DDP ranks never diverge on whether
    to step) and returns True when the step may be taken.
    """

    def __init__(self, accelerator, max_consecutive: int = 5):
        self.accelerator = accelerator
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0

    def check(self, loss: torch.Tensor, grad_norm: torch.Tensor | float | None) -> bool:
        bad = ~torch.isfinite(loss.detach().float())
        if grad_norm is not None:
            norm = torch.as_tensor(grad_norm, device=loss.device, dtype=torch.float32)
            bad = bad | ~torch.isfinite(norm)
        bad = self.accelerator.reduce(bad.to(torch.float32).reshape(1), reduction="sum")
        if bad.item() == 0:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.total += 1
        logger.warning(
            "non-finite loss or gradient (loss=%s, grad_norm=%s): step skipped (%d in a row, %d in total)",
            loss.detach().float().item(), grad_norm if grad_norm is None else float(grad_norm), self.consecutive, self.total,
        )
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive non-finite steps (limit {self.max_consecutive}); stopping. "
                "The last checkpoint was written before these steps and is intact. Lower the learning rate, "
                "check the data for NaN/Inf, or try fp32."
            )
        return False


def guarded_optimizer_step(accelerator, model, optimizer, lr_scheduler, guard: NonFiniteGuard, loss, max_grad_norm: float):
    """The end of every micro-batch inside `accelerator.accumulate`: on a sync step, clip the gradients and
    ask the guard; step the optimizer (and, on sync steps, the schedule) unless the step is non-finite;
    zero the gradients. Returns `(grad_norm or None, step_ok)`."""
    grad_norm, step_ok = None, True
    if accelerator.sync_gradients:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or float("inf"))
        step_ok = guard.check(loss, grad_norm)
    if step_ok:
        optimizer.step()
        if accelerator.sync_gradients:
            lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, step_ok
