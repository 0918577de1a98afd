"""Do a document's drawn answers keep the colors of the prompt's image? For each family whose answer must read
both colors off the prompt image (change digit, what comes next; swap, exchanged), the share of answers painted
in exactly that pair of colors. Validation digits, the checkpoint's document settings.

    python scripts/answer_colors.py --checkpoint memory --samples 60
"""

from __future__ import annotations

import argparse

import numpy as np

from tinychameleon.data.colored import load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.documents.families import DigitBank, examples
from tinychameleon.evaluation.documents import render
from tinychameleon.pipeline import Pipeline

COLOR_FAMILIES = ["swap", "change digit", "what comes next"]


def colors(image: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(color) for color in np.asarray(image).reshape(-1, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=60, help="documents per family")
    args = parser.parse_args()
    pipeline = Pipeline.from_pretrained(args.checkpoint)
    split = load_splits(pipeline.config.data_seed, default_cache_dir())["validation"]
    bank = DigitBank(split.digits, split.foreground, split.background)
    for number, family in enumerate(COLOR_FAMILIES):
        chosen = examples(bank, args.samples, [0, number, 31], families=[family])
        prompts = [list(render(example.prompt_images, split)) for example in chosen]
        answers = pipeline.continue_documents([example.prompt for example in chosen], prompts, seed=0)
        kept = sum(len(answer[0].images) > 0 and colors(answer[0].images[0]) == colors(prompt[0])
                   for prompt, answer in zip(prompts, answers))
        print(f"{args.checkpoint or 'raster'} {family}: answers in the prompt image's two colors {kept}/{len(chosen)}",
              flush=True)


if __name__ == "__main__":
    main()
