"""Numeric tables for causal discovery (astrobio_hf.data.table): CSV ingestion, checks, round trip, CLI, Sachs 2005."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from astrobio_hf.data import table as tb
from astrobio_hf.data.table import (
    TableData,
    ensure_sachs_dataset,
    ingest_table,
    load_table,
    load_table_schema,
    sachs_consensus_edges,
    write_table_dataset,
)

VARIABLES = ["a", "b", "p/q", "c"]
REGIME_ROWS = {"obs": 30, "doA": 20, "mystery": 10}


def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = sum(REGIME_ROWS.values())
    a = rng.gamma(2.0, 1.0, n)
    b = 2 * a + rng.normal(size=n)
    pq = rng.normal(size=n)
    c = b - pq + rng.normal(size=n)
    return pd.DataFrame({"a": a, "b": b, "p/q": pq, "c": c})


def _write_inputs(tmp_path, *, frame=None, regimes=True):
    frame = _frame() if frame is None else frame
    data = frame.copy()
    if regimes:
        labels = [name for name, rows in REGIME_ROWS.items() for _ in range(rows)]
        data.insert(2, "cond", labels)  # the regime column sits between variables
    data.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "graph.csv").write_text('"Cause","Effect"\n"a","b"\n"b","c"\n"p/q","c"\n')
    (tmp_path / "targets.csv").write_text("Regime,Targets\nobs,\ndoA,a\nmystery,unknown\nunused,b;c\n")
    return frame


def _ingest(tmp_path, out="out", **kwargs):
    kw = dict(graph=tmp_path / "graph.csv", regime_column="cond", targets=tmp_path / "targets.csv",
              units={"a": "nM"}, log1p=["a"], val_fraction=0.2, seed=3)
    kw.update(kwargs)
    return ingest_table(tmp_path / "data.csv", tmp_path / out, **kw)


def test_round_trip_with_graph_and_regimes(tmp_path):
    frame = _write_inputs(tmp_path)
    schema = _ingest(tmp_path)
    assert schema == load_table_schema(tmp_path / "out")
    on_disk = json.loads((tmp_path / "out" / "schema.json").read_text())
    assert on_disk["kind"] == "table" and on_disk["format_version"] == 1
    assert [v["name"] for v in schema["variables"]] == VARIABLES
    assert schema["variables"][0] == {"name": "a", "unit": "nM", "transform": "log1p"}
    assert schema["variables"][1] == {"name": "b", "unit": None, "transform": "identity"}
    assert schema["edges"] == [["a", "b"], ["b", "c"], ["p/q", "c"]]
    assert [(r["name"], r["targets"], r["rows"]) for r in schema["regimes"]] == [
        ("obs", [], 30), ("doA", ["a"], 20), ("mystery", "unknown", 10)]
    assert any("unused" in note for note in schema["notes"])  # listed but absent: said, not silently dropped
    assert schema["rows"] == 60 and schema["splits"]["val"]["rows"] == 12 and schema["splits"]["train"]["rows"] == 48
    assert schema["splits"]["train"]["files"] == ["train-00000.parquet"]

    whole = load_table(tmp_path / "out", "all")
    assert isinstance(whole, TableData) and whole.variables == VARIABLES and len(whole) == 60
    assert whole.values.dtype == np.float64 and whole.regime.dtype == np.int64 and whole.row_id.dtype == np.int64
    np.testing.assert_array_equal(whole.row_id, np.arange(60))
    np.testing.assert_allclose(whole.values, frame[VARIABLES].to_numpy(), rtol=1e-15)  # stored as given, untransformed
    np.testing.assert_array_equal(whole.regime, np.repeat([0, 1, 2], [30, 20, 10]))
    expected_mask = np.zeros((60, 4), dtype=bool)
    expected_mask[30:50, 0] = True  # doA intervened on a; obs and "unknown" regimes nowhere
    np.testing.assert_array_equal(whole.intervened, expected_mask)

    train, val = load_table(tmp_path / "out", "train"), load_table(tmp_path / "out", "val")
    assert len(train) == 48 and len(val) == 12
    assert np.bincount(val.regime, minlength=3).tolist() == [6, 4, 2]  # stratified: 20% of every regime
    assert sorted(np.concatenate([train.row_id, val.row_id]).tolist()) == list(range(60))
    np.testing.assert_array_equal(val.values, whole.values[val.row_id])
    np.testing.assert_array_equal(val.intervened, whole.intervened[val.row_id])

    again = _ingest(tmp_path, out="again")
    assert again["splits"]["val"]["rows"] == 12
    np.testing.assert_array_equal(load_table(tmp_path / "again", "val").row_id, val.row_id)  # same seed, same rows
    assert _ingest(tmp_path, out="other", seed=4)["splits"]["val"]["rows"] == 12
    assert not np.array_equal(load_table(tmp_path / "other", "val").row_id, val.row_id)


def test_shards_dataframe_api_and_empty_val(tmp_path, monkeypatch):
    frame = _frame()
    monkeypatch.setattr(tb, "SHARD_ROWS", 7)
    schema = write_table_dataset(tmp_path / "out", frame, val_fraction=0.0, edges=[("a", "b")], source="unit test")
    assert schema["regimes"] == [{"name": "observational", "targets": [], "rows": 60, "val_rows": 0}]
    assert schema["splits"]["val"] == {"rows": 0, "files": [], "sha256": []}
    assert len(schema["splits"]["train"]["files"]) == 9 and schema["source"] == "unit test"
    train = load_table(tmp_path / "out", "train")
    np.testing.assert_array_equal(train.values, frame.to_numpy())
    assert not train.intervened.any()
    val = load_table(tmp_path / "out", "val")
    assert val.values.shape == (0, 4) and val.intervened.shape == (0, 4) and val.regime.shape == (0,)
    # a rebuild with fewer shards removes the stale ones
    monkeypatch.setattr(tb, "SHARD_ROWS", 100)
    write_table_dataset(tmp_path / "out", frame, val_fraction=0.0)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.parquet")) == ["train-00000.parquet"]


def test_corrupted_or_missing_shard_is_named(tmp_path):
    write_table_dataset(tmp_path / "out", _frame(), val_fraction=0.1)
    shard = tmp_path / "out" / "val-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="val-00000.parquet is corrupted"):
        load_table(tmp_path / "out", "val")
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="val-00000.parquet"):
        load_table(tmp_path / "out", "all")
    with pytest.raises(ValueError, match="expected split"):
        load_table(tmp_path / "out", "test")
    with pytest.raises(FileNotFoundError, match="schema.json is missing"):
        load_table(tmp_path / "nothing", "train")


def _edit_csv(tmp_path, change):
    data = pd.read_csv(tmp_path / "data.csv", dtype=object)
    data = change(data)
    data.to_csv(tmp_path / "data.csv", index=False)


def _set(column, row, value):
    def change(d):
        d.loc[row, column] = value
        return d
    return change


BAD_DATA = [
    ("non-numeric", _set("b", 4, "high"), {}, r"numbers in column 'b'.*'high'"),
    ("nan", _set("c", 3, ""), {}, r"empty/NaN cells in column\(s\) 'c' \(1 row\)"),
    ("nan-literal", _set("a", 5, "NaN"), {}, r"empty/NaN cells in column\(s\) 'a' \(1 row\)"),
    ("infinite", _set("a", 5, "inf"), {}, r"infinite values in column\(s\) \{'a'"),
    ("constant", lambda d: d.assign(b="1.5"), {}, r"constant column\(s\) \['b'\]"),
    ("one variable", lambda d: d[["a"]], {"graph": None, "targets": None, "regime_column": None,
                                                   "units": None, "log1p": None}, "at least 2 variables"),
    ("few rows", lambda d: d.iloc[:9], {}, "at least 10 rows, got 9"),
    ("log1p <= -1", _set("b", 0, "-1.0"), {"log1p": ["b"]}, r"values > -1 in every log1p column.*minima \{'b': -1.0\}"),
    ("log1p all", _set("c", 0, "-3"), {"log1p": "all"}, r"values > -1 in every log1p column.*'c': -3.0"),
]


@pytest.mark.parametrize("change,kwargs,match", [b[1:] for b in BAD_DATA], ids=[b[0] for b in BAD_DATA])
def test_bad_data_is_a_clear_error_and_writes_nothing(tmp_path, change, kwargs, match):
    _write_inputs(tmp_path)
    _edit_csv(tmp_path, change)
    with pytest.raises(ValueError, match=match):
        _ingest(tmp_path, **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_csv_header_and_regime_inputs(tmp_path):
    _write_inputs(tmp_path)
    ok = (tmp_path / "data.csv").read_text()
    (tmp_path / "data.csv").write_text(ok.replace("a,b,cond,p/q,c", "a,b,cond,a,c", 1))
    with pytest.raises(ValueError, match=r"unique column names.*\['a'\]"):
        _ingest(tmp_path)
    (tmp_path / "data.csv").write_text(ok)
    with pytest.raises(ValueError, match=r"regime column 'condition'.*found columns"):
        _ingest(tmp_path, regime_column="condition")
    with pytest.raises(ValueError, match="regime_column and targets together"):
        _ingest(tmp_path, targets=None)
    (tmp_path / "targets.csv").write_text("Regime,Targets\nobs,\ndoA,a\n")
    with pytest.raises(ValueError, match=r"unlisted regime\(s\) \['mystery'\]"):
        _ingest(tmp_path)
    (tmp_path / "targets.csv").write_text("Regime,Targets\nobs,\ndoA,a;zz\nmystery,unknown\n")
    with pytest.raises(ValueError, match=r"targets of regime 'doA'.*unknown \['zz'\].*known"):
        _ingest(tmp_path)
    (tmp_path / "targets.csv").write_text("Name,Intervened\nobs,\n")
    with pytest.raises(ValueError, match="header 'Regime,Targets'"):
        _ingest(tmp_path)
    _write_inputs(tmp_path)
    (tmp_path / "graph.csv").write_text("Cause,Effect\na,b\nb,zz\nyy,c\n")
    with pytest.raises(ValueError, match=r"unknown name\(s\) \['yy', 'zz'\]; known: \['a', 'b', 'p/q', 'c'\]"):
        _ingest(tmp_path)
    (tmp_path / "graph.csv").write_text("Cause,Effect\na,b\nc,c\n")
    with pytest.raises(ValueError, match="self-loops"):
        _ingest(tmp_path)
    (tmp_path / "graph.csv").write_text("a,b\nb,c\n")
    with pytest.raises(ValueError, match="header 'Cause,Effect'"):
        _ingest(tmp_path)
    _write_inputs(tmp_path)
    with pytest.raises(ValueError, match=r"log1p to name known variables, got unknown \['zz'\]"):
        _ingest(tmp_path, log1p=["a", "zz"])
    with pytest.raises(ValueError, match=r"units to name known variables, got unknown \['cond'\]"):
        _ingest(tmp_path, units={"cond": "m"})
    with pytest.raises(ValueError, match=r"val_fraction in \[0, 1\)"):
        _ingest(tmp_path, val_fraction=1.0)
    assert not (tmp_path / "out").exists()


def test_bad_dataframe_inputs(tmp_path):
    frame = _frame()
    with pytest.raises(ValueError, match=r"numeric column, got column 'b' of dtype object \(e.g. value 'x'\)"):
        write_table_dataset(tmp_path / "o", frame.assign(b=["x"] * 60))
    with pytest.raises(ValueError, match=r"empty/NaN cells in column\(s\) 'a' \(2 rows\), 'c' \(1 row\); 2 rows affected"):
        f = frame.copy()
        f.loc[[1, 2], "a"] = np.nan
        f.loc[1, "c"] = np.nan
        write_table_dataset(tmp_path / "o", f)
    with pytest.raises(ValueError, match="unique column names"):
        write_table_dataset(tmp_path / "o", pd.concat([frame, frame[["a"]]], axis=1))
    with pytest.raises(ValueError, match="transforms among"):
        write_table_dataset(tmp_path / "o", frame, transforms={"a": "log"})
    with pytest.raises(ValueError, match="repeated edge"):
        write_table_dataset(tmp_path / "o", frame, edges=[("a", "b"), ("a", "b")])
    with pytest.raises(ValueError, match="one regime name per row"):
        write_table_dataset(tmp_path / "o", frame, regimes=["r"] * 5, regime_targets={"r": []})
    with pytest.raises(ValueError, match="reserved"):
        write_table_dataset(tmp_path / "o", frame.rename(columns={"a": "regime"}))
    assert not (tmp_path / "o").exists()


def test_cli_data_table(tmp_path, capsys):
    from astrobio_hf.cli import main

    _write_inputs(tmp_path)
    out = tmp_path / "cli"
    argv = ["data", "table", str(tmp_path / "data.csv"), "--output", str(out), "--graph", str(tmp_path / "graph.csv"),
            "--regime-column", "cond", "--targets", str(tmp_path / "targets.csv"), "--units", "a=nM,p/q=K",
            "--log1p", "a,b", "--val-fraction", "0.2", "--seed", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "60 rows (48 train / 12 val), 4 variables, 3 regime(s)" in printed and "3 edges" in printed
    schema = load_table_schema(out)
    assert [(v["unit"], v["transform"]) for v in schema["variables"]] == [
        ("nM", "log1p"), (None, "log1p"), ("K", "identity"), (None, "identity")]
    base = argv[:5] + ["--regime-column", "cond", "--targets", str(tmp_path / "targets.csv")]
    assert main(base + ["--log1p", "all"]) == 2  # 'all' includes columns with values <= -1
    assert "expected values > -1 in every log1p column" in capsys.readouterr().err
    assert main(base + ["--log1p", "zz"]) == 2
    assert "unknown ['zz']" in capsys.readouterr().err


needs_cdt = pytest.mark.skipif(importlib.util.find_spec("cdt") is None, reason="cdt (pip install --no-deps cdt==0.6.0)")


@needs_cdt
def test_sachs_observational(tmp_path, capsys):
    from astrobio_hf.cli import main

    edges = sachs_consensus_edges()
    assert len(edges) == 18 and ("pmek", "p44/42") in edges and ("PKA", "praf") in edges
    assert main(["data", "sachs", "--output", str(tmp_path / "obs")]) == 0
    assert "853 rows (853 train / 0 val), 11 variables, 1 regime(s)" in capsys.readouterr().out
    schema = ensure_sachs_dataset(tmp_path / "obs")  # built once: the second call loads it
    assert schema["rows"] == 853 and len(schema["variables"]) == 11 and len(schema["edges"]) == 18
    assert schema["regimes"] == [{"name": "CD3/CD28", "targets": [], "rows": 853, "val_rows": 0}]
    assert all(v["transform"] == "log1p" for v in schema["variables"]) and "Science 308:523" in schema["source"]
    data = load_table(tmp_path / "obs", "all")
    assert data.values.shape == (853, 11) and not data.intervened.any() and data.values.min() > -1
    assert load_table(tmp_path / "obs", "val").values.shape == (0, 11)
    with pytest.raises(ValueError, match="use another directory"):
        ensure_sachs_dataset(tmp_path / "obs", subset="full")


@needs_cdt
def test_sachs_full(tmp_path):
    schema = ensure_sachs_dataset(tmp_path / "full", subset="full")
    expected = [("CD3/CD28", 853, []), ("CD3/CD28+ICAM-2", 902, []), ("CD3/CD28+AKT inhibitor", 911, ["pakts473"]),
                ("CD3/CD28+G06976", 723, ["PKC"]), ("CD3/CD28+psitectorigenin", 810, ["PIP2"]),
                ("CD3/CD28+U0126", 799, ["pmek"]), ("CD3/CD28+LY294002", 848, ["PIP3"]), ("PMA", 913, ["PKC"]),
                ("beta2-cAMP", 707, ["PKA"])]
    assert [(r["name"], r["rows"], r["targets"]) for r in schema["regimes"]] == expected
    assert schema["rows"] == 7466 and schema["splits"]["val"]["rows"] == 0
    data = load_table(tmp_path / "full", "train")
    starts = np.cumsum([0] + [rows for _, rows, _ in expected])
    np.testing.assert_array_equal(data.regime, np.repeat(np.arange(9), [rows for _, rows, _ in expected]))
    mask = np.zeros_like(data.intervened)
    for k, (_, _, targets) in enumerate(expected):
        for t in targets:
            mask[starts[k]:starts[k + 1], data.variables.index(t)] = True
    np.testing.assert_array_equal(data.intervened, mask)
    # the observational subset is the first block of the full table
    obs = ensure_sachs_dataset(tmp_path / "obs")
    assert obs["rows"] == 853
    np.testing.assert_array_equal(load_table(tmp_path / "obs", "all").values, data.values[:853])
    # block boundaries sit at distribution shifts: U0126 (MEK inhibitor) drops p44/42, psitectorigenin drops PIP2
    logs = np.log1p(data.values)
    block = lambda k, v: logs[starts[k]:starts[k + 1], data.variables.index(v)].mean()  # noqa: E731
    assert block(5, "p44/42") < block(4, "p44/42") - 1 and block(4, "PIP2") < block(3, "PIP2") - 3
