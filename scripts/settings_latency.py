"""One text -> image request (or with --caption one image -> text request, a validation image each) at a time
(batch 1, process warm) under each of several named settings, interleaved in one run (these machines are noisy:
compare the ratios of one run). A setting names its checkpoint (default --checkpoint) and overrides that
checkpoint's sampling.json (`{}`: the shipped settings themselves).

    python scripts/settings_latency.py --repeats 21 --settings '{"shipped": {},
        "3 candidates, CLIP": {"guidance": 1.125, "image_candidates": 3, "clip_rerank": true}}'
    python scripts/settings_latency.py --repeats 41 --settings '{"raster (shipped)": {},
        "var": {"checkpoint": "var"}, "var guided_scales 5": {"checkpoint": "var", "guided_scales": 5},
        "var guided_scales 4": {"checkpoint": "var", "guided_scales": 4}, "var guidance 1": {"checkpoint": "var",
        "guidance": 1.0}}'
    python scripts/settings_latency.py --caption --checkpoint var --repeats 41 --settings '{"shipped": {},
        "greedy": {"rerank_captions": false}}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from tinychameleon.data.colored import load_splits
from tinychameleon.io_utils import write_json
from tinychameleon.pipeline import Pipeline

PROMPT = "dark green eight on bright cyan"


def interleaved_ms(calls: dict, repeats: int) -> dict[str, list[float]]:
    """name -> milliseconds of each call(seed), one of each per round (so a busy spell hits every name alike)."""
    times = {name: [] for name in calls}
    for seed in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call(seed)
            times[name].append(1000 * (time.perf_counter() - started))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run directory or shipped name for settings that name none "
                                             "(default: the raster model)")
    parser.add_argument("--settings", required=True, help="JSON object: name -> sampler settings (+ \"checkpoint\")")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--caption", action="store_true", help="time image -> text requests instead")
    parser.add_argument("--out")
    args = parser.parse_args()
    named = json.loads(args.settings)
    pipes = {}                                                                   # one Pipeline per checkpoint
    images = load_splits(0).validation.images[:args.repeats + 1] if args.caption else None
    calls = {}
    for name, settings in named.items():
        settings = dict(settings)
        checkpoint = settings.pop("checkpoint", args.checkpoint)
        pipe = pipes.setdefault(checkpoint, Pipeline.from_pretrained(checkpoint))
        def call(seed: int, pipe=pipe, settings=settings):
            if args.caption:
                return pipe.caption(images[seed], **settings)
            return pipe.generate_images(PROMPT, seed=seed, **settings)
        calls[name] = call
    for call in calls.values():
        call(1)                                                                  # warm up (loads CLIP once)
    medians = {name: statistics.median(values) for name, values in interleaved_ms(calls, args.repeats).items()}
    first = next(iter(medians.values()))
    for name, ms in medians.items():
        print(f"{name}: {ms:.1f} ms per request ({ms / first:.2f}x the first, {first / ms:.1f}x fewer ms)")
    if args.out:
        write_json(args.out, {"checkpoint": args.checkpoint or "raster", "repeats": args.repeats,
                              "settings": named, "median_ms": medians})


if __name__ == "__main__":
    main()
