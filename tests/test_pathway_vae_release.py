"""The shipped release `model_cards/pathway-vae/v1.0.0`: its files, its card's metadata, and that
`PathwayVAEModel.from_pretrained` / `AutoModel.from_pretrained` load it offline and reproduce the committed golden
outputs on a committed tiny real input (tests/fixtures/make_pathway_release_golden.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModel

import astrobio_hf  # noqa: F401  (registers the Auto classes)
from astrobio_hf.models.pathway_vae import PathwayVAEConfig, PathwayVAEModel

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "model_cards" / "pathway-vae" / "v1.0.0"
GOLDEN = Path(__file__).parent / "fixtures" / "pathway_vae_release_golden.safetensors"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_release_holds_exactly_card_config_and_weights():
    assert sorted(p.name for p in RELEASE.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    size = sum(p.stat().st_size for p in RELEASE.iterdir())
    assert size < 5 * 2**20, f"release is {size / 2**20:.1f} MiB; it must stay a few MB"
    with safe_open(str(RELEASE / "model.safetensors"), framework="pt") as f:
        assert not any("optimizer" in k or "ema" in k.lower() for k in f.keys())


def test_card_metadata_parses_back():
    card = ModelCard.load(RELEASE / "README.md")
    data = card.data
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert "pathway_vae" in data.tags and data.datasets
    metrics = {r.metric_name: r.metric_value for r in data.eval_results}
    assert any("E. coli" in name for name in metrics) and any("Salmonella" in name for name in metrics)
    assert all(0.5 < value <= 1.0 for value in metrics.values()), metrics  # edge AUC / AP better than chance
    assert "from_pretrained" in card.text and "PyG VGAE (GCN)" in card.text


@pytest.mark.parametrize("loader", [PathwayVAEModel.from_pretrained, AutoModel.from_pretrained])
def test_from_pretrained_reproduces_golden_outputs(loader):
    model = loader(RELEASE).eval()
    assert isinstance(model, PathwayVAEModel) and isinstance(model.config, PathwayVAEConfig)
    golden = load_file(GOLDEN)
    with torch.no_grad():
        out = model(x=golden["x"], edge_index=golden["edge_index"], pos_edge_index=golden["pos_edge_index"],
                    neg_edge_index=golden["neg_edge_index"])
        embedding = model.embed_graphs(golden["x"], golden["edge_index"])
    for name in ("loss", "node_mu", "node_logvar", "graph_embedding", "pos_edge_logits", "neg_edge_logits", "feature_reconstruction"):
        torch.testing.assert_close(out[name], golden[f"expected.{name}"], atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(embedding, golden["expected.graph_embedding"], atol=1e-5, rtol=1e-5)
