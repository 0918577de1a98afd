"""Does the raster model read a digit worse in a document than in a pair? The same validation images, read four
ways: the pair caption at the shipped settings (CLIP re-ranking), the pair caption greedy (the model alone), the
document "<image> what digit is this ?" and a bare "<image>" document (its caption). Prints each one's digit
accuracy and the "what digit" errors beside the greedy pair caption's digit for the same image.

    python scripts/reading_formats.py --samples 600
"""

from __future__ import annotations

import argparse

import numpy as np

from tinychameleon.data.colored import DIGIT_WORDS, load_splits
from tinychameleon.pipeline import Pipeline


def digit_word(text: str) -> str | None:
    """The first digit word of a caption or answer (None if it has none)."""
    return next((word for word in text.split() if word in DIGIT_WORDS), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=600)
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint)
    split = load_splits(pipe.config.data_seed).validation
    images, truth = split.images[:args.samples], [DIGIT_WORDS[d] for d in split.digits[:args.samples]]
    one_each = [[image] for image in images]
    read = {
        "pair caption, shipped (CLIP re-ranking)": [digit_word(c) for c in pipe.caption(images, seed=0)],
        "pair caption, greedy": [digit_word(c) for c in pipe.caption(images, seed=0, rerank_captions=False)],
        "document, what digit": [digit_word(d[0].text) for d in pipe.continue_documents(
            ["<image> what digit is this ?"] * len(images), one_each, seed=0)],
        "document, bare <image>": [digit_word(d[0].text) for d in pipe.continue_documents(
            ["<image>"] * len(images), one_each, seed=0)],
    }
    for name, digits in read.items():
        print(f"{name}: {100 * np.mean([d == t for d, t in zip(digits, truth)]):.1f} % of {len(truth)} digits")
    errors = [(t, a, g) for t, a, g in zip(truth, read["document, what digit"], read["pair caption, greedy"]) if a != t]
    shared = sum(1 for t, _, g in errors if g != t)
    print(f"'what digit' errors (truth, answer, greedy pair caption): {errors}")
    print(f"{shared} of the {len(errors)} are also misread by the greedy pair caption")


if __name__ == "__main__":
    main()
