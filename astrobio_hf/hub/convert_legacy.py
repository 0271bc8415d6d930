"""Convert the legacy system's released weights into astrobio-hf models.

    astrobio-hf convert legacy-pathway-vae PATH --output DIR [--graphs legacy_pathway_graphs.npz]

`trained_pathway_vae.pth` is a plain PyTorch state dict (read with `torch.load(..., weights_only=True)`, never
unpickling arbitrary objects). Its keys are mapped explicitly onto `LegacyPathwayVAEModel`; the config is inferred
from the tensor shapes, and anything missing, unexpected or mis-shaped is an error naming it. The output directory
gets `config.json`, `model.safetensors` and a model card stating the source file's sha256 and, when the legacy
graphs are at hand, the edge AUROC / MSE measured on them. Never write the legacy file or its conversion inside the
repository: the weights are not ours to publish.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch

# legacy state-dict key -> LegacyPathwayVAEModel parameter (the layout is the same module for module)
LEGACY_PATHWAY_VAE_KEYS = {
    f"{side}.{index}.{kind}": f"{side}.{index}.{kind}"
    for side, indices in (("encoder", (0, 3, 5)), ("decoder", (0, 2, 5)))
    for index in indices
    for kind in ("weight", "bias")
}
# wrappers some training scripts put around the state dict
_STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "model")
DEFAULT_GRAPHS_NAME = "legacy_pathway_graphs.npz"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_legacy_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a legacy `.pth` file, read safely (`weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"legacy weights not found: {path}")
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        raise ValueError(
            f"could not read {path} as a PyTorch state dict with torch.load(weights_only=True): {err}"
        ) from err
    for key in _STATE_DICT_WRAPPERS:
        if isinstance(loaded, dict) and key in loaded and isinstance(loaded[key], dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(loaded).__name__}")
    return dict(loaded)


def legacy_pathway_vae_from_state_dict(state_dict: dict[str, torch.Tensor], dropout: float = 0.1):
    """A `LegacyPathwayVAEModel` holding the legacy weights, its config inferred from their shapes. Raises a
    ValueError naming the missing / unexpected keys or the mis-shaped tensors."""
    from astrobio_hf.models.legacy_pathway_vae import (
        LegacyPathwayVAEConfig,
        LegacyPathwayVAEModel,
    )

    missing = sorted(set(LEGACY_PATHWAY_VAE_KEYS) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(LEGACY_PATHWAY_VAE_KEYS))
    if missing or unexpected:
        raise ValueError(
            f"not a legacy pathway VAE state dict: missing keys {missing}, unexpected keys {unexpected} "
            f"(expected exactly {sorted(LEGACY_PATHWAY_VAE_KEYS)}; found {sorted(state_dict)})"
        )
    input_size = state_dict["encoder.0.weight"].shape[1]
    max_nodes = math.isqrt(input_size)
    if max_nodes * max_nodes != input_size:
        raise ValueError(f"encoder.0.weight: expected a square number of inputs (N*N), got {input_size}")
    hidden_size = state_dict["encoder.0.weight"].shape[0]
    encoder_out = state_dict["encoder.5.weight"].shape[0]
    if encoder_out % 2:
        raise ValueError(f"encoder.5.weight: expected an even number of outputs (mean + log-variance), got {encoder_out}")
    config = LegacyPathwayVAEConfig(
        max_nodes=max_nodes, hidden_size=hidden_size, latent_size=encoder_out // 2, dropout=dropout
    )
    model = LegacyPathwayVAEModel(config)
    target = model.state_dict()
    wrong = [
        f"{old}: expected {tuple(target[new].shape)}, got {tuple(state_dict[old].shape)}"
        for old, new in LEGACY_PATHWAY_VAE_KEYS.items()
        if tuple(state_dict[old].shape) != tuple(target[new].shape)
    ]
    if wrong:
        raise ValueError(f"legacy tensors do not fit the architecture inferred from encoder.0 / encoder.5 ({config.max_nodes=}, "
                         f"{config.hidden_size=}, {config.latent_size=}): " + "; ".join(wrong))
    mapped = {new: state_dict[old].to(target[new].dtype) for old, new in LEGACY_PATHWAY_VAE_KEYS.items()}
    result = model.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys, result
    return model.eval()


def load_legacy_pathway_graphs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`adjacency` (N, 6, 6), `num_nodes` (N,), `name` (N,) of the legacy graph file."""
    with np.load(path, allow_pickle=False) as data:
        missing = sorted({"adjacency", "num_nodes", "name"} - set(data.files))
        if missing:
            raise ValueError(f"{path}: expected arrays adjacency, num_nodes, name; missing {missing}")
        return {key: data[key] for key in ("adjacency", "num_nodes", "name")}


