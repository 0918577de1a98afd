"""torchrun + DistributedDataParallel on CPU (gloo): 2 processes take the same step as 1."""

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file


def train_command(out, cache_dir):
    return ["-m", "tinychameleon", "train", "--preset", "tiny", "--out", str(out), "--device", "cpu",
            "--no-progress", "--max-train-examples", "64", "--batch-size", "64", "--cache-dir", str(cache_dir)]


def test_two_process_step_matches_single_process_step(tmp_path, cache_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, *train_command(tmp_path / "single", cache_dir)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    distributed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                  *train_command(tmp_path / "ddp", cache_dir)],
                                 capture_output=True, text=True, env=env, timeout=300)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    # Only rank 0 logs: one epoch line per stage, not two.
    assert distributed.stdout.count("transformer epoch 1/1") == 1
    before = load_file(str(tmp_path / "single" / "model.safetensors"))
    after = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=2e-5, rtol=1e-4)
    # The step really changed the weights (so the comparison is not trivially equal at init).
    from tinychameleon.config import make_config
    from tinychameleon.checkpoint import build_transformer

    torch.manual_seed(0)
    initial = build_transformer(make_config("tiny")).state_dict()
    assert not torch.allclose(initial["head.weight"], before["head.weight"])
