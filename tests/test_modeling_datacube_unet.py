"""Datacube U-Net: common model checks (mixin) + family-specific behaviour, errors and a golden output."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from astrobio_hf import DatacubeForecastOutput, DatacubeUNetConfig, DatacubeUNetForForecast
from astrobio_hf.models.datacube_unet.modeling_datacube_unet import _pad_periodic

try:
    from .model_mixin import ModelTesterMixin, assert_outputs_close
except ImportError:  # tests/ is not a package
    from model_mixin import ModelTesterMixin, assert_outputs_close


GOLDEN_DIR = Path(__file__).parent / "fixtures" / "datacube_unet_golden"

LEVELS = [0.0, 1000.0, 2000.0, 3000.0]
P_MEAN = [1.0e5 * math.exp(-z / 8000.0) for z in LEVELS]


def tiny_config(**overrides) -> DatacubeUNetConfig:
    """V=3 (T, p, rho) on 4 height levels, Tc=2, Tg=2, 8 x 16 grid, base 8 channels, depth 2, physics on."""
    kwargs = dict(
        variable_names=["T", "p", "rho"],
        level_values=LEVELS,
        level_unit="m",
        lat_values=[-90.0 + 180.0 / 8 * (i + 0.5) for i in range(8)],
        lon_values=[360.0 / 16 * i for i in range(16)],
        base_channels=8,
        depth=2,
        norm_groups=4,
        conditioning_channels=16,
        planet_param_names=["stellar_flux", "co2_ppm"],
        context_steps=2,
        geological_steps=2,
        norm_mean=[[280.0 - 6.5e-3 * z for z in LEVELS], P_MEAN, [p / (287.05 * 280.0) for p in P_MEAN]],
        norm_std=[[10.0] * 4, [500.0] * 4, [0.01] * 4],
        planet_param_mean=[1361.0, 400.0],
        planet_param_std=[100.0, 50.0],
        physics_weights={"hydrostatic": 0.1, "ideal_gas": 0.1, "energy_drift": 0.1},
        physics_learnable=True,
    )
    kwargs.update(overrides)
    return DatacubeUNetConfig(**kwargs)


def tiny_inputs(config: DatacubeUNetConfig, batch_size: int = 2, seed: int = 0) -> dict:
    """Physical-unit inputs/labels around the normalisation statistics, planet parameters and constants."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, *config.cube_shape)
    mean = torch.tensor(config.norm_mean).reshape(1, config.num_variables, 1, 1, config.num_levels, 1, 1)
    std = torch.tensor(config.norm_std).reshape(1, config.num_variables, 1, 1, config.num_levels, 1, 1)
    inputs = mean + std * torch.randn(shape, generator=generator)
    labels = mean + std * torch.randn(shape, generator=generator)
    planet = torch.tensor(config.planet_param_mean) + torch.tensor(config.planet_param_std) * torch.randn(
        batch_size, config.num_planet_params, generator=generator
    )
    return {
        "inputs": inputs,
        "planet_params": planet,
        "labels": labels,
        "gravity": torch.linspace(3.7, 9.8, batch_size),
        "gas_constant": torch.full((batch_size,), 287.05),
        "heat_capacity": 1004.6,
        "planet_radius": torch.full((batch_size,), 6.371e6),
    }


class TestDatacubeUNetForForecast(ModelTesterMixin):
    config_class = DatacubeUNetConfig
    model_class = DatacubeUNetForForecast

    def prepare_config_and_inputs(self):
        config = tiny_config()
        return config, tiny_inputs(config)

    def expected_output_shapes(self, config, inputs):
        cube = tuple(inputs["inputs"].shape)
        return {"mean": cube, "log_variance": cube, "nll": (), "physics_loss": ()}


# ---------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------
def test_config_derives_counts_from_names():
    config = tiny_config()
    assert config.num_variables == 3 and config.num_planet_params == 2
    assert config.cube_shape == (3, 2, 2, 4, 8, 16)
    serialised = config.to_dict()
    assert "num_variables" not in serialised and "num_planet_params" not in serialised


