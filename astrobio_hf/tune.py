"""`astrobio-hf tune`: an Optuna study over any field of a recipe's argument dataclasses.

    astrobio-hf tune cnn-vit recipes/configs/cnn_vit/default.yaml --space space.yaml --n-trials 16 \
        [--storage sqlite:///runs/tune/cnn-vit/study.db] [--pruner median] [--metric val/loss] [--direction minimize]

The search space is YAML, one entry per field of the recipe's dataclasses (`ARGUMENT_TYPES` of
`astrobio_hf.recipes.train_<family>`), with the same names as the recipe's YAML keys:

    learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    num_layers: {type: int, low: 1, high: 4}
    stem_norm: {type: categorical, choices: [none, group]}

Each trial is an ordinary run of the recipe, unchanged, in its own folder `<output-dir>/trial-<number:04d>/`,
with its resolved `config.yaml` (the base config's keys, the trial's parameters and its output_dir) that
`accelerate launch recipes/train_<family>.py <that config.yaml>` trains again as it is. The trial runs in this
process, `recipe.main([config.yaml], hooks=[pruning hook])`: after each validation the hook reports the metric
to the trial and prunes with Optuna's pruner. The trial's value is the best value of the metric over its
validations. Under several processes (`accelerate launch -m astrobio_hf.cli tune ...`) only rank 0 talks to the
study: it asks for the trial's parameters and broadcasts them, and broadcasts each prune decision (the pattern of
the transformers Trainer's `run_hp_search_optuna`); every rank runs the same trials.

The study lives in its storage (SQLite, or an Optuna journal file `*.log` / `*.jsonl`) and resumes when the
command is rerun: `--n-trials` is the number of finished trials (complete, pruned or failed) the study should
hold, and a rerun runs only the missing ones. A trial that raises is recorded as failed with its one-line error
(user attr "error"; the full log in its folder's `train.log`) and the study goes on. At the end the output dir
holds `best_config.yaml`, `trials.md` / `trials.csv` and Optuna's plots `optimization_history.png` and
`param_importances.png`.

`--enqueue '{"learning_rate": 1e-3}'` (repeatable) queues trials with those parameters before any sampled one (not
again on a rerun); `--set key=value` (repeatable) sets a recipe field for every trial over the base config.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import importlib
import inspect
import json
import logging
import math
import os
import traceback
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:
    import optuna
except ImportError:  # the `tune` extra is not installed; run_study says so
    optuna = None

logger = logging.getLogger(__name__)

SPACE_TYPES = ("float", "int", "categorical")
SPACE_OPTIONS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("minimize", "maximize")
NOT_TUNABLE = {"output_dir": "each trial sets its own output_dir"}
TRIAL_LOG = "train.log"


class MetricNotFoundError(ValueError):
    """The --metric is not among the metrics of a validation (every trial would fail the same way)."""


# ------------------------------------------------------------------------------------------------------
# The recipe and its argument dataclasses
# ------------------------------------------------------------------------------------------------------
def recipe_module(family: str) -> types.ModuleType:
    """`astrobio_hf.recipes.train_<family>` for a family name of the CLI (`cnn-vit` -> train_cnn_vit)."""
    from astrobio_hf.cli import FAMILIES

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid families: {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[family])


def argument_types(module: types.ModuleType) -> tuple[type, ...]:
    """The recipe's argument dataclasses: its `ARGUMENT_TYPES`, or else the dataclasses defined in or imported
    into the module whose names end in "Arguments" (in the module's order)."""
    declared = getattr(module, "ARGUMENT_TYPES", None)
    if declared is not None:
        return tuple(declared)
    found = tuple(
        obj for name, obj in vars(module).items()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and name.endswith("Arguments")
    )
    if not found:
        raise ValueError(f"{module.__name__} declares no ARGUMENT_TYPES and holds no *Arguments dataclasses")
    return found


def argument_fields(dataclass_types: Sequence[type]) -> dict[str, type]:
    """Field name -> its Python type (bool, int, float, str, ... ; `X | None` read as X) over all dataclasses."""
    out: dict[str, type] = {}
    for cls in dataclass_types:
        module = importlib.import_module(cls.__module__)
        hints = typing.get_type_hints(cls, globalns=vars(module))
        for f in dataclasses.fields(cls):
            hint = hints.get(f.name, f.type)
            if typing.get_origin(hint) in (typing.Union, types.UnionType):
                args = [a for a in typing.get_args(hint) if a is not type(None)]
                hint = args[0] if len(args) == 1 else hint
            out[f.name] = hint
    return out


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", str(typ))


def coerce_value(name: str, value: Any, typ: Any) -> Any:
    """`value` as the field's type, as the recipe's YAML parser expects it; ValueError naming the field otherwise.
    Lenient only where nothing can be lost: an int for a float field, '1e-4' (a YAML string) for a float, an
    integral float for an int, and a mapping or list for a JSON string field (e.g. physics_weights)."""
    bad = ValueError(f"{name}: expected a {_type_name(typ)} value, got {value!r}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if typ is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if typ is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        raise bad
    raise ValueError(f"{name}: a field of type {_type_name(typ)} cannot be tuned (bool, int, float and str fields can)")


# ------------------------------------------------------------------------------------------------------
# The search space
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a recipe field and how Optuna samples it."""

    name: str
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        extra = ", log" if self.log else (f", step {self.step}" if self.step else "")
        return f"{self.name} {self.kind} in [{self.low}, {self.high}]{extra}"


def parse_space(space: Any, fields: Mapping[str, Any], source: str = "space") -> dict[str, Param]:
    """Check a search-space mapping against the recipe's fields; every refusal is one line naming the key."""
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"{source}: expected a non-empty mapping of recipe field names to {{type: ...}}, got {space!r}")
    params: dict[str, Param] = {}
    for key, spec in space.items():
        if key in NOT_TUNABLE:
            raise ValueError(f"{source}: {key} cannot be tuned ({NOT_TUNABLE[key]})")
        if key not in fields:
            raise ValueError(f"{source}: unknown key {key!r} (not a field of the recipe); valid keys: {sorted(fields)}")
        params[key] = _parse_param(key, spec, fields[key], source)
    return params


def _parse_param(key: str, spec: Any, typ: Any, source: str) -> Param:
    where = f"{source}: {key}"
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"{where}: expected a mapping with a type (one of {list(SPACE_TYPES)}), got {spec!r}")
    kind = spec["type"]
    if kind not in SPACE_TYPES:
        raise ValueError(f"{where}: expected type one of {list(SPACE_TYPES)}, got {kind!r}")
    unknown = sorted(set(spec) - SPACE_OPTIONS[kind])
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown} for type {kind}; valid options: {sorted(SPACE_OPTIONS[kind])}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}: expected choices, a non-empty list, got {choices!r}")
        try:
            values = tuple(coerce_value(key, c, typ) for c in choices)
        except ValueError as err:
            raise ValueError(f"{source}: choice of {err} (the field is a {_type_name(typ)})") from None
        if len(set(values)) != len(values):
            raise ValueError(f"{where}: choices repeat a value: {list(values)}")
        return Param(key, kind, choices=values)

    if typ is bool or typ not in (int, float):
        raise ValueError(f"{where}: type {kind} needs a numeric field, but {key} is a {_type_name(typ)} field; use type: categorical")
    if kind == "float" and typ is int:
        raise ValueError(f"{where}: {key} is an int field; use type: int (or categorical), not float")
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise ValueError(f"{where}: type {kind} needs low and high, missing {missing}")
    number = float if kind == "float" else int
    try:
        low, high = (coerce_value(f"{key} {k}", spec[k], number) for k in ("low", "high"))
    except ValueError as err:
        raise ValueError(f"{source}: {err} (type {kind} bounds)") from None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}: expected log true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        try:
            step = coerce_value(f"{key} step", step, number)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        if step <= 0:
            raise ValueError(f"{where}: expected step > 0, got {step}")
        if log and kind == "float":
            raise ValueError(f"{where}: a float with log: true cannot also have a step")
        if log and kind == "int" and step != 1:
            raise ValueError(f"{where}: an int with log: true needs step 1, got {step}")
    if not all(math.isfinite(v) for v in (low, high)):
        raise ValueError(f"{where}: expected finite bounds, got low={low} high={high}")
    if low > high:
        raise ValueError(f"{where}: expected low <= high, got low={low} high={high}")
    if log and low <= 0:
        raise ValueError(f"{where}: log: true needs low > 0, got low={low}")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def load_space(path: str | Path, fields: Mapping[str, Any]) -> dict[str, Param]:
    path = Path(path)
    return parse_space(_load_yaml(path, "search space"), fields, source=str(path))


