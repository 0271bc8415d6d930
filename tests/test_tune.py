"""`astrobio-hf tune`: the search space and its refusals (fast), the reports of a study, a real study of the cnn_vit
recipe on tiny data (one trial pruned, one failing on purpose, rerun on the same SQLite storage to resume), and a
2-process study through `accelerate launch -m astrobio_hf.cli tune`.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from astrobio_hf import cli
from astrobio_hf.tune import (
    Param,
    PruningHook,
    argument_fields,
    argument_types,
    parse_enqueued,
    parse_overrides,
    parse_space,
    recipe_module,
    write_reports,
)

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TINY = ROOT / "recipes" / "configs" / "cnn_vit" / "tiny.yaml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class ToyModelArguments:
    num_layers: int = 2
    dropout: float = 0.0
    stem_norm: str = "none"
    lon_roll: bool = True
    physics_weights: str = "{}"
    widths: list = field(default_factory=list)


@dataclass
class ToyTrainingArguments:
    output_dir: str = "runs/toy"
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05


class NotArgs:  # a class whose name does not end in "Arguments": not picked up
    pass


TOY_FIELDS = argument_fields((ToyModelArguments, ToyTrainingArguments))


# ------------------------------------------------------------------------------------------------------
# (a) the search space, fast
# ------------------------------------------------------------------------------------------------------
def test_space_parses_every_kind_and_samples_it():
    space = yaml.safe_load(
        """
        learning_rate: {type: float, low: 1e-4, high: 1.0e-2, log: true}   # '1e-4' is a YAML string: read as a float
        warmup_ratio: {type: float, low: 0.0, high: 0.2, step: 0.05}
        num_layers: {type: int, low: 1, high: 4}
        stem_norm: {type: categorical, choices: [none, group]}
        lon_roll: {type: categorical, choices: [true, false]}
        physics_weights: {type: categorical, choices: [{}, {cross_scale: 0.1}]}   # a JSON string field
        """
    )
    params = parse_space(space, TOY_FIELDS)
    assert params["learning_rate"] == Param("learning_rate", "float", low=1e-4, high=1e-2, log=True)
    assert params["warmup_ratio"].step == 0.05
    assert params["num_layers"] == Param("num_layers", "int", low=1, high=4)
    assert params["lon_roll"].choices == (True, False)
    assert params["physics_weights"].choices == ("{}", '{"cross_scale": 0.1}')
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        values = {name: p.suggest(trial) for name, p in params.items()}
        assert 1e-4 <= values["learning_rate"] <= 1e-2 and values["num_layers"] in (1, 2, 3, 4)
        assert values["stem_norm"] in ("none", "group") and isinstance(values["lon_roll"], bool)
        study.tell(trial, 0.0)


@pytest.mark.parametrize(
    "space, expected",
    [
        ({"lr": {"type": "float", "low": 0.1, "high": 1}}, ["unknown key 'lr'", "valid keys:", "learning_rate"]),
        ({"output_dir": {"type": "categorical", "choices": ["a"]}}, ["output_dir cannot be tuned"]),
        ({"learning_rate": {"type": "double", "low": 0.1, "high": 1}}, ["learning_rate", "expected type one of", "categorical"]),
        ({"learning_rate": {"type": "float", "lo": 0.1, "high": 1}}, ["learning_rate", "unknown option(s) ['lo']", "valid options"]),
        ({"learning_rate": {"type": "float", "low": 0.1}}, ["learning_rate", "missing ['high']"]),
        ({"learning_rate": {"type": "float", "low": 1.0, "high": 0.1}}, ["learning_rate", "expected low <= high", "low=1.0 high=0.1"]),
        ({"learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, ["learning_rate", "log: true needs low > 0"]),
        ({"learning_rate": {"type": "float", "low": "small", "high": 0.1}}, ["learning_rate low", "expected a float", "'small'"]),
        ({"learning_rate": 0.001}, ["learning_rate", "expected a mapping with a type"]),
        ({"num_layers": {"type": "float", "low": 1, "high": 4}}, ["num_layers is an int field", "use type: int"]),
        ({"num_layers": {"type": "int", "low": 1.5, "high": 4}}, ["num_layers low", "expected a int", "1.5"]),
        ({"stem_norm": {"type": "int", "low": 1, "high": 4}}, ["stem_norm", "is a str field", "categorical"]),
        ({"lon_roll": {"type": "categorical", "choices": ["yes", "no"]}}, ["lon_roll", "expected a bool", "'yes'"]),
        ({"stem_norm": {"type": "categorical", "choices": []}}, ["stem_norm", "non-empty list"]),
        ({"stem_norm": {"type": "categorical", "choices": ["none", "none"]}}, ["stem_norm", "repeat"]),
        ({"widths": {"type": "categorical", "choices": [[1], [2]]}}, ["widths", "cannot be tuned"]),
        ({}, ["non-empty mapping"]),
    ],
)
def test_space_refuses_bad_keys_types_and_bounds(space, expected):
    with pytest.raises(ValueError) as info:
        parse_space(space, TOY_FIELDS, source="space.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("space.yaml")
    for part in expected:
        assert part in message, (part, message)


def test_enqueue_and_set_are_typed_and_checked():
    params = parse_space({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                          "stem_norm": {"type": "categorical", "choices": ["none", "group"]}}, TOY_FIELDS)
    assert parse_enqueued(['{"learning_rate": 1e-9}', '{"stem_norm": "group"}'], params, TOY_FIELDS) == [
        {"learning_rate": 1e-9}, {"stem_norm": "group"}]
    with pytest.raises(ValueError, match=r"keys \['dropout'\] are not in the search space; valid keys: \['learning_rate', 'stem_norm'\]"):
        parse_enqueued(['{"dropout": 0.1}'], params, TOY_FIELDS)
    with pytest.raises(ValueError, match="not one of the choices"):
        parse_enqueued(['{"stem_norm": "batch"}'], params, TOY_FIELDS)
    with pytest.raises(ValueError, match="expected a JSON object"):
        parse_enqueued(["{learning_rate: 1}"], params, TOY_FIELDS)
    assert parse_overrides(["num_layers=3", "lon_roll=false", "learning_rate=1e-3", "stem_norm=group"], TOY_FIELDS) == {
        "num_layers": 3, "lon_roll": False, "learning_rate": 1e-3, "stem_norm": "group"}
    with pytest.raises(ValueError, match="unknown key 'max_step'"):
        parse_overrides(["max_step=3"], TOY_FIELDS)


def test_argument_types_declared_or_found_by_inspection():
    module = SimpleNamespace(__name__="toy", ToyModelArguments=ToyModelArguments, ToyTrainingArguments=ToyTrainingArguments, NotArgs=NotArgs)
    assert argument_types(module) == (ToyModelArguments, ToyTrainingArguments)
    module.ARGUMENT_TYPES = (ToyTrainingArguments,)
    assert argument_types(module) == (ToyTrainingArguments,)
    recipe = recipe_module("cnn-vit")
    fields = argument_fields(argument_types(recipe))
    assert {"learning_rate", "warmup_ratio", "num_layers", "stem_norm", "data_dir"} <= set(fields)
    assert fields["num_layers"] is int and fields["lon_roll"] is bool and fields["learning_rate"] is float


def test_cli_refuses_a_bad_space_in_one_line_before_any_trial(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\nnum_layer: {type: int, low: 1, high: 4}\n")
    out = tmp_path / "study"
    code = cli.main(["tune", "cnn-vit", str(TINY), "--space", str(space), "--n-trials", "2", "--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "unknown key 'num_layer'" in err[0] and "valid keys:" in err[0] and "'num_layers'" in err[0]
    assert not out.exists()
    bad_base = tmp_path / "base.yaml"
    bad_base.write_text("hidden_sizes: 8\n")
    space.write_text("num_layers: {type: int, low: 1, high: 4}\n")
    assert cli.main(["tune", "cnn-vit", str(bad_base), "--space", str(space), "--n-trials", "2", "--output-dir", str(out)]) == 2
    assert "hidden_sizes" in capsys.readouterr().err and not out.exists()


def test_pruning_hook_reports_prunes_and_keeps_the_best_value():
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    hook = PruningHook(trial, "val/loss", "minimize")
    hook.after_validation(SimpleNamespace(global_step=2), {"val/loss": 0.8, "val/model/nrmse_mean": 0.5}, None)
    hook.after_validation(SimpleNamespace(global_step=4), {"val/loss": 0.6}, None)
    with pytest.raises(optuna.TrialPruned, match="step 6"):
        hook.after_validation(SimpleNamespace(global_step=6), {"val/loss": 3.0}, None)
    assert hook.best() == 0.6 and hook.last_step == 6 and trial.storage.get_trial(trial._trial_id).intermediate_values == {2: 0.8, 4: 0.6, 6: 3.0}
    with pytest.raises(ValueError, match=r"--metric val/nrmse is not among the validation metrics; valid ones: \['val/loss'\]"):
        PruningHook(None, "val/nrmse", "minimize").after_validation(SimpleNamespace(global_step=1), {"val/loss": 1.0}, None)
    assert PruningHook(None, "val/acc", "maximize").best() is None


def test_reports_of_a_study(tmp_path):
    """best_config.yaml (without output_dir), trials.md / trials.csv with every trial, both plots."""
    study = optuna.create_study(study_name="toy")
    dists = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
             "num_layers": optuna.distributions.IntDistribution(1, 4)}
    for i, (lr, layers, state, value) in enumerate([(1e-3, 2, "COMPLETE", 0.5), (3e-3, 1, "COMPLETE", 0.3), (1e-4, 4, "PRUNED", None),
                                                     (2e-3, 3, "FAIL", None), (5e-3, 3, "COMPLETE", 0.4)]):
        config = {"max_steps": 6, "learning_rate": lr, "num_layers": layers, "output_dir": str(tmp_path / f"trial-{i:04d}")}
        attrs = {"config": config, "steps": 6 if state != "PRUNED" else 3}
        if state == "FAIL":
            attrs["error"] = "ValueError: expected --warmup_ratio in [0, 1) | got 2.0"
        study.add_trial(optuna.trial.create_trial(
            state=getattr(optuna.trial.TrialState, state), value=value, params={"learning_rate": lr, "num_layers": layers},
            distributions=dists, user_attrs=attrs, intermediate_values={3: 1.0} if state == "PRUNED" else {},
        ))
    summary = write_reports(study, tmp_path, family="cnn-vit", metric="val/loss", direction="minimize", storage_text="memory")
    assert summary.best_number == 1 and summary.best_value == 0.3
    best = yaml.safe_load((tmp_path / "best_config.yaml").read_text())
    assert best == {"max_steps": 6, "learning_rate": 3e-3, "num_layers": 1}
    assert "accelerate launch recipes/train_cnn_vit.py" in (tmp_path / "best_config.yaml").read_text()
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    assert rows[3]["error"].startswith("ValueError: expected --warmup_ratio") and rows[2]["steps"] == "3"
    table = (tmp_path / "trials.md").read_text()
    assert table.count("\n| ") == 6 and "\\|" in table  # header + 5 trials; the '|' in the error escaped
    for name in ("optimization_history.png", "param_importances.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert "best: trial 1, val/loss = 0.3" in summary.text()


def test_reports_skip_importances_with_a_reason(tmp_path):
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=1.0, params={"num_layers": 2}, distributions={"num_layers": optuna.distributions.IntDistribution(1, 4)},
                                              user_attrs={"config": {"num_layers": 2}}))
    summary = write_reports(study, tmp_path, family="cnn-vit", metric="val/loss", direction="minimize", storage_text="memory")
    assert (tmp_path / "optimization_history.png").is_file() and not (tmp_path / "param_importances.png").exists()
    assert summary.skipped["param_importances.png"] == "needs >= 2 complete trials, has 1"


# ------------------------------------------------------------------------------------------------------
# (b) a real study of the cnn_vit recipe on tiny data, in this process; (c) the same through 2 gloo processes
# ------------------------------------------------------------------------------------------------------
GOOD = '{"learning_rate": 0.003, "warmup_ratio": 0.0}'
HOPELESS = '{"learning_rate": 1e-9}'  # the weights do not move: worse at step 3 than GOOD at step 3, so pruned there
REFUSED = '{"warmup_ratio": 2.0}'  # the recipe refuses it (--warmup_ratio must be in [0, 1)): a failed trial


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from astrobio_hf.data.synth import synthesize_planets

    out = tmp_path_factory.mktemp("tiny_planets_tune")
    synthesize_planets(out, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64)
    return out


@pytest.fixture
def one_thread():
    """One torch thread for the in-process trials, as the launched runs get with OMP_NUM_THREADS=1 (tiny models are
    several times slower with two threads on a busy 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _space(tmp_path: Path) -> Path:
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\nwarmup_ratio: {type: float, low: 0.0, high: 0.2}\n")
    return space


def _tune_args(out: Path, data: Path, space: Path, *extra: str) -> list[str]:
    # tiny.yaml: 6 steps, a validation every 3; checkpoints only where the loop needs them (best, last)
    return ["tune", "cnn-vit", str(TINY), "--space", str(space), "--output-dir", str(out),
            "--set", f"data_dir={data}", "--set", "report_to=none", "--set", "checkpoint_every=100", *extra]


def test_study_prunes_records_a_failure_and_resumes(tiny_data, tmp_path, capsys, one_thread):
    out, storage = tmp_path / "study", f"sqlite:///{tmp_path / 'db' / 'cnn_vit.db'}"
    args = _tune_args(out, tiny_data, _space(tmp_path), "--storage", storage, "--enqueue", GOOD, "--enqueue", HOPELESS, "--enqueue", REFUSED)

    # First run: 3 trials (the enqueued ones); the median pruner may prune from the 2nd trial on.
    assert cli.main([*args, "--n-trials", "3", "--pruner", "median", "--pruner-startup-trials", "1"]) == 0
    assert "3 run now" in capsys.readouterr().out
    study = optuna.load_study(study_name="cnn-vit", storage=storage)
    complete, pruned, failed = study.trials
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert complete.params == {"learning_rate": 0.003, "warmup_ratio": 0.0} and pruned.params["learning_rate"] == 1e-9
    # the pruned run stopped at its first validation (step 3 of 6), before any model was saved
    assert pruned.user_attrs["steps"] == 3 < complete.user_attrs["steps"] == 6
    assert pruned.intermediate_values[3] > complete.intermediate_values[3]
    assert (out / "trial-0000" / "model.safetensors").is_file() and not (out / "trial-0001" / "model.safetensors").exists()
    assert failed.user_attrs["error"] == "ValueError: expected --warmup_ratio in [0, 1), got 2.0"
    assert "Traceback" in (out / "trial-0002" / "train.log").read_text()
    config = yaml.safe_load((out / "trial-0000" / "config.yaml").read_text())
    assert config == {**yaml.safe_load(TINY.read_text()), "data_dir": str(tiny_data), "report_to": "none", "checkpoint_every": 100,
                      "learning_rate": 0.003, "warmup_ratio": 0.0, "output_dir": str(out / "trial-0000")}

    # Rerun on the same storage with 4 trials: only the missing one runs (sampled; the enqueued ones are not added again).
    assert cli.main([*args, "--n-trials", "4", "--pruner", "none"]) == 0
    assert "4 finished trials (2 complete, 1 pruned, 1 failed); 1 run now" in capsys.readouterr().out
    assert cli.main([*args, "--n-trials", "4", "--pruner", "none"]) == 0
    assert "0 run now" in capsys.readouterr().out
    study = optuna.load_study(study_name="cnn-vit", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3] and study.trials[3].state.name == "COMPLETE"
    assert 1e-4 <= study.trials[3].params["learning_rate"] <= 1e-2

    # Reports: every trial in the table, both plots (2 complete trials), a best config that trains with the recipe.
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "PRUNED"), ("2", "FAIL"), ("3", "COMPLETE")]
    table = (out / "trials.md").read_text()
    assert all(f"\n| {n} | " in table for n in range(4)) and "expected --warmup_ratio in [0, 1)" in table
    for name in ("optimization_history.png", "param_importances.png"):
        assert (out / name).stat().st_size > 1000, name
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert "output_dir" not in best and best["learning_rate"] == study.best_params["learning_rate"]
    recipe = recipe_module("cnn-vit")
    test_metrics = recipe.main([str(out / "best_config.yaml"), "--output_dir", str(tmp_path / "best_run")])
    assert json.loads((tmp_path / "best_run" / "metrics.json").read_text())["global_step"] == 6 and test_metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_study_through_accelerate_launch(tiny_data, tmp_path):
    """2 gloo processes: rank 0 asks and broadcasts the parameters and the prune decision; both ranks train every trial."""
    out, journal = tmp_path / "study", tmp_path / "journal" / "study.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "ACCELERATE_USE_CPU": "true"})
    cmd = [
        ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu_ddp.yaml"), "--main_process_port", str(_free_port()),
        "-m", "astrobio_hf.cli", *_tune_args(out, tiny_data, _space(tmp_path), "--set", "per_device_batch_size=2"),
        "--storage", str(journal), "--n-trials", "2", "--pruner-startup-trials", "1", "--enqueue", GOOD, "--enqueue", HOPELESS,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"tune failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert proc.stdout.count("finished trials") == 1  # the summary comes from rank 0 only
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="cnn-vit", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert study.trials[1].user_attrs["steps"] == 3 < study.trials[0].user_attrs["steps"] == 6
    for number in (0, 1):
        assert "num_processes=2" in (out / f"trial-{number:04d}" / "run_info.txt").read_text()
    assert (out / "best_config.yaml").is_file() and (out / "optimization_history.png").is_file()
