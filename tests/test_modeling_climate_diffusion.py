"""Climate diffusion denoiser: common model checks (mixin) for (V, Y, X) and (V, Z, Y, X) samples, config, errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from astrobio_hf import ClimateDiffusionConfig, ClimateDiffusionModel, ClimateDiffusionOutput

try:
    from .model_mixin import ModelTesterMixin
except ImportError:  # tests/ is not a package
    from model_mixin import ModelTesterMixin


LAT = [-90.0 + 180.0 / 8 * (i + 0.5) for i in range(8)]
LON = [360.0 / 16 * i for i in range(16)]


def tiny_config(levels=(0.0,), **overrides) -> ClimateDiffusionConfig:
    """V=3 (T, p, rho) on an 8 x 16 grid, 1 or more levels, block_out_channels (16, 32), 1 layer, no attention."""
    levels = list(levels)
    kwargs = dict(
        variable_names=["T", "p", "rho"],
        variable_units=["K", "Pa", "kg m-3"],
        level_values=levels,
        lat_values=LAT,
        lon_values=LON,
        planet_param_names=["stellar_flux", "co2_ppm"],
        planet_param_mean=[1361.0, 400.0],
        planet_param_std=[100.0, 50.0],
        num_class_labels=3,
        norm_mean=[[280.0] * len(levels), [1.0e5] * len(levels), [1.2] * len(levels)],
        norm_std=[[10.0] * len(levels), [500.0] * len(levels), [0.01] * len(levels)],
        block_out_channels=[16, 32],
        layers_per_block=1,
        norm_num_groups=8,
        prediction_type="v_prediction",
    )
    kwargs.update(overrides)
    return ClimateDiffusionConfig(**kwargs)


def tiny_inputs(config: ClimateDiffusionConfig, batch_size: int = 3, seed: int = 0) -> dict:
    """Diffusion inputs: a noisy normalised sample, per-example timesteps, physical planet parameters, labels, a
    condition mask that keeps some examples and drops others, a target and per-example loss weights."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, *config.sample_shape)
    planet = torch.tensor(config.planet_param_mean) + torch.tensor(config.planet_param_std) * torch.randn(
        batch_size, config.num_planet_params, generator=generator
    )
    return {
        "sample": torch.randn(shape, generator=generator),
        "timestep": torch.randint(0, 1000, (batch_size,), generator=generator),
        "planet_params": planet,
        "class_labels": torch.arange(batch_size) % config.num_class_labels,
        "condition_mask": torch.arange(batch_size) % 2 == 0,  # keep, drop, keep, ...
        "target": torch.randn(shape, generator=generator),
        "loss_weights": torch.rand(batch_size, generator=generator) + 0.5,
    }