def test_from_schema_takes_data_fields_from_the_schema():
    from types import SimpleNamespace

    reference = tiny_config()
    fields = ("variable_names", "level_values", "level_unit", "lat_values", "lon_values", "planet_param_names")
    fields += ("norm_mean", "norm_std", "planet_param_mean", "planet_param_std")
    schema = SimpleNamespace(**{k: getattr(reference, k) for k in fields}, geological_time_values=[0.0, 1.0e6])
    config = DatacubeUNetConfig.from_schema(schema, context_steps=2, base_channels=8, norm_groups=4)
    assert config.cube_shape == reference.cube_shape and config.norm_std == reference.norm_std
    with pytest.raises(ValueError, match="variable_names"):
        DatacubeUNetConfig.from_schema(schema, variable_names=["T"])
    with pytest.raises(ValueError, match="dropout"):
        DatacubeUNetConfig.from_schema(schema, dropout=0.1)


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match="num_variables") as error:
        tiny_config(num_variables=3)
    assert "variable_names" in str(error.value)  # lists the valid keys


def test_unknown_key_in_saved_config_is_an_error(tmp_path):
    import json

    config = tiny_config()
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["hidden_size"] = 16
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="hidden_size"):
        DatacubeUNetConfig.from_pretrained(tmp_path)


def test_standard_pretrained_keys_are_accepted():
    config = tiny_config()
    extra = {
        "transformers_version": "5.23.0",
        "architectures": ["DatacubeUNetForForecast"],
        "model_type": "datacube_unet",
        "dtype": "float32",
    }
    rebuilt = DatacubeUNetConfig.from_dict({**config.to_dict(), **extra})
    assert rebuilt.variable_names == config.variable_names


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"norm_mean": [[0.0] * 4] * 2, "norm_std": [[1.0] * 4] * 2}, ["norm_mean", "3", "2"]),
        ({"norm_mean": [[0.0] * 4] * 3, "norm_std": [[1.0] * 3] * 3}, ["norm_std", "4", "3"]),
        ({"norm_std": None}, ["norm_mean", "norm_std"]),
        ({"planet_param_mean": [1.0], "planet_param_std": [1.0]}, ["planet_param_mean", "2", "1"]),
        ({"norm_std": [[10.0] * 4, [0.0] * 4, [1.0] * 4]}, ["norm_std", "positive"]),
    ],
)
def test_mismatched_normalisation_statistics(overrides, names):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    for name in names:
        assert name in str(error.value), error.value


def test_unknown_physics_weight_name_lists_known_ones():
    with pytest.raises(ValueError, match="entropy") as error:
        tiny_config(physics_weights={"entropy": 1.0})
    assert "hydrostatic" in str(error.value) and "mass_continuity" in str(error.value)


def test_physics_weight_whose_variables_are_missing():
    with pytest.raises(ValueError, match="mass_continuity") as error:
        tiny_config(physics_weights={"mass_continuity": 1.0})
    assert "'u'" in str(error.value) and "'v'" in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"base_channels": 6, "norm_groups": 4}, ["base_channels=6", "norm_groups=4"]),
        ({"physics_weights": {}, "physics_learnable": True}, ["physics_learnable", "physics_weights"]),
        ({"physics_weights": {"hydrostatic": 0.0}}, ["physics_learnable", "hydrostatic"]),
        ({"lon_values": [10.0 * i for i in range(15)] + [155.0]}, ["lon_values", "uniform"]),
        ({"lon_values": [30.0 * i for i in range(16)]}, ["lon_values", "360"]),
        ({"lat_values": [-95.0 + 10 * i for i in range(8)]}, ["lat_values", "[-90, 90]"]),
        ({"level_unit": "hPa"}, ["level_unit", "hPa"]),
        ({"variable_names": ["T", "T", "p"]}, ["variable_names", "duplicates"]),
        ({"context_steps": 0}, ["context_steps"]),
    ],
)
def test_invalid_combinations_name_both_values(overrides, names):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    for name in names:
        assert name in str(error.value), error.value


