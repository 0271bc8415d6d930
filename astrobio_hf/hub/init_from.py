"""`--init_from`: start a run from the weights of a release, a finished run, or a Hub repository.

    --init_from model_cards/datacube-unet/v1.0.0        # a release (or run) folder with model.safetensors
    --init_from runs/datacube/checkpoints/step-00000200 # a checkpoint folder (accelerate's model.safetensors)
    --init_from astrobio/datacube-unet@v1.0.0           # a Hub repo id, optionally @branch, @tag or @commit

Only the weights are taken, into the model the recipe has just built from its own config and data (so the
optimizer, schedule, EMA and step count start fresh: this is fine-tuning, not resuming, which is `--resume`).
The weights must fit the new model exactly: a missing, extra or differently shaped tensor is a `ValueError`
that names the keys and shapes, because silently skipping them would give a half-initialised model.

Where the weights came from is returned as an origin dict, `{"init_from": spec, "source": "local"|"hub",
"revision": <commit id on the Hub, else None>, "sha256": <of the weights file>}`, which the recipes write
into metrics.json and the model card ("Initialised from ..."), so a result can be traced to its start.
A Hub reference is pinned to the commit its revision resolves to before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from torch import nn

from astrobio_hf.training.checkpoint import (
    hub_options,
    is_hub_reference,
    split_hub_reference,
)

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_init_from(spec: str) -> tuple[Path, dict]:
    """The local folder holding the weights `spec` names (downloading them from the Hub if needed: only
    config.json and model.safetensors), and the origin dict."""
    spec = str(spec).strip()
    local = Path(spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(f"expected init_from to be a folder with {WEIGHTS_NAME} (a release, run or checkpoint), got the file {spec}")
        if not (local / WEIGHTS_NAME).is_file():
            found = sorted(p.name for p in local.iterdir())
            hint = " (a run that has not finished: use one of its checkpoints/step-* folders)" if (local / "checkpoints").is_dir() else ""
            raise FileNotFoundError(f"expected {WEIGHTS_NAME} in init_from folder {spec}{hint}, found {found}")
        return local, {"init_from": spec, "source": "local", "revision": None, "sha256": _sha256(local / WEIGHTS_NAME)}

    if not is_hub_reference(spec):
        raise FileNotFoundError(
            f"expected init_from to be an existing local folder or a Hub repo id owner/name[@revision], got {spec!r} "
            "(no such folder)"
        )
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, revision = split_hub_reference(spec)
    options = hub_options()
    try:
        commit = HfApi(endpoint=options["endpoint"]).model_info(repo_id, revision=revision).sha
        folder = Path(snapshot_download(repo_id, revision=commit, allow_patterns=["config.json", WEIGHTS_NAME], **options))
    except (HfHubHTTPError, LocalEntryNotFoundError) as err:
        raise FileNotFoundError(f"could not download init_from={spec!r} from the Hub ({repo_id}, revision {revision or 'main'}): {err}") from err
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"expected {WEIGHTS_NAME} in Hub repo {repo_id} at revision {revision or 'main'} (commit {commit})")
    return folder, {"init_from": spec, "source": "hub", "revision": commit, "sha256": _sha256(folder / WEIGHTS_NAME)}


def load_weights(model: nn.Module, folder: str | os.PathLike, spec: str | None = None) -> None:
    """Copy `folder/model.safetensors` into `model`; every tensor must exist on both sides with the same shape."""
    from safetensors.torch import load_file

    folder = Path(folder)
    where = spec or str(folder)
    config_path = folder / "config.json"
    own_type = getattr(getattr(model, "config", None), "model_type", None)
    if config_path.is_file() and own_type:
        theirs = json.loads(config_path.read_text()).get("model_type")
        if theirs and theirs != own_type:
            raise ValueError(f"cannot initialise a {own_type} model from {where}: expected model_type {own_type!r}, got {theirs!r}")
    state = load_file(str(folder / WEIGHTS_NAME))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if mismatched:
            problems.append("shape mismatch " + "; ".join(mismatched[:20]) + (f" (+{len(mismatched) - 20} more)" if len(mismatched) > 20 else ""))
        if missing:
            problems.append(f"missing in the weights {missing[:20]}" + (f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""))
        if unexpected:
            problems.append(f"not in the model {unexpected[:20]}" + (f" (+{len(unexpected) - 20} more)" if len(unexpected) > 20 else ""))
        raise ValueError(
            f"cannot initialise {type(model).__name__} from {where}: expected weights of the same architecture and sizes "
            "(the recipe builds the model from its own config and data), got " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def init_weights_from(model: nn.Module, spec: str, accelerator=None) -> dict:
    """Load the weights `spec` names into the freshly built `model` and return the origin dict.

    With an `accelerator` of several processes every process must call it: the main process resolves and
    downloads first, then the others load the very commit it got (a push to the branch meanwhile cannot give
    two processes different weights); an error on the main process is raised on every process."""
    if accelerator is None or accelerator.num_processes == 1:
        folder, origin = resolve_init_from(spec)
    else:
        from accelerate.utils import broadcast_object_list

        message: list = [None]
        if accelerator.is_main_process:
            try:
                folder, origin = resolve_init_from(spec)
                message = [origin]
            except (OSError, ValueError) as err:
                message = [{"error": f"{type(err).__name__}: {err}"}]
        broadcast_object_list(message)
        if "error" in message[0]:
            raise ValueError(f"init_from={spec!r} failed on the main process: {message[0]['error']}")
        if not accelerator.is_main_process:
            origin = message[0]
            pinned = spec if origin["source"] == "local" else f"{split_hub_reference(spec)[0]}@{origin['revision']}"
            folder, mine = resolve_init_from(pinned)
            if mine["sha256"] != origin["sha256"]:
                raise ValueError(f"init_from={spec!r}: expected the weights of the main process (sha256 {origin['sha256']}), got {mine['sha256']}")
    load_weights(model, folder, spec)
    logger.info("%s", describe_origin(origin))
    return origin


def describe_origin(origin: dict | None) -> str:
    """One sentence for a model card: "Initialised from `spec` (commit ..., weights sha256 ...)." ('' if None)."""
    if not origin:
        return ""
    details = [f"commit `{origin['revision']}`"] if origin.get("revision") else []
    details.append(f"weights sha256 `{origin['sha256'][:16]}...`")
    return f"Initialised from `{origin['init_from']}` ({', '.join(details)})."


__all__ = ["describe_origin", "init_weights_from", "load_weights", "resolve_init_from"]
