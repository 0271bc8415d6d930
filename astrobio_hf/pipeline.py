"""The multi-phase pipeline: family recipes in order from one YAML file, resumable phase by phase (issue 16).

    astrobio-hf pipeline PIPELINE.yaml [--only PHASE] [--from PHASE]

The file::

    name: planets
    output_dir: runs/pipeline/planets          # default runs/pipeline/<name>
    phases:
      - name: encoder                          # letters, digits, - and _; the run folder <output_dir>/<name>
        family: cnn-vit                        # a family of `astrobio-hf train`
        config: recipes/configs/cnn_vit/default.yaml
        overrides: {max_steps: 200}            # --key value for the recipe
        accelerate_config: accelerate_configs/cpu_ddp.yaml   # optional: run under `accelerate launch` (else in-process)
        inputs: {init_from: encoder}           # recipe argument -> an earlier phase's run folder ("phase" or "phase/sub/path")

Each phase is an ordinary run folder of its recipe. `<output_dir>/manifest.json` records every finished phase: the
hash of its resolved config (every recipe argument after the YAML, the overrides and the inputs are applied, plus
the accelerate config's text), the hashes of its inputs (an earlier phase: the hash of that phase's weights and
configs; a file: its bytes; a dataset folder: its schema.json, which lists every shard's sha256) and the hash of its
own outputs. Rerunning the command:

* skips a phase whose config and input hashes match the manifest and whose outputs are intact;
* resumes an interrupted phase from its last checkpoint (the recipe's `--resume auto`), when the folder was started
  with the same hashes (`<run>/pipeline_phase.json`);
* reruns a phase whose config or inputs changed (its old folder moved aside to `<run>.stale-<k>`, never deleted),
  and every phase after it.

Every check (the file, the families, each recipe's arguments, every input) runs before the first phase starts, so a
missing input is one line and no work is lost. `<output_dir>/README.md` is one summary card linking every phase's
card and metrics, with each phase's wall time. Written here: no ecosystem tool runs Accelerate recipes as resumable
phases with content hashes (the pieces it uses are the recipes, accelerate's launcher and hashlib).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrobio_hf.data.synth import PLANET_POPULATION_DIR, ensure_planet_population

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PHASE_STAMP = "pipeline_phase.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PHASE_KEYS = {"name", "family", "config", "overrides", "accelerate_config", "inputs"}
_UNHASHED = {"output_dir", "resume", "report_to"}  # where and how a run is written and logged, not what it computes
# a phase's outputs: its weights and configs (metrics.json and the card hold timings, which differ run to run)
_OUTPUT_PATTERNS = ("*.safetensors", "config.json", "adapter_config.json", "generation_config.json", "base_model.json")


@dataclass
class Phase:
    name: str
    family: str
    config: str | None
    overrides: dict[str, Any]
    accelerate_config: str | None
    inputs: dict[str, str]
    run_dir: Path
    argv: list[str] = field(default_factory=list)
    config_hash: str = ""


@dataclass
class Pipeline:
    name: str
    output_dir: Path
    phases: list[Phase]
    source: Path

    def phase(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise ValueError(f"expected a phase of {self.source} ({', '.join(p.name for p in self.phases)}), got {name!r}")


# ------------------------------------------------------------------------------------------------------
# Reading and checking the file (nothing runs before all of it passes)
# ------------------------------------------------------------------------------------------------------
def _resolve_path(value: str, base: Path) -> str:
    """A path as given if it exists from the working directory, else relative to the pipeline file's folder."""
    p = Path(value)
    if p.is_absolute() or p.exists() or not (base / p).exists():
        return str(p)
    return str(base / p)


