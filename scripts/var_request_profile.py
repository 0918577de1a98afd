"""Where one next-scale (`var`) text -> image request's time goes, and whether five cheap changes cut it: the
shipped call, under torch.inference_mode, on one thread, under bf16 autocast, with the network torch.compile'd
(inductor; every block's shapes are static, so each compiles once) (interleaved, medians; each says whether it
draws the same image), then torch.profiler's table over ten shipped calls.

    python scripts/var_request_profile.py --repeats 41
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from settings_latency import PROMPT, interleaved_ms
from tinychameleon.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=41)
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained("var")
    threads = torch.get_num_threads()

    def variant(one_thread: bool = False, inference: bool = False, bf16: bool = False):
        def call(seed: int):
            torch.set_num_threads(1 if one_thread else threads)
            with contextlib.ExitStack() as stack:
                if inference:
                    stack.enter_context(torch.inference_mode())
                if bf16:
                    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
                images = pipe.generate_images(PROMPT, seed=seed)
            torch.set_num_threads(threads)
            return images
        return call

    compiled = Pipeline.from_pretrained("var")
    torch._dynamo.config.cache_size_limit = 64   # one graph per block shape and cache position: more than 8
    compiled.model.run = torch.compile(compiled.model.run, dynamic=False)
    variants = {"shipped": variant(), "inference_mode": variant(inference=True), "one thread": variant(one_thread=True),
                "bf16 autocast": variant(bf16=True),
                "torch.compile": lambda seed: compiled.generate_images(PROMPT, seed=seed)}
    first = {name: call(1) for name, call in variants.items()}
    times = interleaved_ms(variants, args.repeats)
    base = statistics.median(times["shipped"])
    for name, values in times.items():
        same = bool((first[name] == first["shipped"]).all())
        print(f"{name}: {statistics.median(values):.1f} ms ({statistics.median(values) / base:.2f}x; same image: {same})")
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for seed in range(10):
            pipe.generate_images(PROMPT, seed=seed)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