def _load_yaml(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ValueError(f"{what} {path}: YAML syntax error{line}: {getattr(err, 'problem', None) or err}") from None


def parse_enqueued(texts: Sequence[str], params: Mapping[str, Param], fields: Mapping[str, Any]) -> list[dict]:
    """`--enqueue '{"learning_rate": 1e-9}'` (JSON objects over keys of the space) as typed parameter dicts."""
    out = []
    for text in texts:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--enqueue: expected a JSON object such as '{{\"learning_rate\": 0.001}}', got {text!r}: {err}") from None
        if not isinstance(values, dict) or not values:
            raise ValueError(f"--enqueue: expected a non-empty JSON object, got {text!r}")
        unknown = sorted(set(values) - set(params))
        if unknown:
            raise ValueError(f"--enqueue: keys {unknown} are not in the search space; valid keys: {sorted(params)}")
        typed = {k: coerce_value(k, v, fields[k]) for k, v in values.items()}
        for key, value in typed.items():
            param = params[key]
            if param.kind == "categorical" and value not in param.choices:
                raise ValueError(f"--enqueue: {key}={value!r} is not one of the choices {list(param.choices)}")
            if not param.contains(value):
                logger.warning("--enqueue: %s=%r is outside the search space (%s); the trial runs it as given", key, value, param.describe())
        out.append(typed)
    return out


def parse_overrides(texts: Sequence[str], fields: Mapping[str, Any]) -> dict[str, Any]:
    """`--set key=value` (recipe field, value read as YAML then as the field's type) for every trial."""
    out: dict[str, Any] = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ValueError(f"--set: expected key=value (e.g. max_steps=20), got {text!r}")
        if key in NOT_TUNABLE:
            raise ValueError(f"--set: {key} cannot be set ({NOT_TUNABLE[key]})")
        if key not in fields:
            raise ValueError(f"--set: unknown key {key!r} (not a field of the recipe); valid keys: {sorted(fields)}")
        value = raw if fields[key] is str else yaml.safe_load(raw)
        out[key] = coerce_value(key, value, fields[key])
    return out


# ------------------------------------------------------------------------------------------------------
# The pruning hook (the loop calls it on every process)
# ------------------------------------------------------------------------------------------------------
class PruningHook:
    """Reports `metric` to the trial after each validation and prunes when Optuna's pruner says so.

    `trial` is the Optuna trial on rank 0 and None on the other ranks; with several processes rank 0's report
    and decision are broadcast, so every rank raises `optuna.TrialPruned` at the same validation."""

    def __init__(self, trial, metric: str, direction: str, num_processes: int = 1):
        self.trial = trial
        self.metric = metric
        self.direction = direction
        self.num_processes = num_processes
        self.values: list[tuple[int, float]] = []
        self.last_step = 0

    def after_step(self, state, accelerator) -> None:
        self.last_step = state.global_step

    def after_validation(self, state, metrics: Mapping[str, float], accelerator) -> None:
        step = state.global_step
        self.last_step = step
        if self.metric not in metrics:
            raise MetricNotFoundError(f"--metric {self.metric} is not among the validation metrics; valid ones: {sorted(metrics)}")
        value = float(metrics[self.metric])
        self.values.append((step, value))
        decision: list[Any] = [False]
        if self.trial is not None:
            try:
                if math.isfinite(value):
                    self.trial.report(value, step)
                decision = [bool(self.trial.should_prune())]
            except Exception as err:  # tell the other ranks rather than leave them waiting in the broadcast
                decision = [f"{type(err).__name__}: {err}"]
        if self.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(decision, from_process=0)
        if isinstance(decision[0], str):
            raise RuntimeError(f"rank 0 could not report to the study: {decision[0]}")
        if decision[0]:
            raise optuna.TrialPruned(f"pruned at step {step}: {self.metric} = {value:.6g}")

    def best(self) -> float | None:
        finite = [v for _, v in self.values if math.isfinite(v)]
        if not finite:
            return None
        return min(finite) if self.direction == "minimize" else max(finite)


# ------------------------------------------------------------------------------------------------------
# The study
# ------------------------------------------------------------------------------------------------------
@dataclass
class StudySummary:
    """What a finished `run_study` reports (rank 0)."""

    study_name: str
    storage: str
    metric: str
    direction: str
    output_dir: Path
    family: str
    ran: int
    counts: dict[str, int]
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        counts = ", ".join(f"{n} {STATE_WORDS[s]}" for s, n in self.counts.items())
        lines = [f"study {self.study_name!r} in {self.storage}: {sum(self.counts.values())} finished trials ({counts}); {self.ran} run now"]
        if self.best_number is None:
            lines.append("no complete trial yet, so no best config")
        else:
            params = ", ".join(f"{k}={_fmt(v)}" for k, v in self.best_params.items())
            lines.append(f"best: trial {self.best_number}, {self.metric} = {self.best_value:.6g} ({self.direction}) with {params}")
            lines.append(
                f"best config: {self.files['best_config']} "
                f"(train it: accelerate launch recipes/train_{self.family.replace('-', '_')}.py {self.files['best_config']})"
            )
        lines.append(f"trials: {self.files['trials_md']}, {self.files['trials_csv']}; trial runs in {self.output_dir}/trial-NNNN/")
        plots = [str(self.files[k]) for k in ("optimization_history", "param_importances") if k in self.files]
        if plots:
            lines.append(f"plots: {', '.join(plots)}")
        for name, reason in self.skipped.items():
            lines.append(f"{name} skipped: {reason}")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def make_storage(spec: str | None, output_dir: Path):
    """The study's storage: an SQLAlchemy URL (sqlite:///path.db; default `<output_dir>/study.db`) or an Optuna
    journal file (a path ending in .log or .jsonl). Returns (storage, how it is shown)."""
    if spec is None:
        output_dir.mkdir(parents=True, exist_ok=True)
        spec = f"sqlite:///{(output_dir / 'study.db').resolve()}"
    if "://" not in spec:
        if not spec.endswith((".log", ".jsonl")):
            raise ValueError(f"expected --storage an SQLAlchemy URL (sqlite:///path/study.db) or a journal file ending in .log or .jsonl, got {spec!r}")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path))), str(path)
    if spec.startswith("sqlite:///"):
        Path(spec[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # a wait for the file lock (other workers of the same study) instead of "database is locked"
        return optuna.storages.RDBStorage(spec, engine_kwargs={"connect_args": {"timeout": 60}}), spec
    return optuna.storages.RDBStorage(spec), spec


def make_pruner(name: str, n_startup_trials: int = 5, n_warmup_steps: int = 0):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, n_warmup_steps))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"expected --pruner one of {list(PRUNERS)}, got {name!r}")


