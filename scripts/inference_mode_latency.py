"""Pipeline requests under torch.inference_mode (what they run under now) against the same calls under plain
no_grad (the request method's undecorated body, `__wrapped__`: what they ran before), interleaved in one run,
one request at a time: medians, and whether both give the same answer.

    python scripts/inference_mode_latency.py --repeats 21
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from settings_latency import PROMPT, interleaved_ms
from tinychameleon.data.colored import load_splits
from tinychameleon.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    raster, var = Pipeline.from_pretrained("raster"), Pipeline.from_pretrained("var")
    images = load_splits(0).validation.images[:args.repeats + 1]
    requests = {   # name -> (pipeline, request method, its arguments for a seed)
        "raster text -> image": (raster, Pipeline.draw, lambda seed: ([PROMPT],)),
        "var text -> image": (var, Pipeline.draw, lambda seed: ([PROMPT],)),
        "raster image -> text": (raster, Pipeline.caption, lambda seed: (images[seed],)),
        "edit document": (raster, Pipeline.continue_documents,
                          lambda seed: (["<image> swap the colors ."], [[images[seed]]])),
    }
    calls = {}
    for name, (pipe, method, arguments) in requests.items():
        for mode, body in (("no_grad", method.__wrapped__), ("inference_mode", method)):
            calls[f"{name}, {mode}"] = (lambda seed, pipe=pipe, body=body, arguments=arguments:
                                        body(pipe, *arguments(seed), seed=seed))
    answers = {name: call(1) for name, call in calls.items()}   # also the warm-up
    medians = {name: statistics.median(values) for name, values in interleaved_ms(calls, args.repeats).items()}
    for name in requests:
        before, after = medians[f"{name}, no_grad"], medians[f"{name}, inference_mode"]
        same = repr_of(answers[f"{name}, no_grad"]) == repr_of(answers[f"{name}, inference_mode"])
        print(f"{name}: no_grad {before:.1f} ms, inference_mode {after:.1f} ms ({after / before:.2f}x; "
              f"same answer: {same})")


def repr_of(answer) -> str:
    """A comparable text of a request's answer (arrays by their bytes)."""
    if isinstance(answer, np.ndarray):
        return answer.tobytes().hex()
    if isinstance(answer, (list, tuple)):
        return "|".join(repr_of(part) for part in answer)
    if hasattr(answer, "images"):   # a document's Continuation
        return answer.text + repr_of(answer.images)
    return repr(answer)


if __name__ == "__main__":
    main()
