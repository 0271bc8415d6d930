"""Real metabolic networks as graphs: cobra's offline models -> Parquet ``datasets`` dataset -> PyG ``Data``.

Sources (all three ship inside the ``cobra`` package, so ``cobra.io.load_model`` needs no network):

=============  ==========================================  =====================================  ==================
cobra model    graphs                                      organism                               split_role
=============  ==========================================  =====================================  ==================
``textbook``   one, ``ecoli_core`` (E. coli core model)    Escherichia coli                       ``train``
``iJO1366``    one per non-empty reaction subsystem        Escherichia coli                       ``train``
``salmonella`` one, ``salmonella`` (no subsystem labels)   Salmonella enterica Typhimurium LT2    ``heldout_organism``
=============  ==========================================  =====================================  ==================

A graph's nodes are metabolites (one node per metabolite *and compartment*: ``glc__D_c`` and ``glc__D_p`` are two
nodes) and an undirected edge joins two metabolites that take part in the same reaction. Before that:

1. boundary reactions (exchange, demand, sink: ``reaction.boundary``) are dropped: they have one metabolite;
2. (iJO1366 only) reactions with an empty subsystem label are skipped: they belong to no subsystem graph;
3. currency metabolites (:data:`CURRENCY_METABOLITES`, matched on the BiGG id without compartment suffix) are
   removed from every reaction: they take part in hundreds of reactions, so with them every graph would be a few
   hubs joined to everything and link prediction would only learn "connect to ATP";
4. reactions that still have more than :data:`MAX_REACTION_METABOLITES` metabolites are dropped: a biomass
   reaction (56-85 metabolites in iJO1366) would add a clique of thousands of edges that are not chemistry;
5. reactions left with fewer than 2 metabolites add no edge, and a metabolite left without any edge in a graph is
   not a node of that graph (it has no edge to predict and its presence would depend on the currency list).

Graphs with fewer than :data:`MIN_NODES` nodes or :data:`MIN_EDGES` edges are dropped. Every one of these removals
is counted in ``schema.json`` (nothing is dropped silently).

Currency list. It starts from the usual cofactors/inorganics (h, h2o, atp, ..., so4) and adds the metabolites whose
degree is far above the rest once those are removed. Measured on the whole networks (after steps 1-4, number of
distinct neighbours): Salmonella ``udcpdp_p`` (undecaprenyl diphosphate, the lipid carrier of O-antigen and cell
wall synthesis) 345 and ``colipa_p`` (core oligosaccharide lipid A, the acceptor of the O-antigen ligations) 280,
against 98 for the next one (``pyr_c``); and ``ACP_c`` (acyl carrier protein, 78 in iJO1366, second there), which is
the acyl-carrier analogue of ``coa`` (already a currency metabolite): it is released unchanged by every fatty-acid
elongation step. With these three added, the largest degrees left are real pathway hubs (iJO1366: pyr_c 97,
glu__L_c 70, glyc3p_c 62, accoa_c 60, pep_c 48; Salmonella: pyr_c 98, glu__L_c 82, accoa_c 67, glyc3p_c 55,
pep_c 51; median degree 3 and 2), which are kept.

Node features (:data:`NODE_FEATURE_NAMES`, physical units, normalised by the model with the schema's
``feature_mean``/``feature_std``): ``log1p`` of the counts of C, H, N, O, P, S and of all other elements together
(metals, halogens and the generic R/X groups of cobra formulas), the signed log charge ``sign(q) log1p(|q|)`` (charges
run from -15 to +497 for Salmonella's polymers; a raw charge would let one metabolite dominate), ``has_formula`` (0 when the formula is
missing or cobra cannot parse it; then all element features are 0) and a compartment one-hot (c, p, e, other).

Link split. Each graph's edges are split once, at build time, with PyG's ``RandomLinkSplit`` (:data:`LINK_SPLIT`:
5% validation, 10% test, undirected, as many negatives as positives) under a per-graph seed derived from the build
seed and the graph id (``(seed * 1000003 + crc32(graph_id)) mod 2**31``), so adding or removing a graph does not
change the split of another. ``RandomLinkSplit`` samples negatives as *ordered* pairs, so a pair can be drawn in both
directions or for both validation and test; the stored negatives are canonical ``(i < j)`` pairs, unique, disjoint
between validation and test, never an edge of the full graph, and topped up to the number of positives with the same
seed when the de-duplication removed some (counted per graph as ``negatives_topped_up``). A graph with too few
non-edges for that is dropped and counted.

On disk (``output_dir``):

* ``graphs.parquet``: one row per graph, columns ``graph_id``, ``organism``, ``source_model``, ``subsystem``
  (``""`` for a whole network), ``split_role``, ``num_nodes``, ``node_ids`` (list[str]), ``x`` (N x F float32),
  ``train_edges``, ``val_pos``, ``val_neg``, ``test_pos``, ``test_neg`` (each 2 x k int32, undirected ``i < j`` pairs,
  sorted); written with ``datasets`` (its feature types are stored in the Parquet metadata);
* ``schema.json``: ``kind: "metabolic_graphs"``, node feature names and their mean/std over the nodes of the
  ``train`` graphs, currency list, constants, link-split settings, seed, versions, counts per organism and per source
  model (reactions and metabolites removed at each step, dropped graphs with their reason) and one summary per graph.

``load_graphs`` turns rows into ``torch_geometric.data.Data`` whose edge attributes end in ``_index``, so
``Batch.from_data_list`` (:func:`collate_graphs`) offsets them by the node counts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .schema_file import read_schema_json

logger = logging.getLogger(__name__)

__all__ = [
    "CURRENCY_METABOLITES",
    "DATA_FILENAME",
    "EDGE_COLUMNS",
    "LINK_SPLIT",
    "MAX_REACTION_METABOLITES",
    "MIN_EDGES",
    "MIN_NODES",
    "NODE_FEATURE_NAMES",
    "SCHEMA_KIND",
    "SOURCES",
    "SPLIT_ROLES",
    "base_metabolite_id",
    "collate_graphs",
    "ensure_metabolic_dataset",
    "load_graphs",
    "load_metabolic_schema",
    "metabolite_features",
    "split_graph_links",
    "write_metabolic_dataset",
]

# ---------------------------------------------------------------------------------------------------- constants
#: BiGG base ids (no compartment suffix) removed from every reaction; see the module docstring for why the last
#: three (udcpdp, colipa, ACP) were added to the usual cofactors after measuring the degrees.
CURRENCY_METABOLITES: frozenset[str] = frozenset(
    {
        # protons, water, oxygen species, inorganic ions and small inorganics
        "h", "h2o", "o2", "h2o2", "co2", "hco3", "nh4", "pi", "ppi", "so4", "na1", "k",
        # nucleotide energy carriers
        "atp", "adp", "amp", "gtp", "gdp", "ctp", "cdp", "utp", "udp",
        # redox carriers
        "nad", "nadh", "nadp", "nadph", "fad", "fadh2",
        "q8", "q8h2", "mqn8", "mql8", "2dmmq8", "2dmmql8",
        # group carriers
        "coa",
        # added after measuring degrees (module docstring): carriers far above every other node
        "udcpdp", "colipa", "ACP",
    }
)
#: Reactions with more metabolites than this after currency removal are dropped (biomass, lumped syntheses).
MAX_REACTION_METABOLITES = 12
#: Graphs with fewer nodes or edges are dropped (and counted).
MIN_NODES = 4
MIN_EDGES = 3
#: Node features, in this order (``x[:, i]`` is ``NODE_FEATURE_NAMES[i]``).
ELEMENTS = ("C", "H", "N", "O", "P", "S")
COMPARTMENTS = ("c", "p", "e")
NODE_FEATURE_NAMES: tuple[str, ...] = (
    *(f"log1p_{e}" for e in ELEMENTS),
    "log1p_other_elements",
    "slog1p_charge",
    "has_formula",
    *(f"compartment_{c}" for c in COMPARTMENTS),
    "compartment_other",
)
#: Keyword arguments of ``torch_geometric.transforms.RandomLinkSplit`` (recorded in schema.json).
LINK_SPLIT: dict[str, Any] = {
    "num_val": 0.05,
    "num_test": 0.10,
    "is_undirected": True,
    "add_negative_train_samples": False,
    "split_labels": True,
    "neg_sampling_ratio": 1.0,
}
#: (cobra model name, organism, split_role, graphs: "whole" network or one per "subsystem").
SOURCES: tuple[tuple[str, str, str, str], ...] = (
    ("textbook", "Escherichia coli", "train", "whole"),
    ("iJO1366", "Escherichia coli", "train", "subsystem"),
    ("salmonella", "Salmonella enterica Typhimurium LT2", "heldout_organism", "whole"),
)
#: Graph id of a whole-network graph per source model.
WHOLE_GRAPH_IDS = {"textbook": "ecoli_core", "salmonella": "salmonella"}
SPLIT_ROLES = ("train", "heldout_organism")
SCHEMA_KIND = "metabolic_graphs"
FORMAT_VERSION = 1
DATA_FILENAME = "graphs.parquet"
SCHEMA_FILENAME = "schema.json"
#: Parquet edge columns -> ``Data`` attribute names (``_index`` so that batching offsets them).
EDGE_COLUMNS = {
    "train_edges": "edge_index",
    "val_pos": "val_pos_edge_index",
    "val_neg": "val_neg_edge_index",
    "test_pos": "test_pos_edge_index",
    "test_neg": "test_neg_edge_index",
}
_INDEX_ATTRS = tuple(EDGE_COLUMNS.values())
_BUILD_HINT = "build it with `astrobio-hf data metabolic --output DIR` (or astrobio_hf.data.metabolic.write_metabolic_dataset)"


def _row_features():
    from datasets import Features, List, Value

    edges = List(List(Value("int32")))
    return Features(
        {
            "graph_id": Value("string"),
            "organism": Value("string"),
            "source_model": Value("string"),
            "subsystem": Value("string"),
            "split_role": Value("string"),
            "num_nodes": Value("int32"),
            "node_ids": List(Value("string")),
            "x": List(List(Value("float32"))),
            **{name: edges for name in EDGE_COLUMNS},
        }
    )


# ---------------------------------------------------------------------------------------------------- features
def base_metabolite_id(metabolite) -> str:
    """BiGG id without its compartment suffix (``glc__D_c`` -> ``glc__D``); the full id if it has no such suffix."""
    mid, comp = str(metabolite.id), str(metabolite.compartment or "")
    suffix = f"_{comp}"
    return mid[: -len(suffix)] if comp and mid.endswith(suffix) and len(mid) > len(suffix) else mid


def _elements(metabolite) -> dict[str, float] | None:
    """cobra's parsed formula; ``None`` when there is no formula or cobra cannot parse it (it warns then)."""
    if not metabolite.formula:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            elements = metabolite.elements
        except (ValueError, TypeError, AttributeError):  # cobra versions differ on odd formulas; never crash on one
            return None
    return dict(elements) if elements else None