FINISHED = ("COMPLETE", "PRUNED", "FAIL")
STATE_WORDS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def _finished(study) -> list:
    states = tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
    return study.get_trials(deepcopy=False, states=states)


def run_study(
    family: str,
    config: str | Path | None,
    *,
    space: str | Path,
    n_trials: int,
    storage: str | None = None,
    study_name: str | None = None,
    pruner: str = "median",
    pruner_startup_trials: int = 5,
    pruner_warmup_steps: int = 0,
    metric: str = "val/loss",
    direction: str = "minimize",
    output_dir: str | Path | None = None,
    seed: int = 0,
    enqueue: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> StudySummary | None:
    """Run (or resume) the study until it holds `n_trials` finished trials, then write the reports.
    Returns the summary on rank 0 and None on the other ranks. Bad input raises ValueError before any trial."""
    if optuna is None:
        raise ValueError("astrobio-hf tune needs Optuna, which is not installed: pip install 'astrobio-hf[tune]'")
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # 1. Everything the user gave is checked before the first trial.
    if n_trials < 1:
        raise ValueError(f"expected --n-trials >= 1, got {n_trials}")
    if direction not in DIRECTIONS:
        raise ValueError(f"expected --direction one of {list(DIRECTIONS)}, got {direction!r}")
    if pruner not in PRUNERS:
        raise ValueError(f"expected --pruner one of {list(PRUNERS)}, got {pruner!r}")
    if pruner_startup_trials < 0 or pruner_warmup_steps < 0:
        raise ValueError(f"expected --pruner-startup-trials and --pruner-warmup-steps >= 0, got {pruner_startup_trials}, {pruner_warmup_steps}")
    if not metric.startswith("val/"):
        raise ValueError(f"expected --metric a validation metric 'val/<name>' (e.g. val/loss), got {metric!r}")
    recipe = recipe_module(family)
    dataclass_types = argument_types(recipe)
    fields = argument_fields(dataclass_types)
    params = load_space(space, fields)
    base = _base_config(config, parse_overrides(overrides, fields), dataclass_types)
    queued = parse_enqueued(enqueue, params, fields)
    if "hooks" not in inspect.signature(recipe.main).parameters:
        raise ValueError(f"{recipe.__name__}.main takes no hooks, so trials cannot be pruned: the recipe does not call the training loop yet")
    output_dir = Path(output_dir or f"runs/tune/{family}")
    study_name = study_name or family

    # 2. The process group (several processes under accelerate launch) before any Accelerator; rank 0 alone opens the
    # study. (AcceleratorState reads ACCELERATE_USE_CPU, PartialState does not: without cpu=True here a multi-CPU launch
    # would build a single-process state that every later Accelerator of the process then reuses.)
    dist = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    is_main, world = dist.is_main_process, dist.num_processes
    study = storage_text = None
    if is_main:
        study, storage_text = _open_study(
            storage, output_dir, study_name, direction, seed, make_pruner(pruner, pruner_startup_trials, pruner_warmup_steps)
        )
        for values in queued:
            study.enqueue_trial(values, skip_if_exists=True)
        done = len(_finished(study))
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if running:
            logger.warning(
                "study %r holds %d RUNNING trials (%s): another worker's, or left by a study process that was killed; "
                "they do not count as finished", study_name, len(running), ", ".join(str(t.number) for t in running),
            )
        logger.info(
            "study %r in %s: %d of %d trials finished%s; search space: %s", study_name, storage_text, done, n_trials,
            " (resuming)" if done else "", "; ".join(p.describe() for p in params.values()),
        )
    if world > 1:
        logger.info("rank %d of %d: trials run on every process with rank 0's parameters", dist.process_index, world)

    # 3. The trials, then the reports (rank 0).
    fork_flag = os.environ.get("FORK_LAUNCHED")
    if world > 1:
        # Every trial's run ends with `Accelerator.end_training()`, which destroys the default process group, and the
        # next trial's Accelerator reuses this PartialState, group gone. accelerate skips that destroy for a
        # "fork-launched" state (its notebook launcher's case; every PartialState() rereads FORK_LAUNCHED): the group is
        # kept for the whole study and destroyed at its end.
        os.environ["FORK_LAUNCHED"] = "1"
    try:
        ran = _study_loop(recipe, study, params, base, output_dir, metric, direction, n_trials, world, is_main)
        summary = None
        if is_main:
            summary = write_reports(study, output_dir, family=family, metric=metric, direction=direction, storage_text=storage_text, ran=ran)
    finally:
        if world > 1:
            if fork_flag is None:
                os.environ.pop("FORK_LAUNCHED", None)
            else:
                os.environ["FORK_LAUNCHED"] = fork_flag
    if world > 1:
        import torch.distributed

        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


def _open_study(storage: str | None, output_dir: Path, study_name: str, direction: str, seed: int, pruner):
    output_dir.mkdir(parents=True, exist_ok=True)
    store, storage_text = make_storage(storage, output_dir)
    try:
        study = optuna.create_study(
            storage=store, study_name=study_name, direction=direction, load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner,
        )
    except ValueError as err:
        raise ValueError(f"study {study_name!r} in {storage_text}: {err}") from None
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {study_name!r} in {storage_text} was created to {study.direction.name.lower()}, not to {direction}; "
            "use another --study-name or --storage"
        )
    return study, storage_text


