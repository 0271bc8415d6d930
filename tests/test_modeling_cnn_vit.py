"""CNN-ViT hybrid: common model checks (mixin), parameter groups, physics aggregation and the cube diagnostics."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoConfig, AutoModel

from astrobio_hf.models.cnn_vit import (
    CnnVitConfig,
    CnnVitForParameterRegression,
    cube_gas_constant,
    cube_gravity,
)
from astrobio_hf.training import create_optimizer, parameter_groups

try:
    from .model_mixin import ModelTesterMixin
except ImportError:  # tests/ is not a package
    from model_mixin import ModelTesterMixin

torch.set_num_threads(1)
# The package registers its families in astrobio_hf/__init__.py; registering here as well keeps this file
# independent of that list (exist_ok: a second registration of the same class is a no-op).
AutoConfig.register("cnn_vit", CnnVitConfig, exist_ok=True)
AutoModel.register(CnnVitConfig, CnnVitForParameterRegression, exist_ok=True)

LEVELS = [0.0, 1000.0, 2000.0, 3000.0]
G, R = 9.0, 290.0


def tiny_config(**overrides) -> CnnVitConfig:
    kwargs = {
        "variable_names": ["T", "p", "rho"],
        "level_values": LEVELS,
        "lat_values": [-90.0 + 180.0 / 8 * (i + 0.5) for i in range(8)],
        "lon_values": [360.0 / 16 * i for i in range(16)],
        "planet_param_names": ["gravity", "mean_molecular_weight", "stellar_flux"],
        "planet_param_mean": [9.0, 29.0, 1361.0],
        "planet_param_std": [2.0, 3.0, 100.0],
        "norm_mean": [[280.0] * 4, [8.0e4] * 4, [1.0] * 4],
        "norm_std": [[10.0] * 4, [1.0e4] * 4, [0.1] * 4],
        "context_steps": 2,
        "geological_steps": 2,
        "stem_channels": 8,
        "stem_downsample": 1,
        "patch_size": 2,
        "hidden_size": 16,
        "num_layers": 2,
        "num_heads": 2,
        "physics_weights": {"cross_scale": 0.1, "ideal_gas": 0.1, "hydrostatic": 0.1},
    }
    kwargs.update(overrides)
    return CnnVitConfig(**kwargs)


def hydrostatic_cube(config: CnnVitConfig, batch_size: int = 2, seed: int = 0, gravity: float = G, gas: float = R) -> torch.Tensor:
    """An isothermal-per-column atmosphere in exact ideal-gas balance, hydrostatic to O(dz^2)."""
    gen = torch.Generator().manual_seed(seed)
    _, Tc, Tg, Z, Y, X = config.cube_shape
    T = 270.0 + 5.0 * torch.rand(batch_size, 1, Tc, Tg, 1, Y, X, generator=gen)
    z = torch.tensor(config.level_values).reshape(1, 1, 1, 1, Z, 1, 1)
    p = 1.0e5 * torch.exp(-gravity * z / (gas * T))
    rho = p / (gas * T)
    return torch.cat([T.expand_as(p), p, rho], dim=1).double()


class TestCnnVitForParameterRegression(ModelTesterMixin):
    config_class = CnnVitConfig
    model_class = CnnVitForParameterRegression

    def prepare_config_and_inputs(self):
        config = tiny_config()
        inputs = hydrostatic_cube(config).float()
        labels = torch.tensor([[8.5, 30.0, 1300.0], [10.0, 28.0, 1400.0]])
        return config, {"inputs": inputs, "labels": labels}

    def expected_output_shapes(self, config, inputs):
        B, P = inputs["inputs"].shape[0], config.num_planet_params
        return {"mean": (B, P), "log_variance": (B, P), "cnn_mean": (B, P)}

    def wrong_shape_inputs(self, config, inputs):
        cases = super().wrong_shape_inputs(config, inputs)
        cases.append(("labels with a wrong parameter count", dict(inputs, labels=inputs["labels"][:, :2])))
        return cases


def test_loss_is_nll_plus_stacked_physics_terms():
    config = tiny_config()
    torch.manual_seed(0)
    model = CnnVitForParameterRegression(config)
    inputs = hydrostatic_cube(config).float()
    out = model(inputs=inputs, labels=torch.tensor([[8.5, 30.0, 1300.0], [10.0, 28.0, 1400.0]]))
    assert set(out.physics_terms) == {"cross_scale", "ideal_gas", "hydrostatic"}
    assert all(isinstance(v, torch.Tensor) and v.shape == () for v in out.physics_terms.values())
    expected = sum(config.physics_weights[k] * v.item() for k, v in out.physics_terms.items())
    assert out.physics_loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.loss.item() == pytest.approx(out.nll.item() + expected, rel=1e-6)
    # cross-scale consistency has a real gradient path into both the ViT and the CNN branch
    model.zero_grad()
    out.physics_terms["cross_scale"].backward()
    assert model.vit_head.weight.grad.abs().sum() > 0
    assert model.cnn_head.weight.grad.abs().sum() > 0
    assert model.cnn_vit.layers[0].layer.self_attn.in_proj_weight.grad.abs().sum() > 0
    assert model.cnn_vit.stem.conv_in.conv.weight.grad.abs().sum() > 0


def test_no_physics_terms_gives_zero_tensor_on_the_right_device():
    config = tiny_config(physics_weights={})
    model = CnnVitForParameterRegression(config)
    out = model(inputs=hydrostatic_cube(config).float(), labels=torch.ones(2, 3))
    assert out.physics_terms == {} and out.physics_loss.shape == () and out.physics_loss.item() == 0.0
    assert out.physics_loss.device == out.nll.device


def test_cube_diagnostics_recover_gravity_and_gas_constant():
    config = tiny_config()
    cube = hydrostatic_cube(config, gravity=7.3, gas=350.0)
    assert torch.allclose(cube_gas_constant(cube, config), torch.full((2,), 350.0, dtype=torch.float64), rtol=1e-9)
    assert torch.allclose(cube_gravity(cube, config), torch.full((2,), 7.3, dtype=torch.float64), rtol=1e-3)


def test_physics_terms_vanish_at_the_true_parameters():
    """With the head predicting exactly the cube's gravity and molecular weight, ideal_gas and hydrostatic are ~0."""
    config = tiny_config(physics_weights={"ideal_gas": 1.0, "hydrostatic": 1.0})
    model = CnnVitForParameterRegression(config)
    cube = hydrostatic_cube(config).float()
    molar_mass = 8.314462618e3 / R
    target = torch.tensor([(G - 9.0) / 2.0, (molar_mass - 29.0) / 3.0, 0.0])
    with torch.no_grad():
        model.vit_head.weight.zero_()
        model.vit_head.bias.zero_()
        model.vit_head.bias[:3] = target
    out = model(inputs=cube, labels=torch.tensor([[G, molar_mass, 1361.0]] * 2))
    assert out.physics_terms["ideal_gas"].item() < 1e-10
    assert out.physics_terms["hydrostatic"].item() < 1e-5


