"""Kill -9 a tiny training at random instants, resume it, and check it ends where an uninterrupted run ends.

Each trial starts `train --preset tiny --vq-epochs 2 --epochs 2` in a fresh folder, SIGKILLs it at a uniform
random instant of the reference run's duration (saves included, when they happen to fall there), then runs
`--resume` once. A trial passes when the resume exits 0, writes every artifact (run_info.json, both metrics
files, the curve, progress.json saying both stages finished, no resume state or temp file left) and its
weights equal the uninterrupted run's. "Finished early" counts resumes that said there was nothing to do
although the run was not done.

    python scripts/kill_resume.py --kills 50 --json runs/kill_resume.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

TRAIN = ["--preset", "tiny", "--vq-epochs", "2", "--epochs", "2", "--no-progress", "--device", "cpu"]
ARTIFACTS = ["run_info.json", "vqvae_metrics.json", "transformer_metrics.json", "training_curve.png",
             "model.safetensors", "vqvae.safetensors"]


def command(out: Path, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "tinychameleon", "train", *TRAIN, "--out", str(out)] + (["--resume"] if resume else [])


def same_weights(a: Path, b: Path) -> bool:
    for name in ("model.safetensors", "vqvae.safetensors"):
        left, right = load_file(str(a / name)), load_file(str(b / name))
        if left.keys() != right.keys() or not all(torch.equal(left[k], right[k]) for k in left):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        reference = Path(folder) / "reference"
        started = time.perf_counter()
        subprocess.run(command(reference), check=True, env=env, stdout=subprocess.DEVNULL)
        duration = time.perf_counter() - started
        trials = []
        for trial in range(args.kills):
            out = Path(folder) / f"trial{trial}"
            at = float(rng.uniform(0.0, duration))
            process = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(at)
            process.send_signal(signal.SIGKILL)
            process.wait()
            if not (out / "config.json").exists():   # killed before the run existed: a fresh start, as a user would
                resumed = subprocess.run(command(out), env=env, capture_output=True, text=True)
            else:
                resumed = subprocess.run(command(out, resume=True), env=env, capture_output=True, text=True)
            progress = json.loads((out / "progress.json").read_text()) if (out / "progress.json").exists() else {}
            row = {"trial": trial, "killed_at_s": round(at, 2), "exit": resumed.returncode,
                   "finished_early": "nothing to resume" in resumed.stdout,
                   "artifacts": all((out / name).exists() for name in ARTIFACTS)
                   and progress == {"vqvae": {"finished": True}, "transformer": {"finished": True}}
                   and not list(out.glob("*_state.pt")) and not list(out.glob(".*.tmp"))}
            row["same_weights"] = row["exit"] == 0 and row["artifacts"] and same_weights(reference, out)
            # "nothing to resume" is right when the kill came after the run had finished; early otherwise
            row["finished_early"] = row["finished_early"] and not row["same_weights"]
            trials.append(row)
            print(json.dumps(row), flush=True)
    summary = {"kills": args.kills, "reference_s": round(duration, 1),
               "passed": sum(row["same_weights"] for row in trials),
               "finished_early": sum(row["finished_early"] for row in trials)}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "trials": trials}, indent=2) + "\n")


if __name__ == "__main__":
    main()
