"""Common checks every model family runs (after transformers' `ModelTesterMixin`).

A family's test class inherits `ModelTesterMixin` and gives:

- `config_class`, `model_class` (the head that computes its own loss, registered with `AutoModel`);
- `prepare_config_and_inputs()` -> `(config, inputs)`, a tiny config that runs on CPU in well under a second and a
  dict of keyword inputs for `model(**inputs)` that includes the labels/targets;
- `expected_output_shapes(config, inputs)` -> `{output field: shape}` for the fields whose shape is known;
- optionally `wrong_shape_inputs(config, inputs)` -> a list of `(description, inputs)` that must raise
  `ValueError` (the default cuts the last axis of the main input and adds an axis to it).

Checks: save/from_pretrained round trip (safetensors, same outputs, nothing missing or unexpected), a clear error
naming the folder and the missing config.json when a local folder holds only weights, Auto-class resolution by
`model_type`, output shapes and `loss` as the first output field, one training step gives a
non-zero finite gradient on every trainable parameter, gradient checkpointing on/off equivalence (loss and every
gradient) with the checkpoint function really used, and a clear `ValueError` for wrong-shaped inputs.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput


def flatten_output(output, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a ModelOutput (nested dicts included) by dotted name."""
    flat = {}
    items = output.items() if isinstance(output, (dict, ModelOutput)) else []
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            flat[name] = value
        elif isinstance(value, dict):
            flat.update(flatten_output(value, prefix=f"{name}."))
    return flat


