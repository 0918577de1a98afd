"""Greedy "read" and "what color is the background ?" on the first 100 validation digits, under document guidance
1.5 and 1: share right, and for read the share of documents ended at once (an empty answer).

    python scripts/text_answer_probe.py runs/best-copy
"""

from __future__ import annotations

import argparse

import numpy as np

from tinychameleon.data.colored import COLOR_NAMES, load_splits
from tinychameleon.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--digits", type=int, default=100)
    args = parser.parse_args()
    split = load_splits().validation.subset(slice(0, args.digits))
    images = [[image] for image in split.images]
    pipe = Pipeline.from_pretrained(args.checkpoint)
    for guidance in (1.5, 1.0):
        settings = {"guidance": guidance, "temperature": 0.0}
        read = [row[0].text for row in pipe.continue_documents(["<image>"] * len(split), images, seed=0, **settings)]
        named = [row[0].text for row in pipe.continue_documents(["<image> what color is the background ?"] * len(split),
                                                                images, seed=0, **settings)]
        right = np.mean([text == caption for text, caption in zip(read, split.captions())])
        background = np.mean([text == f"{COLOR_NAMES[b]} ." for text, b in zip(named, split.background)])
        print(f"guidance {guidance}: read {right:.2f} (ended at once {np.mean([t == '' for t in read]):.2f}), "
              f"background name {background:.2f}")


if __name__ == "__main__":
    main()