class _DiffusionMixinAdaptations(ModelTesterMixin):
    """The common mixin, with the gradient-checkpointing check adapted to the backbone: the checkpointed layers of a
    diffusers `UNet2DModel` are its down/mid/up blocks (a `gradient_checkpointing` flag that transformers sets), not
    transformers `GradientCheckpointingLayer`s."""

    config_class = ClimateDiffusionConfig
    model_class = ClimateDiffusionModel

    def expected_output_shapes(self, config, inputs):
        return {"sample": tuple(inputs["sample"].shape)}

    def test_gradient_checkpointing_equivalence(self):
        config, inputs = self.prepare_config_and_inputs()
        model = self._model(config).train()
        assert not any(isinstance(m, GradientCheckpointingLayer) for m in model.modules())

        def loss_and_grads():
            model.zero_grad(set_to_none=True)
            loss = model(**inputs).loss
            loss.backward()
            return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

        loss_off, grads_off = loss_and_grads()
        model.activation_checkpointing_enable()
        blocks = [m for m in model.unet.modules() if hasattr(m, "gradient_checkpointing")]
        assert len(blocks) >= 3 and all(m.gradient_checkpointing for m in blocks)  # down blocks, mid block, up blocks
        calls = []
        for block in blocks:
            func = block._gradient_checkpointing_func

            def counting(*args, _func=func, **kwargs):
                calls.append(1)
                return _func(*args, **kwargs)

            block._gradient_checkpointing_func = counting
        loss_on, grads_on = loss_and_grads()
        assert len(calls) >= len(blocks), "checkpointing was enabled but never used"
        torch.testing.assert_close(loss_on, loss_off, atol=self.checkpointing_atol, rtol=1e-5)
        assert grads_on.keys() == grads_off.keys()
        for name in grads_off:
            torch.testing.assert_close(grads_on[name], grads_off[name], atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
        model.activation_checkpointing_disable()
        assert not any(m.gradient_checkpointing for m in blocks)


class TestClimateDiffusionModelSingleLevel(_DiffusionMixinAdaptations):
    """Samples (V, Y, X): one level of the datacube, all variables."""

    def prepare_config_and_inputs(self):
        config = tiny_config(levels=(0.0,))
        return config, tiny_inputs(config)


class TestClimateDiffusionModelLevels(_DiffusionMixinAdaptations):
    """Samples (V, Z, Y, X): three levels folded into the channels."""

    def prepare_config_and_inputs(self):
        config = tiny_config(levels=(0.0, 2000.0, 4000.0))
        return config, tiny_inputs(config)


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------
def test_config_derives_shapes_from_names():
    single, levels = tiny_config(), tiny_config(levels=(0.0, 1000.0))
    assert single.sample_shape == (3, 8, 16) and single.sample_axes == "(B, V, Y, X)" and single.in_channels == 3
    assert levels.sample_shape == (3, 2, 8, 16) and levels.sample_axes == "(B, V, Z, Y, X)" and levels.in_channels == 6
    assert single.time_embed_dim == 64 and single.has_condition
    assert "sample_shape" not in single.to_dict() and "num_variables" not in single.to_dict()


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match="num_variables") as error:
        tiny_config(num_variables=3)
    assert "block_out_channels" in str(error.value)  # lists the valid keys


def test_unknown_key_in_saved_config_is_an_error(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["hidden_size"] = 16
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="hidden_size"):
        ClimateDiffusionConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"block_out_channels": [8, 8, 8, 8, 8]}, ["len(lat_values)=8", "2**(len(block_out_channels)-1)=16"]),
        ({"lon_values": [360.0 / 12 * i for i in range(12)], "block_out_channels": [8, 8, 8, 8]},
         ["len(lon_values)=12", "2**(len(block_out_channels)-1)=8"]),
        ({"block_out_channels": [12, 32]}, ["block_out_channels=[12, 32]", "norm_num_groups=8"]),
        ({"attention_blocks": [True]}, ["attention_blocks", "block_out_channels"]),
        ({"attention_blocks": [False, True], "attention_head_dim": 5}, ["attention_head_dim=5", "[32]"]),
        ({"prediction_type": "noise"}, ["prediction_type", "v_prediction"]),
        ({"condition_dropout": 1.0}, ["condition_dropout", "[0, 1)"]),
        ({"planet_param_names": [], "planet_param_mean": None, "planet_param_std": None, "num_class_labels": 0,
          "condition_dropout": 0.2}, ["condition_dropout=0.2", "num_class_labels=0"]),
        ({"norm_mean": [[0.0, 0.0]] * 3, "norm_std": [[1.0, 1.0]] * 3}, ["norm_mean['T']", "expected 1", "got 2"]),
        ({"lon_values": [10.0 * i for i in range(16)]}, ["lon_values", "360"]),
    ],
)
def test_invalid_combinations_name_both_values(overrides, names):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    for name in names:
        assert name in str(error.value), error.value