def test_parameter_groups_separate_cnn_vit_lr_and_no_decay():
    from astrobio_hf.recipes.train_cnn_vit import (
        NO_DECAY_NAMES,
        ModelArguments,
        lr_multipliers,
    )

    model = CnnVitForParameterRegression(tiny_config())
    args = ModelArguments(cnn_lr_multiplier=2.0, vit_lr_multiplier=0.5)
    optimizer = create_optimizer(model, 1e-3, 0.05, lr_multipliers=lr_multipliers(args), no_decay_names=NO_DECAY_NAMES)
    where = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)

    def group(name):
        return where[id(named[name])]

    assert group("cnn_vit.stem.conv_in.conv.weight")["lr"] == pytest.approx(2e-3)
    assert group("cnn_head.weight")["lr"] == pytest.approx(2e-3)
    assert group("cnn_vit.layers.0.layer.self_attn.in_proj_weight")["lr"] == pytest.approx(5e-4)
    assert group("vit_head.weight")["lr"] == pytest.approx(5e-4)
    assert group("cnn_vit.stem.conv_in.conv.weight")["weight_decay"] == 0.05
    assert group("cnn_vit.layers.0.layer.linear1.weight")["weight_decay"] == 0.05
    for name in ("cnn_vit.stem.conv_in.conv.bias", "cnn_vit.stem.norm_in.weight", "cnn_vit.layers.0.layer.norm1.weight",
                 "cnn_vit.layers.0.layer.self_attn.in_proj_bias", "cnn_vit.final_norm.weight",
                 "cnn_vit.embeddings.cls_token", "cnn_vit.embeddings.position_embeddings"):
        assert group(name)["weight_decay"] == 0.0, name
    # backward compatible: without the new argument, embeddings decay as before
    groups = parameter_groups(model, 0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(named["cnn_vit.embeddings.cls_token"]) in decayed


def test_warmup_cosine_schedule_scales_every_group():
    from transformers import get_cosine_schedule_with_warmup

    from astrobio_hf.recipes.train_cnn_vit import ModelArguments, lr_multipliers

    model = CnnVitForParameterRegression(tiny_config())
    optimizer = create_optimizer(model, 1e-3, 0.0, lr_multipliers=lr_multipliers(ModelArguments(cnn_lr_multiplier=2.0, vit_lr_multiplier=0.5)))
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sorted({round(g["lr"], 12) for g in optimizer.param_groups}))
        optimizer.step()
        schedule.step()
    assert lrs[0] == [0.0]
    assert lrs[2] == pytest.approx([5e-4, 2e-3])  # peak after warmup: the ViT and the CNN learning rate
    assert lrs[6][1] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_config_errors_name_both_values():
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(patch_size=3)
    with pytest.raises(ValueError, match="mean_molecular_weight"):
        tiny_config(planet_param_names=["gravity"], planet_param_mean=[9.0], planet_param_std=[1.0])
    with pytest.raises(ValueError, match="unknown term"):
        tiny_config(physics_weights={"energy": 1.0})
    with pytest.raises(ValueError, match="unknown key"):
        CnnVitConfig(base_channels=8)


