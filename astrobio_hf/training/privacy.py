"""Differentially private training (DP-SGD) with Opacus: the pieces the shared loop builds on (issue 15).

What DP-SGD needs and who does it here:

* per-sample gradients, each clipped to `max_grad_norm` (flat, or per layer), Gaussian noise of standard deviation
  `noise_multiplier * max_grad_norm` on their sum, and Poisson sampling of the training rows: Opacus'
  `PrivacyEngine.make_private` (GradSampleModule + DPOptimizer + DPDataLoader);
* an accountant that states (epsilon, delta) for the (noise, sampling rate, steps) history: Opacus' RDP or PRV
  accountant; its `state_dict` is the history, registered with accelerate's checkpointing so that a resumed run
  reports the epsilon of an uninterrupted one (`register_accountant`).

Order with Accelerate (measured in issue 15 on 2 gloo processes): `accelerator.prepare(model, optimizer)` first,
`make_private` after, with the *raw* DataLoader left to Opacus (its Poisson sampling is what the guarantee assumes);
`prepare`-ing the loader afterwards would replace the sampling by accelerate's sharding. `make_private` here does it
in that order.

Layers Opacus cannot train privately (BatchNorm: a sample's output depends on its batch) are refused by name before
anything starts, with the fix (`refuse_unsupported_layers`).

Written here rather than taken from Opacus: only the layer report with module names (Opacus' validator drops the
names) and the one-call order above; everything private is Opacus' own.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

from torch import nn

logger = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv")
CLIPPING = ("flat", "per_layer")


@dataclass
class PrivacySpent:
    """What a private run has spent, as written to metrics.json and the card."""

    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    accountant: str

    def as_dict(self) -> dict:
        return asdict(self)


def unsupported_layers(model: nn.Module) -> list[str]:
    """`"name (Type): reason"` for every submodule Opacus refuses (its registered validators, run per named
    module so that the report can say which layer), and a model in eval mode."""
    from opacus.validators import ModuleValidator

    problems = []
    for name, module in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(module))
        if validator is None or not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        for error in validator(module):
            reason = str(error).split(".")[0]
            problems.append(f"{name or '<root>'} ({type(module).__name__}): {reason}")
    return problems


def refuse_unsupported_layers(model: nn.Module) -> None:
    """One-line ValueError naming every layer DP-SGD cannot train, with the fix, before any work starts."""
    problems = unsupported_layers(model)
    if problems:
        raise ValueError(
            "--dp: expected layers whose per-sample gradients Opacus can compute, got " + "; ".join(problems)
            + " — replace BatchNorm by GroupNorm (opacus.validators.ModuleValidator.fix(model) does it) or train without --dp"
        )


def make_private(accelerator, model: nn.Module, optimizer, train_loader, *, max_grad_norm: float, target_delta: float,
                 noise_multiplier: float | None = None, target_epsilon: float | None = None, epochs: int | None = None,
                 accountant: str = "rdp", clipping: str = "flat", secure_mode: bool = False):
    """Prepare `model` and `optimizer` with accelerate, then make them private with Opacus over the raw
    `train_loader` (Poisson sampling). Give `noise_multiplier`, or `target_epsilon` with `epochs` (Opacus finds the
    noise for that budget). Returns `(model, optimizer, private_loader, engine)`."""
    from opacus import PrivacyEngine

    if accountant not in ACCOUNTANTS:
        raise ValueError(f"--dp_accountant: expected one of {list(ACCOUNTANTS)}, got {accountant!r}")
    if clipping not in CLIPPING:
        raise ValueError(f"--dp_clipping: expected one of {list(CLIPPING)}, got {clipping!r}")
    if not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
        raise ValueError(f"--max_grad_norm: expected a positive clipping norm with --dp, got {max_grad_norm}")
    if not 0 < target_delta < 1:
        raise ValueError(f"--target_delta: expected a value in (0, 1), got {target_delta}")
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("--dp: expected exactly one of --noise_multiplier and --target_epsilon, got "
                         + ("both" if noise_multiplier is not None else "neither"))
    if target_epsilon is not None and not (target_epsilon > 0 and epochs):
        raise ValueError(f"--target_epsilon: expected a positive budget and the run's epochs, got {target_epsilon} over {epochs} epochs")
    refuse_unsupported_layers(model)
    model, optimizer = accelerator.prepare(model, optimizer)  # first: accelerate's DDP wrapper, then Opacus
    engine = PrivacyEngine(accountant=accountant, secure_mode=secure_mode)
    per_layer = clipping == "per_layer"
    if per_layer:
        n = sum(1 for p in model.parameters() if p.requires_grad)
        norms = [max_grad_norm / math.sqrt(n)] * n  # the same total norm split evenly across the layers
    common = dict(module=model, optimizer=optimizer, data_loader=train_loader, max_grad_norm=norms if per_layer else max_grad_norm,
                  poisson_sampling=True, clipping=clipping)
    # (several processes: Opacus sees accelerate's DDP wrapper and shards the Poisson sampling and the noise itself)
    if target_epsilon is not None:
        model, optimizer, loader = engine.make_private_with_epsilon(target_epsilon=target_epsilon, target_delta=target_delta,
                                                                    epochs=epochs, **common)
    else:
        model, optimizer, loader = engine.make_private(noise_multiplier=noise_multiplier, **common)
    logger.info(
        "DP-SGD: noise multiplier %.4g, clipping %s at %.4g, sampling rate %.4g (Poisson), %s accountant, delta %.3g",
        optimizer.noise_multiplier, clipping, max_grad_norm, 1 / len(loader), accountant, target_delta,
    )
    return model, optimizer, loader, engine


def register_accountant(accelerator, engine) -> None:
    """Checkpoint the accountant's history with the run (accelerate calls its state_dict / load_state_dict), so a
    resumed run continues the same history and reports the same epsilon."""
    accelerator.register_for_checkpointing(engine.accountant)


def privacy_spent(engine, optimizer, *, delta: float, max_grad_norm: float) -> PrivacySpent:
    """Epsilon at `delta` for the history so far (the accountant's own computation)."""
    history = engine.accountant.history
    steps = int(sum(h[2] for h in history))
    sample_rate = float(history[-1][1]) if history else 0.0
    epsilon = float(engine.accountant.get_epsilon(delta=delta)) if history else 0.0
    return PrivacySpent(epsilon=epsilon, delta=delta, noise_multiplier=float(optimizer.noise_multiplier), max_grad_norm=max_grad_norm,
                        sample_rate=sample_rate, steps=steps, accountant=engine.accountant.mechanism())


__all__ = ["PrivacySpent", "make_private", "privacy_spent", "refuse_unsupported_layers", "register_accountant", "unsupported_layers"]