# ---------------------------------------------------------------------------------------------------------------
# Forward contract and errors
# ---------------------------------------------------------------------------------------------------------------
def _model(config=None, seed=0):
    torch.manual_seed(seed)
    return DatacubeUNetForForecast(config or tiny_config()).eval()


def test_wrong_variable_count_names_every_axis():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    inputs["inputs"] = inputs["inputs"][:, :2]
    with pytest.raises(ValueError) as error:
        model(**inputs)
    message = str(error.value)
    assert "expected (B, V, Tc, Tg, Z, Y, X) with V=3" in message
    for part in ("Tc=2", "Tg=2", "Z=4", "Y=8", "X=16", "got (2, 2, 2, 2, 4, 8, 16)"):
        assert part in message, message


def test_labels_and_planet_inputs_are_validated():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    with pytest.raises(ValueError, match="labels"):
        model(**dict(inputs, labels=inputs["labels"][:1]))
    with pytest.raises(ValueError, match=r"planet_params: expected \(B, P\) with B=2, P=2"):
        model(**dict(inputs, planet_params=inputs["planet_params"][:, :1]))
    with pytest.raises(ValueError, match="planet_params.*got None"):
        model(**dict(inputs, planet_params=None))
    with pytest.raises(ValueError, match="gravity"):
        model(**dict(inputs, gravity=torch.ones(3)))
    with pytest.raises(ValueError, match="dtype"):
        model(**dict(inputs, inputs=inputs["inputs"].double()))
    with pytest.raises(TypeError):  # no catch-all **kwargs: a misspelt input is not silently ignored
        model(**inputs, planet_parameters=inputs["planet_params"])


def test_base_model_returns_decoder_features():
    config = tiny_config()
    model = _model(config).unet
    inputs = tiny_inputs(config)
    with torch.no_grad():
        out = model(inputs["inputs"], planet_params=inputs["planet_params"])
    assert out.last_hidden_state.shape == (2, config.base_channels, 2, 4, 8, 16)  # (B, C0, Tg, Z, Y, X)
    assert out.normalized_inputs.shape == inputs["inputs"].shape


def test_output_is_model_output_with_loss_decomposition():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    with torch.no_grad():
        out = model(**inputs)
    assert isinstance(out, DatacubeForecastOutput)
    assert set(out.physics_terms) == {"hydrostatic", "ideal_gas", "energy_drift"}
    torch.testing.assert_close(out.loss, out.nll + out.physics_loss)

    # the NLL is the Gaussian NLL in normalised units, recomputed from the physical mean / log-variance
    mean = torch.tensor(config.norm_mean).reshape(1, 3, 1, 1, 4, 1, 1)
    std = torch.tensor(config.norm_std).reshape(1, 3, 1, 1, 4, 1, 1)
    y = (inputs["labels"] - mean) / std
    mu = (out.mean - mean) / std
    log_variance = out.log_variance - 2 * torch.log(std)
    expected = (0.5 * ((y - mu) ** 2 * torch.exp(-log_variance) + log_variance)).mean()
    torch.testing.assert_close(out.nll, expected, rtol=1e-4, atol=1e-5)

    # without labels: mean and log-variance only
    with torch.no_grad():
        forecast = model(**{k: v for k, v in inputs.items() if k != "labels"})
    assert forecast.loss is None and forecast.nll is None
    torch.testing.assert_close(forecast.mean, out.mean)


def test_starts_at_persistence_when_the_head_is_zero():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    with torch.no_grad():
        model.head.conv.weight.zero_()
        model.head.conv.bias.zero_()
        out = model(**inputs)
    last = inputs["inputs"][:, :, -1:].expand_as(out.mean)
    torch.testing.assert_close(out.mean, last, rtol=1e-5, atol=1e-4)


