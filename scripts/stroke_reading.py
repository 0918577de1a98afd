"""Reading digits drawn in stroke styles training never shows the pair or document families: "what digit is this ?"
inside a document, scored as the family table scores it, and the pair caption's digit, on held-out digits thickened
by data.colored.STROKES.

    python scripts/stroke_reading.py --checkpoints runs/release8 raster --samples 200

Prints one line per checkpoint: accuracy per stroke style, "plain" being the digits as they are.
"""

from __future__ import annotations

import argparse

import numpy as np

from tinychameleon.data.colored import STROKES, load_colored_mnist, load_splits, thickened
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.evaluation.documents import evaluate_documents
from tinychameleon.evaluation.evaluate import caption_digits
from tinychameleon.evaluation.judge import load_or_train_judge
from tinychameleon.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", default=["raster"])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--strokes", nargs="*", default=["bolder", "widest"], choices=list(STROKES))
    args = parser.parse_args()
    cache = default_cache_dir()
    judge = load_or_train_judge(load_colored_mnist(0, cache)[0], cache, 0)
    held_out = load_splits(0, cache)[args.split]
    for checkpoint in args.checkpoints:
        pipeline = Pipeline.from_pretrained(checkpoint)
        cells = []
        for stroke in ["plain", *args.strokes]:
            split = held_out if stroke == "plain" else thickened(held_out, stroke)
            # The family table's own scoring ("what digit" right = the words "DIGIT ." exactly), on these strokes.
            asked = evaluate_documents(pipeline, judge, split, args.samples, families=["what digit"])[0]["what digit"]
            first = split.subset(slice(0, args.samples))
            captioned = np.mean(caption_digits(pipeline.caption(first.images)) == first.digits)
            cells.append(f"{stroke}: what digit {100 * asked['accuracy']:.1f} %, caption {100 * captioned:.1f} %")
        print(f"{checkpoint} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
