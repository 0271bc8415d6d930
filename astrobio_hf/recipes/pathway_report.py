"""Test evaluation, plots and model card of a pathway-VAE run (main process only)."""

from __future__ import annotations

import json
import logging
import math
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from astrobio_hf.hub import build_model_card, markdown_table
from astrobio_hf.hub.init_from import describe_origin
from astrobio_hf.hub.plots import plot_loss_curves
from astrobio_hf.recipes.pathway_eval import (
    VGAEBaseline,
    evaluate_legacy_on_windows,
    evaluate_link_prediction,
    find_legacy_weights,
    legacy_windows,
    load_legacy_model,
    train_vgae,
)

logger = logging.getLogger(__name__)

DATASET_NAME = "cobra metabolic networks (E. coli core, iJO1366 by subsystem, Salmonella LT2)"
DATASET_TYPE = "astrobio-hf/metabolic-networks"
TEST_SETS = {"ecoli": "held-out E. coli edges", "salmonella": "held-out organism (Salmonella LT2) edges", "windows": "6-node windows"}
SHORT_LABELS = {"ecoli": "E. coli\nheld-out edges", "salmonella": "Salmonella LT2\n(held-out organism)", "windows": "6-node windows\n(legacy-sized)"}


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_scores(results: dict, path: Path) -> None:
    """Edge AUC and AP of every system on every test set, side by side."""
    systems = [s for s in ("model", "vgae", "legacy") if s in results]
    sets = [t for t in TEST_SETS if any(t in results[s] for s in systems)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    width = 0.8 / len(systems)
    for ax, metric in zip(axes, ("auc", "ap")):
        for i, system in enumerate(systems):
            values = [results[system].get(t, {}).get(metric, float("nan")) for t in sets]
            bars = ax.bar([j + i * width for j in range(len(sets))], values, width, label=system)
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(sets))], [SHORT_LABELS[t] for t in sets], fontsize=8)
        ax.set_title(f"edge {metric.upper()}")
        if metric == "auc":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_and_report(output_dir, model, train_graphs, heldout_graphs, schema, state, *, steps, batch_size, device,
                        train_vgae_baseline=True, seed=0, train_seconds=0.0, run_config=None, throughput=None, init_origin=None) -> dict:
    """Score the model and the baselines, write metrics.json, plots/ and README.md; return the results."""
    output_dir = Path(output_dir)
    (output_dir / "plots").mkdir(parents=True, exist_ok=True)
    results: dict = {"model": {
        "ecoli": evaluate_link_prediction(model, train_graphs, "test", device),
        "salmonella": evaluate_link_prediction(model, heldout_graphs, "test", device),
    }}
    windows = legacy_windows(train_graphs + heldout_graphs, size=6, split="test")
    results["model"]["windows"] = evaluate_link_prediction(model, windows, "test", device)
    vgae_info = None
    if train_vgae_baseline:
        baseline = VGAEBaseline.create(model.config, seed=seed)
        vgae_info = train_vgae(baseline, train_graphs, steps=steps, batch_size=batch_size, device=device, seed=seed)
        results["vgae"] = {
            "ecoli": baseline.evaluate(train_graphs, "test", device),
            "salmonella": baseline.evaluate(heldout_graphs, "test", device),
            "windows": baseline.evaluate(windows, "test", device),
        }
    legacy_path = find_legacy_weights()
    if legacy_path is not None:
        results["legacy"] = {"windows": evaluate_legacy_on_windows(load_legacy_model(legacy_path), windows, device)}
    else:
        logger.info("legacy weights not found (../shared/reference/trained_pathway_vae.pth): no legacy baseline")

    metrics = {
        "global_step": state.global_step,
        "best_val_loss": state.best_metric,
        "train_seconds": train_seconds,
        "throughput": throughput,
        "vgae_training": vgae_info,
        "legacy_weights": str(legacy_path) if legacy_path else None,
        "init_from": init_origin,  # where the starting weights came from (--init_from), or null
        "test": {f"{system}/{test_set}/{k}": v for system, sets in results.items() for test_set, vals in sets.items()
                 for k, v in vals.items()},
        "dataset": {k: schema.get(k) for k in ("counts", "currency_metabolites", "cobra_version") if k in schema},
        "history": state.history,
        "run_config": run_config,
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    plot_loss_curves(state.history, output_dir / "plots" / "loss.png", title="Pathway VAE", ylabel="loss (validation: held-out edges)")
    plot_scores(results, output_dir / "plots" / "edge_scores.png")
    card = build_card(model, results, metrics, schema, len(windows))
    card.save(str(output_dir / "README.md"))
    return {"test": metrics["test"]}


def build_card(model, results, metrics, schema, n_windows):
    config = model.config
    rows = []
    for test_set, label in TEST_SETS.items():
        for system in ("model", "vgae", "legacy"):
            vals = results.get(system, {}).get(test_set)
            if vals:
                rows.append([label, {"model": "this model", "vgae": "PyG VGAE (GCN)", "legacy": "legacy MLP VAE"}[system],
                             _fmt(vals.get("auc")), _fmt(vals.get("ap")), _fmt(vals.get("feature_mse")), _fmt(vals.get("kl_per_node")),
                             f"{vals['active_units']}/{vals['latent_size']}" if "active_units" in vals else "–", vals.get("held_out_edges", "–")])
    table = markdown_table(["test set", "system", "edge AUC", "edge AP", "feature MSE", "KL/node", "active units", "held-out edges"], rows)
    table += (
        "\n\nEdge AUC/AP: held-out edges against as many non-edges (chance AUC 0.5); in the 6-node windows a held-out "
        "edge is ranked against all of its window's non-edges (chance AP is the share of positives, about 0.15). "
        "Feature MSE is in normalised units (1 = predicting the training mean). Active units: latent dimensions whose "
        "posterior mean varies across nodes (variance > 0.01)."
    )
    counts = schema.get("counts", {})
    data_text = (
        "Metabolic networks from cobra's offline models: nodes are metabolites (features: log1p element counts from the "
        "formula, signed log charge, compartment), edges join metabolites that share a reaction, with currency metabolites "
        f"({len(schema.get('currency_metabolites', []))} listed in `astrobio_hf.data.metabolic.CURRENCY_METABOLITES`), "
        "boundary reactions and very large reactions removed. Training: E. coli core and iJO1366 split by subsystem; "
        "held-out organism: Salmonella enterica Typhimurium LT2. Each graph's edges were split once with PyG's "
        "`RandomLinkSplit` (85% message passing and training, 5% validation, 10% test, as many sampled non-edges).\n\n"
        + (f"```json\n{json.dumps(counts, indent=2)}\n```" if counts else "")
    )
    vgae = metrics.get("vgae_training")
    vgae_time = f" ({vgae['seconds']:.0f} s, {vgae['graphs_per_second']:.0f} graphs/s in a plain loop)" if vgae else ""
    rate = (metrics.get("throughput") or {}).get("samples_per_second")
    speed = f" Training throughput {rate:.0f} graphs/s (the recipe loop, with EMA, clipping and the non-finite guard)." if rate else ""
    method = (
        f"Encoder: {config.num_layers} x `{'TransformerConv' if config.encoder_type == 'transformer' else 'GPSConv'}` "
        f"(hidden {config.hidden_size}, {config.num_heads} heads) -> per-node Gaussian (latent {config.latent_size}); inner-product "
        "edge decoder and MLP feature decoder. Loss: edge BCE against the real adjacency with PyG negative sampling + "
        f"feature MSE + KL annealed per optimizer step to {config.kl_weight_max} over {config.kl_warmup_steps} steps. "
        f"Trained {metrics['global_step']} optimizer steps in {metrics['train_seconds']:.0f} s on {platform.processor() or platform.machine()} "
        f"({torch.__version__}); the weights are the EMA of the best validation step. "
        f"{describe_origin(metrics.get('init_from'))}{speed}\n\n"
        "Baselines in the same run: PyG's plain `VGAE` with its example GCN encoder, trained on the same graphs for the same "
        f"number of steps{vgae_time}; and the converted legacy MLP VAE of the system this "
        f"project replaces, which reads at most 6 nodes: all systems are also scored on {n_windows} 6-node windows cut around "
        "each held-out edge (the window's training edges in, the held-out edge against the window's non-edges out). "
        "`benches/bench_pathway_vae.py` compares the throughput of this model and the VGAE side by side at the same size."
    )
    example = (
        "```python\nimport astrobio_hf  # registers the Auto classes\nfrom astrobio_hf.data.metabolic import load_graphs\n"
        "from astrobio_hf.models.pathway_vae import PathwayVAEModel\n\n"
        'model = PathwayVAEModel.from_pretrained("model_cards/pathway-vae/v1.0.0").eval()\n'
        'graph = load_graphs("data/metabolic", "heldout_organism")[0]   # astrobio-hf data metabolic builds it\n'
        "embedding = model.embed_graphs(graph.x, graph.edge_index)       # (1, latent) graph embedding\n```"
    )
    eval_results = []
    for test_set in ("ecoli", "salmonella"):
        vals = results["model"].get(test_set, {})
        for metric in ("auc", "ap"):
            if isinstance(vals.get(metric), float) and math.isfinite(vals[metric]):
                eval_results.append((metric, f"edge {metric.upper()} ({TEST_SETS[test_set]})", vals[metric]))
    return build_model_card(
        model_name="pathway-vae",
        summary=(
            "A variational graph auto-encoder of metabolic pathways (astrobio-hf `pathway_vae`): it embeds a metabolic "
            "network's metabolites and the network itself, predicts missing links between metabolites, and "
            "reconstructs metabolite composition."
        ),
        sections={
            "Evaluation": table + "\n\n![edge scores](plots/edge_scores.png)\n\n![loss](plots/loss.png)",
            "Method": method,
            "Training data": data_text,
            "Intended use": "Research on metabolic network structure (link prediction, network embeddings) for "
            "astrobiology studies; not for clinical or engineering decisions.",
            "Limitations": "Trained on two closely related enterobacteria; metabolite identity comes only from "
            "composition, charge and compartment, so isomers look alike. Link prediction scores held-out edges against "
            "sampled non-edges, the usual but optimistic protocol.",
            "How to load": example,
        },
        eval_results=eval_results,
        dataset_name=DATASET_NAME,
        dataset_type=DATASET_TYPE,
        task_type="graph-ml",
        tags=["pathway_vae", "graph-neural-network", "metabolic-networks", "torch-geometric"],
    )