def test_planet_constants_float_and_per_sample_tensor_agree():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    with torch.no_grad():
        as_tensor = model(**dict(inputs, gravity=torch.full((2,), 9.80665), heat_capacity=torch.full((2,), 1004.6)))
        as_float = model(**dict(inputs, gravity=9.80665, heat_capacity=1004.6, gas_constant=None, planet_radius=None))
        mars = model(**dict(inputs, gravity=torch.full((2,), 3.71)))
    torch.testing.assert_close(as_tensor.physics_loss, as_float.physics_loss)
    assert not torch.allclose(as_tensor.physics_loss, mars.physics_loss)


def test_predict_variance_false_is_mse_with_unit_variance():
    config = tiny_config(predict_variance=False, physics_weights={}, physics_learnable=False)
    model = _model(config)
    inputs = tiny_inputs(config)
    with torch.no_grad():
        out = model(**inputs)
    assert out.log_variance is None
    assert out.physics_terms == {} and float(out.physics_loss) == 0.0
    assert model.head.conv.out_channels == config.num_variables * config.context_steps
    std = torch.tensor(config.norm_std).reshape(1, 3, 1, 1, 4, 1, 1)
    expected = 0.5 * (((inputs["labels"] - out.mean) / std) ** 2).mean()
    torch.testing.assert_close(out.nll, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss, out.nll)


def test_film_conditioning_changes_the_output():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    with torch.no_grad():
        # make FiLM strong enough to matter at initialisation scale
        for block in [model.unet.middle_block, *model.unet.encoder_blocks, *model.unet.decoder_blocks]:
            block.film.weight.mul_(50.0)
        base = model(**inputs).mean
        other = model(**dict(inputs, planet_params=inputs["planet_params"] * 1.5)).mean
    assert (base - other).abs().max() > 1e-3

    unconditioned = _model(tiny_config(use_film=False))
    with torch.no_grad():
        a = unconditioned(**inputs).mean
        b = unconditioned(**dict(inputs, planet_params=inputs["planet_params"] * 1.5)).mean
    torch.testing.assert_close(a, b)


def test_padding_is_circular_in_longitude_only():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 2, 3, 4, 5)
    padded = _pad_periodic(x, "replicate")
    assert padded.shape == (1, 2, 5, 6, 7)
    inner = padded[:, :, 1:-1, 1:-1]
    torch.testing.assert_close(inner[..., 0], x[..., -1])  # west pad = east edge
    torch.testing.assert_close(inner[..., -1], x[..., 0])
    torch.testing.assert_close(padded[:, :, 1:-1, 0, 1:-1], x[:, :, :, 0])  # replicate in latitude
    zeros = _pad_periodic(x, "zeros")
    assert zeros[:, :, 0].abs().sum() == 0 and zeros[:, :, :, 0].abs().sum() == 0


@pytest.mark.parametrize("shift", [4, 8])  # multiples of 2**depth: the strided stages see the same phase
def test_longitude_roll_gives_rolled_output(shift):
    config = tiny_config(physics_weights={}, physics_learnable=False)
    model = _model(config)
    inputs = tiny_inputs(config)
    inputs.pop("labels")
    with torch.no_grad():
        out = model(**inputs).mean
        rolled = model(**dict(inputs, inputs=torch.roll(inputs["inputs"], shift, dims=-1))).mean
    torch.testing.assert_close(rolled, torch.roll(out, shift, dims=-1), rtol=1e-5, atol=1e-4)


def test_channels_last_3d_gives_the_same_outputs():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    with torch.no_grad():
        reference = model(**inputs)
        model = model.to(memory_format=torch.channels_last_3d)
        assert model.unet.stem.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        out = model(**inputs)
    assert_outputs_close(reference, out, atol=1e-4, rtol=1e-4)


