"""What the color questions get wrong: for each wrong answer to "what color is the digit ?" / "... the background ?",
is it the image's other color (the model read the colors but not which one was asked), or some other color?
Validation digits, shipped document settings.

    python scripts/color_question_errors.py --checkpoint raster --samples 200
"""

from __future__ import annotations

import argparse
from collections import Counter

from tinychameleon.data.colored import COLOR_NAMES, load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.documents.document import split_words
from tinychameleon.documents.families import DigitBank, examples
from tinychameleon.evaluation.documents import render
from tinychameleon.pipeline import Pipeline

ASKED = {"digit color name": "foreground", "background name": "background"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=200, help="documents per question")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pipeline = Pipeline.from_pretrained(args.checkpoint)
    split = load_splits(pipeline.config.data_seed, default_cache_dir())["validation"]
    bank = DigitBank(split.digits, split.foreground, split.background)
    for number, family in enumerate(ASKED):
        chosen = examples(bank, args.samples, [args.seed, number, 29], families=[family])
        answers = pipeline.continue_documents([example.prompt for example in chosen],
                                              [list(render(example.prompt_images, split)) for example in chosen],
                                              seed=args.seed)
        errors = Counter()
        for example, answer in zip(chosen, answers):
            if split_words(answer[0].text) == split_words(example.answer):
                continue
            picture = example.prompt_images[0]
            other = picture.background if ASKED[family] == "foreground" else picture.foreground
            said = " ".join(word for word in split_words(answer[0].text) if word != ".")
            errors["the other color" if said == COLOR_NAMES[other] else "another color"] += 1
        wrong = sum(errors.values())
        print(f"{family}: {100 * (1 - wrong / len(chosen)):.1f}% right; of {wrong} wrong: {dict(errors)}", flush=True)


if __name__ == "__main__":
    main()
