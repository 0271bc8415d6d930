"""Run by tests/test_privacy.py: the toy regressor trained with --dp through the shared loop; each rank writes its
final weights and the privacy spent to OUT/rank<k>.json. `python dp_fit_script.py OUT [OVERRIDES_JSON] [KILL_AT]`:
OVERRIDES_JSON updates the TrainingArguments (e.g. per-device batch and accumulation); KILL_AT > 0 sends this process
SIGKILL right after optimizer step KILL_AT (no clean exit, no final save). Under `accelerate launch`: 2 gloo processes."""

import json
import os
import signal
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from astrobio_hf.training import TrainingArguments, create_optimizer, finish_run, fit, start_run
from astrobio_hf.training.args import resolved_config


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(5, 1)

    def forward(self, x):
        return self.linear(x)


class KillAfter:
    def __init__(self, step: int):
        self.step = step

    def after_step(self, state, accelerator):
        if self.step and state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(out: str, overrides: dict, kill_at: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x @ torch.arange(1.0, 6.0)).unsqueeze(1)
    settings = dict(output_dir=f"{out}/run", report_to="none", per_device_batch_size=16, checkpoint_every=100, ema_decay=0.0,
                    learning_rate=0.05, warmup_ratio=0.0, num_epochs=3, eval_every=0, dp=True, max_grad_norm=1.0, noise_multiplier=0.8)
    args = TrainingArguments(**{**settings, **overrides})
    acc = start_run(args)
    torch.manual_seed(0)
    model = Regressor()
    loader = DataLoader(TensorDataset(x, y), batch_size=args.per_device_batch_size)

    def loss_fn(m, batch, state):
        bx, by = batch
        loss = nn.functional.mse_loss(m(bx), by)
        return loss, {}

    def evaluate(m, state):
        with torch.no_grad():
            return {"loss": nn.functional.mse_loss(m(x), y).item()}

    result = fit(acc, model, create_optimizer(model, args.learning_rate, 0.0), loader, args, loss_fn=loss_fn, evaluate=evaluate,
                 micro_batches_per_epoch=-(-len(loader) // acc.num_processes), run_config=resolved_config(args), project="test", hooks=[KillAfter(kill_at)])
    weights = [p.detach().flatten().tolist() for p in result.model.parameters()]
    with open(f"{out}/rank{acc.process_index}.json", "w") as f:
        json.dump({"weights": weights, "privacy": result.state.privacy, "steps": result.state.global_step,
                   "num_processes": acc.num_processes}, f)
    finish_run(result)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
