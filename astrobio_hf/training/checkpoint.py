"""Checkpoints: save every N steps, keep `best` and the last few, write atomically, resume exactly.

`accelerator.save_state` writes model, optimizer, lr scheduler, RNG states and every object registered
with `register_for_checkpointing` (here the `TrainingState`, which holds the data position, and the EMA).
It writes into a folder in place, so a crash half-way leaves a half-written folder; we write into a
hidden temporary folder, mark it complete, then rename it into place (a rename is atomic on POSIX), and
only then move the `last`/`best` pointers (small JSON files, also replaced atomically). Rotation never
deletes the checkpoint that `best` points to.

`resume` may also name a Hub repository (`owner/name[@revision]`) that a run pushed with
`hub_strategy=checkpoint`: its `last-checkpoint/` folder is downloaded and resumed from, to continue a run on
another machine. accelerate unpickles the RNG and custom-object files of a checkpoint (`weights_only=False`), so
files that came over the network are first checked, without unpickling them, to reference nothing beyond
tensors, plain Python values and numpy arrays.
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
HUB_CHECKPOINT_DIR = "last-checkpoint"
# What the pickled parts of an accelerate checkpoint may reference beyond torch's own weights-only allowlist:
# the numpy RNG state is an ndarray (reconstructed from its dtype).
_SAFE_PICKLE_GLOBALS = {"numpy.ndarray", "numpy.dtype", "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct"}


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
    privacy: dict | None = None  # with --dp: the privacy spent so far (astrobio_hf.training.privacy.PrivacySpent)

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


def _step(path: Path) -> int:
    return int(_STEP_DIR.match(path.name).group(1))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else repr(err)


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
        try:
            target = self.root / json.loads(path.read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError) as err:
            # a pointer is a convenience: the step folders themselves say what is complete
            logger.warning("ignoring %s: expected JSON with a 'checkpoint' entry, could not read it (%s)", path, err)
            return None
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
        """'auto' -> last complete checkpoint or None; 'none' -> None; a Hub repo id (owner/name[@revision], not
        an existing local path) -> its downloaded `last-checkpoint/`; else a path that must be complete.
        All processes call it: the main process downloads first and pins the commit it got, so every process
        resumes from the same commit even if a push lands meanwhile (the others read the cache, or download
        that commit on a node of their own)."""
        if resume in ("", "none", None):
            return None
        if resume == "auto":
            return self.last()
        path = Path(resume)
        if not path.exists() and is_hub_reference(resume):
            from accelerate.utils import broadcast_object_list

            acc = self.accelerator
            message: list = [None]
            if acc.is_main_process:
                try:
                    path = download_hub_checkpoint(resume)
                    message = [{"commit": path.parent.name}]  # the cache layout is <repo>/snapshots/<commit>/last-checkpoint
                except (OSError, ValueError) as err:
                    if acc.num_processes == 1:
                        raise
                    message, failure = [{"error": f"{type(err).__name__}: {err}"}], err
            if acc.num_processes > 1:
                broadcast_object_list(message)  # the other processes learn the commit, or the error
                if "error" in message[0]:
                    if acc.is_main_process:
                        raise failure
                    raise FileNotFoundError(f"resume={resume!r} failed on the main process: {message[0]['error']}")
            if not acc.is_main_process:
                path = download_hub_checkpoint(f"{split_hub_reference(resume)[0]}@{message[0]['commit']}")
            return path
        if not (path / _COMPLETE).is_file():
            raise FileNotFoundError(f"expected a complete checkpoint folder (with {_COMPLETE}) at {path}")
        return path

    def load(self, path: Path) -> None:
        self.accelerator.load_state(str(path))
        logger.info("resumed from %s", path)

    def resume(self, resume: str) -> Path | None:
        """Resolve `resume` and load it. With 'auto', a checkpoint that does not load (a truncated weights file,
        a garbled optimizer state) is skipped, with a warning that names it and the error, for the next older
        complete one; a path or a Hub checkpoint named explicitly must load, or the error names it."""
        path = self.resolve_resume(resume)
        if path is None:
            return None
        if resume != "auto":
            try:
                self.load(path)
            except Exception as err:  # noqa: BLE001 - any failure to read it is reported with the path
                raise ValueError(f"could not resume from checkpoint {path}: {type(err).__name__}: {_first_line(err)}") from err
            return path
        candidates = [path] + [p for p in reversed(self.complete_checkpoints()) if p != path and _step(p) < _step(path)]
        for i, candidate in enumerate(candidates):
            try:
                self.load(candidate)
                return candidate
            except Exception as err:  # noqa: BLE001 - skip it, say so, try the previous one
                logger.warning(
                    "skipping checkpoint %s: it does not load (%s: %s)%s", candidate, type(err).__name__, _first_line(err),
                    f"; trying {candidates[i + 1].name}" if i + 1 < len(candidates) else "",
                )
        raise ValueError(
            f"none of the {len(candidates)} complete checkpoints in {self.root} loads ({', '.join(p.name for p in candidates)}); "
            "see the warnings above for each one, or start afresh with --resume none"
        )

    def restore_best_weights(self, state: TrainingState) -> None:
        """Load the weights and EMA of the `best` checkpoint (when it is not the last one) while keeping the
        run's own counters and history in `state`: what a run releases at its end."""
        best = self.best()
        if best is None or best == self.last():
            return
        final = copy.deepcopy(state.state_dict())
        self.load(best)
        state.load_state_dict(final)