def _study_loop(recipe, study, params, base, output_dir, metric, direction, n_trials, world, is_main) -> int:
    """Ask (rank 0), broadcast, run (every rank), tell (rank 0) until the study holds n_trials finished trials.
    Returns the number of trials run."""
    ran = 0
    while True:
        trial, message = None, [None]
        if is_main:
            try:
                if len(_finished(study)) < n_trials:
                    trial, config_path = _ask(study, params, base, output_dir)
                    message = [("trial", trial.number, str(config_path))]
            except Exception as err:  # tell the other ranks rather than leave them waiting in the broadcast
                message = [("error", err)]
        if world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(message, from_process=0)
        if message[0] is None:
            return ran
        if message[0][0] == "error":
            err = message[0][1]
            if is_main:
                raise err
            raise RuntimeError(f"rank 0 could not start a trial: {_one_line(err)}")
        _, number, config_path = message[0]
        _run_trial(recipe, study, trial, number, Path(config_path), metric, direction, world, is_main)
        ran += 1


def _base_config(config: str | Path | None, overrides: Mapping[str, Any], dataclass_types: Sequence[type]) -> dict[str, Any]:
    """The base config's keys with the --set overrides, checked by the recipe's own parser (unknown keys, bad
    values), so that a bad base config is refused before any trial rather than failing every trial."""
    values: dict[str, Any] = {}
    if config is not None:
        path = Path(config)
        values = _load_yaml(path, "config file") or {}
        if not isinstance(values, dict):
            raise ValueError(f"config file {path}: expected a mapping of field names, found {type(values).__name__}")
    values = {k: v for k, v in {**values, **overrides}.items() if k != "output_dir"}
    import tempfile

    from astrobio_hf.training import parse_recipe_args

    with tempfile.TemporaryDirectory() as tmp:
        check = Path(tmp) / "base_config.yaml"
        check.write_text(yaml.safe_dump(values, sort_keys=False))
        try:
            parse_recipe_args(dataclass_types, [str(check)])
        except ValueError as err:
            where = f"config file {config}" if config is not None else "--set"
            raise ValueError(f"{where}: {' '.join(str(err).replace(str(check), 'the base config').split())}") from None
    return values


