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

Batches: the global batch of a step (per-device batch x processes x accumulation steps) is the *expected* size of
one Poisson draw (`poisson_source_loader`, sampling rate = global batch / N). Opacus' virtual steps do the
accumulation (`private_step`): each process's draw is cut into physical chunks of at most --per_device_batch_size
rows; every chunk but the last is clipped and added to the running sum with the step skipped (`signal_skip_step`,
no update, no charge), the last adds the noise once and charges the accountant once. The same cut also caps the
memory of a large draw when there is no accumulation. Accelerate's own accumulation is never used with --dp: it
would scale each per-sample gradient by 1/k before clipping and skip updates the accountant has charged.

Layers: `nn.MultiheadAttention` (inside `nn.TransformerEncoderLayer`) becomes `PerSampleAttention` (the same
computation with separate q/k/v linears that have per-sample gradients) for the run and is put back,
with the trained weights, before the model is handed back (`swap_attention` / `restore_attention`); a family
module with its own parameters and no Opacus grad sampler gives one by a `per_sample_gradients(activations,
backprops)` method (the CNN-ViT's [CLS] and position table). Layers Opacus cannot train privately (BatchNorm: a
sample's output depends on its batch) are refused by name before anything starts, with the fix
(`refuse_unsupported_layers`).

Written here rather than taken from Opacus: the layer report with module names (Opacus' validator drops the
names), the one-call order above, `PerSampleAttention` (see its docstring for why not Opacus' DPMultiheadAttention)
and the loop around the virtual steps; everything private is Opacus' own.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

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
    examples: int = 0  # training examples (the unit of privacy): delta defaults to 1 / examples

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


class PerSampleAttention(nn.Module):
    """nn.MultiheadAttention (batch-first) as separate q/k/v/out linears, whose per-sample gradients Opacus computes,
    around `F.scaled_dot_product_attention`: the same outputs, for `nn.TransformerEncoderLayer(batch_first=True)`
    under DP-SGD. `in_proj_bias = None` keeps the encoder layer off its fused inference path (it reads the packed
    weights).

    Written here instead of Opacus' DPMultiheadAttention: in opacus 1.6 its `batch_first=True` path reshapes the
    heads' output without the transpose (off by ~1 against nn.MultiheadAttention, test_privacy checks ours to 1e-12),
    and its sequence-first path hands Opacus' Linear grad samplers sequence-first activations (wrong per-sample
    gradients)."""

    batch_first = True
    in_proj_bias = None

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        if not attention._qkv_same_embed_dim or attention.bias_k is not None or attention.add_zero_attn:
            raise ValueError("--dp: expected nn.MultiheadAttention with packed q/k/v weights, no bias_k/bias_v and no add_zero_attn")
        d, w, bias = attention.embed_dim, attention.in_proj_weight, attention.in_proj_bias
        self.num_heads, self.dropout = attention.num_heads, attention.dropout
        kw = dict(device=w.device, dtype=w.dtype)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d, bias=bias is not None, **kw) for _ in range(3))
        self.out_proj = nn.Linear(d, d, bias=attention.out_proj.bias is not None, **kw)
        with torch.no_grad():
            for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                proj.weight.copy_(w[i * d:(i + 1) * d])
                if bias is not None:
                    proj.bias.copy_(bias[i * d:(i + 1) * d])
            self.out_proj.weight.copy_(attention.out_proj.weight)
            if attention.out_proj.bias is not None:
                self.out_proj.bias.copy_(attention.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None, is_causal=False,
                average_attn_weights=True):
        from einops import rearrange

        if need_weights:
            raise ValueError("--dp: the attention weights are not returned under DP-SGD (need_weights=True)")
        q, k, v = (rearrange(proj(t), "b s (h d) -> b h s d", h=self.num_heads)
                   for proj, t in ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        mask = None  # True = attend (scaled_dot_product_attention's boolean convention) or an additive float mask
        if attn_mask is not None:
            mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(q.dtype)
        if key_padding_mask is not None:
            keep = ~key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
            mask = keep if mask is None else (mask & keep if mask.dtype == torch.bool else mask.masked_fill(~keep, float("-inf")))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=bool(is_causal) and mask is None)
        return self.out_proj(rearrange(out, "b h s d -> b s (h d)")), None

    def to_multihead_attention(self) -> nn.MultiheadAttention:
        w = self.q_proj.weight
        mha = nn.MultiheadAttention(w.shape[1], self.num_heads, dropout=self.dropout, bias=self.q_proj.bias is not None,
                                    batch_first=True, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            if self.q_proj.bias is not None:
                mha.in_proj_bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
            mha.out_proj.weight.copy_(self.out_proj.weight)
            if self.out_proj.bias is not None:
                mha.out_proj.bias.copy_(self.out_proj.bias)
        return mha


def swap_attention(model: nn.Module, optimizer=None) -> list[str]:
    """Every trainable batch-first nn.MultiheadAttention becomes a PerSampleAttention with the same weights (and
    the same outputs); `optimizer` (not stepped yet) gets the new q/k/v parameters in the param groups of the packed
    ones. Returns the swapped layers' names (logged: nothing is replaced silently)."""
    swapped, mapping = [], {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.MultiheadAttention and child.in_proj_weight is not None and child.in_proj_weight.requires_grad:
                full = f"{name}.{child_name}" if name else child_name
                if not child.batch_first:
                    raise ValueError(f"--dp: expected batch-first attention, got {full} with batch_first=False")
                new = PerSampleAttention(child)
                mapping[child.in_proj_weight] = [new.q_proj.weight, new.k_proj.weight, new.v_proj.weight]
                if child.in_proj_bias is not None:
                    mapping[child.in_proj_bias] = [new.q_proj.bias, new.k_proj.bias, new.v_proj.bias]
                mapping[child.out_proj.weight] = [new.out_proj.weight]
                if child.out_proj.bias is not None:
                    mapping[child.out_proj.bias] = [new.out_proj.bias]
                setattr(module, child_name, new)
                swapped.append(full)
    if swapped and optimizer is not None:
        if optimizer.state:
            raise ValueError("--dp: expected an optimizer that has not stepped yet (its state is keyed by the packed attention weights)")
        for group in optimizer.param_groups:
            group["params"] = [q for p in group["params"] for q in mapping.get(p, [p])]
    if swapped:
        logger.info("DP-SGD: %d nn.MultiheadAttention layers train as PerSampleAttention (separate q/k/v linears, same outputs) and come back at the end (%s)",
                    len(swapped), ", ".join(swapped[:4]) + (", ..." if len(swapped) > 4 else ""))
    return swapped


def restore_attention(model: nn.Module) -> int:
    """Undo `swap_attention` with the trained weights: the family's own modules (and state-dict names) again."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, PerSampleAttention):
                setattr(module, child_name, child.to_multihead_attention())
                count += 1
    return count


def register_family_grad_samplers(model: nn.Module) -> None:
    """Opacus grad samplers for family modules that hold their own parameters (a [CLS] token, a position table) and
    compute their per-sample gradients themselves (`per_sample_gradients(activations, backprops) -> {param: grad}`)."""
    from opacus import GradSampleModule
    from opacus.grad_sample import register_grad_sampler

    for module in model.modules():
        kind = type(module)
        if hasattr(kind, "per_sample_gradients") and kind not in GradSampleModule.GRAD_SAMPLERS:
            register_grad_sampler(kind)(lambda layer, activations, backprops: layer.per_sample_gradients(activations, backprops))


def poisson_source_loader(loader: DataLoader, global_batch_size: int) -> DataLoader:
    """The loader Opacus draws Poisson batches from: the same dataset and collate at the global batch size, whose
    length sets the sampling rate (1 / len: expected draw = the global batch)."""
    if len(loader.dataset) < global_batch_size:
        logger.warning("DP-SGD: %d training examples < the global batch %d: every example is sampled with probability 1",
                       len(loader.dataset), global_batch_size)
    return DataLoader(loader.dataset, batch_size=global_batch_size, collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory)


def private_step(accelerator, model, optimizer, lr_scheduler, guard, loss_fn, batch, state, *, physical_batch_size: int):
    """One DP-SGD optimizer step on this process's Poisson draw `batch` (see the module docstring): Opacus' virtual
    steps over physical chunks, one noise draw and one accountant charge. Returns `(loss, terms, step_ok)`, the
    loss and terms averaged over the chunks by rows."""
    from accelerate.utils import find_batch_size, slice_tensors
    from torch.nn.parallel import DistributedDataParallel

    rows = find_batch_size(batch) or 0
    n_chunks = max(1, math.ceil(rows / physical_batch_size))
    bounds = [(i * rows // n_chunks, (i + 1) * rows // n_chunks) for i in range(n_chunks)]
    inner = getattr(model, "_module", None)
    ddp = inner if isinstance(inner, DistributedDataParallel) else None
    loss_sum, term_sums = 0.0, {}
    for i, (lo, hi) in enumerate(bounds):
        last = i == n_chunks - 1
        chunk = batch if n_chunks == 1 else slice_tensors(batch, slice(lo, hi))
        # only the last chunk's backward all-reduces: each process cuts its own draw into its own number of chunks
        with ddp.no_sync() if ddp is not None and not last else nullcontext():
            loss, terms = loss_fn(model, chunk, state)
            accelerator.backward(loss)
        weight = (hi - lo) / rows if rows else 1.0
        loss_sum = loss_sum + loss.detach() * weight
        for k, v in terms.items():
            term_sums[k] = term_sums.get(k, 0.0) + (v.detach() if torch.is_tensor(v) else v) * weight
        if not last:
            optimizer.signal_skip_step(do_skip=True)
            optimizer.step()  # clip this chunk's per-sample gradients into the sum: no update, no noise, no charge
            optimizer.zero_grad(set_to_none=True)
    step_ok = guard.check(loss_sum, None)
    if step_ok:
        optimizer.step()  # clip the last chunk, add the noise once, update, charge the accountant once
        lr_scheduler.step()
    else:
        for p in optimizer.params:  # a skipped step leaves no clipped sum behind for the next draw
            p.summed_grad = None
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, term_sums, step_ok


def refuse_unsupported_layers(model: nn.Module) -> None:
    """One-line ValueError naming every layer DP-SGD cannot train, with the fix, before any work starts."""
    problems = unsupported_layers(model)
    if problems:
        raise ValueError(
            "--dp: expected layers whose per-sample gradients Opacus can compute, got " + "; ".join(problems)
            + " — replace BatchNorm by GroupNorm (opacus.validators.ModuleValidator.fix(model) does it) or train without --dp"
        )


def make_private(accelerator, model: nn.Module, optimizer, train_loader, *, max_grad_norm: float, target_delta: float,
                 noise_multiplier: float | None = None, target_epsilon: float | None = None, steps: int | None = None,
                 accountant: str = "rdp", clipping: str = "flat", secure_mode: bool = False):
    """Prepare `model` and `optimizer` with accelerate, then make them private with Opacus over the raw
    `train_loader` (Poisson sampling). Give `noise_multiplier`, or `target_epsilon` with the run's optimizer `steps` (Opacus finds the
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
    if target_epsilon is not None and not (target_epsilon > 0 and steps):
        raise ValueError(f"--target_epsilon: expected a positive budget and the run's steps, got {target_epsilon} over {steps} steps")
    refuse_unsupported_layers(model)
    register_family_grad_samplers(model)
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
        # the noise for exactly the steps this run takes (Opacus' make_private_with_epsilon counts whole epochs, which
        # over-noises a --max_steps run that stops inside an epoch)
        from opacus.accountants.utils import get_noise_multiplier

        noise_multiplier = get_noise_multiplier(target_epsilon=target_epsilon, target_delta=target_delta, sample_rate=1 / len(train_loader),
                                                steps=steps, accountant=accountant, epsilon_tolerance=0.005)
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


__all__ = ["PerSampleAttention", "PrivacySpent", "make_private", "poisson_source_loader", "private_step", "restore_attention",
           "swap_attention", "privacy_spent", "refuse_unsupported_layers", "register_accountant", "unsupported_layers"]
