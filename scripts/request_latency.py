"""One request at a time through the Pipeline: median milliseconds of a text -> image and a caption call.

`tinychameleon bench` times the same requests among its other rows; this reads only these, with the
plain row also without top-p, so two checkouts can be compared quickly and often.

    python scripts/request_latency.py --label after [--repeats 41]
    python scripts/request_latency.py --checkpoint memory --retrieve 2 --repeats 11   # also after 2 retrieved

To compare two versions on these noisy machines, run it on each checkout in turn, alternating, and
compare the ratios of the same round (BENCHMARKS.md, "Sampling at the shipped settings").
"""

from __future__ import annotations

import argparse

import torch

from tinychameleon.bench import timed
from tinychameleon.pipeline import Pipeline

PROMPT = "dark green eight on bright cyan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="run directory (default: the shipped checkpoint)")
    parser.add_argument("--label", default="", help="printed at the start of the line")
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--retrieve", type=int, default=0,
                        help="also time both requests after this many retrieved documents (a retrieval-augmented "
                             "checkpoint such as memory)")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint)
    image = pipe.generate_images(PROMPT, seed=0)
    rows = {"text -> image": lambda: pipe.generate_images(PROMPT, seed=1),
            "plain text -> image": lambda: pipe.generate_images(PROMPT, seed=1, top_p=1.0, guidance=1.0),
            "caption": lambda: pipe.caption(image)}
    if args.retrieve:
        rows[f"text -> image after {args.retrieve} retrieved"] = lambda: pipe.draw_from_memory(
            PROMPT, seed=1, retrieve=args.retrieve)
        rows[f"caption after {args.retrieve} retrieved"] = lambda: pipe.caption_from_memory(
            image, seed=1, retrieve=args.retrieve)
    cpu = torch.device("cpu")
    print(args.label, " ".join(f"{name}: {1000 * timed(call, cpu, args.repeats):.1f} ms" for name, call in rows.items()),
          flush=True)


if __name__ == "__main__":
    main()
