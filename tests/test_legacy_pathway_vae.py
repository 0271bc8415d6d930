"""Legacy pathway VAE: common model checks (mixin), config errors, and the conversion of the legacy
`trained_pathway_vae.pth` (exact forward pass, round trip, edge AUROC / MSE on the legacy graphs).

The legacy files live in `../shared/reference` (the repository root's sibling) and are never copied into the
repository: every conversion writes to `tmp_path`. Without them the conversion tests are skipped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from astrobio_hf.hub.convert_legacy import (
    binary_auroc,
    convert_legacy_pathway_vae,
    evaluate_pathway_vae,
    file_sha256,
    legacy_pathway_vae_from_state_dict,
    load_legacy_pathway_graphs,
)
from astrobio_hf.models.legacy_pathway_vae import (
    LegacyPathwayVAEConfig,
    LegacyPathwayVAEModel,
    LegacyPathwayVAEOutput,
)

try:
    from .model_mixin import ModelTesterMixin
except ImportError:  # tests/ is not a package
    from model_mixin import ModelTesterMixin

# Registration normally done by `import astrobio_hf`; repeated here (exist_ok) so the Auto checks do not depend on it.
AutoConfig.register("legacy_pathway_vae", LegacyPathwayVAEConfig, exist_ok=True)
AutoModel.register(LegacyPathwayVAEConfig, LegacyPathwayVAEModel, exist_ok=True)

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
LEGACY_WEIGHTS = REFERENCE_DIR / "trained_pathway_vae.pth"
LEGACY_GRAPHS = REFERENCE_DIR / "legacy_pathway_graphs.npz"

needs_legacy_files = pytest.mark.skipif(
    not (LEGACY_WEIGHTS.is_file() and LEGACY_GRAPHS.is_file()),
    reason=f"legacy reference files not found in {REFERENCE_DIR} (trained_pathway_vae.pth, legacy_pathway_graphs.npz); "
    "they are not shipped with the repository",
)


def tiny_config(**overrides) -> LegacyPathwayVAEConfig:
    kwargs = {"max_nodes": 4, "hidden_size": 8, "latent_size": 3, "dropout": 0.1, "initializer_range": 0.3}
    kwargs.update(overrides)
    return LegacyPathwayVAEConfig(**kwargs)


def random_adjacency(batch_size: int, max_nodes: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch_size, max_nodes, max_nodes, generator=generator) < 0.3).float()


class TestLegacyPathwayVAECommon(ModelTesterMixin):
    config_class = LegacyPathwayVAEConfig
    model_class = LegacyPathwayVAEModel

    def prepare_config_and_inputs(self):
        config = tiny_config()
        adjacency = random_adjacency(5, config.max_nodes)
        return config, {"adjacency": adjacency, "labels": adjacency}

    def expected_output_shapes(self, config, inputs):
        b, n, latent = inputs["adjacency"].shape[0], config.max_nodes, config.latent_size
        return {"edge_probabilities": (b, n, n), "mean": (b, latent), "log_variance": (b, latent)}


# ----------------------------------------------------------------------------------------------------------------
# config and model behaviour
# ----------------------------------------------------------------------------------------------------------------
def test_config_defaults_match_the_legacy_model():
    config = LegacyPathwayVAEConfig()
    assert (config.max_nodes, config.hidden_size, config.latent_size, config.input_size) == (6, 64, 32, 36)
    assert "input_size" not in config.to_dict()  # derived, never stored


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hiden_size": 64}, r"unknown key\(s\) \['hiden_size'\]"),
        ({"max_nodes": 0}, "max_nodes must be an integer >= 1"),
        ({"latent_size": 2.5}, "latent_size must be an integer >= 1"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LegacyPathwayVAEConfig(**kwargs)


def test_flat_and_square_inputs_agree_and_decoding_is_deterministic():
    config = tiny_config()
    model = LegacyPathwayVAEModel(config).eval()
    adjacency = random_adjacency(3, config.max_nodes)
    with torch.no_grad():
        square = model(adjacency)
        flat = model(adjacency.reshape(3, -1))
        again = model(adjacency.to(torch.uint8))
    for name in ("edge_probabilities", "mean", "log_variance"):
        assert torch.equal(square[name], flat[name]) and torch.equal(square[name], again[name])
    assert square.loss is None


def test_sampling_uses_the_generator_and_labels_give_both_loss_terms():
    config = tiny_config()
    model = LegacyPathwayVAEModel(config).eval()
    adjacency = random_adjacency(3, config.max_nodes)
    with torch.no_grad():
        first = model(adjacency, sample=True, generator=torch.Generator().manual_seed(3))
        second = model(adjacency, sample=True, generator=torch.Generator().manual_seed(3))
        mean_decoded = model(adjacency, labels=adjacency)
    assert torch.equal(first.edge_probabilities, second.edge_probabilities)
    assert not torch.equal(first.edge_probabilities, mean_decoded.edge_probabilities)
    torch.testing.assert_close(mean_decoded.loss, mean_decoded.reconstruction_loss + mean_decoded.kl_loss)
    assert mean_decoded.kl_loss >= 0


def test_wrong_labels_batch_is_a_clear_error():
    config = tiny_config()
    model = LegacyPathwayVAEModel(config)
    adjacency = random_adjacency(3, config.max_nodes)
    with pytest.raises(ValueError, match=r"labels: expected batch size B=3 .*got \(2, 4, 4\)"):
        model(adjacency, labels=adjacency[:2])
    with pytest.raises(ValueError, match=r"adjacency: expected shape \(B, 4, 4\) or \(B, 16\).*got \(3, 5, 5\)"):
        model(torch.zeros(3, 5, 5))



def test_floating_adjacency_of_another_dtype_is_a_clear_error():
    config = tiny_config()
    model = LegacyPathwayVAEModel(config).eval()
    adjacency = random_adjacency(3, config.max_nodes)
    for dtype in (torch.float64, torch.float16):
        with pytest.raises(ValueError, match=rf"adjacency: expected dtype torch.float32 \(the model's\).*got {dtype}"):
            model(adjacency.to(dtype), labels=adjacency)
        with pytest.raises(ValueError, match=rf"adjacency: expected dtype torch.float32 \(the model's\).*got {dtype}"):
            model.encode(adjacency.to(dtype))
    # 0/1 integer and bool adjacency keep being read as the documented cast to the model's dtype
    expected = model(adjacency).edge_probabilities
    for dtype in (torch.long, torch.bool):
        torch.testing.assert_close(model(adjacency.to(dtype)).edge_probabilities, expected, rtol=0, atol=0)


def test_binary_auroc_matches_known_values():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    targets = torch.tensor([0, 0, 1, 1])
    assert binary_auroc(scores, targets) == pytest.approx(0.75)
    assert binary_auroc(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0, 1, 1])) == pytest.approx(0.5)  # ties
    with pytest.raises(ValueError, match="both classes"):
        binary_auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))


def test_conversion_names_missing_and_unexpected_keys():
    state_dict = LegacyPathwayVAEModel(LegacyPathwayVAEConfig()).state_dict()
    state_dict["encoder.7.weight"] = state_dict.pop("decoder.5.weight")
    with pytest.raises(ValueError, match=r"missing keys \['decoder.5.weight'\], unexpected keys \['encoder.7.weight'\]"):
        legacy_pathway_vae_from_state_dict(state_dict)
    state_dict = LegacyPathwayVAEModel(LegacyPathwayVAEConfig()).state_dict()
    state_dict["decoder.2.weight"] = torch.zeros(64, 63)
    with pytest.raises(ValueError, match=r"decoder.2.weight: expected \(64, 64\), got \(64, 63\)"):
        legacy_pathway_vae_from_state_dict(state_dict)


# ----------------------------------------------------------------------------------------------------------------
# the legacy weights
# ----------------------------------------------------------------------------------------------------------------
def legacy_reference_forward(state_dict: dict[str, torch.Tensor], adjacency: torch.Tensor):
    """The legacy network rebuilt independently as plain nn.Sequentials from the state dict (eval mode)."""
    encoder = nn.Sequential(
        nn.Linear(36, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)
    )
    decoder = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 36)
    )
    holder = nn.Module()
    holder.encoder, holder.decoder = encoder, decoder
    holder.load_state_dict(state_dict, strict=True)
    holder.eval()
    with torch.no_grad():
        hidden = encoder(adjacency.reshape(-1, 36))
        mean, log_variance = hidden[:, :32], hidden[:, 32:]
        probabilities = torch.sigmoid(decoder(mean)).reshape(-1, 6, 6)
    return probabilities, mean, log_variance


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    if not (LEGACY_WEIGHTS.is_file() and LEGACY_GRAPHS.is_file()):
        pytest.skip(f"legacy reference files not found in {REFERENCE_DIR}")
    return convert_legacy_pathway_vae(LEGACY_WEIGHTS, tmp_path_factory.mktemp("legacy_pathway_vae") / "converted")


@pytest.fixture(scope="module")
def legacy_adjacency():
    if not LEGACY_GRAPHS.is_file():
        pytest.skip(f"legacy reference files not found in {REFERENCE_DIR}")
    return torch.as_tensor(load_legacy_pathway_graphs(LEGACY_GRAPHS)["adjacency"]).float()


@needs_legacy_files
def test_converted_model_reproduces_the_legacy_forward_pass_exactly(converted_dir, legacy_adjacency):
    state_dict = torch.load(LEGACY_WEIGHTS, weights_only=True, map_location="cpu")
    probabilities, mean, log_variance = legacy_reference_forward(state_dict, legacy_adjacency)
    model = LegacyPathwayVAEModel.from_pretrained(converted_dir).eval()
    with torch.no_grad():
        output = model(legacy_adjacency)
    assert isinstance(output, LegacyPathwayVAEOutput)
    assert torch.equal(output.edge_probabilities, probabilities)
    assert torch.equal(output.mean, mean)
    assert torch.equal(output.log_variance, log_variance)
    # the tensors themselves are copied unchanged
    converted = model.state_dict()
    assert sorted(converted) == sorted(state_dict)
    assert all(torch.equal(converted[k], v) for k, v in state_dict.items())


@needs_legacy_files
def test_converted_directory_round_trips_and_loads_through_auto_classes(converted_dir, legacy_adjacency, tmp_path):
    assert sorted(p.name for p in converted_dir.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    model, info = LegacyPathwayVAEModel.from_pretrained(converted_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(AutoConfig.from_pretrained(converted_dir)) is LegacyPathwayVAEConfig
    auto = AutoModel.from_pretrained(converted_dir)
    assert type(auto) is LegacyPathwayVAEModel
    model.save_pretrained(tmp_path / "again")
    again = LegacyPathwayVAEModel.from_pretrained(tmp_path / "again")
    batch = legacy_adjacency[:64]
    with torch.no_grad():
        reference = model.eval()(batch)
        for other in (auto.eval(), again.eval()):
            out = other(batch)
            for name in ("edge_probabilities", "mean", "log_variance"):
                assert torch.equal(out[name], reference[name]), name


@needs_legacy_files
def test_edge_auroc_and_mse_on_the_legacy_graphs(converted_dir, legacy_adjacency):
    from torchmetrics.functional import auroc

    assert legacy_adjacency.shape == (5156, 6, 6)
    model = LegacyPathwayVAEModel.from_pretrained(converted_dir)
    metrics = evaluate_pathway_vae(model, legacy_adjacency)
    assert metrics["edge_auroc"] == pytest.approx(0.949, abs=0.002)
    assert metrics["mse"] == pytest.approx(0.081, abs=0.002)
    assert metrics["zeros_mse"] == pytest.approx(0.110, abs=0.002)
    # the in-house AUROC agrees with torchmetrics
    with torch.no_grad():
        probabilities = model.eval()(legacy_adjacency).edge_probabilities
    expected = auroc(probabilities.flatten(), legacy_adjacency.flatten().long(), task="binary").item()
    assert metrics["edge_auroc"] == pytest.approx(expected, abs=1e-5)


@needs_legacy_files
def test_model_card_states_provenance_sha256_and_metrics(converted_dir):
    card = (converted_dir / "README.md").read_text()
    assert "Converted legacy weights" in card
    assert file_sha256(LEGACY_WEIGHTS) in card
    assert "| edge AUROC | 0.9487 |" in card and "| edge MSE | 0.0809 |" in card
    assert "license: unknown" in card


@needs_legacy_files
def test_missing_legacy_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="legacy weights not found"):
        convert_legacy_pathway_vae(tmp_path / "nope.pth", tmp_path / "out")


def test_legacy_files_are_never_in_the_repository():
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"git is not available to list the repository's files: {err}")
    offending = [
        name for name in listed
        if name.endswith((".pth", ".pt")) or Path(name).name in {"trained_pathway_vae.pth", "legacy_pathway_graphs.npz"}
    ]
    assert not offending, f"legacy weights or data must never be in the repository: {offending}"
