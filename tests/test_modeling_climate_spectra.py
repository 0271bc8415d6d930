"""Climate + spectra multi-task family: common mixin, loss combiner modes with known answers, modality guards."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from einops import rearrange

from astrobio_hf import ClimateSpectraConfig, ClimateSpectraForMultiTask
from astrobio_hf.models.climate_spectra import (
    ClimateSpectraLossCombiner,
    physics_weight_schedule,
    smoothness_penalty,
)

try:
    from .model_mixin import ModelTesterMixin
except ImportError:  # tests/ is not a package
    from model_mixin import ModelTesterMixin

torch.set_num_threads(1)


def tiny_config(**overrides) -> ClimateSpectraConfig:
    kwargs = {
        "variable_names": ["T", "q"],
        "level_values": [0.0, 5000.0, 10000.0],
        "lat_values": [-90.0 + 180.0 / 8 * (i + 0.5) for i in range(8)],
        "lon_values": [360.0 / 8 * i for i in range(8)],
        "context_steps": 2,
        "geological_steps": 2,
        "norm_mean": [[280.0, 250.0, 220.0], [0.01, 0.003, 0.0005]],
        "norm_std": [[10.0, 8.0, 6.0], [0.003, 0.001, 0.0002]],
        "spectrum_wavelengths": [4.0, 6.3, 10.0, 13.0, 15.0],
        "spectrum_phases": [0.0, 90.0, 180.0],
        "spectrum_mean": [0.5, 1.0, 10.0, 8.0, 7.0],
        "spectrum_std": [0.1, 0.2, 1.0, 0.8, 0.7],
        "cube_channels": 4,
        "hidden_size": 16,
        "num_fusion_layers": 2,
        "norm_groups": 2,
        "loss_mode": "uncertainty",
        "task_weights": {"climate": 1.0, "spectrum": 0.5},
        "physics_warmup_steps": 10,
    }
    kwargs.update(overrides)
    return ClimateSpectraConfig(**kwargs)


def tiny_inputs(config, batch_size: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    V, Z = config.num_variables, config.num_levels
    mean = torch.tensor(config.norm_mean).reshape(1, V, 1, 1, Z, 1, 1)
    std = torch.tensor(config.norm_std).reshape(1, V, 1, 1, Z, 1, 1)
    cube = mean + std * torch.randn((batch_size, *config.cube_shape), generator=g)
    spectrum = torch.tensor(config.spectrum_mean) + torch.tensor(config.spectrum_std) * torch.randn(
        (batch_size, *config.spectrum_shape), generator=g
    )
    return {"cube": cube, "spectrum": spectrum, "cube_labels": cube.clone(), "spectrum_labels": spectrum.clone(), "training_step": 5}


class TestClimateSpectraModel(ModelTesterMixin):
    config_class = ClimateSpectraConfig
    model_class = ClimateSpectraForMultiTask

    def prepare_config_and_inputs(self):
        config = tiny_config()
        return config, tiny_inputs(config)

    def expected_output_shapes(self, config, inputs):
        return {"cube": (2, *config.cube_shape), "spectrum": (2, *config.spectrum_shape), "latent": (2, 2, 16)}

    def wrong_shape_inputs(self, config, inputs):
        bad = super().wrong_shape_inputs(config, inputs)
        bad.append(("spectrum with one wavelength short", dict(inputs, spectrum=inputs["spectrum"][..., :-1])))
        bad.append(("spectrum labels of another batch size", dict(inputs, spectrum_labels=inputs["spectrum_labels"][:1])))
        return bad


# ---------------------------------------------------------------------------------------------- config
def test_from_schema_sizes_the_heads():
    schema = SimpleNamespace(  # a dataset schema is read by attribute
        variable_names=["T", "p"], units={"T": "K", "p": "Pa"}, level_values=[0.0, 1000.0], level_unit="m",
        lat_values=[-67.5, -22.5, 22.5, 67.5], lon_values=[0.0, 90.0, 180.0, 270.0], geological_time_values=[0.0],
        norm_mean=[[1.0, 1.0], [2.0, 2.0]], norm_std=[[1.0, 1.0], [1.0, 1.0]],
        spectrum_wavelengths=[1.1, 1.4, 3.6, 4.5], spectrum_phases=[0.0, 45.0, 90.0], spectrum_units="ppm",
        spectrum_mean=[1.0] * 4, spectrum_std=[1.0] * 4,
    )

    config = ClimateSpectraConfig.from_schema(schema, context_steps=1, cube_channels=4, norm_groups=2, hidden_size=8)
    assert config.cube_shape == (2, 1, 1, 2, 4, 4) and config.spectrum_shape == (1, 3, 4)
    model = ClimateSpectraForMultiTask(config)
    assert model.spectrum_head[-1].out_features == 3 * 4
    assert model.climate_head.conv2.out_channels == 2 * 1 * 2
    schema.spectrum_wavelengths = None
    with pytest.raises(ValueError, match="expected a dataset schema with spectra"):
        ClimateSpectraConfig.from_schema(schema)


def test_config_errors():
    with pytest.raises(ValueError, match=r"loss_mode must be one of .*got 'magic'"):
        tiny_config(loss_mode="magic")
    with pytest.raises(ValueError, match=r"task_weights must be a dict with keys"):
        tiny_config(task_weights={"climate": 1.0})
    with pytest.raises(ValueError, match=r"divisible by 4"):
        tiny_config(lat_values=[-45.0, 0.0, 45.0])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\]"):
        tiny_config(colour="blue")


# ------------------------------------------------------------------------------------------ loss modes
def test_fixed_mode_is_the_weighted_sum():
    combiner = ClimateSpectraLossCombiner("fixed", {"climate": 2.0, "spectrum": 0.5})
    total, weights = combiner({"climate": torch.tensor(3.0), "spectrum": torch.tensor(4.0)})
    assert float(total) == pytest.approx(2.0 * 3.0 + 0.5 * 4.0)
    assert {k: float(v) for k, v in weights.items()} == {"climate": 2.0, "spectrum": 0.5}
    total, weights = combiner({"spectrum": torch.tensor(4.0)})  # one task present
    assert float(total) == pytest.approx(2.0) and list(weights) == ["spectrum"]


def test_uncertainty_mode_starts_at_the_initial_weights_and_learns_exp_s_equal_loss():
    combiner = ClimateSpectraLossCombiner("uncertainty", {"climate": 2.0, "spectrum": 0.5})
    losses = {"climate": torch.tensor(0.3), "spectrum": torch.tensor(4.0)}
    total, weights = combiner(losses)
    total = total.detach()
    # sum_i exp(-s_i) L_i + s_i with s_i = -log w_i
    expected = 2.0 * 0.3 - math.log(2.0) + 0.5 * 4.0 - math.log(0.5)
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert float(weights["climate"]) == pytest.approx(2.0)
    # minimising over s_i alone: the optimum is s_i = log L_i, i.e. weight 1/L_i, total sum_i (1 + log L_i)
    optimizer = torch.optim.Adam(combiner.parameters(), lr=0.05)
    for _ in range(800):
        optimizer.zero_grad()
        combiner(losses)[0].backward()
        optimizer.step()
    total, weights = combiner(losses)
    total = total.detach()
    assert float(weights["climate"]) == pytest.approx(1 / 0.3, rel=1e-3)
    assert float(weights["spectrum"]) == pytest.approx(1 / 4.0, rel=1e-3)
    assert float(total) == pytest.approx(2 + math.log(0.3) + math.log(4.0), abs=1e-5)


def test_adaptive_mode_warmup_then_favours_the_slower_task():
    w0 = {"climate": 1.0, "spectrum": 3.0}
    combiner = ClimateSpectraLossCombiner("adaptive", w0, temperature=2.0, warmup_steps=3).train()
    # constant losses: the warm-up uses w0, and afterwards equal ratios (1) give w0 again
    for _ in range(6):
        _, weights = combiner({"climate": torch.tensor(2.0), "spectrum": torch.tensor(5.0)})
        assert float(weights["climate"]) == pytest.approx(1.0) and float(weights["spectrum"]) == pytest.approx(3.0)
    # the climate loss halves every step, the spectrum loss stays: hand-computed running averages
    combiner.reset_parameters()
    fast, slow = {"climate": 0.0, "spectrum": 0.0}, {"climate": 0.0, "spectrum": 0.0}
    seen = []
    for step in range(8):
        losses = {"climate": 8.0 * 0.5**step, "spectrum": 5.0}
        ratio = {k: fast[k] / slow[k] if slow[k] else 1.0 for k in losses}
        z = sum(w0[k] * math.exp(ratio[k] / 2.0) for k in losses)
        expected = {k: 4.0 * w0[k] * math.exp(ratio[k] / 2.0) / z for k in losses} if step >= 3 else w0
        _, weights = combiner({k: torch.tensor(v) for k, v in losses.items()})
        for k in losses:
            assert float(weights[k]) == pytest.approx(expected[k], rel=1e-5), (step, k)
        for k, v in losses.items():  # update as the combiner does
            fast[k] = v if slow[k] == 0 else 0.5 * fast[k] + 0.5 * v
            slow[k] = v if slow[k] == 0 else 0.9 * slow[k] + 0.1 * v
        seen.append(float(weights["spectrum"]))
    assert seen[-1] > 3.0  # the task whose loss does not fall gets more than its initial weight
    assert float(sum(weights.values())) == pytest.approx(4.0)
    # evaluation calls do not move the state
    state = {k: v.clone() for k, v in combiner.state_dict().items()}
    combiner.eval()
    combiner({"climate": torch.tensor(100.0), "spectrum": torch.tensor(0.1)})
    assert all(torch.equal(state[k], v) for k, v in combiner.state_dict().items())
    with pytest.raises(ValueError, match="expected at least one task loss"):
        combiner({})


@pytest.mark.parametrize("mode", ["fixed", "uncertainty", "adaptive"])
def test_model_runs_in_every_loss_mode(mode):
    config = tiny_config(loss_mode=mode, adaptive_warmup_steps=1)
    model = ClimateSpectraForMultiTask(config).train()
    inputs = tiny_inputs(config)
    for _ in range(3):
        out = model(**inputs)
        assert torch.isfinite(out.loss) and set(out.task_weights) == {"climate", "spectrum"}
    out.loss.backward()


# ------------------------------------------------------------------------------------- modality guards
def test_empty_modality_guard_and_consistency_zero_with_one_modality():
    config = tiny_config()
    model = ClimateSpectraForMultiTask(config).eval()
    inputs = tiny_inputs(config)
    with pytest.raises(ValueError, match=r"expected at least one modality \(cube and/or spectrum\), got neither"):
        model(cube_labels=inputs["cube_labels"])
    for given in ("cube", "spectrum"):
        out = model(**{given: inputs[given]}, cube_labels=inputs["cube_labels"], spectrum_labels=inputs["spectrum_labels"])
        assert float(out.consistency_loss) == 0.0 and out.consistency_loss.device == out.latent.device
        assert out.cube.shape == inputs["cube"].shape and out.spectrum.shape == inputs["spectrum"].shape
    both = model(**inputs)
    assert float(both.consistency_loss) > 0.0
    # without targets: predictions only
    preds = model(spectrum=inputs["spectrum"])
    assert preds.loss is None and preds.cube.shape == inputs["cube"].shape



def test_input_of_another_dtype_than_the_model_is_a_clear_error():
    config = tiny_config()
    model = ClimateSpectraForMultiTask(config).eval()
    inputs = tiny_inputs(config)
    for name in ("cube", "spectrum"):
        bad = dict(inputs, **{name: inputs[name].double()})
        with pytest.raises(ValueError, match=rf"{name}: expected dtype torch.float32 \(the model's\), got torch.float64"):
            model(**bad)
        with pytest.raises(ValueError, match=rf"{name}: expected dtype torch.float32 \(the model's\), got torch.float64"):
            model.encoder(**{name: bad[name]})
    # in the model's dtype, float64 works end to end
    model.double()
    out = model(**{k: v.double() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
    assert out.loss.dtype == torch.float64 and torch.isfinite(out.loss)


def test_smoothness_over_all_spatial_axes_and_schedule():
    cube = torch.zeros(1, 1, 1, 1, 3, 4, 4)
    assert float(smoothness_penalty(cube)) == 0.0
    z = cube.clone()
    z[..., 1, :, :] = 1.0  # a step between levels only
    y = cube.clone()
    y[..., :, 2:, :] = 1.0  # a step in latitude only
    x = cube.clone()
    x[..., :, :, 0] = 1.0  # one longitude column: two jumps, including the periodic wrap
    assert float(smoothness_penalty(z)) == pytest.approx(2 / 2)  # diffs 1, -1 over 2 level pairs
    assert float(smoothness_penalty(y)) == pytest.approx(1 / 3)  # one jump among 3 latitude pairs
    assert float(smoothness_penalty(x)) == pytest.approx(2 / 4)  # two jumps among 4 periodic pairs
    assert float(physics_weight_schedule(0, 0.2, 10)) == 0.0
    assert float(physics_weight_schedule(5, 0.2, 10)) == pytest.approx(0.1)
    assert float(physics_weight_schedule(50, 0.2, 10)) == pytest.approx(0.2)
    assert float(physics_weight_schedule(None, 0.2, 10)) == pytest.approx(0.2)
    assert float(physics_weight_schedule(3, 0.2, 0)) == pytest.approx(0.2)


def test_linear_column_pathway_is_a_linear_map_of_the_area_weighted_mean_profiles():
    """With column_hidden_size 0 and one phase, the column pathway adds W(area-weighted mean profile of every
    normalised channel) + b to the spectra: remove it and the rest of the head output is left."""
    config = tiny_config(column_pathway=True, column_hidden_size=0, spectrum_phases=None)
    model = ClimateSpectraForMultiTask(config).eval()
    weights = model.column_head.disc_weights  # (1, Y, X) fixed area weights
    assert weights.shape == (1, config.num_lat, config.num_lon) and float(weights.sum()) == pytest.approx(1.0)
    assert torch.equal(weights, weights.flip(1)) and weights[0, config.num_lat // 2, 0] > weights[0, 0, 0]  # cos(lat)
    assert "disc_weights" not in dict(model.named_parameters())
    cube = tiny_inputs(config)["cube"]
    with torch.no_grad():
        frames = model.encoder.normalize_cube(cube)  # (B, V, Tc, Tg, Z, Y, X)
        profile = torch.einsum("bvtgzyx,y->btvgz", frames, weights[0, :, 0]).flatten(2)  # weights hold cos(lat) / X
        full = model(cube=cube).spectrum
        conv = model.column_head.emission
        model.column_head = None
        without = model(cube=cube).spectrum
        skip = torch.einsum("btc,kc->btk", profile, conv.weight[:, :, 0, 0]) + conv.bias
        std = model.encoder.spectrum_std
        torch.testing.assert_close((full - without) / std, skip.reshape(full.shape), rtol=1e-4, atol=1e-5)
    off = ClimateSpectraForMultiTask(tiny_config(column_pathway=False))
    assert off.column_head is None
    assert off(**tiny_inputs(off.config)).loss.isfinite()
    with pytest.raises(TypeError, match="column_pathway must be a bool"):
        tiny_config(column_pathway="yes")
    with pytest.raises(ValueError, match="column_hidden_size must be an integer >= 0"):
        tiny_config(column_hidden_size=-1)


def test_column_pathway_sums_columns_over_the_disc():
    """One phase: a nonlinear per-column emission with fixed area weights, so rotating the cube in longitude leaves
    it unchanged (columns are only reordered within their latitude band), while flipping one column's temperature
    changes it. Several phases: learned per-phase disc weights, initialised at the area weights and trained."""
    config = tiny_config(column_hidden_size=8, spectrum_phases=None)
    model = ClimateSpectraForMultiTask(config).eval()
    cube = tiny_inputs(config)["cube"]
    head = model.column_head
    with torch.no_grad():
        def column(c):
            return head(rearrange(model.encoder.normalize_cube(c), "b v tc tg z y x -> (b tc) (v tg z) y x"))
        base = column(cube)
        torch.testing.assert_close(column(torch.roll(cube, shifts=3, dims=-1)), base, rtol=1e-5, atol=1e-6)
        warmer = cube.clone()
        warmer[:, 0, ..., 1, 2] += 30.0  # one column's temperature
        assert not torch.allclose(column(warmer), base)
    phased = ClimateSpectraForMultiTask(tiny_config())
    disc = dict(phased.named_parameters())["column_head.disc_weights"]
    P = phased.config.num_phases
    assert P > 1 and disc.shape == (P, phased.config.num_lat, phased.config.num_lon)
    torch.testing.assert_close(disc.sum(dim=(1, 2)), torch.ones(P))
    phased(**tiny_inputs(phased.config)).loss.backward()
    assert disc.grad is not None and disc.grad.abs().sum() > 0


def test_cross_modal_loss_decodes_each_modality_alone():
    """With both modalities and targets, cross_modal_weight w adds w * (MSE of the spectra the model predicts from the
    cube alone + MSE of the climate fields it predicts from the spectra alone), in normalised units; 0 otherwise."""
    torch.manual_seed(0)
    model = ClimateSpectraForMultiTask(tiny_config(cross_modal_weight=0.5)).eval()
    inputs = tiny_inputs(model.config)
    inputs.pop("training_step")
    enc = model.encoder
    with torch.no_grad():
        out = model(**inputs)
        from_cube, from_spectrum = model(cube=inputs["cube"]), model(spectrum=inputs["spectrum"])
        expected = torch.nn.functional.mse_loss(
            enc.normalize_spectrum(from_cube.spectrum), enc.normalize_spectrum(inputs["spectrum_labels"])
        ) + torch.nn.functional.mse_loss(enc.normalize_cube(from_spectrum.cube), enc.normalize_cube(inputs["cube_labels"]))
        torch.testing.assert_close(out.cross_modal_loss, expected, rtol=1e-4, atol=1e-6)
        model.config.cross_modal_weight = 0.0
        without = model(**inputs)
        torch.testing.assert_close(out.loss - without.loss, 0.5 * expected, rtol=1e-4, atol=1e-6)
        assert float(without.cross_modal_loss) == 0.0
        model.config.cross_modal_weight = 0.5
        one = model(cube=inputs["cube"], cube_labels=inputs["cube_labels"], spectrum_labels=inputs["spectrum_labels"])
        assert float(one.cross_modal_loss) == 0.0  # one modality: nothing to cross
    with pytest.raises(ValueError, match="cross_modal_weight must be >= 0"):
        tiny_config(cross_modal_weight=-1.0)