def test_from_schema_picks_the_generated_levels(tmp_path):
    from astrobio_hf.data.synth import synthesize_planets

    schema = synthesize_planets(tmp_path / "planets", n_planets=6, n_climate_steps=4, n_levels=3, n_lat=8, n_lon=16, seed=2)
    kw = dict(block_out_channels=[16, 32], layers_per_block=1)
    single = ClimateDiffusionConfig.from_schema(schema, level_indices=[0], **kw)
    assert single.sample_shape == (len(schema.variable_names), len(schema.lat_values), len(schema.lon_values))
    assert single.norm_std == [[row[0]] for row in schema.norm_std]
    assert single.num_class_labels == (len(schema.geological_time_values) if len(schema.geological_time_values) > 1 else 0)
    levels = ClimateDiffusionConfig.from_schema(schema, level_indices=[0, 2], num_class_labels=0, **kw)
    assert levels.level_values == [schema.level_values[0], schema.level_values[2]] and levels.num_class_labels == 0
    assert levels.norm_mean == [[row[0], row[2]] for row in schema.norm_mean]
    with pytest.raises(ValueError, match="level_indices"):
        ClimateDiffusionConfig.from_schema(schema, level_indices=[len(schema.level_values)], **kw)
    with pytest.raises(ValueError, match="variable_names"):
        ClimateDiffusionConfig.from_schema(schema, variable_names=["T"], **kw)


# ---------------------------------------------------------------------------------------------------------------
# Forward contract and errors
# ---------------------------------------------------------------------------------------------------------------
def _model(config=None, seed=0):
    torch.manual_seed(seed)
    return ClimateDiffusionModel(config or tiny_config()).eval()


@pytest.mark.parametrize(
    ("levels", "bad_shape", "axes"),
    [
        ((0.0,), (2, 3, 8, 15), "(B, V, Y, X) with V=3, Y=8, X=16"),
        ((0.0,), (2, 4, 8, 16), "(B, V, Y, X) with V=3, Y=8, X=16"),
        ((0.0,), (2, 3, 1, 8, 16), "(B, V, Y, X) with V=3, Y=8, X=16"),
        ((0.0, 1000.0), (2, 3, 8, 16), "(B, V, Z, Y, X) with V=3, Z=2, Y=8, X=16"),
        ((0.0, 1000.0), (2, 3, 3, 8, 16), "(B, V, Z, Y, X) with V=3, Z=2, Y=8, X=16"),
    ],
)
def test_wrong_shaped_sample_names_the_axes(levels, bad_shape, axes):
    config = tiny_config(levels=levels)
    model = _model(config)
    inputs = tiny_inputs(config, batch_size=2)
    inputs["sample"] = torch.randn(bad_shape)
    with pytest.raises(ValueError) as error:
        model(**inputs)
    message = str(error.value)
    assert axes in message and f"got {bad_shape}" in message and "['T', 'p', 'rho']" in message, message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("planet_params", torch.zeros(2, 3), "planet_params: expected (B, P) with B=2, P=2"),
        ("planet_params", None, "planet_params: expected (B, P)"),
        ("class_labels", torch.tensor([0, 3]), "values in [0, 3)"),
        ("class_labels", torch.tensor([0.0, 1.0]), "integer tensor"),
        ("class_labels", None, "class_labels: expected"),
        ("condition_mask", torch.tensor([1, 0]), "condition_mask: expected a bool tensor"),
        ("timestep", torch.zeros(3), "timestep: expected"),
        ("loss_weights", torch.ones(3), "loss_weights: expected"),
        ("target", torch.zeros(2, 3, 8, 8), "target: expected (B, V, Y, X)"),
    ],
)
def test_wrong_condition_inputs_are_clear_errors(key, value, expected):
    config = tiny_config()
    model = _model(config)
    inputs = dict(tiny_inputs(config, batch_size=2), **{key: value})
    with pytest.raises(ValueError) as error:
        model(**inputs)
    assert expected in str(error.value) and "got" in str(error.value), error.value


