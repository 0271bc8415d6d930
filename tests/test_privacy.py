"""DP-SGD building blocks (astrobio_hf.training.privacy) on the real Opacus engine and accountants.

Per-sample gradients are clipped to the norm (against a per-example loop); noise of the stated scale is added
(statistically, fixed seed); the epsilon after N steps is Opacus' own accountant's for the same sampling rate,
noise and steps (one charge per optimizer step); the accountant's history survives a checkpoint round trip with
the same epsilon; a model with BatchNorm is refused with the layer's name before anything starts.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

opacus = pytest.importorskip("opacus", reason="pip install -e '.[dp]'")

from accelerate import Accelerator  # noqa: E402

from astrobio_hf.training.privacy import make_private, privacy_spent, refuse_unsupported_layers, unsupported_layers  # noqa: E402


def _data(n=64, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.arange(1.0, d + 1) + 0.1 * torch.randn(n, generator=g)).unsqueeze(1)
    return TensorDataset(x, y)


def _private(model, data, batch_size=16, **kwargs):
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(data, batch_size=batch_size)
    return make_private(accelerator, model, optimizer, loader, target_delta=1e-3, **kwargs)


def test_per_sample_gradients_are_clipped_to_the_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    reference = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    reference.load_state_dict(model.state_dict())
    data = _data()
    x, y = data.tensors[0][:16], data.tensors[1][:16]
    clip = 0.5
    private, optimizer, _, _ = _private(model, data, max_grad_norm=clip, noise_multiplier=0.0)
    optimizer.zero_grad()
    nn.functional.mse_loss(private(x), y, reduction="mean").backward()
    optimizer.pre_step()  # clip and (zero) noise, no parameter update
    # the per-example loop: each example's gradient clipped to `clip`, summed, divided by the expected batch
    total = [torch.zeros_like(p) for p in reference.parameters()]
    norms = []
    for i in range(16):
        reference.zero_grad()
        nn.functional.mse_loss(reference(x[i: i + 1]), y[i: i + 1]).backward()
        grads = [p.grad.clone() for p in reference.parameters()]
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        norms.append(float(norm))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        total = [t + factor * g for t, g in zip(total, grads)]
    assert max(norms) > clip  # the clipping is exercised
    expected = [t / optimizer.expected_batch_size for t in total]
    for p, e in zip(private.parameters(), expected):
        torch.testing.assert_close(p.grad, e, atol=1e-6, rtol=1e-4)


def test_noise_of_the_stated_scale_is_added():
    torch.manual_seed(0)
    model = nn.Linear(200, 50, bias=False)
    data = TensorDataset(torch.zeros(64, 200), torch.zeros(64, 50))
    sigma, clip = 1.3, 0.7
    private, optimizer, _, _ = _private(model, data, batch_size=16, max_grad_norm=clip, noise_multiplier=sigma)
    optimizer.zero_grad()
    (private(data.tensors[0][:16]).sum() * 0.0).backward()  # zero gradients: what is left is the noise
    optimizer.pre_step()
    noise = model.weight.grad * optimizer.expected_batch_size  # undo the averaging
    expected = sigma * clip
    assert abs(float(noise.std()) / expected - 1) < 0.03, (float(noise.std()), expected)  # 10,000 draws: std error ~0.7%
    assert abs(float(noise.mean())) < 0.05 * expected


def test_epsilon_is_the_accountants_for_the_steps_taken():
    from opacus.accountants import RDPAccountant

    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    data = _data(n=64)
    private, optimizer, loader, engine = _private(model, data, batch_size=16, max_grad_norm=1.0, noise_multiplier=1.1)
    steps = 0
    for _ in range(3):
        for x, y in loader:
            optimizer.zero_grad()
            if len(x):
                nn.functional.mse_loss(private(x), y).backward()
            optimizer.step()
            steps += 1
    spent = privacy_spent(engine, optimizer, delta=1e-3, max_grad_norm=1.0)
    assert spent.steps == steps == 12 and math.isclose(spent.sample_rate, 16 / 64)
    peer = RDPAccountant()
    peer.history = [(1.1, 16 / 64, steps)]
    assert spent.epsilon == pytest.approx(peer.get_epsilon(delta=1e-3), rel=1e-9)
    assert 0 < spent.epsilon < 20 and spent.accountant == "rdp"
    # the history round-trips (what accelerate's checkpoint stores): same epsilon after loading it elsewhere
    state = engine.accountant.state_dict()
    fresh = RDPAccountant()
    fresh.load_state_dict(state)
    assert fresh.get_epsilon(delta=1e-3) == pytest.approx(spent.epsilon, rel=1e-12)


def test_target_epsilon_picks_the_noise():
    torch.manual_seed(0)
    _, optimizer, loader, engine = _private(nn.Linear(5, 1), _data(n=64), batch_size=16, max_grad_norm=1.0, target_epsilon=3.0, epochs=4)
    assert optimizer.noise_multiplier > 0.5
    engine.accountant.history = [(optimizer.noise_multiplier, 1 / len(loader), 4 * len(loader))]
    assert engine.accountant.get_epsilon(delta=1e-3) == pytest.approx(3.0, abs=0.05)


def test_batchnorm_is_refused_with_the_layer_name():
    model = nn.Sequential()
    model.add_module("encoder", nn.Conv1d(1, 4, 3))
    model.add_module("norm", nn.BatchNorm1d(4))
    assert unsupported_layers(model) and unsupported_layers(model)[0].startswith("norm (BatchNorm1d)")
    with pytest.raises(ValueError, match=r"norm \(BatchNorm1d\).*GroupNorm") as error:
        refuse_unsupported_layers(model)
    assert "\n" not in str(error.value)
    refuse_unsupported_layers(nn.Sequential(nn.Conv1d(1, 4, 3), nn.GroupNorm(2, 4)))  # the fix passes


@pytest.mark.parametrize("kwargs, message", [
    ({"max_grad_norm": 0.0, "noise_multiplier": 1.0}, "positive clipping norm"),
    ({"max_grad_norm": 1.0}, "exactly one of --noise_multiplier and --target_epsilon, got neither"),
    ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": 3.0, "epochs": 1}, "got both"),
    ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "accountant": "moments"}, "expected one of \\['rdp', 'prv'\\]"),
])
def test_bad_privacy_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _private(nn.Linear(5, 1), _data(), **kwargs)
