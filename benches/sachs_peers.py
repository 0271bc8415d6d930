"""Causal-discovery peers on the Sachs et al. (2005) flow-cytometry table against its 18-edge consensus graph.

Default: the 853 observational CD3/CD28 rows, log1p then standardised (mean 0, std 1 per variable), every
observational peer plus the empty and random baselines. ``--full``: all 7,466 rows of the nine conditions pooled
(log1p, standardised over all rows) with their regimes, which adds GIES and CD-NOD.

    .venv/bin/python benches/sachs_peers.py [--full] [--data_dir DIR] [--output peers.json] [--methods pc,ges]

Prints ``method | SHD | F1 | skeleton F1 | edges | seconds`` (``random``: mean ± std over the repeats). Scoring is
:func:`astrobio_hf.metrics.graphs.graph_metrics` (an undirected CPDAG edge counts as either direction).

Reference figures (observational, 853 rows) quoted by the issue: PC SHD 16 (F1 .31), NOTEARS linear 16, DAGMA
linear 16, DAGMA-MLP 16, GES 17, NOTEARS-MLP 17, DirectLiNGAM 18, empty 18, random 27 ± 2.6.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from astrobio_hf.data.table import ensure_sachs_dataset, load_table, sachs_consensus_edges
from astrobio_hf.evaluation.causal_peers import (
    BASELINES,
    DEFAULT_MLP_ITERATIONS,
    METHODS,
    PEERS_INTERVENTIONAL,
    PEERS_OBSERVATIONAL,
    run_peers,
)


def load_sachs(data_dir: Path, full: bool):
    """(x standardised (n, d), true adjacency (d, d), variable names, regimes (n,) or None, regime targets)."""
    subset = "full" if full else "observational"
    schema = ensure_sachs_dataset(data_dir, subset)
    table = load_table(data_dir, "all")
    names = table.variables
    x = np.log1p(table.values)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    true = np.zeros((len(names), len(names)), dtype=int)
    for cause, effect in sachs_consensus_edges():
        true[names.index(cause), names.index(effect)] = 1
    regimes, targets = None, None
    if full:
        regimes = table.regime
        targets = {
            k: ([names.index(t) for t in entry["targets"]] if isinstance(entry["targets"], list) else "unknown")
            for k, entry in enumerate(schema["regimes"])
        }
    return x, true, names, regimes, targets


def format_table(rows: list[dict]) -> str:
    def num(r, key, fmt):
        v = r.get(key)
        if v is None:
            return "-"
        s = format(v, fmt)
        if f"{key}_std" in r:
            s += " ± " + format(r[f"{key}_std"], fmt)
        return s

    header = ["method", "SHD", "F1", "skeleton F1", "edges", "seconds", "status"]
    lines = [[r["method"], num(r, "shd", ".3g"), num(r, "f1", ".2f"), num(r, "skeleton_f1", ".2f"),
              "-" if r.get("edges") is None else str(r["edges"]), f"{r['seconds']:.1f}",
              r["status"] if r["status"] == "ok" else r["status"][:60]] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths)), "-|-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="all 7,466 rows with regimes (adds GIES and CD-NOD)")
    p.add_argument("--data_dir", default=None, help="where the Sachs table is built (default: a temporary folder)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random_repeats", type=int, default=20)
    p.add_argument("--mlp_iterations", type=int, default=DEFAULT_MLP_ITERATIONS)
    p.add_argument("--max_seconds", type=float, default=None, help="budget for all peers together")
    p.add_argument("--output", default=None, help="write the rows (and the run facts) as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        methods = list(PEERS_OBSERVATIONAL) + (list(PEERS_INTERVENTIONAL) if args.full else []) + list(BASELINES)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / ("sachs_full" if args.full else "sachs_obs")
        x, true, names, regimes, targets = load_sachs(data_dir, args.full)
    print(f"Sachs {'full' if args.full else 'observational'}: {x.shape[0]} rows x {x.shape[1]} variables, "
          f"{int(true.sum())} consensus edges" + (f", {len(np.unique(regimes))} regimes" if regimes is not None else ""))
    t0 = time.monotonic()
    rows = run_peers(x, true, methods=methods, regimes=regimes, regime_targets=targets, seed=args.seed,
                     random_repeats=args.random_repeats, max_seconds=args.max_seconds,
                     mlp_iterations=args.mlp_iterations)
    total = time.monotonic() - t0
    print(format_table(rows))
    print(f"total {total:.1f} s")
    if args.output:
        import torch

        payload = {
            "dataset": "sachs2005", "subset": "full" if args.full else "observational", "rows": int(x.shape[0]),
            "variables": names, "preprocessing": "log1p, then standardised (population std) over all rows",
            "seed": args.seed, "mlp_iterations": args.mlp_iterations, "random_repeats": args.random_repeats,
            "machine": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
            "total_seconds": round(total, 1), "results": rows,
        }
        Path(args.output).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.output}")
    return rows


if __name__ == "__main__":
    main()
