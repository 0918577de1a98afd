"""Raster vs next-scale on one harness: the table of issue 23, from each checkpoint's `evaluate` metrics and timings
measured here in one run (these machines are noisy: the two generators are timed back to back, interleaved).

    tinychameleon evaluate --checkpoint raster --out runs/eval-raster --samples 1000
    tinychameleon evaluate --checkpoint var --out runs/eval-var --samples 1000
    python scripts/raster_vs_var.py --evaluations runs/eval-raster runs/eval-var --out runs/raster_vs_var.json

Per generator: tokens and sequential forward passes per image, text -> image, image -> text, unconditional
agreement, shape precision and recall (and as multiples of real digits'), nats per image (-log p(image | caption)),
ms per image at batch 1 (one request, shipped settings) and at batch 1024 (one call of 1024 prompts), and the
training wall time of the checkpoint (its run_info.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tinychameleon.data.colored import load_splits
from tinychameleon.io_utils import write_json
from tinychameleon.pipeline import Pipeline

PROMPT = "dark green eight on bright cyan"


def forward_passes(pipe: Pipeline) -> int:
    """Sequential forward passes of the transformer for one text -> image request at shipped settings."""
    calls = []
    model = pipe.model
    name = "run" if pipe.next_scale else "forward"
    original = getattr(model, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    setattr(model, name, counted)
    try:
        pipe.generate_images([PROMPT], seed=0, image_candidates=1)
    finally:
        delattr(model, name)
    return len(calls)


def timings(pipes: dict, prompts: list[str], repeats: int) -> dict:
    """Median ms per image at batch 1 and at batch len(prompts), the generators interleaved."""
    ones, batches = {name: [] for name in pipes}, {name: [] for name in pipes}
    for name, pipe in pipes.items():      # warm-up
        pipe.generate_images([PROMPT], seed=0)
    for _ in range(repeats):
        for name, pipe in pipes.items():
            started = time.perf_counter()
            pipe.generate_images([PROMPT], seed=0)
            ones[name].append(1000 * (time.perf_counter() - started))
    for _ in range(max(1, repeats // 5)):
        for name, pipe in pipes.items():
            started = time.perf_counter()
            pipe.generate_images(prompts, seed=0)
            batches[name].append(1000 * (time.perf_counter() - started) / len(prompts))
    return {name: {"ms_batch_1": float(np.median(ones[name])), "ms_batch_1024": float(np.median(batches[name]))}
            for name in pipes}


def row(name: str, pipe: Pipeline, metrics: dict, timing: dict) -> dict:
    split = metrics["split"]
    real = metrics["real_test_looks"]["shape"]
    shape = metrics["text_to_image"]["looks"]["shape"]
    info = json.loads((Path(pipe.source) / "run_info.json").read_text())
    return {"generator": name, "checkpoint": pipe.source, "tokens_per_image": pipe.vocab.image_length,
            "forward_passes": forward_passes(pipe),
            "text_to_image": metrics["text_to_image"]["all"], "image_to_text": metrics["image_to_text"]["exact"],
            "unconditional": metrics["unconditional"]["agreement"],
            "clean": metrics["text_to_image"]["looks"]["stray"]["clean"],
            "precision": shape["precision"], "recall": shape["recall"],
            "precision_vs_real": shape["precision"] / real["precision"], "recall_vs_real": shape["recall"] / real["recall"],
            "nats_per_image": metrics["nll"][f"{split}_nats_per_image"], **timing,
            "training_wall_s": info["wall_time_s"], "training_device": info.get("device"), "sampling": metrics["sampling"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs=2, default=["raster", "var"])
    parser.add_argument("--evaluations", nargs=2, required=True, help="each checkpoint's evaluate --out folder")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="runs/raster_vs_var.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipes = {name: Pipeline.from_pretrained(name) for name in args.checkpoints}
    prompts = load_splits(0).validation.captions()[:1024]
    timing = timings(pipes, prompts, args.repeats)
    rows = [row(name, pipe, json.loads((Path(folder) / "metrics.json").read_text()), timing[name])
            for (name, pipe), folder in zip(pipes.items(), args.evaluations)]
    for item in rows:
        print(json.dumps({key: value for key, value in item.items() if key != "sampling"}), flush=True)
    write_json(args.out, {"threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