def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """Read and check a pipeline file: known keys, unique phase names, known families, config and accelerate files
    that exist, inputs that name an earlier phase. One-line ValueError otherwise."""
    import yaml

    from astrobio_hf.cli import FAMILIES

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"expected a pipeline YAML file, got {str(source)!r} (no such file)")
    spec = yaml.safe_load(source.read_text()) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("phases"), list) or not spec["phases"]:
        raise ValueError(f"{source}: expected a mapping with a non-empty list 'phases', got {type(spec).__name__}")
    unknown = set(spec) - {"name", "output_dir", "phases"}
    if unknown:
        raise ValueError(f"{source}: expected keys name, output_dir, phases, got also {sorted(unknown)}")
    name = str(spec.get("name") or source.stem)
    output_dir = Path(spec.get("output_dir") or f"runs/pipeline/{name}")
    base = source.resolve().parent
    phases: list[Phase] = []
    for i, raw in enumerate(spec["phases"]):
        where = f"{source}: phase {i + 1}"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a mapping, got {raw!r}")
        extra = set(raw) - _PHASE_KEYS
        if extra:
            raise ValueError(f"{where}: expected keys {sorted(_PHASE_KEYS)}, got also {sorted(extra)}")
        pname = str(raw.get("name", ""))
        if not _NAME.match(pname):
            raise ValueError(f"{where}: expected a name of letters, digits, - and _, got {pname!r}")
        if any(p.name == pname for p in phases):
            raise ValueError(f"{where}: expected unique phase names, got {pname!r} twice")
        family = raw.get("family")
        if family not in FAMILIES:
            raise ValueError(f"{where} ({pname}): expected family one of {sorted(FAMILIES)}, got {family!r}")
        config = raw.get("config")
        if config is not None:
            config = _resolve_path(str(config), base)
            if not Path(config).is_file():
                raise FileNotFoundError(f"{where} ({pname}): config file {config} does not exist")
        accelerate_config = raw.get("accelerate_config")
        if accelerate_config is not None:
            accelerate_config = _resolve_path(str(accelerate_config), base)
            if not Path(accelerate_config).is_file():
                raise FileNotFoundError(f"{where} ({pname}): accelerate config {accelerate_config} does not exist")
        overrides = raw.get("overrides") or {}
        inputs = raw.get("inputs") or {}
        if not isinstance(overrides, dict) or not isinstance(inputs, dict):
            raise ValueError(f"{where} ({pname}): expected overrides and inputs as mappings")
        for arg, ref in inputs.items():
            upstream = str(ref).split("/", 1)[0]
            if not any(p.name == upstream for p in phases):
                raise ValueError(f"{where} ({pname}): input --{arg} expected an earlier phase ({', '.join(p.name for p in phases) or 'none'}), got {ref!r}")
            if arg in overrides:
                raise ValueError(f"{where} ({pname}): --{arg} is given both as an override and as an input")
        phases.append(Phase(pname, family, config, dict(overrides), accelerate_config, {k: str(v) for k, v in inputs.items()},
                            output_dir / pname))
    pipeline = Pipeline(name, output_dir, phases, source)
    for phase in phases:
        phase.argv = _phase_argv(pipeline, phase)
    return pipeline


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _input_path(pipeline: Pipeline, ref: str) -> Path:
    upstream, _, rest = ref.partition("/")
    return pipeline.phase(upstream).run_dir / rest if rest else pipeline.phase(upstream).run_dir


def _phase_argv(pipeline: Pipeline, phase: Phase) -> list[str]:
    argv = [phase.config] if phase.config else []
    for key, value in phase.overrides.items():
        argv += [f"--{key}", _flag_value(value)]
    for key, ref in phase.inputs.items():
        argv += [f"--{key}", str(_input_path(pipeline, ref))]
    return argv + ["--output_dir", str(phase.run_dir)]


def _resolved_config(phase: Phase) -> dict:
    """Every argument of the phase's recipe after its config, overrides and inputs (the recipe's own parser, so a bad
    key or value fails here, before any phase runs)."""
    from astrobio_hf.cli import FAMILIES
    from astrobio_hf.training.args import parse_recipe_args, resolved_config

    recipe = importlib.import_module(FAMILIES[phase.family])
    try:
        parsed = parse_recipe_args(recipe.ARGUMENT_TYPES, phase.argv, defaults=recipe.RECIPE_DEFAULTS)
    except (ValueError, SystemExit) as err:
        raise ValueError(f"phase {phase.name} ({phase.family}): {err}") from err
    config = {k: v for k, v in resolved_config(*parsed).items() if k not in _UNHASHED}
    # an input is named by its phase, not by its path (its content is hashed as an input): a moved pipeline folder
    # is the same pipeline
    config.update({k: f"<phase {ref}>" for k, ref in phase.inputs.items()})
    return config


# ------------------------------------------------------------------------------------------------------
# Hashes
# ------------------------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def output_hash(run_dir: Path) -> str | None:
    """The hash of a finished phase's weights and configs (None when it has none: not finished or not a run)."""
    files = sorted({f for pattern in _OUTPUT_PATTERNS for f in Path(run_dir).glob(pattern) if f.is_file()})
    if not files:
        return None
    return _sha256_json([[f.name, _sha256_file(f)] for f in files])