# ------------------------------------------------------------------------------------------------------
# Checkpoints on the Hub
# ------------------------------------------------------------------------------------------------------
def hub_options() -> dict[str, str | None]:
    """`endpoint` and `cache_dir` for huggingface_hub calls, read from HF_ENDPOINT / HF_HUB_CACHE when the call
    is made (huggingface_hub reads them once, at import); None leaves the library default."""
    return {"endpoint": os.environ.get("HF_ENDPOINT") or None, "cache_dir": os.environ.get("HF_HUB_CACHE") or None}


def split_hub_reference(spec: str) -> tuple[str, str | None]:
    """'owner/name@rev' -> ('owner/name', 'rev'); 'owner/name' -> ('owner/name', None). ValueError if the
    repo id is not a valid Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id, at, revision = str(spec).partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"expected a Hub repo id owner/name[@revision], got {spec!r} ({err})") from err
    if "/" not in repo_id or (at and not revision):
        raise ValueError(f"expected a Hub repo id owner/name[@revision], got {spec!r}")
    return repo_id, revision or None


def is_hub_reference(spec: str) -> bool:
    """True when `spec` reads as owner/name[@revision] (callers check first that it is not a local path)."""
    try:
        split_hub_reference(spec)
    except ValueError:
        return False
    return True


def check_pickled_files(folder: str | os.PathLike) -> None:
    """Raise ValueError when a pickled file of a checkpoint (.pkl, .bin) references a Python global outside
    torch's weights-only allowlist and numpy arrays. Reads the pickle opcodes only; nothing is unpickled."""
    import torch

    for path in sorted(Path(folder).iterdir()):
        if path.suffix not in (".pkl", ".bin", ".pt", ".pth"):
            continue
        try:
            names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception as err:  # not a torch zip archive
            raise ValueError(f"expected {path.name} to be a torch checkpoint file, could not read it: {err}") from err
        unsafe = sorted(n for n in names if n not in _SAFE_PICKLE_GLOBALS and not n.startswith("numpy.dtypes."))
        if unsafe:
            raise ValueError(
                f"refusing to load {path}: expected only tensors, plain Python values and numpy arrays, got references to "
                f"{unsafe} (a checkpoint written by this project never has them; do not resume from an untrusted repo)"
            )


def download_hub_checkpoint(spec: str) -> Path:
    """Download `last-checkpoint/` of Hub repo `owner/name[@revision]` (pushed with hub_strategy=checkpoint)
    into the Hugging Face cache and return its folder, after checking it is complete and safe to load."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, revision = split_hub_reference(spec)
    try:
        root = snapshot_download(repo_id, revision=revision, allow_patterns=[f"{HUB_CHECKPOINT_DIR}/*"], **hub_options())
    except (HfHubHTTPError, LocalEntryNotFoundError) as err:
        raise FileNotFoundError(
            f"resume={spec!r} is not a local checkpoint folder, and downloading {HUB_CHECKPOINT_DIR}/ of Hub repo "
            f"{repo_id!r} (revision {revision or 'main'}) failed: {err}"
        ) from err
    path = Path(root) / HUB_CHECKPOINT_DIR
    if not (path / _COMPLETE).is_file():
        found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise FileNotFoundError(
            f"expected a complete {HUB_CHECKPOINT_DIR}/ (with {_COMPLETE}) in Hub repo {repo_id!r} at revision "
            f"{revision or 'main'}, as a run pushes with hub_strategy=checkpoint; found {found or 'nothing'}"
        )
    check_pickled_files(path)
    logger.info("downloaded %s/ of %s to %s", HUB_CHECKPOINT_DIR, spec, path)
    return path
