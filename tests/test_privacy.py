"""DP-SGD building blocks (astrobio_hf.training.privacy) on the real Opacus engine and accountants.

Per-sample gradients are clipped to the norm (against a per-example loop); noise of the stated scale is added
(statistically, fixed seed); the epsilon after N steps is Opacus' own accountant's for the same sampling rate,
noise and steps (one charge per optimizer step); the accountant's history survives a checkpoint round trip with
the same epsilon; a model with BatchNorm is refused with the layer's name before anything starts. In the shared
loop (`fit(..., --dp)`): the epsilon at every validation and in the state, a target epsilon kept, exact resume
(weights and epsilon), a 2-process gloo run with identical replicas, the argument checks.
"""

from __future__ import annotations

import math

import numpy as np

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
    _, optimizer, loader, engine = _private(nn.Linear(5, 1), _data(n=64), batch_size=16, max_grad_norm=1.0, target_epsilon=3.0, steps=16)
    assert optimizer.noise_multiplier > 0.5
    engine.accountant.history = [(optimizer.noise_multiplier, 1 / len(loader), 16)]
    assert 2.98 <= engine.accountant.get_epsilon(delta=1e-3) <= 3.0


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
    ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": 3.0, "steps": 4}, "got both"),
    ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "accountant": "moments"}, "expected one of \\['rdp', 'prv'\\]"),
])
def test_bad_privacy_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _private(nn.Linear(5, 1), _data(), **kwargs)


# ------------------------------------------------------------------------------------------ in the shared loop
class _Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 1)

    def forward(self, x):
        return self.linear(x)


def _loss(model, batch, state):
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    return loss, {"mse": loss.detach()}


def _fit_dp(tmp_path, data=None, **overrides):
    from astrobio_hf.training import TrainingArguments, create_optimizer, finish_run, fit, start_run
    from astrobio_hf.training.args import resolved_config

    data = data or _data(n=64)
    settings = dict(output_dir=str(tmp_path / "run"), report_to="none", per_device_batch_size=16, checkpoint_every=100, ema_decay=0.0,
                    learning_rate=0.05, warmup_ratio=0.0, num_epochs=3, eval_every=4, dp=True, max_grad_norm=1.0)
    args = TrainingArguments(**{**settings, **overrides})
    acc = start_run(args)
    torch.manual_seed(0)
    model = _Regressor()
    loader = DataLoader(data, batch_size=16, shuffle=False)
    x, y = data.tensors

    def evaluate(m, state):
        with torch.no_grad():
            return {"loss": nn.functional.mse_loss(m(x), y).item()}

    result = fit(acc, model, create_optimizer(model, args.learning_rate, 0.0), loader, args, loss_fn=_loss, evaluate=evaluate,
                 micro_batches_per_epoch=len(loader), run_config=resolved_config(args), project="test")
    finish_run(result)
    return result


def test_fit_with_dp_reports_the_accountants_epsilon(tmp_path):
    from opacus.accountants import RDPAccountant

    result = _fit_dp(tmp_path, noise_multiplier=0.8)
    privacy = result.state.privacy
    assert privacy["steps"] == result.state.global_step == 12  # one charge per optimizer step
    assert privacy["sample_rate"] == pytest.approx(0.25) and privacy["delta"] == pytest.approx(1 / 64)
    peer = RDPAccountant()
    peer.history = [(0.8, 0.25, 12)]
    assert privacy["epsilon"] == pytest.approx(peer.get_epsilon(delta=1 / 64), rel=1e-9)
    logged = [h["val/epsilon"] for h in result.state.history if "val/epsilon" in h]
    assert len(logged) == 3 and logged == sorted(logged) and logged[-1] == pytest.approx(privacy["epsilon"])  # every validation
    assert type(result.model) is _Regressor  # the family's model, not Opacus' wrapper, is what the run hands back


def test_fit_with_a_target_epsilon_stays_within_it(tmp_path):
    result = _fit_dp(tmp_path, target_epsilon=2.0)
    assert 1.98 < result.state.privacy["epsilon"] <= 2.0 * (1 + 1e-3)  # the noise for exactly the steps taken
    assert result.state.privacy["noise_multiplier"] > 0