def binary_auroc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties) of `scores` for binary `targets`."""
    scores = scores.detach().flatten().double().cpu()
    targets = targets.detach().flatten().bool().cpu()
    n_pos = int(targets.sum())
    n_neg = targets.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mid_ranks = ends - (counts.double() - 1.0) / 2.0  # 1-based average rank of each tie group
    ranks = torch.empty_like(scores)
    ranks[order] = mid_ranks[inverse]
    rank_sum = ranks[targets].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@torch.no_grad()
def evaluate_pathway_vae(model, adjacency, batch_size: int = 4096) -> dict[str, float]:
    """Decode the mean of every graph (eval mode): edge AUROC and MSE over all padded N*N entries, and the MSE of
    predicting no edge at all (`zeros_mse`, the baseline)."""
    model.eval()
    target = torch.as_tensor(np.asarray(adjacency)).float()
    probabilities = torch.cat(
        [model(chunk).edge_probabilities.float().cpu() for chunk in target.split(batch_size)]
    ).reshape(target.shape)
    return {
        "edge_auroc": binary_auroc(probabilities, target),
        "mse": float(((probabilities - target) ** 2).mean()),
        "zeros_mse": float((target**2).mean()),
        "num_graphs": int(target.shape[0]),
    }


def convert_legacy_pathway_vae(
    path: str | os.PathLike,
    output_dir: str | os.PathLike,
    graphs_path: str | os.PathLike | None = None,
) -> Path:
    """Convert the legacy `trained_pathway_vae.pth` into a `LegacyPathwayVAEModel` directory (safetensors + config
    + README.md model card) and return `output_dir`. `graphs_path` (default: `legacy_pathway_graphs.npz` next to
    `path`, when present) is evaluated and its edge AUROC / MSE written into the card."""
    from astrobio_hf.hub.model_card import build_model_card, markdown_table

    path = Path(path)
    output_dir = Path(output_dir)
    state_dict = load_legacy_state_dict(path)
    model = legacy_pathway_vae_from_state_dict(state_dict)
    sha256 = file_sha256(path)

    if graphs_path is None and (path.parent / DEFAULT_GRAPHS_NAME).is_file():
        graphs_path = path.parent / DEFAULT_GRAPHS_NAME
    metrics = None
    if graphs_path is not None:
        graphs = load_legacy_pathway_graphs(graphs_path)
        metrics = evaluate_pathway_vae(model, graphs["adjacency"])

    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)

    config = model.config
    sections = {
        "Provenance": (
            f"Converted legacy weights: `{path.name}` (sha256 `{sha256}`), the released pathway VAE of the system "
            "astrobio-hf replaces, whose training code was never published. The tensors are copied unchanged "
            "(float32) by `astrobio_hf.hub.convert_legacy.convert_legacy_pathway_vae`; the converted model "
            "reproduces the legacy forward pass exactly. It was not retrained or fine-tuned here."
        ),
        "Architecture": (
            f"MLP VAE over a zero-padded {config.max_nodes}x{config.max_nodes} adjacency matrix flattened to "
            f"{config.input_size} values. Encoder `Linear({config.input_size},{config.hidden_size}), ReLU, Dropout, "
            f"Linear({config.hidden_size},{config.hidden_size}), ReLU, Linear({config.hidden_size},{2 * config.latent_size})` "
            f"split into mean and log-variance ({config.latent_size} each); decoder `Linear({config.latent_size},"
            f"{config.hidden_size}), ReLU, Linear({config.hidden_size},{config.hidden_size}), ReLU, Dropout, "
            f"Linear({config.hidden_size},{config.input_size})`, sigmoid for edge probabilities. The dropout rate "
            f"the legacy model was trained with is not recorded ({config.dropout} is set; it has no effect in eval mode)."
        ),
        "Usage": (
            "```python\nfrom astrobio_hf.models.legacy_pathway_vae import LegacyPathwayVAEModel\n\n"
            "model = LegacyPathwayVAEModel.from_pretrained(DIR).eval()\n"
            "out = model(adjacency)  # (B, 6, 6) 0/1 -> out.edge_probabilities (B, 6, 6), out.mean, out.log_variance\n```"
        ),
    }
    eval_results = []
    if metrics is not None:
        sections["Evaluation"] = (
            f"Decoding the latent mean of each of the {metrics['num_graphs']} legacy graphs "
            f"(`{Path(graphs_path).name}`, synthetic, from the old repository; every padded entry counts):\n\n"
            + markdown_table(
                ["metric", "value"],
                [
                    ["edge AUROC", f"{metrics['edge_auroc']:.4f}"],
                    ["edge MSE", f"{metrics['mse']:.4f}"],
                    ["MSE of predicting no edges (baseline)", f"{metrics['zeros_mse']:.4f}"],
                ],
            )
            + "\n\nThese are the graphs the legacy model was made for (no held-out split is known), so the numbers "
            "describe reconstruction, not generalisation."
        )
        eval_results = [("roc_auc", "edge AUROC", metrics["edge_auroc"]), ("mse", "edge MSE", metrics["mse"])]
    else:
        sections["Evaluation"] = "Not evaluated at conversion (no legacy graph file was given)."
    sections["Licence"] = (
        "Derived from the legacy system's released weights: check their terms before redistributing; "
        "do not commit this directory to the astrobio-hf repository."
    )
    card = build_model_card(
        model_name="legacy-pathway-vae (converted)",
        summary="Converted legacy weights: the pathway VAE of the old system as an astrobio-hf `LegacyPathwayVAEModel`.",
        sections=sections,
        eval_results=eval_results,
        dataset_name="legacy pathway graphs",
        dataset_type="astrobio-hf/legacy-pathway-graphs",
        task_type="graph-reconstruction",
        tags=["legacy", "converted", "vae", "pathway-graphs"],
        license="unknown",
    )
    card.save(output_dir / "README.md")
    return output_dir


__all__ = [
    "LEGACY_PATHWAY_VAE_KEYS",
    "binary_auroc",
    "convert_legacy_pathway_vae",
    "evaluate_pathway_vae",
    "file_sha256",
    "legacy_pathway_vae_from_state_dict",
    "load_legacy_pathway_graphs",
    "load_legacy_state_dict",
]