def path_hash(path: Path) -> str:
    """A file's bytes; a dataset folder's schema.json (which lists each shard's sha256); another folder's listing of
    (relative path, size)."""
    if path.is_file():
        return _sha256_file(path)
    if (path / "schema.json").is_file():
        return _sha256_file(path / "schema.json")
    return _sha256_json(sorted([str(f.relative_to(path)), f.stat().st_size] for f in path.rglob("*") if f.is_file()))


def _path_inputs(config: dict) -> dict[str, str]:
    """Data folders and files named by the recipe arguments (data_dir, init_from, base_model, ... when they exist
    on disk): their hashes are inputs of the phase too."""
    out = {}
    for key, value in config.items():
        if isinstance(value, str) and value and key not in ("output_dir", "logging_dir") and ("/" in value or "." in value):
            p = Path(value)
            if p.exists() and (p.is_file() or (p / "schema.json").is_file()):
                out[key] = path_hash(p)
    return out


# ------------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _move_aside(run_dir: Path, why: str) -> None:
    if not run_dir.exists():
        return
    k = 1
    while run_dir.with_name(f"{run_dir.name}.stale-{k}").exists():
        k += 1
    target = run_dir.with_name(f"{run_dir.name}.stale-{k}")
    run_dir.rename(target)
    logger.info("pipeline: %s; the old folder is kept as %s", why, target)


def _run_phase(phase: Phase) -> None:
    from astrobio_hf.cli import FAMILIES

    if phase.accelerate_config is None:
        importlib.import_module(FAMILIES[phase.family]).main(list(phase.argv))
        return
    launcher = Path(sys.executable).with_name("accelerate")
    launch = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd = [*launch, "--config_file", phase.accelerate_config, "-m", FAMILIES[phase.family], *phase.argv]
    logger.info("pipeline: %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {phase.name} ({phase.family}) failed under accelerate launch with exit code {proc.returncode}; "
                           f"its log is in {phase.run_dir}/logs (rerun the pipeline to resume it)")


