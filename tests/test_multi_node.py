"""Several machines: `accelerate_configs/multi_node.yaml` run as two "nodes" on this machine (two `accelerate launch`
processes with machine ranks 0 and 1, one process each, rendezvous over the loopback address, gloo), training the
shared loop's toy regressor (tests/dp_fit_script.py without DP, per-device batch 8): identical replicas on both
nodes, and the weights of one process on the same global batch (16) to float rounding. The same config and
command, with each machine's rank and the main machine's address, is the README's SLURM launch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "dp_fit_script.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat(path: Path) -> np.ndarray:
    return np.concatenate([np.asarray(w) for w in json.loads(path.read_text())["weights"]])


def test_two_nodes_over_loopback_match_one_process_on_the_same_global_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"})
    port = str(_free_port())
    launch = str(Path(sys.executable).with_name("accelerate"))
    nodes = [
        subprocess.Popen([launch, "launch", "--config_file", str(ROOT / "accelerate_configs" / "multi_node.yaml"), "--num_processes", "2",
                          "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port,
                          "--mixed_precision", "no", str(SCRIPT), str(tmp_path / "nodes"),
                          json.dumps({"dp": False, "noise_multiplier": 0, "per_device_batch_size": 8})],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(o[-3000:] for o in outputs)
    info = (tmp_path / "nodes" / "run" / "run_info.txt").read_text()
    assert "MULTI_CPU" in info and "num_processes=2" in info
    single = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "single"),
                             json.dumps({"dp": False, "noise_multiplier": 0, "per_device_batch_size": 16})],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    node0, node1 = _flat(tmp_path / "nodes" / "rank0.json"), _flat(tmp_path / "nodes" / "rank1.json")
    one = _flat(tmp_path / "single" / "rank0.json")
    steps = [json.loads((tmp_path / d / "rank0.json").read_text())["steps"] for d in ("nodes", "single")]
    assert steps == [12, 12]  # 64 rows, global batch 16, 3 epochs
    np.testing.assert_array_equal(node0, node1)
    np.testing.assert_allclose(node0, one, rtol=0, atol=1e-6)
    assert np.abs(one).max() > 0.1  # it trained
