"""Versioned releases: `model_cards/<name>/v<version>/` with a model card, `config.json` and `model.safetensors`.

A release holds exactly these three files and nothing else from the run directory (no checkpoints, optimizer
states, logs, trackers, `run_config.json` with local paths, tokens). A diffusion run (one whose run directory
has `pipeline/model_index.json`) adds two small files so that the same folder also loads as its pipeline:

    README.md  config.json  model.safetensors  model_index.json  scheduler/scheduler_config.json

`AutoModel.from_pretrained(release)` reads the root `config.json` + `model.safetensors`; and
`ClimateDiffusionPipeline.from_pretrained(release)` reads `model_index.json`, the scheduler from `scheduler/`,
and, because there is no `denoiser/` folder, the denoiser from the root (diffusers' flat, transformers-style
layout: a component without a subfolder is loaded from the repository root, locally and from the Hub), so the
weights are stored once. The run's `pipeline/denoiser/` must hold the very same weights and config as the
run's root, otherwise the release is refused.

Versions are immutable: a release is built in a temporary folder next to its destination and renamed into
place, and an existing version is refused. `push_release` uploads a release folder to a Hub repository
(allowed files only) and tags the commit `v<version>`; a tag `v<version>` that already exists in the repository
is refused before anything is uploaded (and, with `release_run(push=...)`, before the local release is built),
so `main` keeps serving the weights it had.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import RepositoryNotFoundError

logger = logging.getLogger(__name__)

RELEASE_FILES = ("README.md", "config.json", "model.safetensors")
PIPELINE_FILES = ("model_index.json", "scheduler/scheduler_config.json")
# A language-model run releases PEFT's adapter folder (never the base weights) with its tokenizer and how to resolve
# the base; the tokenizer files are those the tokenizer wrote.
ADAPTER_FILES = ("README.md", "adapter_config.json", "adapter_model.safetensors", "base_model.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
# A planet-assistant run (the pipeline's LLM-guided model) holds its components beside the projector's weights: the
# language model's adapter folder and the frozen encoder's save_pretrained folder, released as they are.
COMPONENTS = {"planet_assistant": {"adapter": (ADAPTER_FILES[1:], TOKENIZER_FILES), "encoder": (("config.json", "model.safetensors"), ())}}
ALLOW_PATTERNS = ["README.md", "config.json", "*.safetensors", *PIPELINE_FILES, *ADAPTER_FILES[1:], *TOKENIZER_FILES,
                  *(f"{sub}/*" for parts in COMPONENTS.values() for sub in parts)]
_SEMVER = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ReleaseExistsError(FileExistsError, ValueError):
    """The release version already exists (versions are immutable)."""


def normalize_version(version: str) -> str:
    """'1.0.0' or 'v1.0.0' -> '1.0.0'; anything that is not semantic versioning raises `ValueError`."""
    version = str(version).strip()
    if not _SEMVER.match(version):
        raise ValueError(f"expected a semantic version like 1.0.0 (or v1.0.0), got {version!r}")
    return version.removeprefix("v")


def release_dir_for(name: str, version: str, output_root: str | os.PathLike = "model_cards") -> Path:
    """Where release `name` `version` lives: `<output_root>/<name>/v<version>`."""
    if not _NAME.match(name or ""):
        raise ValueError(f"expected a model name of letters, digits, '.', '_' or '-', got {name!r}")
    return Path(output_root) / name / f"v{normalize_version(version)}"


def is_adapter_dir(folder: str | os.PathLike) -> bool:
    """A PEFT adapter folder (a language-model run or release)."""
    return (Path(folder) / "adapter_config.json").is_file()


def release_files(release_dir: str | os.PathLike) -> tuple[str, ...]:
    """The files a release folder must hold: RELEASE_FILES, plus PIPELINE_FILES for a diffusion release and the
    component folders' files for a model type with components (`COMPONENTS`); an adapter release holds ADAPTER_FILES
    and the tokenizer files present."""
    release_dir = Path(release_dir)
    if is_adapter_dir(release_dir):
        return ADAPTER_FILES + tuple(f for f in TOKENIZER_FILES if (release_dir / f).is_file())
    pipeline = (release_dir / "model_index.json").is_file()
    components = tuple(component_sources(release_dir)) if (release_dir / "config.json").is_file() else ()
    return RELEASE_FILES + (PIPELINE_FILES if pipeline else ()) + components


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()) if folder.is_dir() else []


def pipeline_sources(run_dir: str | os.PathLike) -> dict[str, Path]:
    """{release path: run file} of the pipeline files of a diffusion run (`run_dir/pipeline/`), {} for other runs.

    The release keeps one copy of the weights (the root's), so the run's pipeline must hold the same denoiser
    (byte-identical config.json and model.safetensors) and no component other than `denoiser` + `scheduler`."""
    run_dir = Path(run_dir)
    pipe = run_dir / "pipeline"
    if not (pipe / "model_index.json").is_file():
        return {}
    try:
        index = json.loads((pipe / "model_index.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{pipe / 'model_index.json'} is not valid JSON: {err}") from err
    components = sorted(k for k in index if not k.startswith("_"))
    if components != ["denoiser", "scheduler"]:
        raise ValueError(f"expected a pipeline with components ['denoiser', 'scheduler'] in {pipe}, got {components}")
    if not (pipe / "scheduler" / "scheduler_config.json").is_file():
        raise FileNotFoundError(f"expected scheduler/scheduler_config.json in {pipe}, found {_files_under(pipe)}")
    for name in ("config.json", "model.safetensors"):
        theirs = pipe / "denoiser" / name
        if theirs.is_file() and theirs.read_bytes() != (run_dir / name).read_bytes():
            raise ValueError(
                f"expected {theirs} to be the same file as {run_dir / name} (the pipeline's denoiser is the run's model, "
                "stored once in the release), got different contents; re-save the pipeline from the final model"
            )
    return {"model_index.json": pipe / "model_index.json", "scheduler/scheduler_config.json": pipe / "scheduler" / "scheduler_config.json"}


def component_sources(run_dir: str | os.PathLike) -> dict[str, Path]:
    """{release path: run file} of the component folders of a run whose model type has them (`COMPONENTS`: a
    planet assistant's `adapter/` and `encoder/`, at the relative paths its config names), {} for other runs."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    out = {}
    for sub, (needed, optional) in COMPONENTS.get(config.get("model_type"), {}).items():
        where = str(config.get(sub, sub))
        if where != sub:  # the release puts it at `sub/`, where the copied config must find it
            raise ValueError(f"expected {sub}: {sub!r} in {run_dir / 'config.json'} (the folder beside the weights that a release carries), got {where!r}")
        folder = run_dir / sub
        missing = [f for f in needed if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"expected {', '.join(missing)} in {folder} (the run's {sub}), found {_files_under(folder)}")
        out.update({f"{sub}/{f}": folder / f for f in (*needed, *(f for f in optional if (folder / f).is_file()))})
    return out


# ----------------------------------------------------------------------------- card


def _split_sections(text: str) -> tuple[str, dict[str, str]]:
    """Markdown body -> (text before the first '## ' heading without the '# ' title, {heading: text})."""
    summary_lines: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
        elif not line.startswith("# "):
            summary_lines.append(line)
    return "\n".join(summary_lines).strip(), {k: "\n".join(v).strip() for k, v in sections.items()}


def _eval_results_from_metrics(metrics: dict, dataset_name: str, dataset_type: str) -> list[EvalResult]:
    """`metrics.json` `test` entries `model/<metric>/<variable>` (the model's own scores) as model-index results."""
    results = []
    for key, value in sorted((metrics.get("test") or {}).items()):
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "model" or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        results.append(
            EvalResult(
                task_type="climate-forecasting",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_split="test",
                metric_type=parts[1],
                metric_name=f"{parts[1]} {parts[2]}",
                metric_value=float(value),
            )
        )
    return results


def _results_table(results: Sequence[EvalResult]) -> str:
    from .model_card import markdown_table

    rows = [[r.metric_name or r.metric_type, r.dataset_name, r.dataset_split or "", float(r.metric_value)] for r in results]
    return markdown_table(["metric", "dataset", "split", "value"], rows)


def build_release_card(
    run_dir: Path,
    *,
    name: str,
    version: str,
    release_path: str,
    repo_id: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The release card: metadata (license, library_name, tags, datasets, model-index) from the run's card
    and/or `metrics.json`, and sections: summary, evaluation, training data, intended use, limitations, how to load."""
    run_dir = Path(run_dir)
    old_data: dict = {}
    old_card_data = ModelCardData()
    summary, old_sections = "", {}
    if (run_dir / "README.md").is_file():
        old = ModelCard.load(run_dir / "README.md")
        old_card_data = old.data
        old_data = old.data.to_dict()
        summary, old_sections = _split_sections(old.text)
    metrics = {}
    if (run_dir / "metrics.json").is_file():
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{run_dir / 'metrics.json'} is not valid JSON: {err}") from err
    config = json.loads((run_dir / "config.json").read_text())

    # 1. Evaluation results: the run card's model-index, else metrics.json.
    results = list(old_card_data.eval_results or [])
    dataset_name = results[0].dataset_name if results else "synthetic planet ensemble"
    dataset_type = results[0].dataset_type if results else "astrobio-hf/synthetic-planets"
    if not results and metrics:
        results = _eval_results_from_metrics(metrics, dataset_name, dataset_type)

    datasets = list(old_data.get("datasets") or []) or ([dataset_type] if results else [])
    tags = list(dict.fromkeys(["astrobio-hf", *(old_data.get("tags") or []), config.get("model_type", "")]))
    data = ModelCardData(
        license=license or old_data.get("license") or "apache-2.0",
        library_name="transformers",
        tags=[t for t in tags if t],
        datasets=datasets or None,
        model_name=name,
        eval_results=results or None,
    )

    # 2. Sections.
    model_type = config.get("model_type", "?")
    architectures = ", ".join(config.get("architectures") or []) or model_type
    variables = config.get("variable_names")
    training = (
        f"Evaluated on the `test` split of **{dataset_name}** (`{dataset_type}`)." if results else "No evaluation results were recorded."
    )
    if variables:
        training += f" Variables: {', '.join(map(str, variables))}."
    if metrics.get("global_step") is not None:
        training += f" Trained for {metrics['global_step']} optimizer steps."
    intended = old_sections.get("Intended use") or (
        f"Research use: {model_type} predictions for astrobiology and planetary-climate studies, compared against "
        "physical baselines and held-out simulations. Not a substitute for a full climate or chemistry model, and "
        "not for decisions outside research."
    )
    limitations = old_sections.get("Limitations") or (
        "Valid only within the range of the training data (variables, grid, levels and planet parameters in "
        "`config.json`); inputs outside it raise an error or give untested results."
    )
    load = (
        "```python\nimport astrobio_hf  # registers the Auto classes\nfrom transformers import AutoModel\n\n"
        f'model = AutoModel.from_pretrained("{release_path}")\n'
    )
    if repo_id:
        load += f'# or from the Hub:\nmodel = AutoModel.from_pretrained("{repo_id}", revision="v{version}")\n'
    if (run_dir / "pipeline" / "model_index.json").is_file():
        # diffusers resolves a component from a library it does not know only from a local folder (from a
        # repo id it looks for the component's .py file on the Hub), so Hub users download the snapshot first.
        load += (
            "\n# the same weights as a sampling pipeline (model_index.json + scheduler/ beside them)\n"
            "from astrobio_hf.diffusion.pipeline_climate_diffusion import ClimateDiffusionPipeline\n\n"
            f'pipe = ClimateDiffusionPipeline.from_pretrained("{release_path}")\n'
        )
        if repo_id:
            load += (
                "# or from the Hub:\nfrom huggingface_hub import snapshot_download\n\n"
                f'pipe = ClimateDiffusionPipeline.from_pretrained(snapshot_download("{repo_id}", revision="v{version}"))\n'
            )
    load += "```"
    sections = {
        "Evaluation": _results_table(results) if results else "No evaluation results were recorded.",
        "Training data": training,
        "Intended use": intended,
        "Limitations": limitations,
        "How to load": load,
    }
    # The run card's own evaluation (e.g. baselines side by side), method and training-data sections are carried
    # over when present; image links are dropped (plots stay in the run directory, a release holds three files),
    # and so is any section that names a local path of this machine.
    local = {str(run_dir.resolve()), os.path.expanduser("~")}
    carried = {}
    for title in ("Evaluation", "Method", "Training data"):
        text = old_sections.get(title)
        if not text or any(path and path != "/" and path in text for path in local):
            continue
        carried[title] = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("![")).strip()
    if "Evaluation" in carried and results:
        carried["Evaluation"] += "\n\nModel-index results:\n\n" + _results_table(results)
    if "How to load" in old_sections and "from_pretrained" in old_sections["How to load"]:
        sections["How to load"] = load + "\n\nExample from the run's card:\n\n" + old_sections["How to load"]
    sections = {**{k: carried.get(k, v) for k, v in sections.items()}, **{k: v for k, v in carried.items() if k not in sections}}
    order = ["Evaluation", "Method", "Training data", "Intended use", "Limitations", "How to load"]
    sections = {k: sections[k] for k in order if k in sections}
    body = [f"# {name} v{version}", "", summary or f"`{architectures}` ({model_type}), astrobio-hf release v{version}.", ""]
    for title, text in sections.items():
        body += [f"## {title}", "", text.strip(), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


# ----------------------------------------------------------------------------- release


def _adapter_release_card(run_dir: Path, *, name: str, version: str, release_path: str, repo_id: str | None,
                          license: str | None) -> ModelCard:
    """An adapter release keeps the run's card (base_model, datasets, model-index, the baselines table), renamed and
    versioned, with how to load the release (plot links dropped: plots stay in the run directory)."""
    card = ModelCard.load(run_dir / "README.md")
    card.data.model_name = name
    if license:
        card.data.license = license
    _, sections = _split_sections(card.text)
    load = (
        "```python\nfrom astrobio_hf.models.language_model import load_adapter_release\n\n"
        f'model, tokenizer = load_adapter_release("{release_path}")\n'
        + (f'# or from the Hub:\nfrom huggingface_hub import snapshot_download\n\nmodel, tokenizer = load_adapter_release('
           f'snapshot_download("{repo_id}", revision="v{version}"))\n' if repo_id else "") + "```"
    )
    sections["How to load"] = load + ("\n\n" + sections["How to use"] if "How to use" in sections else "")
    sections.pop("How to use", None)
    body = [f"# {name} v{version}", "", f"PEFT adapter release v{version} of an astrobio-hf language-model run (`base_model`: "
            f"`{card.data.base_model}`; the base weights are not part of the release).", ""]
    for title, text in sections.items():
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("!["))
        body += [f"## {title}", "", text.strip(), ""]
    return ModelCard(f"---\n{card.data.to_yaml()}\n---\n\n" + "\n".join(body))


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    if is_adapter_dir(run_dir):
        missing = [f for f in ADAPTER_FILES if not (run_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"expected {', '.join(missing)} in adapter run {run_dir}, found {sorted(p.name for p in run_dir.iterdir())}")
        _check_safetensors(run_dir / "adapter_model.safetensors")
        return
    missing = [f for f in ("config.json", "model.safetensors") if not (run_dir / f).is_file()]
    if missing:
        found = sorted(p.name for p in run_dir.iterdir())
        raise FileNotFoundError(
            f"expected {', '.join(missing)} in {run_dir} (a save_pretrained output with safetensors weights), found {found}"
        )
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{run_dir / 'config.json'} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or "model_type" not in config:
        raise ValueError(f"expected a transformers config with 'model_type' in {run_dir / 'config.json'}")
    _check_safetensors(run_dir / "model.safetensors")


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err


def _hub_api(endpoint: str | None, token: str | None) -> HfApi:
    # HF_ENDPOINT is read now, not only when huggingface_hub was imported (as the push while training does).
    return HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)


def _check_tag_free(api: HfApi, repo_id: str, tag: str) -> None:
    """Refuse (`ReleaseExistsError`) a tag that already exists in Hub repo `repo_id`; a repo that does not exist
    yet has none. Called before anything is uploaded: a commit to `main` followed by a refused tag would leave
    `main` serving weights that no release names."""
    try:
        refs = api.list_repo_refs(repo_id, repo_type="model")
    except RepositoryNotFoundError:
        return
    for ref in refs.tags:
        if ref.name == tag:
            raise ReleaseExistsError(
                f"tag {tag} already exists in Hub repo {repo_id} (commit {ref.target_commit}); versions are immutable, "
                "choose a new version (nothing was uploaded)"
            )


def release_run(
    run_dir: str | os.PathLike,
    *,
    name: str,
    version: str,
    output_root: str | os.PathLike = "model_cards",
    push: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    license: str | None = None,
) -> Path:
    """Build `<output_root>/<name>/v<version>/` (README.md card, config.json, model.safetensors, and for a
    diffusion run model_index.json + scheduler/scheduler_config.json) from `run_dir`, atomically; refuse an
    existing version (`ReleaseExistsError`). With `push=REPO_ID`, upload it to the Hub
    (`endpoint` or HF_ENDPOINT) and tag the commit `v<version>`; a tag that already exists there is refused
    (`ReleaseExistsError`) before the release is built. Returns the release folder."""
    run_dir = Path(run_dir)
    version = normalize_version(version)
    final = release_dir_for(name, version, output_root)
    if final.exists():
        raise ReleaseExistsError(f"release {final} already exists; versions are immutable, choose a new version")
    _check_run_dir(run_dir)
    pipeline = {**pipeline_sources(run_dir), **({} if is_adapter_dir(run_dir) else component_sources(run_dir))}
    if push:
        _check_tag_free(_hub_api(endpoint, token), push, f"v{version}")

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".v{version}.", suffix=".tmp", dir=final.parent))
    try:
        if is_adapter_dir(run_dir):
            for fname in release_files(run_dir)[1:]:
                shutil.copyfile(run_dir / fname, tmp / fname)
            card = _adapter_release_card(run_dir, name=name, version=version, release_path=final.as_posix(), repo_id=push, license=license)
        else:
            for fname in ("config.json", "model.safetensors"):
                shutil.copyfile(run_dir / fname, tmp / fname)
            for fname, source in pipeline.items():
                (tmp / fname).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, tmp / fname)
            card = build_release_card(run_dir, name=name, version=version, release_path=final.as_posix(), repo_id=push, license=license)
        card.save(str(tmp / "README.md"))
        os.chmod(tmp, 0o755)
        if final.exists():
            raise ReleaseExistsError(f"release {final} already exists; versions are immutable, choose a new version")
        try:
            os.rename(tmp, final)
        except OSError as err:  # a concurrent release of the same version won the rename
            raise ReleaseExistsError(f"release {final} already exists; versions are immutable ({err})") from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("released %s (%s)", final, ", ".join(release_files(final)))

    if push:
        push_release(final, push, version=version, endpoint=endpoint, token=token)
    return final


def push_release(
    release_dir: str | os.PathLike,
    repo_id: str,
    *,
    version: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool | None = None,
) -> str:
    """Upload a release folder (exactly `release_files(release_dir)`) to model repo `repo_id` and tag the
    commit `v<version>` (version defaults to the folder name). A tag `v<version>` that already exists in the
    repo is refused (`ReleaseExistsError`) before anything is uploaded. Returns the commit id."""
    release_dir = Path(release_dir)
    version = normalize_version(version or release_dir.name)
    present = _files_under(release_dir)
    expected = sorted(release_files(release_dir))
    if present != expected:
        raise ValueError(f"expected exactly {expected} in release {release_dir}, found {present}")
    api = _hub_api(endpoint, token)
    _check_tag_free(api, repo_id, f"v{version}")
    api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(release_dir),
        allow_patterns=ALLOW_PATTERNS,
        commit_message=f"Release v{version}",
    )
    api.create_tag(repo_id, tag=f"v{version}", revision=commit.oid, tag_message=f"Release v{version}", repo_type="model")
    logger.info("pushed %s to %s at %s, tagged v%s", release_dir, repo_id, commit.oid, version)
    return commit.oid


__all__ = [
    "ADAPTER_FILES",
    "ALLOW_PATTERNS",
    "PIPELINE_FILES",
    "RELEASE_FILES",
    "ReleaseExistsError",
    "build_release_card",
    "is_adapter_dir",
    "normalize_version",
    "pipeline_sources",
    "push_release",
    "release_dir_for",
    "release_files",
    "release_run",
]
