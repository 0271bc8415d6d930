"""Checkpoints: save every N steps, keep `best` and the last few, write atomically, resume exactly.

`accelerator.save_state` writes model, optimizer, lr scheduler, RNG states and every object registered
with `register_for_checkpointing` (here the `TrainingState`, which holds the data position, and the EMA).
It writes into a folder in place, so a crash half-way leaves a half-written folder; we write into a
hidden temporary folder, mark it complete, then rename it into place (a rename is atomic on POSIX), and
only then move the `last`/`best` pointers (small JSON files, also replaced atomically). Rotation never
deletes the checkpoint that `best` points to.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{8})$")
_COMPLETE = "COMPLETE"


@dataclass
class TrainingState:
    """Loop state that `accelerator.save_state` stores beside the weights: where we are in training and
    in the data stream (epoch + batches consumed in it), plus early-stopping and guard counters."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_metric: float | None = None
    evals_without_improvement: int = 0
    skipped_steps: int = 0
    history: list = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def record_validation(self, metric: float) -> bool:
        """Record a validation metric (lower is better) in the history; returns True when it is the best."""
        is_best = self.best_metric is None or metric < self.best_metric
        if is_best:
            self.best_metric, self.evals_without_improvement = metric, 0
        else:
            self.evals_without_improvement += 1
        self.history.append({"step": self.global_step, "val/loss": metric})
        return is_best

    def patience_exhausted(self, patience: int) -> bool:
        """Early stopping: `patience` validations in a row without improvement (0 = never stop early)."""
        return bool(patience) and self.evals_without_improvement >= patience


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


class CheckpointManager:
    """Writes `output_dir/checkpoints/step-XXXXXXXX` folders through `accelerator.save_state`.

    Pointers: `checkpoints/last.json` and `checkpoints/best.json` name a complete step folder.
    """

    def __init__(self, accelerator, output_dir: str | os.PathLike, keep: int = 2):
        if keep < 1:
            raise ValueError(f"expected keep_checkpoints >= 1, got {keep}")
        self.accelerator = accelerator
        self.root = Path(output_dir) / "checkpoints"
        self.keep = keep

    # -- queries -------------------------------------------------------------------------------------
    def complete_checkpoints(self) -> list[Path]:
        """Complete step folders, oldest first (half-written temporary folders are ignored)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _STEP_DIR.match(p.name) and (p / _COMPLETE).is_file()]
        return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))

    def _pointer(self, name: str) -> Path | None:
        path = self.root / f"{name}.json"
        if not path.is_file():
            return None
        target = self.root / json.loads(path.read_text())["checkpoint"]
        return target if (target / _COMPLETE).is_file() else None

    def last(self) -> Path | None:
        """The newest complete checkpoint (the pointer, or the newest folder if the pointer is stale)."""
        done = self.complete_checkpoints()
        pointed = self._pointer("last")
        if done and (pointed is None or int(done[-1].name[5:]) > int(pointed.name[5:])):
            return done[-1]
        return pointed

    def best(self) -> Path | None:
        return self._pointer("best")

    # -- writing -------------------------------------------------------------------------------------
    def save(self, step: int, metric: float | None = None, is_best: bool = False) -> Path:
        """Save the full training state for `step`; all processes must call it (collective)."""
        acc = self.accelerator
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}"
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / _COMPLETE).write_text(json.dumps({"step": step, "metric": metric}))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _write_json_atomic(self.root / "last.json", {"checkpoint": final.name, "step": step})
            if is_best:
                _write_json_atomic(self.root / "best.json", {"checkpoint": final.name, "step": step, "metric": metric})
            self._rotate()
            logger.info("saved checkpoint %s%s", final, " (best)" if is_best else "")
        acc.wait_for_everyone()
        return final

    def _rotate(self) -> None:
        best = self.best()
        done = self.complete_checkpoints()
        for path in done[: max(0, len(done) - self.keep)]:
            if best is not None and path.name == best.name:
                continue
            shutil.rmtree(path, ignore_errors=True)
        for stale in self.root.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)

    # -- resuming ------------------------------------------------------------------------------------
    def resolve_resume(self, resume: str) -> Path | None:
        """'auto' -> last complete checkpoint or None; 'none' -> None; else a path that must be complete."""
        if resume in ("", "none", None):
            return None
        if resume == "auto":
            return self.last()
        path = Path(resume)
        if not (path / _COMPLETE).is_file():
            raise FileNotFoundError(f"expected a complete checkpoint folder (with {_COMPLETE}) at {path}")
        return path

    def load(self, path: Path) -> None:
        self.accelerator.load_state(str(path))
        logger.info("resumed from %s", path)

    def restore_best_weights(self, state: TrainingState) -> None:
        """Load the weights and EMA of the `best` checkpoint (when it is not the last one) while keeping the
        run's own counters and history in `state`: what a run releases at its end."""
        best = self.best()
        if best is None or best == self.last():
            return
        final = copy.deepcopy(state.state_dict())
        self.load(best)
        state.load_state_dict(final)