def test_log_channels_global_token_and_no_stem_norm(tmp_path):
    """Log channels (log-normal moments of the norm table), the global token and the norm-free stem: shapes,
    gradients into every new part, and a save/load round trip that recomputes the unsaved log statistics."""
    config = tiny_config(log_variables=["p", "rho"], stem_norm="none", global_token=True)
    model = CnnVitForParameterRegression(config).double()
    assert model.cnn_vit.stem.conv_in.conv.in_channels == (3 + 2) * 2 * 2 * 4
    assert isinstance(model.cnn_vit.stem.norm_in, torch.nn.Identity)
    # log-normal moments: std of log = sqrt(log(1 + cv^2)), mean of log = log(mean) - var / 2
    cv = 1.0e4 / 8.0e4
    assert model.cnn_vit.log_std[0, 0].item() == pytest.approx(math.sqrt(math.log1p(cv**2)), rel=1e-5)
    assert model.cnn_vit.log_mean[0, 0].item() == pytest.approx(math.log(8.0e4) - 0.5 * math.log1p(cv**2), rel=1e-6)
    cube = hydrostatic_cube(config)
    labels = torch.tensor([[G, 29.0, 1361.0]] * 2, dtype=torch.float64)
    out = model(inputs=cube, labels=labels)
    out.loss.backward()
    assert model.cnn_vit.embeddings.global_projection.weight.grad.abs().sum() > 0
    assert model.cnn_vit.stem.conv_in.conv.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    loaded = CnnVitForParameterRegression.from_pretrained(tmp_path).double()
    assert loaded.config.log_variables == ["p", "rho"] and loaded.config.global_token
    torch.testing.assert_close(loaded.cnn_vit.log_mean, model.cnn_vit.log_mean)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs=cube).mean, model(inputs=cube).mean)
    with pytest.raises(ValueError, match="log_variables"):
        tiny_config(log_variables=["u"])
    with pytest.raises(ValueError, match="stem_norm"):
        tiny_config(stem_norm="batch")
