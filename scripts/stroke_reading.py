"""Reading digits drawn in stroke styles training never shows the pair or document families: "what digit is this ?"
inside a document (greedy words) and the pair caption's digit, on held-out digits thickened by data.colored.STROKES.

    python scripts/stroke_reading.py --checkpoints runs/release8 raster --samples 200

Prints one line per checkpoint: accuracy per stroke style, "plain" being the digits as they are.
"""

from __future__ import annotations

import argparse

import numpy as np

from tinychameleon.data.colored import STROKES, load_splits, thickened
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.documents.families import DIGIT_WORDS
from tinychameleon.pipeline import Pipeline


def digit_word(text: str) -> str:
    """The first word of an answer or the digit word of a caption ("COLOR COLOR DIGIT on COLOR COLOR")."""
    words = text.split()
    return words[0] if words else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="+", default=["raster"])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--strokes", nargs="*", default=["bolder", "widest"], choices=list(STROKES))
    args = parser.parse_args()
    held_out = load_splits(0, default_cache_dir())[args.split].subset(slice(0, args.samples))
    truth = [DIGIT_WORDS[digit] for digit in held_out.digits]
    for checkpoint in args.checkpoints:
        pipeline = Pipeline.from_pretrained(checkpoint)
        cells = []
        for stroke in ["plain", *args.strokes]:
            split = held_out if stroke == "plain" else thickened(held_out, stroke)
            answers = pipeline.continue_documents(["<image> what digit is this ?"] * len(truth),
                                                  [[image] for image in split.images], seed=0)
            asked = np.mean([digit_word(rows[0].text) == word for rows, word in zip(answers, truth)])
            captioned = np.mean([caption.split()[2] == word for caption, word in
                                 zip(pipeline.caption(split.images), truth)])
            cells.append(f"{stroke}: what digit {100 * asked:.1f} %, caption {100 * captioned:.1f} %")
        print(f"{checkpoint} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