def test_torch_compile_graph_matches_eager():
    """Dynamo capture + AOT autograd (no C++ codegen, so it is fast on CPU); inductor is in the slow test."""
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # no graph breaks
    with torch.no_grad():
        assert_outputs_close(model(**inputs), compiled(**inputs), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager():
    config = tiny_config()
    model = _model(config)
    inputs = tiny_inputs(config)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert_outputs_close(model(**inputs), compiled(**inputs), atol=1e-4, rtol=1e-4)
    loss = compiled(**inputs).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_learnable_physics_weights_survive_save_and_load(tmp_path):
    config = tiny_config()
    model = _model(config)
    with torch.no_grad():
        model.physics.raw_weights["hydrostatic"].fill_(2.5)
    model.save_pretrained(tmp_path)
    loaded = DatacubeUNetForForecast.from_pretrained(tmp_path)
    assert float(loaded.physics.raw_weights["hydrostatic"].detach()) == 2.5
    torch.testing.assert_close(loaded.physics.levels, torch.tensor(LEVELS, dtype=torch.float64))
    torch.testing.assert_close(loaded.unet.norm_std, torch.tensor(config.norm_std))


# ---------------------------------------------------------------------------------------------------------------
# Golden output from committed tiny weights + inputs (tests/fixtures/make_golden.py)
# ---------------------------------------------------------------------------------------------------------------
def test_golden_outputs():
    model = DatacubeUNetForForecast.from_pretrained(GOLDEN_DIR, dtype=torch.float32).eval()
    tensors = load_file(GOLDEN_DIR / "tensors.safetensors")
    with torch.no_grad():
        out = model(inputs=tensors["inputs"], planet_params=tensors["planet_params"], labels=tensors["labels"])
    torch.testing.assert_close(out.mean, tensors["expected_mean"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.log_variance, tensors["expected_log_variance"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.nll, tensors["expected_nll"], rtol=1e-4, atol=1e-5)


def test_truncated_weights_file_is_one_clear_error(tmp_path):
    """A model.safetensors cut short (a crashed copy, a partial download) names the checkpoint."""
    import shutil

    from transformers import AutoModel

    import astrobio_hf  # noqa: F401

    golden = Path(__file__).parent / "fixtures" / "datacube_unet_golden"
    shutil.copytree(golden, tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.raises(ValueError, match="truncated or corrupted"):
        AutoModel.from_pretrained(tmp_path / "model")


# ---------------------------------------------------------------------------------------------------------------
# Real grids: any size, poles, regional, masks, one level
# ---------------------------------------------------------------------------------------------------------------
def _grid_config(lat, lon, **overrides):
    return tiny_config(lat_values=list(lat), lon_values=list(lon), geological_steps=1, **overrides)


@pytest.mark.parametrize(("n_lat", "n_lon", "depth"), [(13, 30, 2), (19, 36, 2), (9, 20, 3), (1 + 2, 5 * 3, 1)])
def test_any_grid_size_is_padded_and_cropped_back(n_lat, n_lon, depth):
    """Sizes that are not multiples of 2**depth run; the output has the data grid's size (padding cropped)."""
    config = _grid_config(
        [-80.0 + 160.0 / (n_lat - 1) * i for i in range(n_lat)], [360.0 / n_lon * i for i in range(n_lon)], depth=depth
    )
    assert config.padded_shape[0] % 2**depth == 0 and config.padded_shape[1] % 2**depth == 0
    out = _model(config)(**tiny_inputs(config))
    assert out.mean.shape[-2:] == (n_lat, n_lon) and torch.isfinite(out.loss)
    out.loss.backward()


def test_pole_grid_trains_with_finite_physics():
    """Latitudes -90..90 inclusive: area weights and the divergence are finite at the pole rows."""
    lat = [-90.0 + 10.0 * i for i in range(19)]
    config = _grid_config(
        lat, [10.0 * i for i in range(36)],
        variable_names=["T", "p", "rho", "u", "v"],
        norm_mean=tiny_config().norm_mean + [[0.0] * 4, [0.0] * 4], norm_std=tiny_config().norm_std + [[10.0] * 4, [10.0] * 4],
        physics_weights={"hydrostatic": 0.1, "mass_continuity": 0.1, "energy_drift": 0.1},
    )
    model = _model(config).train()
    out = model(**tiny_inputs(config))
    assert all(torch.isfinite(v) for v in out.physics_terms.values()), out.physics_terms
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_regional_grid_does_not_wrap_in_longitude():
    """On a regional grid the first column never sees the last (no circular padding); on a global one it does."""
    regional = _grid_config([30.0 + 2.0 * i for i in range(8)], [-30.0 + 2.5 * i for i in range(16)])
    assert not regional.periodic_lon and tiny_config().periodic_lon
    x = torch.randn(1, 1, 2, 8, 16)
    y = x.clone()
    y[..., -1] += 100.0
    assert torch.equal(_pad_periodic(x, "replicate", periodic=False)[..., :3], _pad_periodic(y, "replicate", periodic=False)[..., :3])
    assert not torch.equal(_pad_periodic(x, "replicate")[..., :1], _pad_periodic(y, "replicate")[..., :1])
    out = _model(regional)(**tiny_inputs(regional))
    assert out.mean.shape[-1] == 16 and torch.isfinite(out.loss)


def test_masked_cells_do_not_change_outputs_or_loss():
    """Whatever the masked cells hold, the forecast at every cell and the loss are identical."""
    config = tiny_config()
    model = _model(config)
    batch = tiny_inputs(config)
    valid = torch.ones_like(batch["inputs"], dtype=torch.bool)
    valid[..., 2:5, 3:9] = False  # a "continent"
    a = dict(batch, inputs_valid=valid, labels_valid=valid)
    b = dict(a, inputs=batch["inputs"].masked_fill(~valid, 1e6), labels=batch["labels"].masked_fill(~valid, -1e6))
    with torch.no_grad():
        out_a, out_b = model(**a), model(**b)
    assert torch.equal(out_a.mean, out_b.mean)
    assert torch.equal(out_a.loss, out_b.loss) and torch.isfinite(out_a.loss)
    # without the mask the same garbage changes everything
    with torch.no_grad():
        out_c = model(**dict(b, inputs_valid=None, labels_valid=None))
    assert not torch.allclose(out_c.mean[valid], out_a.mean[valid])


def test_single_level_skips_vertical_constraints_and_refuses_them_in_the_loss():
    one = dict(level_values=[2.0], norm_mean=[[280.0], [1.0e5], [1.2]], norm_std=[[10.0], [500.0], [0.01]])
    with pytest.raises(ValueError, match=r"physics_weights\['hydrostatic'\].*at least 2 levels, the grid has 1"):
        tiny_config(**one)
    config = tiny_config(**one, physics_weights={"ideal_gas": 0.1}, physics_learnable=False)
    out = _model(config)(**tiny_inputs(config))
    assert set(out.physics_terms) == {"ideal_gas"} and torch.isfinite(out.loss)
    from astrobio_hf.models.datacube_unet import build_physics_constraints

    available = build_physics_constraints(config, weights={}).available()
    assert "hydrostatic" not in available and "lapse_rate" not in available and "ideal_gas" in available


def test_calendar_conditioning_needs_the_year_phase_and_uses_it():
    config = tiny_config(calendar_conditioning=True)
    assert config.conditioning_size == tiny_config().conditioning_size + 2 * config.context_steps
    model = _model(config)
    batch = tiny_inputs(config)
    with pytest.raises(ValueError, match=r"label_phase: expected \(B, Tc\) = \(2, 2\)"):
        model(**batch)
    with torch.no_grad():
        january = model(**batch, label_phase=torch.zeros(2, 2)).mean
        july = model(**batch, label_phase=torch.full((2, 2), 0.5)).mean
    assert not torch.allclose(january, july)
    with pytest.raises(ValueError, match="calendar_conditioning=True needs use_film=True"):
        tiny_config(calendar_conditioning=True, use_film=False)