def test_dp_arguments_are_checked_before_any_work(tmp_path):
    from astrobio_hf.training import TrainingArguments

    with pytest.raises(ValueError, match="exactly one of --target_epsilon > 0 and --noise_multiplier > 0"):
        TrainingArguments(output_dir=str(tmp_path), dp=True)
    with pytest.raises(ValueError, match="--max_grad_norm > 0 with --dp"):
        TrainingArguments(output_dir=str(tmp_path), dp=True, noise_multiplier=1.0, max_grad_norm=0.0)


def test_resume_continues_the_accountants_history(tmp_path):
    """A run resumed from its step-8 checkpoint ends with the weights and the epsilon of the uninterrupted 12-step run:
    the accountant's history is in the checkpoint (not restarted at 0), and accelerate's RNG states replay the same
    Poisson draws and noise."""
    import shutil

    straight = _fit_dp(tmp_path / "a", noise_multiplier=0.8, checkpoint_every=4, keep_checkpoints=5)
    resumed_dir = tmp_path / "b" / "run"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "a" / "run" / "checkpoints" / "step-00000008", resumed_dir / "checkpoints" / "step-00000008")
    resumed = _fit_dp(tmp_path / "b", noise_multiplier=0.8, checkpoint_every=4, keep_checkpoints=5)
    assert resumed.state.global_step == 12 and resumed.state.privacy["steps"] == 12
    assert resumed.state.privacy["epsilon"] == pytest.approx(straight.state.privacy["epsilon"], rel=1e-12)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_two_process_dp_run_keeps_identical_replicas_and_the_same_epsilon(tmp_path):
    """2 gloo processes, per-device batch 8 x 2 virtual steps (global batch 32): each process cuts its own Poisson
    draw into its own number of chunks (only the last all-reduces), one process adds the noise, the replicas stay
    identical and the epsilon is the accountant's for q = 32/64 and 6 steps. (Opacus' make_private before
    accelerate's prepare of the loader would replace Poisson sampling by sharding and let each rank add its own
    noise: the replicas would differ.)"""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"})
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(root / "accelerate_configs" / "cpu_ddp.yaml"),
           str(root / "tests" / "dp_fit_script.py"), str(tmp_path), json.dumps({"per_device_batch_size": 8, "gradient_accumulation_steps": 2})]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks[0]["num_processes"] == 2 and ranks[0]["weights"] == ranks[1]["weights"]  # one noise draw, shared
    from opacus.accountants import RDPAccountant

    peer = RDPAccountant()
    peer.history = [(0.8, 0.5, 6)]  # global batch 2 x 8 x 2 of 64: q = 0.5, 2 draws per epoch
    assert ranks[0]["steps"] == ranks[0]["privacy"]["steps"] == 6
    assert ranks[0]["privacy"]["epsilon"] == pytest.approx(peer.get_epsilon(delta=1 / 64), rel=1e-9)


def test_datacube_recipe_trains_with_dp_and_its_card_states_the_budget(tmp_path):
    """The datacube U-Net (Conv3d, GroupNorm, Linear: every layer Opacus' own) through its recipe with --dp: the
    training windows held in memory for Poisson sampling, epsilon within the target, in metrics.json and the card."""
    import json
    from pathlib import Path

    from astrobio_hf.data.synth import synthesize_planets
    from astrobio_hf.recipes.train_datacube import main

    data = tmp_path / "planets"
    synthesize_planets(data, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64)
    out = tmp_path / "run"
    tiny = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "datacube" / "tiny.yaml"
    main([str(tiny), "--data_dir", str(data), "--output_dir", str(out), "--report_to", "none", "--dp", "true",
          "--target_epsilon", "3", "--per_device_batch_size", "8", "--max_steps", "8", "--ema_decay", "0"])
    privacy = json.loads((out / "metrics.json").read_text())["privacy"]
    assert privacy["steps"] == 8 and 2.5 < privacy["epsilon"] <= 3.0 * (1 + 1e-3) and privacy["sample_rate"] == pytest.approx(1 / 4)  # Opacus: 1 / batches per epoch (25 windows, batch 8)
    card = (out / "README.md").read_text()
    assert "## Privacy" in card and f"({privacy['epsilon']:.3g}, {privacy['delta']:.3g})-differential privacy" in card