def _ask(study, params: Mapping[str, Param], base: Mapping[str, Any], output_dir: Path):
    """A new trial (the next enqueued one, else sampled), its folder and its resolved config.yaml."""
    trial = study.ask()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Fixed parameter", category=UserWarning)
        values = {name: p.suggest(trial) for name, p in params.items()}
    trial_dir = output_dir / f"trial-{trial.number:04d}"
    if trial_dir.exists() and any(p.name != TRIAL_LOG for p in trial_dir.iterdir()):
        error = f"{trial_dir} already holds another run (a study of another name or storage in the same --output-dir?)"
        trial.set_user_attr("error", error)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise ValueError(f"{error}; choose another --output-dir or remove the folder")
    trial_dir.mkdir(parents=True, exist_ok=True)
    config = {**base, **values, "output_dir": str(trial_dir)}
    config_path = trial_dir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    trial.set_user_attr("config", json.loads(json.dumps(config, default=str)))
    trial.set_user_attr("output_dir", str(trial_dir))
    return trial, config_path


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _run_trial(recipe, study, trial, number: int, config_path: Path, metric: str, direction: str, world: int, is_main: bool) -> None:
    """One trial: the recipe's main on `config_path` with the pruning hook; rank 0 tells the study the outcome."""
    hook = PruningHook(trial, metric, direction, world)
    handler = None
    if is_main:
        logger.info("trial %d: %s", number, ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()))
        handler = logging.FileHandler(config_path.parent / TRIAL_LOG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logging.getLogger().addHandler(handler)
    outcome, error = "complete", None
    try:
        recipe.main([str(config_path)], hooks=[hook])
    except optuna.TrialPruned as err:
        outcome = "pruned"
        if is_main:
            logger.info("trial %d %s", number, err)
    except KeyboardInterrupt:
        if is_main:
            trial.set_user_attr("error", "KeyboardInterrupt: the study was interrupted")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    except Exception as err:
        outcome, error = "fail", err
        if is_main:
            logger.error("trial %d failed: %s\n%s", number, _one_line(err), traceback.format_exc())
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        gc.collect()
        _empty_device_cache()

    if not is_main:
        if isinstance(error, MetricNotFoundError):
            raise error
        return
    trial.set_user_attr("steps", hook.last_step)
    trial.set_user_attr("validations", len(hook.values))
    trial.set_user_attr("log", str(config_path.parent / TRIAL_LOG))
    value = hook.best()
    if outcome == "complete" and value is None:
        outcome, error = "fail", RuntimeError(f"the run ended without a finite {metric} in its {len(hook.values)} validations")
    State = optuna.trial.TrialState
    if outcome == "complete":
        study.tell(trial, value)
        logger.info("trial %d complete at step %d: %s = %.6g (best of %d validations)", number, hook.last_step, metric, value, len(hook.values))
    elif outcome == "pruned":
        study.tell(trial, state=State.PRUNED)
    else:
        trial.set_user_attr("error", _one_line(error))
        study.tell(trial, state=State.FAIL)
        logger.warning("trial %d recorded as failed (%s); the study goes on", number, _one_line(error))
    if isinstance(error, MetricNotFoundError):  # every trial would fail the same way
        raise error


def _empty_device_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------
# Reports: best config, table of trials, plots
# ------------------------------------------------------------------------------------------------------
def write_reports(study, output_dir: Path, *, family: str, metric: str, direction: str, storage_text: str, ran: int = 0) -> StudySummary:
    output_dir = Path(output_dir)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]
    counts = {s: sum(t.state.name == s for t in trials) for s in FINISHED}
    summary = StudySummary(study.study_name, storage_text, metric, direction, output_dir, family, ran, counts)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    summary.files["trials_md"], summary.files["trials_csv"] = _write_table(study, trials, output_dir, metric, direction)

    best_path = output_dir / "best_config.yaml"
    if complete:
        best = study.best_trial
        summary.best_number, summary.best_value, summary.best_params = best.number, best.value, dict(best.params)
        config = dict(best.user_attrs.get("config") or yaml.safe_load(Path(best.user_attrs["output_dir"], "config.yaml").read_text()))
        config.pop("output_dir", None)  # the recipe's default output folder, so it trains as it is
        recipe_file = f"recipes/train_{family.replace('-', '_')}.py"
        header = (
            f"# Best trial {best.number} of study {study.study_name!r} ({metric} = {best.value:.6g}, {direction}).\n"
            f"# Train it: accelerate launch {recipe_file} {best_path}\n"
        )
        best_path.write_text(header + yaml.safe_dump(config, sort_keys=False))
        summary.files["best_config"] = best_path
    else:
        summary.skipped["best_config.yaml"] = "no complete trial"
        logger.warning("no complete trial: no best_config.yaml")

    for name, reason in _write_plots(study, complete, output_dir, metric).items():
        if reason is None:
            summary.files[name] = output_dir / f"{name}.png"
        else:
            summary.skipped[f"{name}.png"] = reason
            logger.info("%s.png skipped: %s", name, reason)
    return summary


