"""One text -> image request at a time (batch 1, process warm) for the raster model and for the next-scale
model with guidance on every scale or on the coarsest N only, all interleaved in one run (these machines are
noisy: compare the ratios of one run).

    python scripts/guided_scales_latency.py --repeats 41 --out runs/guided_scales_latency.json
"""

from __future__ import annotations

import argparse
import statistics
import time

from tinychameleon.io_utils import write_json
from tinychameleon.pipeline import Pipeline

PROMPT = "dark green eight on bright cyan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--guided", type=int, nargs="*", default=[0, 5, 4], help="guided_scales values (0 = all)")
    parser.add_argument("--out")
    args = parser.parse_args()
    raster, var = Pipeline.from_pretrained(), Pipeline.from_pretrained("var")
    calls = {"raster (shipped)": lambda: raster.generate_images(PROMPT, seed=1)}
    for value in args.guided:
        calls[f"var guided_scales {value}"] = lambda value=value: var.generate_images(PROMPT, seed=1,
                                                                                      guided_scales=value)
    calls["var guidance 1"] = lambda: var.generate_images(PROMPT, seed=1, guidance=1.0)
    times = {name: [] for name in calls}
    for call in calls.values():
        call()                                                             # warm up
    for _ in range(args.repeats):                                         # interleaved: one of each per round
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(1000 * (time.perf_counter() - started))
    medians = {name: statistics.median(values) for name, values in times.items()}
    raster_ms = medians["raster (shipped)"]
    for name, ms in medians.items():
        print(f"{name}: {ms:.1f} ms per request ({raster_ms / ms:.1f}x fewer than raster)")
    if args.out:
        write_json(args.out, {"repeats": args.repeats, "median_ms": medians})


if __name__ == "__main__":
    main()