def test_membership_auc_separates_only_what_differs():
    from astrobio_hf.evaluation.privacy_report import membership_auc

    rng = np.random.default_rng(0)
    same = rng.normal(size=400)
    assert abs(membership_auc(same[:200], same[200:])["auc"] - 0.5) < 0.08
    assert membership_auc(np.zeros(50), np.ones(80))["auc"] == 1.0  # members' losses all lower: the attack wins
    with pytest.raises(ValueError, match="at least 2 members"):
        membership_auc(np.zeros(1), np.ones(5))


def test_privacy_report_cli_trains_each_setting_and_writes_the_table(tmp_path, capsys):
    import json
    from pathlib import Path

    from astrobio_hf.cli import main
    from astrobio_hf.data.synth import synthesize_planets

    data = tmp_path / "planets"
    synthesize_planets(data, n_planets=9, n_climate_steps=12, n_levels=4, n_lat=8, n_lon=16, seed=3, series_per_shard=64)
    tiny = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "datacube" / "tiny.yaml"
    root = tmp_path / "report"
    assert main(["privacy", "datacube", "--epsilons", "4", "--output-root", str(root), str(tiny), "--data_dir", str(data),
                 "--per_device_batch_size", "8", "--max_steps", "4", "--ema_decay", "0"]) == 0
    report = json.loads((root / "privacy_report.json").read_text())
    assert [r["setting"] for r in report["rows"]] == ["no_dp", "epsilon_4"]
    assert report["rows"][0]["privacy"] is None and report["rows"][1]["privacy"]["epsilon"] <= 4 * (1 + 1e-3)
    assert all(0 <= r["attack"]["auc"] <= 1 and r["attack"]["members"] >= 2 for r in report["rows"])
    assert (root / "privacy_utility.png").is_file() and "membership-attack AUC" in (root / "privacy_report.md").read_text()
    assert main(["privacy", "datacube", "--epsilons", "0", "--output-root", str(root / "bad"), str(tiny)]) == 2
    assert "expected positive budgets" in capsys.readouterr().err


