"""Metabolic-network graphs from cobra's offline models (`astrobio_hf.data.metabolic`).

The dataset is built once per module (~10 s, mostly cobra parsing iJO1366 and salmonella) into a tmp dir; the CLI
test builds it a second time in a subprocess and checks that the files are byte-identical (same seed)."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

cobra = pytest.importorskip("cobra")
pytest.importorskip("torch_geometric")

from torch_geometric.data import Batch, Data

from astrobio_hf.data.metabolic import (
    CURRENCY_METABOLITES,
    EDGE_COLUMNS,
    LINK_SPLIT,
    MAX_REACTION_METABOLITES,
    MIN_EDGES,
    MIN_NODES,
    NODE_FEATURE_NAMES,
    base_metabolite_id,
    collate_graphs,
    ensure_metabolic_dataset,
    load_graphs,
    load_metabolic_schema,
    metabolite_features,
    split_graph_links,
    write_metabolic_dataset,
)

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("astrobio-hf"))
ECOLI, SALMONELLA = "Escherichia coli", "Salmonella enterica Typhimurium LT2"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("metabolic")
    schema = write_metabolic_dataset(out, seed=0)
    return out, schema


@pytest.fixture(scope="module")
def rows(built):
    """The Parquet rows as written (graph_id -> row with numpy edge arrays)."""
    table = pq.read_table(built[0] / "graphs.parquet").to_pylist()
    for row in table:
        for column in EDGE_COLUMNS:
            row[column] = np.asarray(row[column], dtype=np.int64).reshape(2, -1)
    return {row["graph_id"]: row for row in table}


def _pairs(edges: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(edges[0].tolist(), edges[1].tolist()))


# ------------------------------------------------------------------------------------------------------ features
def test_known_metabolite_features_are_exact(rows):
    glc = np.array([math.log1p(6), math.log1p(12), 0, math.log1p(6), 0, 0, 0, 0.0, 1, 1, 0, 0, 0], dtype=np.float32)
    fe2 = np.array([0, 0, 0, 0, 0, 0, math.log1p(1), math.log1p(2), 1, 1, 0, 0, 0], dtype=np.float32)  # Fe counts as "other"
    seen = {"glc__D_c": 0, "fe2_c": 0}
    for row in rows.values():
        for mid, expected in (("glc__D_c", glc), ("fe2_c", fe2)):
            if mid in row["node_ids"]:
                got = np.asarray(row["x"][row["node_ids"].index(mid)], dtype=np.float32)
                np.testing.assert_array_equal(got, expected, err_msg=f"{mid} in {row['graph_id']}")
                seen[mid] += 1
    assert seen["glc__D_c"] >= 2 and seen["fe2_c"] >= 2, seen
    assert len(NODE_FEATURE_NAMES) == 13 and NODE_FEATURE_NAMES[7] == "slog1p_charge" and NODE_FEATURE_NAMES[8] == "has_formula"


def test_missing_or_unparseable_formula_gives_zeros_and_never_crashes(rows):
    # real Salmonella metabolites without a formula
    salmonella = rows["salmonella"]
    no_formula = [x for x in salmonella["x"] if x[NODE_FEATURE_NAMES.index("has_formula")] == 0]
    assert no_formula and all(v == 0 for x in no_formula for v in x[:7])
    # cobra metabolites built by hand: a formula cobra refuses, no formula and no charge, an odd compartment
    bad = cobra.Metabolite("weird_c", formula="C6(H12)O6", charge=-1, compartment="c")
    assert metabolite_features(bad) == [0.0] * 7 + [-math.log1p(1), 0.0, 1.0, 0.0, 0.0, 0.0]
    bare = cobra.Metabolite("bare_m", compartment="m")
    assert metabolite_features(bare) == [0.0] * 9 + [0.0, 0.0, 0.0, 1.0]
    generic = cobra.Metabolite("acp_like_p", formula="C11H21N2O7PRS", charge=-1, compartment="p")
    assert metabolite_features(generic)[:7] == pytest.approx([math.log1p(v) for v in (11, 21, 2, 7, 1, 1, 1)])
    assert base_metabolite_id(generic) == "acp_like" and base_metabolite_id(cobra.Metabolite("h2o")) == "h2o"


# ------------------------------------------------------------------------------------------------------ graphs
def test_currency_metabolites_and_boundary_reactions_are_absent(rows):
    for row in rows.values():
        bases = {mid.rpartition("_")[0] for mid in row["node_ids"]}
        assert not bases & CURRENCY_METABOLITES, (row["graph_id"], sorted(bases & CURRENCY_METABOLITES))
        assert row["node_ids"] == sorted(set(row["node_ids"])) and len(row["node_ids"]) == row["num_nodes"]


def test_edges_are_the_shared_reactions(rows):
    """E. coli core: GLCpts (glc__D_e + pep_c -> g6p_c + pyr_c) makes a 4-clique; ATPM (only currency) adds nothing."""
    core = rows["ecoli_core"]
    ids = core["node_ids"]
    full = set().union(*(_pairs(core[c]) for c in ("train_edges", "val_pos", "test_pos")))
    named = {(ids[i], ids[j]) for i, j in full}
    for a, b in itertools.combinations(sorted(["glc__D_e", "pep_c", "g6p_c", "pyr_c"]), 2):
        assert (a, b) in named, (a, b)
    assert ("g6p_c", "glc__D_e") in named and not any("atp" in p or "h2o" in p for pair in named for p in pair)


def test_no_self_loops_duplicates_or_leaks_between_split_parts(rows):
    for gid, row in rows.items():
        n = row["num_nodes"]
        parts = {c: row[c] for c in EDGE_COLUMNS}
        for column, edges in parts.items():
            assert edges.shape[0] == 2 and (edges[0] < edges[1]).all(), (gid, column)  # canonical i < j: no self-loops
            assert len(_pairs(edges)) == edges.shape[1], (gid, column, "duplicate pairs")
            assert edges.size == 0 or edges.max() < n, (gid, column)
        train, val, test = _pairs(parts["train_edges"]), _pairs(parts["val_pos"]), _pairs(parts["test_pos"])
        full = train | val | test
        assert not (train & val) and not (train & test) and not (val & test), gid
        val_neg, test_neg = _pairs(parts["val_neg"]), _pairs(parts["test_neg"])
        assert not (val_neg & full) and not (test_neg & full) and not (val_neg & test_neg), gid
        assert len(val_neg) == len(val) and len(test_neg) == len(test), gid
        assert n >= MIN_NODES and len(full) >= MIN_EDGES
        # the split sizes are RandomLinkSplit's
        assert len(val) == int(LINK_SPLIT["num_val"] * len(full)) and len(test) == int(LINK_SPLIT["num_test"] * len(full))


def test_split_graph_links_is_seeded_leaves_global_rng_alone_and_tops_up_negatives():
    pairs = np.array(list(itertools.combinations(range(8), 2))[:-4]).T  # 24 of the 28 pairs: only 4 non-edges
    torch.manual_seed(123)
    random.seed(123)
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    results = [split_graph_links(8, pairs, seed) for seed in range(20)]
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state
    again = split_graph_links(8, pairs, 3)
    assert all(np.array_equal(again[k], results[3][k]) for k in EDGE_COLUMNS)
    assert any(not np.array_equal(r["train_edges"], results[0]["train_edges"]) for r in results[1:])
    # PyG samples ordered pairs: de-duplicating leaves some seeds short, and those are topped up
    assert any(r["negatives_topped_up"] > 0 for r in results)
    true = _pairs(pairs)
    for r in results:
        val_neg, test_neg = _pairs(r["val_neg"]), _pairs(r["test_neg"])
        assert len(val_neg) == r["val_pos"].shape[1] == 1 and len(test_neg) == r["test_pos"].shape[1] == 2
        assert not (val_neg | test_neg) & true and not val_neg & test_neg
    # impossible or bad input is named
    complete = np.array(list(itertools.combinations(range(7), 2))).T
    with pytest.raises(ValueError, match="expected at least 3 more non-edges"):
        split_graph_links(7, complete, 0)
    with pytest.raises(ValueError, match=r"expected edge indices in \[0, 3\)"):
        split_graph_links(3, np.array([[0, 1, 2], [1, 2, 3]]), 0)
    with pytest.raises(ValueError, match="expected no self-loops"):
        split_graph_links(4, np.array([[0, 1, 2, 3], [1, 2, 3, 3]]), 0)


# ------------------------------------------------------------------------------------------------------ loading
def test_load_graphs_round_trips_the_parquet_rows(built, rows):
    data_dir, schema = built
    train = load_graphs(data_dir, "train")
    heldout = load_graphs(data_dir, "heldout_organism")
    assert [g.graph_id for g in train] == schema["split_roles"]["train"]
    assert [g.graph_id for g in heldout] == schema["split_roles"]["heldout_organism"] == ["salmonella"]
    for g in train + heldout:
        row = rows[g.graph_id]
        assert g.num_nodes == row["num_nodes"] and g.x.dtype == torch.float32
        assert g.x.shape == (row["num_nodes"], len(NODE_FEATURE_NAMES))
        assert torch.equal(g.x, torch.tensor(row["x"], dtype=torch.float32))
        k = row["train_edges"].shape[1]
        assert g.edge_index.dtype == torch.long and g.edge_index.shape == (2, 2 * k)
        directed = set(zip(*g.edge_index.tolist()))
        assert directed == _pairs(row["train_edges"]) | {(j, i) for i, j in _pairs(row["train_edges"])}
        for column, attr in list(EDGE_COLUMNS.items())[1:]:
            assert torch.equal(g[attr], torch.as_tensor(row[column])), (g.graph_id, attr)
    # datasets' feature types travel in the Parquet metadata
    assert b"huggingface" in pq.read_schema(data_dir / "graphs.parquet").metadata


def test_batching_offsets_each_graph_into_its_own_nodes(built):
    graphs = load_graphs(built[0], "train")[:3]
    assert len({g.num_nodes for g in graphs}) == 3
    batch = collate_graphs(graphs)
    assert isinstance(batch, Batch) and batch.num_graphs == 3 and batch.graph_id == [g.graph_id for g in graphs]
    for attr in ("edge_index", "test_pos_edge_index", "test_neg_edge_index", "val_pos_edge_index"):
        start = 0
        for i, g in enumerate(graphs):
            k = g[attr].shape[1]
            part = batch[attr][:, start : start + k]
            assert torch.equal(part, g[attr] + batch.ptr[i]), (attr, g.graph_id)
            assert (batch.batch[part] == i).all(), (attr, g.graph_id)  # both endpoints are nodes of graph i
            start += k
        assert start == batch[attr].shape[1]
    # usable as a DataLoader collate_fn
    loader = torch.utils.data.DataLoader(graphs, batch_size=2, collate_fn=collate_graphs)
    assert [b.num_graphs for b in loader] == [2, 1]


def test_collate_errors_are_named():
    with pytest.raises(ValueError, match="expected at least one graph"):
        collate_graphs([])
    ok = Data(x=torch.zeros(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]), graph_id="ok", num_nodes=3)
    bad = Data(
        x=torch.zeros(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]), test_pos_edge_index=torch.tensor([[0], [5]]),
        graph_id="broken", num_nodes=3,
    )
    with pytest.raises(ValueError, match=r"graph 'broken': test_pos_edge_index points outside its nodes.*\[0, 3\).*max 5"):
        collate_graphs([ok, bad])
    flat = Data(x=torch.zeros(3, 2), edge_index=torch.tensor([0, 1, 2]), graph_id="flat", num_nodes=3)
    with pytest.raises(ValueError, match=r"graph 'flat': expected edge_index of shape \(2, k\)"):
        collate_graphs([flat])
    with pytest.raises(TypeError, match="expected torch_geometric.data.Data items, got dict"):
        collate_graphs([{"x": 1}])


def test_missing_or_foreign_dataset_is_named(tmp_path, built):
    with pytest.raises(FileNotFoundError, match="schema.json is missing.*astrobio-hf data metabolic"):
        load_metabolic_schema(tmp_path)
    with pytest.raises(FileNotFoundError, match="astrobio-hf data metabolic"):
        load_graphs(tmp_path, "train")
    with pytest.raises(ValueError, match=r"expected split_role one of \['train', 'heldout_organism'\], got 'test'"):
        load_graphs(built[0], "test")
    (tmp_path / "schema.json").write_text(json.dumps({"kind": "datacube"}))
    with pytest.raises(ValueError, match="expected kind 'metabolic_graphs', got 'datacube'"):
        load_metabolic_schema(tmp_path)
    with pytest.raises(ValueError, match="expected seed to be an integer >= 0"):
        write_metabolic_dataset(tmp_path / "x", seed=-1)



def test_truncated_parquet_is_named_with_how_to_rebuild(tmp_path, built):
    import shutil

    data_dir = tmp_path / "metabolic"
    shutil.copytree(built[0], data_dir)
    path = data_dir / "graphs.parquet"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    for role in ("train", "heldout_organism"):
        with pytest.raises(ValueError, match="truncated or corrupted") as error:
            load_graphs(data_dir, role)
        message = str(error.value)
        assert str(path) in message, message
        assert f"astrobio-hf data metabolic --output {data_dir} --seed 0" in message, message
    assert load_metabolic_schema(data_dir) == built[1]  # schema.json itself is intact
    assert len(load_graphs(built[0], "train")) > 0  # the original is untouched


def test_ensure_reuses_an_existing_dataset(built):
    data_dir, schema = built
    mtime = os.path.getmtime(data_dir / "graphs.parquet")
    assert ensure_metabolic_dataset(data_dir) == schema
    assert ensure_metabolic_dataset(data_dir, seed=0) == schema
    assert os.path.getmtime(data_dir / "graphs.parquet") == mtime
    with pytest.raises(ValueError, match="expected the dataset .* built with seed 1, got seed 0"):
        ensure_metabolic_dataset(data_dir, seed=1)


# ------------------------------------------------------------------------------------------------------ schema
def test_schema_counts_and_statistics_are_consistent(built, rows):
    data_dir, schema = built
    assert load_metabolic_schema(data_dir) == schema
    assert schema["kind"] == "metabolic_graphs" and schema["seed"] == 0
    assert schema["node_feature_names"] == list(NODE_FEATURE_NAMES)
    assert schema["currency_metabolites"] == sorted(CURRENCY_METABOLITES)
    assert schema["constants"] == {"MAX_REACTION_METABOLITES": MAX_REACTION_METABOLITES, "MIN_NODES": MIN_NODES, "MIN_EDGES": MIN_EDGES}
    assert schema["link_split"]["kwargs"] == LINK_SPLIT and schema["cobra_version"] == cobra.__version__
    assert [g["graph_id"] for g in schema["graphs"]] == list(rows)
    for organism, role, models in ((ECOLI, "train", ["textbook", "iJO1366"]), (SALMONELLA, "heldout_organism", ["salmonella"])):
        mine = [r for r in rows.values() if r["organism"] == organism]
        counts = schema["counts"][organism]
        assert counts["graphs"] == len(mine) and {r["split_role"] for r in mine} == {role}
        assert counts["nodes"] == sum(r["num_nodes"] for r in mine)
        full = sum(r[c].shape[1] for r in mine for c in ("train_edges", "val_pos", "test_pos"))
        assert counts["edges"] == full == counts["train_edges"] + counts["val_edges"] + counts["test_edges"]
        assert counts["dropped_graphs"] == sum(len(schema["sources"][m]["dropped_graphs"]) for m in models)
        assert {r["source_model"] for r in mine} == set(models)
    assert schema["counts"][ECOLI]["graphs"] > 30  # E. coli core + the iJO1366 subsystems
    for g in schema["graphs"]:
        assert g["num_edges"] == g["train_edges"] + g["val_pos"] + g["test_pos"]
    # every removal is counted: boundary and biomass reactions, the subsystem that lost all its edges
    ijo, sal = schema["sources"]["iJO1366"], schema["sources"]["salmonella"]
    assert ijo["boundary_reactions_dropped"] > 300 and ijo["reactions_without_subsystem_skipped"] >= 1
    assert any("BIOMASS" in r for r in sal["large_reactions_dropped"])
    assert schema["sources"]["textbook"]["large_reactions_dropped"] == ["Biomass_Ecoli_core"]
    assert sal["metabolites_without_formula"] > 0
    # feature statistics: over the nodes of the train graphs; std 0 stored as 1.0 and listed
    x = np.concatenate([np.asarray(r["x"], dtype=np.float64) for r in rows.values() if r["split_role"] == "train"])
    np.testing.assert_allclose(schema["feature_mean"], x.mean(axis=0), rtol=1e-6, atol=1e-6)
    std = x.std(axis=0)
    for i, name in enumerate(NODE_FEATURE_NAMES):
        expected = 1.0 if name in schema["constant_features"] else std[i]
        assert schema["feature_std"][i] == pytest.approx(expected, rel=1e-6, abs=1e-6), name
    assert "compartment_other" in schema["constant_features"]
    overlap = schema["cross_graph_overlap"]
    assert 0 <= overlap["of_which_train_edges_in_another_train_graph"] <= overlap["train_role_heldout_positives"]


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_builds_the_same_files(built, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "metabolic"
    proc = subprocess.run(
        [CLI, "data", "metabolic", "--output", str(out), "--seed", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = built[1]["counts"]
    assert f"{counts[ECOLI]['graphs']} graphs" in proc.stdout and "13 node features" in proc.stdout
    for name in ("graphs.parquet", "schema.json"):  # deterministic across processes for one seed
        assert (out / name).read_bytes() == (built[0] / name).read_bytes(), name
