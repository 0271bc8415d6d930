"""Pathway VAE (graph VAE over metabolic graphs): common model checks (mixin) for both encoders, batching
invariance, negative sampling, KL annealing, input validation, the log-variance clamp and the config."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from torch_geometric.data import Batch, Data
from transformers import AutoConfig, AutoModel

from astrobio_hf.models.pathway_vae import (
    PathwayVAEConfig,
    PathwayVAEModel,
    PathwayVAEOutput,
)

try:
    from .model_mixin import ModelTesterMixin
except ImportError:  # tests/ is not a package
    from model_mixin import ModelTesterMixin

# Registration normally done by `import astrobio_hf`; repeated here (exist_ok) so the Auto checks do not depend on it.
AutoConfig.register("pathway_vae", PathwayVAEConfig, exist_ok=True)
AutoModel.register(PathwayVAEConfig, PathwayVAEModel, exist_ok=True)

FEATURES = ["C", "N", "charge", "compartment_c"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The graphs here are tiny: a second intra-op thread only spins, and on a busy 2-core machine it makes these
    tests many times slower. Restored afterwards for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> PathwayVAEConfig:
    kwargs = {
        "node_feature_names": FEATURES,
        "feature_mean": [2.0, 0.5, -1.0, 0.5],
        "feature_std": [1.5, 0.5, 2.0, 0.5],
        "hidden_size": 8,
        "latent_size": 3,
        "num_layers": 2,
        "num_heads": 2,
        "dropout": 0.0,
        "kl_warmup_steps": 10,
        "initializer_range": 0.3,
    }
    kwargs.update(overrides)
    return PathwayVAEConfig(**kwargs)


def make_graph(num_nodes: int, seed: int, num_chords: int = 3) -> Data:
    """A connected graph: a ring plus random chords, undirected (both directions), no self-loops, no duplicates;
    features in physical-looking units."""
    generator = torch.Generator().manual_seed(seed)
    pairs = {(i, (i + 1) % num_nodes) for i in range(num_nodes)}
    num_chords = min(num_chords, num_nodes * (num_nodes - 1) // 2 - num_nodes)  # a small graph has room for fewer
    while len(pairs) < num_nodes + num_chords:
        i, j = torch.randint(num_nodes, (2,), generator=generator).tolist()
        if i != j and (i, j) not in pairs and (j, i) not in pairs:
            pairs.add((i, j))
    undirected = torch.tensor(sorted(pairs)).t()
    edge_index = torch.cat([undirected, undirected.flip(0)], dim=1)
    x = torch.randn(num_nodes, len(FEATURES), generator=generator) * torch.tensor([1.5, 0.5, 2.0, 0.5])
    return Data(x=x + torch.tensor([2.0, 0.5, -1.0, 0.5]), edge_index=edge_index, num_nodes=num_nodes)


def make_batch(sizes=(5, 7, 9), seed: int = 0) -> Batch:
    return Batch.from_data_list([make_graph(n, seed + i) for i, n in enumerate(sizes)])


def fixed_negatives(batch: Batch) -> torch.Tensor:
    """One non-edge per node (i, i + 2 within its graph) that is not an edge: deterministic negatives."""
    true = set(map(tuple, batch.edge_index.t().tolist()))
    pairs = []
    for g in range(batch.num_graphs):
        start, stop = int(batch.ptr[g]), int(batch.ptr[g + 1])
        for i in range(start, stop):
            for j in range(start, stop):
                if i != j and (i, j) not in true and len(pairs) < 4 * (g + 1):
                    pairs.append((i, j))
    return torch.tensor(pairs).t()


class TestPathwayVAECommon(ModelTesterMixin):
    config_class = PathwayVAEConfig
    model_class = PathwayVAEModel
    encoder_type = "transformer"

    def prepare_config_and_inputs(self):
        config = tiny_config(encoder_type=self.encoder_type)
        batch = make_batch()
        noise = torch.randn(batch.num_nodes, config.latent_size, generator=torch.Generator().manual_seed(5))
        inputs = {
            "x": batch.x,
            "edge_index": batch.edge_index,
            "batch": batch.batch,
            "neg_edge_index": fixed_negatives(batch),
            "noise": noise,
            "training_step": 4,
        }
        return config, inputs

    def expected_output_shapes(self, config, inputs):
        n, latent, f = inputs["x"].shape[0], config.latent_size, config.node_feature_size
        return {
            "edge_loss": (),
            "feature_loss": (),
            "kl": (),
            "kl_weight": (),
            "pos_edge_logits": (inputs["edge_index"].shape[1],),
            "neg_edge_logits": (inputs["neg_edge_index"].shape[1],),
            "node_mu": (n, latent),
            "node_logvar": (n, latent),
            "z": (n, latent),
            "graph_embedding": (int(inputs["batch"].max()) + 1, latent),
            "feature_reconstruction": (n, f),
        }

    def wrong_shape_inputs(self, config, inputs):
        cases = super().wrong_shape_inputs(config, inputs)
        edge_index, n = inputs["edge_index"], inputs["x"].shape[0]
        cases += [
            ("edge_index with 3 rows", dict(inputs, edge_index=torch.cat([edge_index, edge_index[:1]]))),
            ("edge_index of floats", dict(inputs, edge_index=edge_index.float())),
            ("batch one node short", dict(inputs, batch=inputs["batch"][:-1])),
            ("noise of the wrong latent size", dict(inputs, noise=inputs["noise"][:, :-1])),
            ("x of another dtype", dict(inputs, x=inputs["x"].double())),
            ("x with a NaN", dict(inputs, x=inputs["x"].clone().index_fill_(0, torch.tensor([1]), float("nan")))),
            ("negative step", dict(inputs, training_step=-1)),
            ("pos_edge_index out of range", dict(inputs, pos_edge_index=torch.tensor([[0], [n]]))),
        ]
        return cases


class TestPathwayVAEGPSCommon(TestPathwayVAECommon):
    encoder_type = "gps"


# ----------------------------------------------------------------------------------------------------------------
# model behaviour
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder_type", ["transformer", "gps"])
def test_batched_graphs_embed_as_each_graph_alone(encoder_type):
    torch.manual_seed(0)
    model = PathwayVAEModel(tiny_config(encoder_type=encoder_type, dropout=0.1)).eval()
    graphs = [make_graph(n, seed) for seed, n in enumerate((4, 9, 6))]
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        batched = model.embed_graphs(batch.x, batch.edge_index, batch.batch)
        alone = torch.cat([model.embed_graphs(g.x, g.edge_index) for g in graphs])
        forward = model(batch.x, batch.edge_index, batch.batch, neg_edge_index=fixed_negatives(batch))
    assert batched.shape == (3, 3)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(forward.graph_embedding, batched)
    torch.testing.assert_close(forward.z, forward.node_mu)  # evaluation without noise decodes the mean


def test_sampled_negatives_are_never_true_edges_nor_cross_graphs():
    model = PathwayVAEModel(tiny_config(negative_sampling_ratio=1.0)).eval()
    batch = make_batch(sizes=(4, 6, 11, 5))
    # hold every third undirected edge out of the message-passing edges, to reconstruct: still true edges, in either
    # direction, though given one way only
    src, dst = batch.edge_index
    undirected = batch.edge_index[:, src < dst]
    held = torch.arange(undirected.shape[1]) % 3 == 0
    pos_edge_index = undirected[:, held]
    kept = undirected[:, ~held]
    edge_index = torch.cat([kept, kept.flip(0)], dim=1)
    known_pairs = set(map(tuple, edge_index.t().tolist()))
    all_pairs = set(map(tuple, batch.edge_index.t().tolist()))  # the known edges plus the held-out ones
    counts = []
    for seed in range(40):
        random.seed(seed)
        negatives = model.sample_negative_edges(edge_index, edge_index, batch.batch)
        with_held_out = model.sample_negative_edges(edge_index, pos_edge_index, batch.batch)
        for sample, true_pairs in ((negatives, known_pairs), (with_held_out, all_pairs)):
            assert sample.dtype == torch.long and sample.shape[0] == 2
            assert (sample[0] != sample[1]).all(), "self-loop sampled as a non-edge"
            assert (batch.batch[sample[0]] == batch.batch[sample[1]]).all(), "non-edge across graphs"
            pairs = set(map(tuple, sample.t().tolist()))
            assert not pairs & true_pairs, f"seed {seed}: true edges sampled as non-edges: {pairs & true_pairs}"
        counts.append((negatives.shape[1], with_held_out.shape[1]))
    # about one non-edge per edge to reconstruct (fewer where a small graph is dense or a count rounds down)
    assert all(0.6 * edge_index.shape[1] <= n <= edge_index.shape[1] for n, _ in counts), counts
    assert all(0.3 * pos_edge_index.shape[1] <= n <= pos_edge_index.shape[1] for _, n in counts), counts


def test_forward_samples_negatives_when_none_are_given():
    config = tiny_config(negative_sampling_ratio=0.5)
    model = PathwayVAEModel(config).eval()
    batch = make_batch()
    random.seed(3)
    expected = model.sample_negative_edges(batch.edge_index, batch.edge_index, batch.batch)
    random.seed(3)
    with torch.no_grad():
        output = model(batch.x, batch.edge_index, batch.batch)
        torch.testing.assert_close(output.neg_edge_logits, model.edge_logits(output.z, expected))
    assert 0 < output.neg_edge_logits.shape[0] <= 0.5 * batch.edge_index.shape[1]


def test_loss_combines_the_terms_with_the_annealed_kl_weight():
    config = tiny_config(edge_loss_weight=2.0, feature_loss_weight=0.5, kl_weight_max=0.8, kl_warmup_steps=10)
    model = PathwayVAEModel(config).train()
    batch = make_batch()
    inputs = {"x": batch.x, "edge_index": batch.edge_index, "batch": batch.batch, "neg_edge_index": fixed_negatives(batch)}
    for step, weight in ((None, 0.8), (0, 0.0), (5, 0.4), (50, 0.8)):
        output = model(**inputs, training_step=step)
        assert isinstance(output, PathwayVAEOutput)
        assert output.kl_weight.shape == () and float(output.kl_weight) == pytest.approx(weight)
        expected = 2.0 * output.edge_loss + 0.5 * output.feature_loss + weight * output.kl
        torch.testing.assert_close(output.loss, expected)
        assert output.kl >= 0 and output.edge_loss > 0 and output.feature_loss > 0
    # training mode without noise samples z; the tuple form keeps the order with loss first
    assert not torch.equal(output.z, output.node_mu)
    as_tuple = model.eval()(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == () and len(as_tuple) == 12


def test_features_are_normalised_inside_and_reconstructed_in_physical_units():
    with_stats = tiny_config()
    without = tiny_config(feature_mean=None, feature_std=None)
    torch.manual_seed(0)
    model = PathwayVAEModel(with_stats).eval()
    plain = PathwayVAEModel(without).eval()
    plain.load_state_dict(model.state_dict())
    batch = make_batch()
    mean, std = torch.tensor(with_stats.feature_mean), torch.tensor(with_stats.feature_std)
    negatives = fixed_negatives(batch)
    with torch.no_grad():
        physical = model(batch.x, batch.edge_index, batch.batch, neg_edge_index=negatives)
        normalised = plain((batch.x - mean) / std, batch.edge_index, batch.batch, neg_edge_index=negatives)
    torch.testing.assert_close(physical.node_mu, normalised.node_mu)
    torch.testing.assert_close(physical.feature_loss, normalised.feature_loss)
    torch.testing.assert_close(physical.feature_reconstruction, normalised.feature_reconstruction * std + mean)


@pytest.mark.parametrize(
    "name, make, pattern",
    [
        ("edge_index", lambda b: {"edge_index": torch.cat([b.edge_index, torch.tensor([[0], [21]])], 1)}, "max index 21"),
        ("edge_index", lambda b: {"edge_index": torch.cat([b.edge_index, torch.tensor([[-1], [0]])], 1)}, "min index -1"),
        ("pos_edge_index", lambda b: {"pos_edge_index": torch.tensor([[0, 3], [1, 30]])}, "max index 30"),
        ("neg_edge_index", lambda b: {"neg_edge_index": torch.tensor([[0], [99]])}, "max index 99"),
    ],
)
def test_indices_outside_the_nodes_are_a_clear_error(name, make, pattern):
    model = PathwayVAEModel(tiny_config())
    batch = make_batch()  # N = 21
    inputs = {"x": batch.x, "edge_index": batch.edge_index, "batch": batch.batch, **make(batch)}
    with pytest.raises(ValueError, match=rf"{name} points outside its nodes: expected node indices in \[0, 21\).*{pattern}"):
        model(**inputs)


def test_edges_across_graphs_and_unsorted_batches_are_errors():
    model = PathwayVAEModel(tiny_config())
    batch = make_batch()  # graphs of 5, 7 and 9 nodes
    with pytest.raises(ValueError, match=r"edge_index: expected edges within one graph, got 1 edge\(s\).*\(0, 5\)"):
        model(batch.x, torch.cat([batch.edge_index, torch.tensor([[0], [5]])], 1), batch.batch)
    with pytest.raises(ValueError, match="neg_edge_index: expected edges within one graph"):
        model(batch.x, batch.edge_index, batch.batch, neg_edge_index=torch.tensor([[1], [20]]))
    shuffled = batch.batch.flip(0)
    with pytest.raises(ValueError, match="batch: expected sorted graph ids 0, 1, ..., G-1.*got ids"):
        model(batch.x, batch.edge_index, shuffled)
    with pytest.raises(ValueError, match="batch: expected sorted graph ids"):
        model(batch.x, batch.edge_index, batch.batch * 2)  # graph ids 1 and 3 have no node
    with pytest.raises(ValueError, match=r"pos_edge_index: expected at least one edge.*got shape \(2, 0\)"):
        model(batch.x, batch.edge_index, batch.batch, pos_edge_index=torch.zeros(2, 0, dtype=torch.long))


def test_gps_encoder_trains():
    torch.manual_seed(0)
    model = PathwayVAEModel(tiny_config(encoder_type="gps", hidden_size=16, num_heads=4, kl_weight_max=0.1))
    batch = make_batch()
    inputs = {"x": batch.x, "edge_index": batch.edge_index, "batch": batch.batch, "neg_edge_index": fixed_negatives(batch)}

    def evaluation_loss() -> float:
        with torch.no_grad():
            return float(model.eval()(**inputs).loss)  # z = mu: deterministic

    before = evaluation_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for step in range(40):
        noise = torch.randn(batch.num_nodes, 3, generator=generator)
        loss = model(**inputs, noise=noise, training_step=step).loss
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluation_loss()
    assert after < 0.7 * before, (before, after)


def test_logvar_clamp_keeps_the_loss_finite_for_absurd_inputs():
    config = tiny_config(logvar_clamp=5.0)
    model = PathwayVAEModel(config).train()
    batch = make_batch()
    inputs = {"edge_index": batch.edge_index, "batch": batch.batch, "neg_edge_index": fixed_negatives(batch)}
    for bias in (1e4, -1e4):  # unclamped, exp(+-1e4) would be inf / 0 and the KL inf
        with torch.no_grad():
            model.encoder.logvar_head.bias.fill_(bias)
        output = model(x=batch.x, **inputs)
        assert torch.equal(output.node_logvar, torch.full_like(output.node_logvar, 5.0 if bias > 0 else -5.0))
        assert torch.isfinite(output.loss) and torch.isfinite(output.kl) and torch.isfinite(output.z).all()
        output.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()
    output = model(x=batch.x * 1e6, **inputs)  # absurd but finite features
    assert output.node_logvar.abs().max() <= 5.0 and torch.isfinite(output.loss)


# ----------------------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------------------
def test_kl_weight_follows_the_annealing_schedule():
    config = PathwayVAEConfig(kl_weight_max=2.0, kl_warmup_steps=200)
    assert [config.kl_weight_at(s) for s in (0, 100, 200, 1000)] == [0.0, 1.0, 2.0, 2.0]
    assert config.kl_weight_at(None) == 2.0 and isinstance(config.kl_weight_at(50), float)
    delayed = PathwayVAEConfig(kl_weight_max=1.0, kl_warmup_steps=100, kl_start_step=50)
    assert [delayed.kl_weight_at(s) for s in (0, 50, 100, 150, 151)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    constant = PathwayVAEConfig(kl_weight_max=0.3, kl_warmup_steps=0)
    assert [constant.kl_weight_at(s) for s in (0, 7, 10_000)] == [0.3, 0.3, 0.3]
    with pytest.raises(ValueError, match="training_step: expected a non-negative integer"):
        config.kl_weight_at(1.5)


def test_config_defaults_and_derived_size():
    config = PathwayVAEConfig()
    assert (config.encoder_type, config.hidden_size, config.latent_size, config.num_layers) == ("transformer", 64, 16, 2)
    assert config.node_feature_size == len(config.node_feature_names)
    assert "node_feature_size" not in config.to_dict()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hiden_size": 64}, r"unknown key\(s\) \['hiden_size'\]"),
        ({"encoder_type": "gat"}, r"encoder_type: expected one of \['transformer', 'gps'\], got 'gat'"),
        ({"encoder_type": "gps", "hidden_size": 10, "num_heads": 4}, "divisible by num_heads=4, got hidden_size=10"),
        ({"feature_mean": [0.0] * 13}, "feature_mean and feature_std: expected both or neither"),
        ({"feature_mean": [0.0] * 2, "feature_std": [1.0] * 2}, "feature_mean: expected one value per node feature, 13"),
        ({"feature_mean": [0.0] * 13, "feature_std": [1.0] * 12 + [0.0]}, r"non-positive std for \['compartment_other'\]"),
        ({"node_feature_names": []}, "expected at least one node feature"),
        ({"logvar_clamp": 100.0}, r"logvar_clamp: expected a value in \(0, 80.0\]"),
        ({"negative_sampling_ratio": 0.0}, "negative_sampling_ratio: expected a positive value"),
        ({"kl_warmup_steps": -1}, "kl_warmup_steps must be an integer >= 0"),
        ({"dropout": 1.0}, r"dropout: expected a value in \[0, 1\)"),
        ({"kl_weight_max": -0.1}, "kl_weight_max: expected a weight >= 0"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PathwayVAEConfig(**kwargs)


def test_config_from_schema():
    schema = {
        "kind": "metabolic_graphs",
        "node_feature_names": FEATURES,
        "feature_mean": [1.0, 2.0, 3.0, 4.0],
        "feature_std": [1.0, 1.0, 2.0, 0.5],
        "seed": 0,
    }
    config = PathwayVAEConfig.from_schema(schema, hidden_size=16, encoder_type="gps")
    assert config.node_feature_names == FEATURES and config.feature_std == [1.0, 1.0, 2.0, 0.5]
    assert (config.hidden_size, config.encoder_type) == (16, "gps")
    as_object = PathwayVAEConfig.from_schema(SimpleNamespace(**{k: v for k, v in schema.items() if k != "kind"}))
    assert as_object.feature_mean == schema["feature_mean"]
    with pytest.raises(ValueError, match="come from the dataset schema"):
        PathwayVAEConfig.from_schema(schema, feature_mean=[0.0] * 4)
    with pytest.raises(ValueError, match="expected a 'metabolic_graphs' dataset schema, got one of kind 'climate'"):
        PathwayVAEConfig.from_schema(dict(schema, kind="climate"))
    with pytest.raises(ValueError, match=r"got one without \['feature_std'\]"):
        PathwayVAEConfig.from_schema({k: v for k, v in schema.items() if k != "feature_std"})