def test_virtual_steps_give_the_big_batch_and_one_charge_per_step(tmp_path):
    """--gradient_accumulation_steps under --dp is Opacus' virtual steps: per-device batch 8 x 2 accumulation steps
    trains the same weights as per-device batch 16 (same Poisson draws, same noise, the clipped per-sample sums
    added over the chunks), and the accountant is charged once per optimizer step (accelerate's own accumulation
    charged every micro-step and applied only half the updates)."""
    from opacus.accountants import RDPAccountant

    big = _fit_dp(tmp_path / "big", noise_multiplier=0.8, per_device_batch_size=16)
    virtual = _fit_dp(tmp_path / "virtual", noise_multiplier=0.8, per_device_batch_size=8, gradient_accumulation_steps=2)
    assert virtual.state.global_step == big.state.global_step == 12
    assert virtual.state.privacy["steps"] == 12 and virtual.state.privacy["sample_rate"] == pytest.approx(0.25)
    peer = RDPAccountant()
    peer.history = [(0.8, 0.25, 12)]
    assert virtual.state.privacy["epsilon"] == pytest.approx(peer.get_epsilon(delta=1 / 64), rel=1e-9)
    for a, b in zip(big.model.parameters(), virtual.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and the chunks did happen: a one-row physical batch is the per-example loop, same result again
    single = _fit_dp(tmp_path / "single", noise_multiplier=0.8, per_device_batch_size=1, gradient_accumulation_steps=16)
    for a, b in zip(big.model.parameters(), single.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("global_token", [False, True])
def test_cnn_vit_trains_privately_with_exact_per_sample_gradients(global_token):
    """The CNN-ViT under Opacus: its nn.MultiheadAttention layers run as PerSampleAttention with the same outputs,
    the [CLS] token and position table get their per-sample gradients from the family's own grad sampler, and every
    parameter's per-sample gradient equals a per-example loop's; afterwards the family's own modules come back with
    the same state-dict names and weights."""
    import sys
    from pathlib import Path

    from opacus import GradSampleModule

    from astrobio_hf.models.cnn_vit import CnnVitForParameterRegression
    from astrobio_hf.training.privacy import register_family_grad_samplers, restore_attention, swap_attention

    sys.path.insert(0, str(Path(__file__).parent))
    from test_modeling_cnn_vit import hydrostatic_cube, tiny_config

    torch.manual_seed(0)
    config = tiny_config(global_token=global_token, dropout=0.0)
    model = CnnVitForParameterRegression(config).double()
    reference = CnnVitForParameterRegression(config).double()
    reference.load_state_dict(model.state_dict())
    x = hydrostatic_cube(config, batch_size=4)
    labels = torch.tensor([[9.0, 29.0, 1361.0]], dtype=torch.float64) + torch.randn(4, 3, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert swap_attention(model) == [f"cnn_vit.layers.{i}.layer.self_attn" for i in range(config.num_layers)]
    model.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).mean, reference(x).mean, atol=1e-12, rtol=0)
    register_family_grad_samplers(model)
    private = GradSampleModule(model)
    private.train()
    private(x, labels=labels).loss.backward()
    reference.train()
    per_example = []
    for i in range(4):
        reference.zero_grad()
        reference(x[i: i + 1], labels=labels[i: i + 1]).loss.backward()
        per_example.append({n: p.grad.clone() for n, p in reference.named_parameters()})
    scale = max(g.abs().max().item() for grads in per_example for g in grads.values())
    for name, p in model.named_parameters():
        if ".self_attn." in name:  # q/k/v rows of the packed in_proj, out_proj as is
            layer, _, leaf = name.partition(".self_attn.")
            kind, _, what = leaf.partition(".")
            if kind == "out_proj":
                expected = torch.stack([g[f"{layer}.self_attn.out_proj.{what}"] for g in per_example])
            else:
                packed = torch.stack([g[f"{layer}.self_attn.in_proj_{what}"] for g in per_example])
                d = packed.shape[1] // 3
                expected = packed[:, "qkv".index(kind[0]) * d:("qkv".index(kind[0]) + 1) * d]
        else:
            expected = torch.stack([g[name] for g in per_example])
        torch.testing.assert_close(p.grad_sample, expected, atol=1e-9 * scale, rtol=0, msg=name)
    private.remove_hooks()
    assert restore_attention(model) == config.num_layers
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=0, rtol=0)


def test_resume_after_sigkill_gives_the_same_weights_and_epsilon(tmp_path):
    """A DP run killed with SIGKILL right after step 9 (last checkpoint: step 8) and started again with the same
    command resumes from step 8 and ends with the weights and the epsilon of an uninterrupted run."""
    import json
    import signal
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent / "dp_fit_script.py"
    settings = json.dumps({"checkpoint_every": 4, "keep_checkpoints": 5})

    def run(out, kill_at=0):
        return subprocess.run([sys.executable, str(script), str(out), settings, str(kill_at)], capture_output=True, text=True,
                              timeout=300, check=False, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})

    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run(tmp_path / "killed", kill_at=9)
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "rank0.json").exists()
    resumed = run(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step 8" in resumed.stderr
    a, b = (json.loads((tmp_path / d / "rank0.json").read_text()) for d in ("straight", "killed"))
    assert a["steps"] == b["steps"] == 12 and b["privacy"]["steps"] == 12
    assert b["privacy"]["epsilon"] == pytest.approx(a["privacy"]["epsilon"], rel=1e-12)
    assert b["weights"] == a["weights"]
