"""The datacube recipe on real NetCDF files of every kind users bring (tests/netcdf_cases.py writes them with
xarray; `astrobio_hf.data.ingest` converts them as `astrobio-hf data ingest` does): CMIP files merged by
variable, year-0 times, a land mask, a unit override, a grid with poles, a regional grid, an odd-sized grid and
a single level. Each trains for a few steps in-process (the recipe's `main`, the same code `accelerate launch`
runs); one case per kind also runs through `accelerate launch` (marked slow except the masked one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

try:
    from . import netcdf_cases as cases
except ImportError:  # tests/ is not a package
    import netcdf_cases as cases

from astrobio_hf.data.ingest import ingest_netcdf

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TINY = ROOT / "recipes" / "configs" / "datacube" / "tiny.yaml"
OVERRIDES = {"unit_c": {"units": {"T": "degC"}}}
CASES = [f.__name__ for f in cases.ALL_CASES]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    out = {}
    for name in CASES:
        src = tmp_path_factory.mktemp(f"nc_{name}")
        paths = getattr(cases, name)(src)
        out[name] = src / "shards"
        ingest_netcdf(paths, out[name], **OVERRIDES.get(name, {}))
    return out


def _args(data_dir: Path, output_dir: Path) -> list[str]:
    return [str(TINY), "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--context_steps", "2",
            "--max_steps", "3", "--eval_every", "3", "--checkpoint_every", "3", "--report_to", "none", "--per_device_batch_size", "2"]


@pytest.mark.parametrize("case", CASES)
def test_recipe_trains_and_reports_on_every_kind_of_file(datasets, tmp_path, case):
    from astrobio_hf.recipes.train_datacube import main

    out = tmp_path / "run"
    test = main(_args(datasets[case], out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 3
    names = json.loads((out / "config.json").read_text())["variable_names"]
    for system in ("model", "persistence", "climatology"):
        for v in names:
            assert test[f"{system}/rmse/{v}"] > 0 and torch.isfinite(torch.tensor(test[f"{system}/rmse/{v}"]))
    card = (out / "README.md").read_text()
    notes = metrics["data_notes"]
    assert "## Data" in card
    if case == "masked_field":
        assert any("validity mask" in n for n in notes)
    if case in ("odd_grid", "regional_grid"):
        assert any("padded to" in n and "cropped back" in n for n in notes)
    if case == "pole_grid":
        assert any("includes the poles" in n for n in notes)
    if case == "regional_grid":
        assert any("regional" in n for n in notes)
    if case in ("single_level", "cmip_per_variable", "year0_times"):
        assert any("at least 2 levels, the grid has 1" in n for n in notes), notes  # vertical constraints skipped
        assert not (out / "plots" / "temperature_profile.png").exists() and "temperature_profile" not in card
    if case == "unit_c":
        assert any("overridden" in n and "degC" in n for n in notes)
    if case in ("cmip_per_variable", "masked_field", "unit_c", "year0_times"):  # monthly steps with a calendar
        assert "train_mean/rmse" in test and any("calendar month" in n for n in notes)


def test_masked_run_outputs_do_not_depend_on_masked_cells(datasets, tmp_path):
    """The model trained on masked data gives identical forecasts whatever is written in the masked cells."""
    from astrobio_hf.data.schema import DatasetSchema
    from astrobio_hf.data.streaming import build_window_dataset
    from astrobio_hf.evaluation.datacube import collate_with_calendar
    from astrobio_hf.models.datacube_unet import DatacubeUNetForForecast
    from astrobio_hf.recipes.train_datacube import main

    out = tmp_path / "run"
    main(_args(datasets["masked_field"], out))
    model = DatacubeUNetForForecast.from_pretrained(out).eval()
    schema = DatasetSchema.from_dir(datasets["masked_field"])
    rows = list(build_window_dataset(datasets["masked_field"], "test", context_steps=2, schema=schema).take(2))
    batch = collate_with_calendar(rows, masked=True, units=schema.climate_time_units, calendar=schema.climate_time_calendar)
    valid = batch["inputs_valid"]
    assert (~valid).any() and valid.any() and model.config.calendar_conditioning  # monthly noleap steps
    keys = ("inputs", "planet_params", "inputs_valid", "label_phase")
    with torch.no_grad():
        a = model(**{k: batch[k] for k in keys}).mean
        b = model(**{**{k: batch[k] for k in keys}, "inputs": batch["inputs"].masked_fill(~valid, 1.0e4)}).mean
    assert torch.equal(a, b)


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c == "masked_field" else pytest.mark.slow) for c in CASES])
def test_accelerate_launch_on_every_kind_of_file(datasets, tmp_path, case):
    cmd = [ACCELERATE, "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu.yaml"),
           str(ROOT / "recipes" / "train_datacube.py"), *_args(datasets[case], tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize(("recipe", "family"), [("train_cnn_vit", "cnn_vit"), ("train_diffusion", "climate diffusion")])
def test_families_without_masks_refuse_masked_data_at_start(datasets, tmp_path, recipe, family):
    import importlib

    main = importlib.import_module(f"astrobio_hf.recipes.{recipe}").main
    with pytest.raises(ValueError, match=f"has masked values \\(tos: \\d+\\) and the {family} family does not carry validity masks"):
        main(["--data_dir", str(datasets["masked_field"]), "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--report_to", "none"])
    assert not (tmp_path / "run" / "model.safetensors").exists()
