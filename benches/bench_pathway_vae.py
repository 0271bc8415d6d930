"""Pathway VAE benchmark: this model against PyG's plain `VGAE` (GCN encoder), side by side in one run.

1. Throughput: training graphs/s (forward, backward, AdamW step) and inference graphs/s (encode) of the pathway
   VAE (TransformerConv and GPSConv encoders) and of the VGAE at the same hidden and latent sizes, on the same
   batches of the real metabolic graphs, printed as ratios to the VGAE.
2. Quality: held-out edge AUC / AP of each after the same number of optimizer steps on the same graphs, on
   held-out E. coli edges and on the held-out organism (Salmonella LT2).

    python benches/bench_pathway_vae.py [--steps 300] [--batch-size 8] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch
from torch.utils.data import DataLoader

from astrobio_hf.data.metabolic import (
    collate_graphs,
    ensure_metabolic_dataset,
    load_graphs,
    load_metabolic_schema,
)
from astrobio_hf.evaluation.pathway_vae import (
    VGAEBaseline,
    evaluate_link_prediction,
    train_vgae,
)
from astrobio_hf.models.pathway_vae import PathwayVAEConfig, PathwayVAEModel


def fixed_batches(graphs, batch_size, n, seed=0):
    """`n` collated batches in a seeded shuffled order (the same for every system)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        out += list(DataLoader(graphs, batch_size=batch_size, shuffle=True, collate_fn=collate_graphs, generator=generator))
    return out[:n]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(step_fn, batches, device, warmup=3) -> float:
    for b in batches[:warmup]:
        step_fn(b)
    sync(device)
    t = time.perf_counter()
    graphs = 0
    for b in batches[warmup:]:
        step_fn(b)
        graphs += int(b.num_graphs)
    sync(device)
    return graphs / (time.perf_counter() - t)


def pathway_train_step(model, optimizer):
    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        out = model(x=batch.x, edge_index=batch.edge_index, batch=batch.batch, training_step=1000)
        out.loss.backward()
        optimizer.step()
    return step


def vgae_train_step(baseline, optimizer):
    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        baseline.loss(batch).backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of the quality comparison")
    parser.add_argument("--timing-batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--latent-size", type=int, default=16)
    parser.add_argument("--num-layers", type=int, default=4, help="encoder layers of the pathway VAE (the release has 4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default="data/metabolic")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    torch.manual_seed(0)

    ensure_metabolic_dataset(args.data_dir)
    schema = load_metabolic_schema(args.data_dir)
    train_graphs = load_graphs(args.data_dir, "train")
    heldout = load_graphs(args.data_dir, "heldout_organism")
    batches = [b.to(device) for b in fixed_batches(train_graphs, args.batch_size, args.timing_batches)]
    sizes = {"hidden_size": args.hidden_size, "latent_size": args.latent_size, "num_layers": args.num_layers, "dropout": 0.1}

    def make(encoder_type):
        torch.manual_seed(0)
        config = PathwayVAEConfig.from_schema(schema, encoder_type=encoder_type, kl_weight_max=0.01, kl_warmup_steps=int(0.3 * args.steps), **sizes)
        return PathwayVAEModel(config).to(device)

    report: dict = {"device": str(torch.cuda.get_device_name(0) if device.type == "cuda" else device), "batch_size": args.batch_size, **sizes}
    print(f"device {report['device']}, {len(train_graphs)} training graphs, batch {args.batch_size} graphs, hidden {args.hidden_size}, latent {args.latent_size}")

    # 1. Throughput.
    rows = {}
    vgae = VGAEBaseline.create(make("transformer").config).to(device)
    rows["vgae"] = (
        throughput(vgae_train_step(vgae, torch.optim.AdamW(vgae.model.parameters(), lr=1e-3)), batches, device),
        throughput(lambda b: vgae.model.encode(vgae.normalise(b.x), b.edge_index), batches, device),
    )
    for encoder in ("transformer", "gps"):
        model = make(encoder).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        train_gps = throughput(pathway_train_step(model, optimizer), batches, device)
        model.eval()
        with torch.no_grad():
            infer_gps = throughput(lambda b, m=model: m.embed_graphs(b.x, b.edge_index, b.batch), batches, device)
        rows[encoder] = (train_gps, infer_gps)
    print("\nthroughput (graphs/s)        train   ratio/VGAE   inference   ratio/VGAE")
    for name, (tr, inf) in rows.items():
        print(f"  {name:<24} {tr:9.1f}   {tr / rows['vgae'][0]:8.2f}   {inf:9.1f}   {inf / rows['vgae'][1]:8.2f}")
    report["throughput"] = {k: {"train_graphs_per_s": v[0], "inference_graphs_per_s": v[1]} for k, v in rows.items()}

    # 2. Quality after the same number of steps.
    quality = {}
    t = time.perf_counter()
    baseline = VGAEBaseline.create(make("transformer").config)
    train_vgae(baseline, train_graphs, steps=args.steps, batch_size=args.batch_size, device=device)
    quality["vgae"] = {"ecoli": baseline.evaluate(train_graphs, "test", device), "salmonella": baseline.evaluate(heldout, "test", device),
                       "seconds": time.perf_counter() - t}
    for encoder in ("transformer", "gps"):
        t = time.perf_counter()
        model = make(encoder).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        for step, batch in enumerate(fixed_batches(train_graphs, args.batch_size, args.steps, seed=1)):
            optimizer.zero_grad(set_to_none=True)
            batch = batch.to(device)
            model(x=batch.x, edge_index=batch.edge_index, batch=batch.batch, training_step=step).loss.backward()
            optimizer.step()
        quality[encoder] = {"ecoli": evaluate_link_prediction(model, train_graphs, "test", device),
                            "salmonella": evaluate_link_prediction(model, heldout, "test", device), "seconds": time.perf_counter() - t}
    print(f"\nheld-out edges after {args.steps} steps   E. coli AUC    AP     Salmonella AUC    AP     train s")
    for name, q in quality.items():
        print(f"  {name:<30} {q['ecoli']['auc']:.4f}  {q['ecoli']['ap']:.4f}      {q['salmonella']['auc']:.4f}  {q['salmonella']['ap']:.4f}   {q['seconds']:6.1f}")
    report["quality"] = quality
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)


if __name__ == "__main__":
    main()