def run_pipeline(path: str | os.PathLike, only: str | None = None, start: str | None = None) -> dict:
    """Run (skip, resume or rerun) the phases of a pipeline file; returns the manifest. `only`: that phase alone
    (its inputs must be finished); `start`: rerun from that phase on, whatever the manifest says."""
    pipeline = load_pipeline(path)
    names = [p.name for p in pipeline.phases]
    if only is not None and start is not None:
        raise ValueError("expected at most one of --only and --from, got both")
    for flag, value in (("--only", only), ("--from", start)):
        if value is not None and value not in names:
            raise ValueError(f"{flag}: expected a phase of {pipeline.source} ({', '.join(names)}), got {value!r}")
    manifest_path = pipeline.output_dir / MANIFEST
    manifest = _read_json(manifest_path) if manifest_path.is_file() else {}
    manifest.setdefault("phases", {})
    selected = [p for p in pipeline.phases if only is None or p.name == only]
    if start is not None:
        selected = pipeline.phases[names.index(start):]
    # every check before any work: the recipes' arguments, and inputs that will exist when their phase starts
    configs = {}
    synthesise_planets = False
    for phase in selected:
        configs[phase.name] = _resolved_config(phase)
        for arg, ref in phase.inputs.items():
            upstream = ref.split("/", 1)[0]
            will_run = any(p.name == upstream for p in selected)
            if not will_run and upstream not in manifest["phases"]:
                raise ValueError(f"phase {phase.name}: input --{arg} {ref!r} is missing: phase {upstream} has not finished "
                                 f"(run the pipeline without --only, or --only {upstream} first)")
            if not will_run and not _input_path(pipeline, ref).exists():
                raise FileNotFoundError(f"phase {phase.name}: input --{arg} {_input_path(pipeline, ref)} does not exist")
        for key, value in phase.overrides.items():  # a folder or file the user names must exist now
            if (key.endswith(("_dir", "_file")) or key == "init_from") and key != "output_dir" and not Path(str(value)).exists():
                if key == "data_dir" and Path(str(value)).resolve() == Path(PLANET_POPULATION_DIR).resolve():
                    synthesise_planets = True  # the embedded default: made below, once the checks pass
                    continue
                raise FileNotFoundError(f"phase {phase.name}: --{key} {value} does not exist")
    if synthesise_planets:
        logger.info("pipeline: synthesising the embedded planet population into %s (a phase reads it)", PLANET_POPULATION_DIR)
        ensure_planet_population()
    pipeline.output_dir.mkdir(parents=True, exist_ok=True)
    rerun_after = start is not None
    for phase in selected:
        config = configs[phase.name]
        accel = Path(phase.accelerate_config).read_text() if phase.accelerate_config else None
        config_hash = _sha256_json({"family": phase.family, "config": config, "accelerate_config": accel})
        inputs = {arg: manifest["phases"][ref.split("/", 1)[0]]["output_hash"] for arg, ref in phase.inputs.items()}
        inputs.update({k: v for k, v in _path_inputs(config).items() if k not in phase.inputs})
        stamp = {"config_hash": config_hash, "input_hashes": inputs}
        done = manifest["phases"].get(phase.name)
        intact = done is not None and output_hash(phase.run_dir) == done.get("output_hash")
        if not rerun_after and done and intact and done["config_hash"] == config_hash and done["input_hashes"] == inputs:
            logger.info("pipeline: phase %s is finished with this config and these inputs: skipped", phase.name)
            continue
        started_stamp = _read_json(phase.run_dir / PHASE_STAMP)
        if phase.run_dir.exists() and (started_stamp != stamp or (done and start == phase.name)):
            reason = ("--from: rerunning it" if start == phase.name else
                      "its config changed" if started_stamp.get("config_hash") != config_hash else "its inputs changed")
            _move_aside(phase.run_dir, f"phase {phase.name}: {reason}")
        elif phase.run_dir.exists():
            logger.info("pipeline: phase %s was started with this config and these inputs: resuming", phase.name)
        manifest["phases"].pop(phase.name, None)
        manifest_path.write_text(json.dumps(manifest, indent=2))
        phase.run_dir.mkdir(parents=True, exist_ok=True)
        (phase.run_dir / PHASE_STAMP).write_text(json.dumps(stamp, indent=2))
        logger.info("pipeline: phase %s (%s) -> %s", phase.name, phase.family, phase.run_dir)
        began = time.perf_counter()
        _run_phase(phase)
        produced = output_hash(phase.run_dir)
        if produced is None:
            raise RuntimeError(f"phase {phase.name} ({phase.family}) finished without weights or configs in {phase.run_dir}")
        manifest["phases"][phase.name] = {
            "family": phase.family, "run_dir": str(phase.run_dir), "config_hash": config_hash, "input_hashes": inputs,
            "output_hash": produced, "wall_seconds": round(time.perf_counter() - began, 1),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": phase.argv,
        }
        manifest_path.write_text(json.dumps(manifest, indent=2))
        rerun_after = True  # every phase after a (re)run one runs again
    manifest["name"] = pipeline.name
    manifest["order"] = names
    manifest_path.write_text(json.dumps(manifest, indent=2))
    write_summary_card(pipeline, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------------
# The summary card
# ------------------------------------------------------------------------------------------------------
def _headline(metrics: dict, limit: int = 4) -> str:
    test = metrics.get("test") or {}
    numbers = [(k, v) for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k} {v:.4g}" for k, v in numbers[:limit]) or "–"


def write_summary_card(pipeline: Pipeline, manifest: dict) -> Path:
    """`<output_dir>/README.md`: every phase with its family, wall time, card, metrics and a few test numbers."""
    lines = [f"# Pipeline {pipeline.name}", "", f"From `{pipeline.source}`; one run folder per phase, in order. "
             "Rerunning `astrobio-hf pipeline` skips finished phases, resumes an interrupted one and reruns a changed one "
             "and every phase after it (`manifest.json`).", "",
             "| phase | family | inputs | wall time | card | metrics | test (first numbers) |", "|---|---|---|---|---|---|---|"]
    total = 0.0
    for phase in pipeline.phases:
        entry = manifest["phases"].get(phase.name)
        if entry is None:
            lines.append(f"| {phase.name} | {phase.family} | {', '.join(phase.inputs.values()) or '–'} | not run | – | – | – |")
            continue
        total += entry["wall_seconds"]
        metrics = _read_json(phase.run_dir / "metrics.json")
        rel = os.path.relpath(phase.run_dir, pipeline.output_dir)
        lines.append(f"| {phase.name} | {phase.family} | {', '.join(phase.inputs.values()) or '–'} | {entry['wall_seconds']:.0f} s | "
                     f"[README.md]({rel}/README.md) | [metrics.json]({rel}/metrics.json) | {_headline(metrics)} |")
    lines += ["", f"Total wall time of the phases as last run: {total:.0f} s.", ""]
    path = pipeline.output_dir / "README.md"
    path.write_text("\n".join(lines))
    return path


__all__ = ["load_pipeline", "output_hash", "path_hash", "run_pipeline", "write_summary_card"]
