"""One text -> image request at a time (batch 1, process warm) under each of several sampler settings of one
checkpoint, interleaved in one run (these machines are noisy: compare the ratios of one run).

    python scripts/settings_latency.py --repeats 21 --settings '{"shipped": {},
        "3 candidates, CLIP": {"guidance": 1.125, "image_candidates": 3, "clip_rerank": true}}'

A named setting overrides the checkpoint's sampling.json (`{}`: the shipped settings themselves).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from tinychameleon.io_utils import write_json
from tinychameleon.pipeline import Pipeline

PROMPT = "dark green eight on bright cyan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run directory or shipped name (default: the raster model)")
    parser.add_argument("--settings", required=True, help="JSON object: name -> sampler settings")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint)
    named = json.loads(args.settings)
    times = {name: [] for name in named}
    for settings in named.values():
        pipe.generate_images(PROMPT, seed=1, **settings)                          # warm up (loads CLIP once)
    for round_ in range(args.repeats):                                          # interleaved: one of each per round
        for name, settings in named.items():
            started = time.perf_counter()
            pipe.generate_images(PROMPT, seed=round_, **settings)
            times[name].append(1000 * (time.perf_counter() - started))
    medians = {name: statistics.median(values) for name, values in times.items()}
    first = next(iter(medians.values()))
    for name, ms in medians.items():
        print(f"{name}: {ms:.1f} ms per request ({ms / first:.2f}x the first)")
    if args.out:
        write_json(args.out, {"checkpoint": args.checkpoint or "raster", "repeats": args.repeats,
                              "settings": named, "median_ms": medians})


if __name__ == "__main__":
    main()