def _charge(metabolite) -> float | None:
    try:
        charge = float(metabolite.charge)
    except (TypeError, ValueError):
        return None
    return charge if math.isfinite(charge) else None


def metabolite_features(metabolite) -> list[float]:
    """The :data:`NODE_FEATURE_NAMES` vector of one cobra metabolite, in physical units.

    Element counts enter as ``log1p(count)`` because they span 0 to ~100 (lipids) and the model sees them next to
    0/1 indicators. A missing or unparseable formula gives zeros and ``has_formula = 0``; a missing charge gives 0
    (both are counted in schema.json by the builder). Never raises on a bad formula."""
    elements = _elements(metabolite)
    counts = [float(elements.get(e, 0)) for e in ELEMENTS] if elements else [0.0] * len(ELEMENTS)
    other = float(sum(v for k, v in elements.items() if k not in ELEMENTS)) if elements else 0.0
    compartment = str(metabolite.compartment or "")
    charge = _charge(metabolite)
    return [
        *(math.log1p(max(c, 0.0)) for c in counts),
        math.log1p(max(other, 0.0)),
        math.copysign(math.log1p(abs(charge)), charge) if charge else 0.0,
        1.0 if elements else 0.0,
        *(1.0 if compartment == c else 0.0 for c in COMPARTMENTS),
        0.0 if compartment in COMPARTMENTS else 1.0,
    ]