def assert_outputs_close(first, second, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    a, b = flatten_output(first), flatten_output(second)
    assert a.keys() == b.keys(), f"output fields differ: {sorted(a)} vs {sorted(b)}"
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


class ModelTesterMixin:
    config_class = None
    model_class = None
    # tolerance of the gradient-checkpointing comparison (recomputation is deterministic on CPU)
    checkpointing_atol = 1e-6

    # ---- to be given by the family ----------------------------------------------------------------------------
    def prepare_config_and_inputs(self):
        raise NotImplementedError

    def expected_output_shapes(self, config, inputs) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def wrong_shape_inputs(self, config, inputs) -> list[tuple[str, dict]]:
        main = self.model_class.main_input_name
        cut = dict(inputs, **{main: inputs[main][..., :-1]})
        extra_axis = dict(inputs, **{main: inputs[main].unsqueeze(0)})
        return [("last axis one element short", cut), ("one extra axis", extra_axis)]

    # ---- helpers ---------------------------------------------------------------------------------------------
    def _model(self, config, seed: int = 0):
        torch.manual_seed(seed)
        return self.model_class(config)

    # ---- checks ----------------------------------------------------------------------------------------------
    def test_config_json_round_trip(self, tmp_path):
        config, _ = self.prepare_config_and_inputs()
        json.dumps(config.to_dict())  # JSON-serialisable
        config.save_pretrained(tmp_path)
        loaded = self.config_class.from_pretrained(tmp_path)
        assert loaded.to_dict() == config.to_dict()
        assert self.config_class(**config.to_dict()).to_dict() == config.to_dict()

    def test_save_load_round_trip(self, tmp_path):
        config, inputs = self.prepare_config_and_inputs()
        model = self._model(config)
        # move every parameter away from its initialisation so that loading (not re-initialising) is tested
        with torch.no_grad():
            generator = torch.Generator().manual_seed(1)
            for parameter in model.parameters():
                parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
        model.eval()
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file(), sorted(p.name for p in tmp_path.iterdir())
        assert not list(tmp_path.glob("*.bin")), "weights must be safetensors only"

        loaded, info = self.model_class.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        loaded.eval()
        assert type(loaded) is self.model_class
        with torch.no_grad():
            assert_outputs_close(model(**inputs), loaded(**inputs))

    def test_from_pretrained_without_config_names_the_missing_file(self, tmp_path):
        config, _ = self.prepare_config_and_inputs()
        self._model(config).save_pretrained(tmp_path)
        (tmp_path / "config.json").unlink()
        with pytest.raises((FileNotFoundError, ValueError), match="config.json") as error:
            self.model_class.from_pretrained(tmp_path)
        message = str(error.value)
        assert str(tmp_path) in message and "model.safetensors" in message, message
        # with the config given explicitly, the weights alone are enough
        loaded, info = self.model_class.from_pretrained(tmp_path, config=config, output_loading_info=True)
        assert type(loaded) is self.model_class
        assert not info["missing_keys"] and not info["unexpected_keys"], info

    def test_auto_classes_resolve_by_model_type(self, tmp_path):
        config, _ = self.prepare_config_and_inputs()
        assert type(AutoConfig.for_model(self.config_class.model_type)) is self.config_class
        assert type(AutoModel.from_config(config)) is self.model_class
        self._model(config).save_pretrained(tmp_path)
        assert type(AutoConfig.from_pretrained(tmp_path)) is self.config_class
        assert type(AutoModel.from_pretrained(tmp_path)) is self.model_class

    def test_output_shapes_and_loss_first(self):
        config, inputs = self.prepare_config_and_inputs()
        model = self._model(config).eval()
        with torch.no_grad():
            output = model(**inputs)
        assert isinstance(output, ModelOutput)
        assert list(output.keys())[0] == "loss", f"first output field must be loss, got {list(output.keys())}"
        assert output.loss.shape == () and torch.isfinite(output.loss)
        for name, shape in self.expected_output_shapes(config, inputs).items():
            assert tuple(output[name].shape) == tuple(shape), f"{name}: expected {shape}, got {tuple(output[name].shape)}"

    def test_training_step_gives_gradient_on_every_parameter(self):
        config, inputs = self.prepare_config_and_inputs()
        model = self._model(config).train()
        output = model(**inputs)
        assert torch.isfinite(output.loss)
        output.loss.backward()
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        assert trainable
        no_grad = [n for n, p in trainable if p.grad is None]
        assert not no_grad, f"parameters without gradient: {no_grad}"
        not_finite = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
        assert not not_finite, f"non-finite gradients: {not_finite}"
        zero = [n for n, p in trainable if not p.grad.abs().sum() > 0]
        assert not zero, f"zero gradients: {zero}"

        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        before = {n: p.detach().clone() for n, p in trainable}
        optimizer.step()
        assert all(not torch.equal(before[n], p) for n, p in trainable)

    def test_gradient_checkpointing_equivalence(self):
        config, inputs = self.prepare_config_and_inputs()
        if not self.model_class.supports_gradient_checkpointing:
            pytest.skip("model does not support gradient checkpointing")
        model = self._model(config).train()

        def loss_and_grads():
            model.zero_grad(set_to_none=True)
            loss = model(**inputs).loss
            loss.backward()
            return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

        loss_off, grads_off = loss_and_grads()
        # transformers >= 5.x names it activation checkpointing; gradient_checkpointing_* is the deprecated alias
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        enable()
        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        assert layers and all(m.gradient_checkpointing for m in layers)
        calls = []
        for layer in layers:
            func = layer._gradient_checkpointing_func

            def counting(*args, _func=func, **kwargs):
                calls.append(1)
                return _func(*args, **kwargs)

            layer._gradient_checkpointing_func = counting
        loss_on, grads_on = loss_and_grads()
        assert len(calls) >= len(layers), "checkpointing was enabled but never used"
        torch.testing.assert_close(loss_on, loss_off, atol=self.checkpointing_atol, rtol=1e-5)
        assert grads_on.keys() == grads_off.keys()
        for name in grads_off:
            torch.testing.assert_close(
                grads_on[name], grads_off[name], atol=self.checkpointing_atol, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
            )
        disable()
        assert not any(m.gradient_checkpointing for m in layers)

    def test_wrong_shaped_input_raises_clear_error(self):
        config, inputs = self.prepare_config_and_inputs()
        model = self._model(config).eval()
        for description, bad in self.wrong_shape_inputs(config, copy.copy(inputs)):
            with pytest.raises(ValueError, match="expected") as error:
                with torch.no_grad():
                    model(**bad)
            assert "got" in str(error.value), f"{description}: the error must say what was found: {error.value}"
