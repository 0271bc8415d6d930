"""Push a run to the Hugging Face Hub while it trains: `--push_to_hub REPO_ID --hub_strategy end|every_save|checkpoint`.

Strategies (the names of transformers' `hub_strategy`):
- `end`: one commit when the run ends ("End of training"): the final model and its card, i.e. README.md,
  config.json, *.safetensors, metrics.json, plots/*.png (a diffusion run adds model_index.json and
  scheduler/scheduler_config.json so the repo also loads as its pipeline, as a release does).
- `every_save`: also, after every checkpoint, a commit "Training in progress, step N" with the weights of that
  checkpoint (accelerate's `model.safetensors`: the training weights, not the EMA) and config.json.
- `checkpoint`: every_save, and the same commit also replaces `last-checkpoint/` with the full training state
  of that checkpoint (weights, optimizer, scheduler, RNG, EMA, TrainingState, COMPLETE): what
  `--resume REPO_ID` downloads to continue the run on another machine.

Uploads do not block training: each is `HfApi.upload_folder(..., run_as_future=True)`, which HfApi runs on one
background thread, so commits land in the order they were made. When a checkpoint is saved while the previous
checkpoint's upload is still running, the new one is skipped and logged (as transformers does): a later
save, and the end, carry newer weights. Files are first staged as hard links (copies across file systems) in
`output_dir/.hub-staging/`, so checkpoint rotation cannot delete a file under an upload in flight, and the
staging folder is removed once its upload is done.

Only the main process talks to the Hub; on the others the pusher does nothing. The token comes from HF_TOKEN
or `hf auth login`, never from an argument (nothing that reaches run_config.json can hold it). Only the files
listed above are uploaded: never run_config.json (local paths), logs/ or wandb/ (tracker credentials), .env,
other checkpoints; and before each upload every staged file under 64 MiB (all but tensor payloads) is checked
not to contain the token. `wait()` blocks until every upload is done and raises `HubPushError` naming each
failed upload.

    origin = init_weights_from(model, train_args.init_from, accelerator)  # (init_from.py) after the model is built
    pusher = HubPusher.from_args(accelerator, train_args, config)   # after CheckpointManager (creates the repo)
    path = checkpoints.save(step, ...); pusher.on_checkpoint(step, path)
    ...                                                              # after the last file is written and
    accelerator.end_training(); pusher.on_end(); pusher.wait()     # the trackers are flushed
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from concurrent.futures import Future
from pathlib import Path

from astrobio_hf.training.args import HUB_STRATEGIES
from astrobio_hf.training.checkpoint import (
    HUB_CHECKPOINT_DIR,
    hub_options,
    split_hub_reference,
)

logger = logging.getLogger(__name__)

STAGING_DIR = ".hub-staging"
_TOKEN_SCAN_LIMIT = 64 * 2**20


class HubPushError(RuntimeError):
    """An upload to the Hub failed (the run's files on disk are complete: push them again later)."""


def end_files(run_dir: str | os.PathLike) -> dict[str, Path]:
    """{path in the repo: file} of what the end-of-training push uploads from a finished run directory."""
    from .release import component_sources, is_adapter_dir, pipeline_sources, release_files

    run_dir = Path(run_dir)
    if is_adapter_dir(run_dir):  # a language-model run: the PEFT adapter folder, its tokenizer, card and plots
        files = {n: run_dir / n for n in (*release_files(run_dir), "metrics.json") if (run_dir / n).is_file()}
        files.update({f"plots/{p.name}": p for p in sorted(run_dir.glob("plots/*.png"))})
        files.update({f"merged/{p.name}": p for p in sorted(run_dir.glob("merged/*")) if p.is_file()})  # merged on purpose only
        return files
    weights = (run_dir / "model.safetensors").is_file() or (run_dir / "model.safetensors.index.json").is_file()
    if not (run_dir / "config.json").is_file() or not weights:
        found = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
        raise FileNotFoundError(
            f"expected config.json and model.safetensors (or its shards' index) in {run_dir}: save_pretrained before "
            f"the push; found {found}"
        )
    files = {n: run_dir / n for n in ("README.md", "config.json", "metrics.json") if (run_dir / n).is_file()}
    files.update({p.name: p for p in sorted(run_dir.glob("*.safetensors")) + sorted(run_dir.glob("*.safetensors.index.json"))})
    files.update({f"plots/{p.name}": p for p in sorted(run_dir.glob("plots/*.png"))})
    files.update(pipeline_sources(run_dir))
    files.update(component_sources(run_dir))  # a planet assistant's adapter/ and encoder/
    return files


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not supported
        shutil.copy2(source, target)


class HubPusher:
    """Pushes one run to Hub repo `repo_id` (see the module docstring); a no-op when `repo_id` is empty and on
    every process but the main one. `config` (the model's PreTrainedConfig) is written as config.json beside
    the weights of each checkpoint commit, so it is required by `every_save` and `checkpoint`."""

    def __init__(self, accelerator, output_dir, repo_id: str, strategy: str = "end", private: bool = False, config=None):
        if strategy not in HUB_STRATEGIES:
            raise ValueError(f"expected hub_strategy one of {list(HUB_STRATEGIES)}, got {strategy!r}")
        self.repo_id = (repo_id or "").strip()
        self.strategy = strategy
        self.output_dir = Path(output_dir)
        self.config = config
        self.skipped_steps: list[int] = []
        self.commits: list[tuple[str, str]] = []  # (what, commit id) of the finished uploads, in order
        self._jobs: list[tuple[str, Future]] = []
        self._pending_save: tuple[str, Future] | None = None
        self._reported: set[str] = set()
        if self.repo_id:
            _, revision = split_hub_reference(self.repo_id)  # every process checks, so a typo fails everywhere
            if revision:
                raise ValueError(f"expected push_to_hub to be a repo id owner/name (pushes go to main), got {self.repo_id!r}")
            if strategy != "end" and config is None:
                raise ValueError(f"hub_strategy={strategy!r} uploads config.json with each checkpoint: expected config=<the model config>, got None")
            sharded = getattr(accelerator.distributed_type, "value", str(accelerator.distributed_type))
            if strategy != "end" and sharded in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
                raise ValueError(
                    f"hub_strategy={strategy!r} pushes the single model.safetensors of each checkpoint, but {sharded} "
                    "checkpoints are sharded: expected hub_strategy='end' (the final model is gathered by save_pretrained)"
                )
        self.enabled = bool(self.repo_id) and accelerator.is_main_process
        if not self.enabled:
            return
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        self.api = HfApi(endpoint=hub_options()["endpoint"])
        try:
            # private=None (not False) when not asked: an organisation whose default is private keeps it.
            url = self.api.create_repo(self.repo_id, repo_type="model", private=True if private else None, exist_ok=True)
        except HfHubHTTPError as err:
            raise HubPushError(
                f"could not create or reach Hub repo {self.repo_id!r} for push_to_hub (log in with `hf auth login` or set "
                f"HF_TOKEN to a token with write access): {err}"
            ) from err
        self.staging_root = self.output_dir / STAGING_DIR
        logger.info("pushing this run to %s (hub_strategy=%s)", url, strategy)

    @classmethod
    def from_args(cls, accelerator, train_args, config=None) -> HubPusher:
        """From TrainingArguments: output_dir, push_to_hub, hub_strategy, hub_private."""
        return cls(accelerator, train_args.output_dir, train_args.push_to_hub, train_args.hub_strategy, train_args.hub_private, config=config)

    # ----------------------------------------------------------------------------------------------------
    def on_checkpoint(self, step: int, checkpoint_dir: str | os.PathLike) -> Future | None:
        """After `CheckpointManager.save` returned `checkpoint_dir`: queue the every_save / checkpoint commit."""
        if not self.enabled or self.strategy == "end":
            return None
        if self._pending_save is not None and not self._pending_save[1].done():
            self.skipped_steps.append(step)
            logger.warning("hub push: the upload of %s is still running, so step %d is not pushed", self._pending_save[0], step)
            return None
        checkpoint_dir = Path(checkpoint_dir)
        weights = checkpoint_dir / "model.safetensors"
        if not weights.is_file():
            found = sorted(p.name for p in checkpoint_dir.iterdir()) if checkpoint_dir.is_dir() else []
            raise FileNotFoundError(
                f"expected model.safetensors in checkpoint {checkpoint_dir} (accelerate writes it for one unsharded model), found {found}"
            )
        stage = self._new_stage(f"step-{step:08d}")
        _link(weights, stage / "model.safetensors")
        self.config.to_json_file(stage / "config.json", use_diff=True)
        delete = None
        if self.strategy == "checkpoint":
            subfolders = sorted(p.name for p in checkpoint_dir.iterdir() if p.is_dir())
            if subfolders:
                raise ValueError(f"expected only files in checkpoint {checkpoint_dir} to push as {HUB_CHECKPOINT_DIR}/, got folders {subfolders}")
            for path in sorted(checkpoint_dir.iterdir()):
                _link(path, stage / HUB_CHECKPOINT_DIR / path.name)
            delete = [f"{HUB_CHECKPOINT_DIR}/*"]  # files of an older checkpoint that this one does not replace
        future = self._submit(stage, f"Training in progress, step {step}", f"step {step}", delete)
        self._pending_save = (f"step {step}", future)
        return future

    def on_end(self, output_dir: str | os.PathLike | None = None) -> Future | None:
        """Queue the final commit ("End of training") from the finished run directory (default: output_dir).
        Call it after the last file of the run is written, then `wait()`."""
        if not self.enabled:
            return None
        stage = self._new_stage("end")
        for name, source in end_files(output_dir or self.output_dir).items():
            _link(source, stage / name)
        return self._submit(stage, "End of training", "the end of training", None)

    def wait(self) -> list[tuple[str, str]]:
        """Block until every queued upload is done; raise HubPushError naming the failed ones. Returns the
        (what, commit id) of the uploads made by this pusher."""
        if not self.enabled:
            return []
        failed = []
        for what, future in self._jobs:
            try:
                self.commits.append((what, future.result().oid))
            except Exception as err:  # noqa: BLE001  (collected, then re-raised together below)
                failed.append((what, err))
        self._jobs.clear()
        self._pending_save = None
        shutil.rmtree(self.staging_root, ignore_errors=True)
        if failed:
            details = "; ".join(f"{what}: {type(err).__name__}: {err}" for what, err in failed)
            raise HubPushError(
                f"push_to_hub {self.repo_id!r}: {len(failed)} upload(s) failed ({details}). The run's files on disk are "
                "complete; push them again with `astrobio-hf release ... --push` or huggingface_hub's upload_folder."
            ) from failed[0][1]
        return list(self.commits)

    # ----------------------------------------------------------------------------------------------------
    def _new_stage(self, name: str) -> Path:
        self.staging_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.staging_root))

    def _submit(self, stage: Path, message: str, what: str, delete_patterns: list[str] | None) -> Future:
        self._check_no_token(stage)
        for earlier, future in self._jobs:
            if future.done() and future.exception() is not None and earlier not in self._reported:
                self._reported.add(earlier)
                logger.warning("hub push: the upload of %s failed (%s); wait() will raise it", earlier, future.exception())
        names = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
        future = self.api.upload_folder(
            repo_id=self.repo_id,
            repo_type="model",
            folder_path=str(stage),
            commit_message=message,
            delete_patterns=delete_patterns,
            run_as_future=True,
        )
        future.add_done_callback(lambda _: shutil.rmtree(stage, ignore_errors=True))
        self._jobs.append((what, future))
        logger.info("hub push: queued %s (%s)", what, ", ".join(names))
        return future

    @staticmethod
    def _check_no_token(stage: Path) -> None:
        from huggingface_hub import get_token

        token = get_token()
        if not token:
            return
        needle = token.encode()
        for path in sorted(stage.rglob("*")):
            if path.is_file() and path.stat().st_size <= _TOKEN_SCAN_LIMIT and needle in path.read_bytes():
                shutil.rmtree(stage, ignore_errors=True)
                raise HubPushError(f"refusing to push {path.relative_to(stage).as_posix()}: it contains your Hugging Face token")


__all__ = ["HubPushError", "HubPusher", "end_files"]