# ---------------------------------------------------------------------------------------------------- link split
def _graph_seed(seed: int, graph_id: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(graph_id.encode("utf-8"))) % 2**31


def _canonical_pairs(edge_index) -> np.ndarray:
    """(2, k) array of ``i < j`` pairs, unique, sorted (self-loops removed)."""
    arr = np.asarray(edge_index, dtype=np.int64).reshape(2, -1)
    lo, hi = np.minimum(arr[0], arr[1]), np.maximum(arr[0], arr[1])
    keep = lo != hi
    pairs = np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0) if keep.any() else np.zeros((0, 2), np.int64)
    return pairs.T.reshape(2, -1)


def _unique_in_order(pairs: np.ndarray, exclude: set[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    seen = set(exclude)
    for i, j in zip(pairs[0].tolist(), pairs[1].tolist()):
        p = (min(i, j), max(i, j))
        if i != j and p not in seen:
            seen.add(p)
            out.append(p)
    return out


def split_graph_links(num_nodes: int, edges, seed: int) -> dict[str, Any]:
    """Split one undirected graph's edges with PyG's ``RandomLinkSplit`` (:data:`LINK_SPLIT`) under ``seed``.

    Args:
        num_nodes: N.
        edges: (2, E) undirected pairs (either direction, duplicates allowed; self-loops are an error).
        seed: seeds torch and Python's ``random`` (PyG's negative sampling uses it) for this call only; the
            caller's global random states are restored afterwards.

    Returns:
        ``train_edges``, ``val_pos``, ``val_neg``, ``test_pos``, ``test_neg``: (2, k) int64 arrays of sorted
        ``i < j`` pairs, and ``negatives_topped_up`` (int). Negatives are never edges of the graph, unique and
        disjoint between val and test, as many as the positives of their split.

    Raises:
        ValueError: fewer than 3 edges, an index outside [0, N), a self-loop, or not enough non-edges for the negatives.
    """
    import torch
    from torch_geometric.data import Data
    from torch_geometric.transforms import RandomLinkSplit
    from torch_geometric.utils import to_undirected

    raw = np.asarray(edges, dtype=np.int64).reshape(2, -1)
    if raw.size and (raw.min() < 0 or raw.max() >= num_nodes):
        raise ValueError(f"expected edge indices in [0, {num_nodes}), got indices from {raw.min()} to {raw.max()}")
    if (raw[0] == raw[1]).any():
        raise ValueError(f"expected no self-loops, got {int((raw[0] == raw[1]).sum())}")
    pairs = _canonical_pairs(raw)
    if pairs.shape[1] < MIN_EDGES:
        raise ValueError(f"expected at least {MIN_EDGES} distinct edges to split, got {pairs.shape[1]}")

    edge_index = to_undirected(torch.from_numpy(pairs), num_nodes=num_nodes)
    transform = RandomLinkSplit(**LINK_SPLIT)
    py_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not enough negative edges": handled below
            torch.manual_seed(seed)
            random.seed(seed)
            train, val, test = transform(Data(edge_index=edge_index, num_nodes=num_nodes))
    finally:
        random.setstate(py_state)

    out = {
        "train_edges": _canonical_pairs(train.edge_index.numpy()),
        "val_pos": _canonical_pairs(val.pos_edge_label_index.numpy()),
        "test_pos": _canonical_pairs(test.pos_edge_label_index.numpy()),
    }
    # negatives: canonical, unique, disjoint val/test, topped up to the positive counts
    true_pairs = set(zip(pairs[0].tolist(), pairs[1].tolist()))
    # (RandomLinkSplit sets no neg_edge_label_index when a split gets 0 positives, i.e. 0 negatives)
    no_pairs = np.zeros((2, 0), dtype=np.int64)
    val_neg_raw = val.neg_edge_label_index.numpy() if "neg_edge_label_index" in val else no_pairs
    test_neg_raw = test.neg_edge_label_index.numpy() if "neg_edge_label_index" in test else no_pairs
    val_neg = _unique_in_order(val_neg_raw, true_pairs)[: out["val_pos"].shape[1]]
    test_neg = _unique_in_order(test_neg_raw, true_pairs | set(val_neg))[: out["test_pos"].shape[1]]
    need_val = out["val_pos"].shape[1] - len(val_neg)
    need_test = out["test_pos"].shape[1] - len(test_neg)
    if need_val or need_test:
        taken = true_pairs | set(val_neg) | set(test_neg)
        available = num_nodes * (num_nodes - 1) // 2 - len(taken)
        if available < need_val + need_test:
            raise ValueError(
                f"expected at least {need_val + need_test} more non-edges for the negatives, got {available} "
                f"(N={num_nodes}, E={pairs.shape[1]})"
            )
        iu, ju = np.triu_indices(num_nodes, k=1)
        code = iu.astype(np.int64) * num_nodes + ju
        taken_code = np.fromiter((i * num_nodes + j for i, j in taken), dtype=np.int64, count=len(taken))
        free = code[~np.isin(code, taken_code)]
        rng = np.random.default_rng(seed)
        extra = rng.choice(free, size=need_val + need_test, replace=False)
        extra_pairs = [(int(c // num_nodes), int(c % num_nodes)) for c in extra]
        val_neg += extra_pairs[:need_val]
        test_neg += extra_pairs[need_val:]
    out["val_neg"] = _canonical_pairs(np.asarray(val_neg, dtype=np.int64).reshape(-1, 2).T)
    out["test_neg"] = _canonical_pairs(np.asarray(test_neg, dtype=np.int64).reshape(-1, 2).T)
    out["negatives_topped_up"] = int(need_val + need_test)
    return out


# ---------------------------------------------------------------------------------------------------- building
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _reaction_groups(model, graphs: str, stats: dict[str, Any]) -> list[tuple[str, str, list[list[Any]]]]:
    """(graph_id, subsystem, [metabolites of each kept reaction]) per graph of one model, with removal counts."""
    groups: dict[str, list[list[Any]]] = {}
    for reaction in model.reactions:
        if reaction.boundary:
            stats["boundary_reactions_dropped"] += 1
            continue
        subsystem = ""
        if graphs == "subsystem":
            subsystem = str(reaction.subsystem or "").strip()
            if not subsystem:
                stats["reactions_without_subsystem_skipped"] += 1
                continue
        group = groups.setdefault(subsystem, [])  # a subsystem whose reactions all lose their edges is still listed
        metabolites = [m for m in reaction.metabolites if base_metabolite_id(m) not in CURRENCY_METABOLITES]
        if len(metabolites) > MAX_REACTION_METABOLITES:
            stats["large_reactions_dropped"].append(reaction.id)
            continue
        if len(metabolites) < 2:
            stats["reactions_without_edges"] += 1
            continue
        group.append(metabolites)
    out = []
    seen_ids: dict[str, str] = {}
    for subsystem, reactions in groups.items():
        source = stats["source_model"]
        graph_id = WHOLE_GRAPH_IDS[source] if graphs == "whole" else f"{source}/{_slug(subsystem)}"
        if graph_id in seen_ids:
            raise ValueError(f"expected unique graph ids, got {graph_id!r} for subsystems {seen_ids[graph_id]!r} and {subsystem!r}")
        seen_ids[graph_id] = subsystem
        out.append((graph_id, subsystem, reactions))
    return out


def _build_graph(reactions: list[list[Any]]) -> tuple[list[Any], np.ndarray]:
    """Nodes (metabolites with an edge, sorted by id) and (2, E) canonical pairs of one group of reactions."""
    pairs: set[tuple[str, str]] = set()
    by_id: dict[str, Any] = {}
    for metabolites in reactions:
        ids = sorted({m.id for m in metabolites})
        for m in metabolites:
            by_id[m.id] = m
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                pairs.add((ids[a], ids[b]))
    node_ids = sorted({i for p in pairs for i in p})
    index = {mid: k for k, mid in enumerate(node_ids)}
    edges = np.array([[index[a], index[b]] for a, b in sorted(pairs)], dtype=np.int64).reshape(-1, 2).T
    return [by_id[i] for i in node_ids], _canonical_pairs(edges)


def _load_cobra_model(name: str):
    import cobra

    # cobra's first repository is its own package data: these three names never touch the network
    return cobra.io.load_model(name)


def _build_records(seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import cobra

    records: list[dict[str, Any]] = []
    sources: dict[str, Any] = {}
    for source_model, organism, split_role, graphs in SOURCES:
        t0 = time.perf_counter()
        model = _load_cobra_model(source_model)
        stats: dict[str, Any] = {
            "source_model": source_model,
            "organism": organism,
            "split_role": split_role,
            "graphs_by": graphs,
            "reactions": len(model.reactions),
            "metabolites": len(model.metabolites),
            "boundary_reactions_dropped": 0,
            "reactions_without_subsystem_skipped": 0,
            "large_reactions_dropped": [],
            "reactions_without_edges": 0,
            "metabolites_without_formula": sum(1 for m in model.metabolites if not m.formula),
            "metabolites_with_unparseable_formula": sum(1 for m in model.metabolites if m.formula and _elements(m) is None),
            "metabolites_without_charge": sum(1 for m in model.metabolites if _charge(m) is None),
            "currency_metabolites_present": sorted({b for m in model.metabolites if (b := base_metabolite_id(m)) in CURRENCY_METABOLITES}),
            "dropped_graphs": [],
        }
        for graph_id, subsystem, reactions in _reaction_groups(model, graphs, stats):
            nodes, edges = _build_graph(reactions)
            reason = None
            if not reactions:
                reason = "no reaction left with 2 or more metabolites after the removals"
            elif len(nodes) < MIN_NODES or edges.shape[1] < MIN_EDGES:
                reason = f"fewer than MIN_NODES={MIN_NODES} nodes or MIN_EDGES={MIN_EDGES} edges"
            else:
                try:
                    split = split_graph_links(len(nodes), edges, _graph_seed(seed, graph_id))
                except ValueError as err:
                    reason = f"link split impossible: {err}"
            if reason is not None:
                stats["dropped_graphs"].append(
                    {"graph_id": graph_id, "subsystem": subsystem, "num_nodes": len(nodes), "num_edges": int(edges.shape[1]), "reason": reason}
                )
                continue
            records.append(
                {
                    "graph_id": graph_id,
                    "organism": organism,
                    "source_model": source_model,
                    "subsystem": subsystem,
                    "split_role": split_role,
                    "num_nodes": len(nodes),
                    "node_ids": [m.id for m in nodes],
                    "x": [metabolite_features(m) for m in nodes],
                    "num_edges": int(edges.shape[1]),
                    **{name: split[name] for name in EDGE_COLUMNS},
                    "negatives_topped_up": split["negatives_topped_up"],
                }
            )
        sources[source_model] = stats  # (no timings in schema.json: the same seed gives byte-identical files)
        logger.info(
            "%s (%s): %d graphs kept, %d dropped in %.1f s",
            source_model, organism, sum(r["source_model"] == source_model for r in records), len(stats["dropped_graphs"]),
            time.perf_counter() - t0,
        )
    sources["_cobra_version"] = cobra.__version__
    return records, sources


def _feature_statistics(records: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float], list[str]]:
    x = np.concatenate([np.asarray(r["x"], dtype=np.float64) for r in records if r["split_role"] == "train"])
    mean, std = x.mean(axis=0), x.std(axis=0)
    constant = []
    for i, name in enumerate(NODE_FEATURE_NAMES):
        if std[i] <= 1e-6 * max(1.0, abs(mean[i])):
            constant.append(name)
            std[i] = 1.0
    return mean.tolist(), std.tolist(), constant


def _counts(records: Sequence[Mapping[str, Any]], sources: Mapping[str, Any]) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for _, organism, _, _ in SOURCES:
        rows = [r for r in records if r["organism"] == organism]
        counts[organism] = {
            "source_models": [s for s, o, _, _ in SOURCES if o == organism],
            "split_role": sorted({r["split_role"] for r in rows}) if rows else [],
            "graphs": len(rows),
            "nodes": sum(r["num_nodes"] for r in rows),
            "edges": sum(r["num_edges"] for r in rows),
            "train_edges": sum(r["train_edges"].shape[1] for r in rows),
            "val_edges": sum(r["val_pos"].shape[1] for r in rows),
            "test_edges": sum(r["test_pos"].shape[1] for r in rows),
            "dropped_graphs": sum(len(sources[s]["dropped_graphs"]) for s, o, _, _ in SOURCES if o == organism),
        }
    return counts


def _cross_graph_overlap(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many held-out positives of the train-role graphs are, as a metabolite pair, a training edge of another
    train-role graph (E. coli core and the iJO1366 subsystems share metabolites). Recorded so that a
    within-E. coli link-prediction score can be read with it in mind; the held-out organism has no such overlap."""
    train = [r for r in records if r["split_role"] == "train"]

    def pairs(r, column):
        ids = r["node_ids"]
        return {(ids[i], ids[j]) for i, j in zip(*r[column].tolist())}

    train_pairs = [pairs(r, "train_edges") for r in train]
    held_out = overlap = 0
    for k, r in enumerate(train):
        elsewhere = set().union(*(p for j, p in enumerate(train_pairs) if j != k))
        for column in ("val_pos", "test_pos"):
            p = pairs(r, column)
            held_out += len(p)
            overlap += len(p & elsewhere)
    return {"train_role_heldout_positives": held_out, "of_which_train_edges_in_another_train_graph": overlap}


def write_metabolic_dataset(output_dir: str | os.PathLike, seed: int = 0) -> dict[str, Any]:
    """Build the graphs from cobra's offline models and write ``graphs.parquet`` + ``schema.json`` into ``output_dir``.

    Deterministic for a given ``seed`` and cobra version (takes ~10 s, mostly loading the SBML models). Both files are
    written to temporary names and renamed, ``schema.json`` last, so a directory with a ``schema.json`` is complete.
    Returns the schema dict (the content of ``schema.json``).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"expected seed to be an integer >= 0, got {seed!r}")
    import datasets
    import torch_geometric

    start = time.perf_counter()
    records, sources = _build_records(int(seed))
    cobra_version = sources.pop("_cobra_version")
    if not any(r["split_role"] == "train" for r in records):
        raise ValueError("expected at least one graph with split_role 'train', got none (every graph was dropped)")
    mean, std, constant = _feature_statistics(records)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = {name: [] for name in _row_features()}
    for r in records:
        for name, column in columns.items():
            value = r[name]
            column.append(value.tolist() if isinstance(value, np.ndarray) else value)
    table = datasets.Dataset.from_dict(columns, features=_row_features())
    tmp = out / (DATA_FILENAME + ".tmp")
    table.to_parquet(str(tmp))
    os.replace(tmp, out / DATA_FILENAME)

    schema = {
        "kind": SCHEMA_KIND,
        "format_version": FORMAT_VERSION,
        "data_files": [DATA_FILENAME],
        "seed": int(seed),
        "node_feature_names": list(NODE_FEATURE_NAMES),
        "feature_mean": mean,
        "feature_std": std,
        "feature_statistics": "mean/std over the nodes of the split_role='train' graphs (a metabolite counts once per "
        "graph it is in); a std of 0 is stored as 1.0 and the feature listed in constant_features",
        "constant_features": constant,
        "currency_metabolites": sorted(CURRENCY_METABOLITES),
        "constants": {
            "MAX_REACTION_METABOLITES": MAX_REACTION_METABOLITES,
            "MIN_NODES": MIN_NODES,
            "MIN_EDGES": MIN_EDGES,
        },
        "link_split": {
            "transform": "torch_geometric.transforms.RandomLinkSplit",
            "kwargs": dict(LINK_SPLIT),
            "graph_seed": "(seed * 1000003 + zlib.crc32(graph_id.encode())) % 2**31, seeding torch and python random",
            "negatives": "canonical i<j pairs, unique, disjoint val/test, no edge of the full graph, topped up to the "
            "positive count with numpy default_rng(graph_seed) when needed",
        },
        "split_roles": {role: [r["graph_id"] for r in records if r["split_role"] == role] for role in SPLIT_ROLES},
        "cobra_version": cobra_version,
        "torch_geometric_version": torch_geometric.__version__,
        "datasets_version": datasets.__version__,
        "counts": _counts(records, sources),
        "sources": sources,
        "cross_graph_overlap": _cross_graph_overlap(records),
        "graphs": [
            {
                "graph_id": r["graph_id"],
                "organism": r["organism"],
                "source_model": r["source_model"],
                "subsystem": r["subsystem"],
                "split_role": r["split_role"],
                "num_nodes": r["num_nodes"],
                "num_edges": r["num_edges"],
                **{name: int(r[name].shape[1]) for name in EDGE_COLUMNS},
                "negatives_topped_up": r["negatives_topped_up"],
            }
            for r in records
        ],
    }
    tmp = out / (SCHEMA_FILENAME + ".tmp")
    tmp.write_text(json.dumps(schema, indent=2), encoding="utf-8")
    os.replace(tmp, out / SCHEMA_FILENAME)
    logger.info(
        "metabolic dataset written to %s in %.1f s: %s", out, time.perf_counter() - start,
        ", ".join(f"{o}: {c['graphs']} graphs / {c['nodes']} nodes / {c['edges']} edges" for o, c in schema["counts"].items()),
    )
    return schema


def ensure_metabolic_dataset(data_dir: str | os.PathLike, seed: int | None = None) -> dict[str, Any]:
    """Build the dataset into ``data_dir`` when its ``schema.json`` is missing; return the schema either way.

    ``seed=None`` accepts whatever seed an existing dataset was built with (and builds with 0); an explicit seed that
    differs from the existing dataset's is a ``ValueError`` rather than a silent rebuild over someone's data."""
    path = Path(data_dir) / SCHEMA_FILENAME
    if not path.is_file():
        return write_metabolic_dataset(data_dir, seed=0 if seed is None else seed)
    schema = load_metabolic_schema(data_dir)
    if seed is not None and schema["seed"] != seed:
        raise ValueError(
            f"expected the dataset in {data_dir} to be built with seed {seed}, got seed {schema['seed']}; "
            "use another directory or delete this one"
        )
    return schema


# ---------------------------------------------------------------------------------------------------- loading
def load_metabolic_schema(data_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``schema.json`` of a metabolic dataset directory.

    Raises ``FileNotFoundError`` naming the missing file and how to build it, ``ValueError`` for a schema of another
    kind or format version or with inconsistent feature lists."""
    path, schema = read_schema_json(data_dir, SCHEMA_FILENAME, kind=SCHEMA_KIND, what="a metabolic graph dataset",
                                    hint=_BUILD_HINT, version_key="format_version", version=FORMAT_VERSION)
    names = schema.get("node_feature_names") or []
    for key in ("feature_mean", "feature_std"):
        if len(schema.get(key) or []) != len(names):
            raise ValueError(f"{path}: expected {len(names)} values in {key} (one per node feature), got {len(schema.get(key) or [])}")
    return schema


def _edge_tensor(value, graph_id: str, column: str, num_nodes: int):
    import torch

    t = torch.as_tensor(value, dtype=torch.long) if len(value) else torch.zeros(2, 0, dtype=torch.long)
    if t.ndim != 2 or t.shape[0] != 2:
        raise ValueError(f"graph {graph_id!r}: expected {column} of shape (2, k), got {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_nodes):
        raise ValueError(
            f"graph {graph_id!r}: {column} points outside its nodes: expected indices in [0, {num_nodes}), "
            f"got {int(t.min())}..{int(t.max())}"
        )
    return t


def load_graphs(data_dir: str | os.PathLike, split_role: str) -> list:
    """The graphs of one split role (``"train"`` or ``"heldout_organism"``) as ``torch_geometric.data.Data``.

    Each ``Data`` has ``x`` (N, F) float32 in physical units, ``edge_index`` (the training edges in both directions,
    (2, 2k) long, for message passing and as training positives), ``val_pos_edge_index``, ``val_neg_edge_index``,
    ``test_pos_edge_index``, ``test_neg_edge_index`` ((2, k) long, ``i < j`` pairs), ``graph_id`` and ``num_nodes``.
    Rows are streamed with ``datasets`` (no cache files are written). A data file whose Parquet footer cannot be
    read (truncated or corrupted) is a ``ValueError`` naming it and how to rebuild the dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from datasets import load_dataset
    from torch_geometric.data import Data

    if split_role not in SPLIT_ROLES:
        raise ValueError(f"expected split_role one of {list(SPLIT_ROLES)}, got {split_role!r}")
    schema = load_metabolic_schema(data_dir)
    files = [str(Path(data_dir) / f) for f in schema.get("data_files", [DATA_FILENAME])]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{missing[0]} is listed in {Path(data_dir) / SCHEMA_FILENAME} but missing; {_BUILD_HINT}")
    for f in files:
        try:
            pq.ParquetFile(f).close()  # reads the footer only
        except (pa.ArrowException, OSError) as e:
            raise ValueError(
                f"{f} is truncated or corrupted: expected a complete Parquet file of graphs ({e}); rebuild the dataset "
                f"with `astrobio-hf data metabolic --output {data_dir} --seed {schema.get('seed', 0)}`"
            ) from e
    num_features = len(schema["node_feature_names"])
    ds = load_dataset("parquet", data_files={"graphs": files}, split="graphs", streaming=True, features=_row_features())
    graphs = []
    for row in ds.filter(lambda r: r["split_role"] == split_role):
        gid, n = row["graph_id"], int(row["num_nodes"])
        lengths = sorted({len(v) for v in row["x"]})
        if len(row["x"]) != n or lengths not in ([num_features], []) or len(row["node_ids"]) != n:
            raise ValueError(
                f"graph {gid!r}: expected x of shape ({n}, {num_features}) and {n} node_ids, got {len(row['x'])} "
                f"rows of lengths {lengths} and {len(row['node_ids'])} node_ids"
            )
        x = torch.tensor(row["x"], dtype=torch.float32).reshape(n, num_features)
        edges = {attr: _edge_tensor(row[col], gid, col, n) for col, attr in EDGE_COLUMNS.items()}
        train = edges.pop("edge_index")
        graphs.append(Data(x=x, edge_index=torch.cat([train, train.flip(0)], dim=1), **edges, graph_id=gid, num_nodes=n))
    if not graphs:
        raise ValueError(f"expected at least one graph with split_role {split_role!r} in {data_dir}, got none")
    return graphs


def collate_graphs(data_list: Iterable) -> Any:
    """``Batch.from_data_list`` with checks; usable as a ``DataLoader`` ``collate_fn``.

    Every ``*_index`` attribute is offset by the node counts of the graphs before it, so after batching each
    graph's edges still index its own nodes. Raises ``ValueError`` for an empty list or an
    edge index outside its graph's nodes (naming the graph id), ``TypeError`` for an item that is not a ``Data``."""
    from torch_geometric.data import Batch, Data

    data_list = list(data_list)
    if not data_list:
        raise ValueError("expected at least one graph to collate, got an empty list")
    for k, data in enumerate(data_list):
        if not isinstance(data, Data):
            raise TypeError(f"expected torch_geometric.data.Data items, got {type(data).__name__} at position {k}")
        gid = getattr(data, "graph_id", None) or f"#{k}"
        n = data.num_nodes
        if data.x is not None and data.x.shape[0] != n:
            raise ValueError(f"graph {gid!r}: expected x with {n} rows (num_nodes), got {tuple(data.x.shape)}")
        for attr in _INDEX_ATTRS:
            t = getattr(data, attr, None)
            if t is None:
                continue
            if t.ndim != 2 or t.shape[0] != 2:
                raise ValueError(f"graph {gid!r}: expected {attr} of shape (2, k), got {tuple(t.shape)}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
                raise ValueError(
                    f"graph {gid!r}: {attr} points outside its nodes: expected indices in [0, {n}), "
                    f"got max {int(t.max())} and min {int(t.min())}"
                )
    return Batch.from_data_list(data_list)