def _duration(trial) -> float | None:
    return trial.duration.total_seconds() if trial.duration is not None else None


def _write_table(study, trials, output_dir: Path, metric: str, direction: str) -> tuple[Path, Path]:
    names = list(dict.fromkeys(n for t in trials for n in t.params))
    header = ["trial", "state", "value", *names, "steps", "duration_s", "error"]
    rows = []
    for t in trials:
        rows.append([
            t.number, t.state.name, "" if t.value is None else t.value, *[t.params.get(n, "") for n in names],
            t.user_attrs.get("steps", ""), "" if _duration(t) is None else round(_duration(t), 1), t.user_attrs.get("error", ""),
        ])
    csv_path = output_dir / "trials.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)

    def cell(v: Any) -> str:
        return (f"{v:.6g}" if isinstance(v, float) else str(v)).replace("|", "\\|")

    best = study.best_trial.number if any(t.state.name == "COMPLETE" for t in trials) else None
    counts = ", ".join(f"{sum(t.state.name == s for t in trials)} {STATE_WORDS[s]}" for s in FINISHED)
    lines = [
        f"# Study {study.study_name!r}",
        "",
        f"Value: the best {metric} over a trial's validations ({direction}; for a pruned trial, its last reported value). "
        f"{len(trials)} finished trials: {counts}."
        + (f" Best: trial {best}." if best is not None else ""),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    md_path = output_dir / "trials.md"
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def _write_plots(study, complete: list, output_dir: Path, metric: str) -> dict[str, str | None]:
    """Optuna's matplotlib plots; name -> None when written, else the reason it was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    out: dict[str, str | None] = {}
    varied = [n for n in dict.fromkeys(n for t in complete for n in t.params) if len({repr(t.params.get(n)) for t in complete}) > 1]
    plots = {
        "optimization_history": (vis.plot_optimization_history, None if complete else "no complete trial"),
        "param_importances": (
            vis.plot_param_importances,
            f"needs >= 2 complete trials, has {len(complete)}" if len(complete) < 2
            else (None if varied else "no parameter takes more than one value among the complete trials"),
        ),
    }
    for name, (plot, reason) in plots.items():
        if reason is not None:
            out[name] = reason
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend
                ax = plot(study, target_name=metric)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.savefig(output_dir / f"{name}.png", dpi=120, bbox_inches="tight")
            plt.close(fig)
            out[name] = None
        except Exception as err:  # e.g. an importance evaluator that cannot fit these trials
            out[name] = f"Optuna could not compute it: {_one_line(err)}"
    return out