def test_dropped_condition_uses_the_null_embedding():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config, batch_size=2)
    inputs.pop("target"), inputs.pop("loss_weights")
    dropped = dict(inputs, condition_mask=torch.tensor([False, False]))
    other = dict(dropped, planet_params=inputs["planet_params"] * 2, class_labels=torch.tensor([2, 2]))
    with torch.no_grad():
        a, b, kept = model(**dropped).sample, model(**other).sample, model(**dict(inputs, condition_mask=None)).sample
    torch.testing.assert_close(a, b)  # the condition does not reach the network when dropped
    assert not torch.allclose(a, kept)


def test_loss_is_the_weighted_mean_squared_error():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    with torch.no_grad():
        output = model(**inputs)
    assert isinstance(output, ClimateDiffusionOutput)
    per_example = (output.sample - inputs["target"]).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(output.loss, (per_example * inputs["loss_weights"]).mean())


def test_normalize_denormalize_round_trip_per_variable_and_level():
    config = tiny_config(levels=(0.0, 1000.0), norm_mean=[[280.0, 270.0], [1e5, 9e4], [1.2, 1.1]],
                         norm_std=[[10.0, 8.0], [500.0, 400.0], [0.01, 0.02]])
    model = _model(config)
    fields = torch.tensor(config.norm_mean).reshape(1, 3, 2, 1, 1) + torch.zeros(2, 3, 2, 8, 16)
    torch.testing.assert_close(model.normalize(fields), torch.zeros_like(fields))
    noise = torch.randn(2, 3, 2, 8, 16)
    torch.testing.assert_close(model.normalize(model.denormalize(noise)), noise, atol=1e-4, rtol=1e-4)
    assert torch.allclose(model.denormalize(torch.ones_like(fields))[:, 1, 1], torch.full((2, 8, 16), 9e4 + 400.0))


@pytest.mark.parametrize("periodic", [True, False])
def test_longitude_is_periodic(periodic):
    """Shifting the input by the coarsest cell (2 columns with one downsampling) in longitude shifts the output by the
    same amount when the convolutions are circular in X; zero padding breaks this at the edges."""
    config = tiny_config(periodic_longitude=periodic)
    model = _model(config)
    inputs = tiny_inputs(config, batch_size=2)
    inputs.pop("target"), inputs.pop("loss_weights")
    with torch.no_grad():
        out = model(**inputs).sample
        shifted = model(**dict(inputs, sample=torch.roll(inputs["sample"], 2, dims=-1))).sample
    equivariant = torch.allclose(torch.roll(out, 2, dims=-1), shifted, atol=1e-5)
    assert equivariant is periodic


def test_attention_blocks_train_and_round_trip(tmp_path):
    """Attention at the coarse level and in the middle block. (Not in the mixin: the key bias of softmax attention
    gets no gradient by construction, softmax being invariant to a shift shared by all keys.)"""
    config = tiny_config(levels=(0.0, 2000.0), attention_blocks=[False, True], mid_block_attention=True)
    model = _model(config).train()
    assert sum("attentions" in name for name, _ in model.named_parameters()) > 0
    inputs = tiny_inputs(config)
    output = model(**inputs)
    output.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "to_k.bias" not in n)
    model.eval().save_pretrained(tmp_path)
    loaded = ClimateDiffusionModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).sample, loaded(**inputs).sample)


def test_unconditional_model_takes_no_condition():
    config = tiny_config(planet_param_names=[], planet_param_mean=None, planet_param_std=None, num_class_labels=0)
    assert config.condition_dropout == 0.0 and tiny_config().condition_dropout == 0.1
    model = _model(config)
    assert model.condition_embedding is None and model.unet.class_embedding is None
    sample = torch.randn(2, *config.sample_shape)
    with torch.no_grad():
        assert model(sample=sample, timestep=10).sample.shape == sample.shape
    with pytest.raises(ValueError, match="condition_mask: expected None"):
        model(sample=sample, timestep=10, condition_mask=torch.tensor([True, False]))
