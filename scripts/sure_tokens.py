"""How often the document sampler takes an image token as it stands (`sampling.greedy_above`): per family, the share
of image tokens whose conditional probability is above the threshold, on validation documents at the shipped
settings. A copy (an edit) should be nearly all sure tokens, a fresh drawing far fewer.

    python scripts/sure_tokens.py --checkpoint runs/best-open --samples 50
"""

from __future__ import annotations

import argparse

import tinychameleon.documents.engine as engine
from tinychameleon.data.colored import load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.documents.families import FAMILIES, DigitBank, examples
from tinychameleon.evaluation.documents import render
from tinychameleon.pipeline import Pipeline
from tinychameleon.sampling import certainty

DRAWING = ["digit color", "background color", "swap", "change digit", "counting", "what comes next", "draw"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=50, help="documents per family")
    parser.add_argument("--families", nargs="*", default=DRAWING, choices=list(FAMILIES), metavar="FAMILY")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pipeline = Pipeline.from_pretrained(args.checkpoint)
    threshold = pipeline.document_overrides({}).get("greedy_above", 1.0)
    split = load_splits(pipeline.config.data_seed, default_cache_dir())["validation"]
    bank = DigitBank(split.digits, split.foreground, split.background)
    image_ids = pipeline.vocab.image_tokens
    counts = {"sure": 0, "all": 0}
    real_keep_sure = engine.keep_sure

    def counting_keep_sure(token, conditional, allowed, greedy_above):
        in_image = allowed[:, :image_ids].any(1)                     # rows drawing an image at this step
        sure, _ = certainty(conditional, allowed)
        counts["sure"] += int((sure[in_image] > threshold).sum())
        counts["all"] += int(in_image.sum())
        return real_keep_sure(token, conditional, allowed, greedy_above)

    engine.keep_sure = counting_keep_sure
    print(f"greedy_above {threshold:g} ({pipeline.document_overrides({})})")
    for number, family in enumerate(args.families):
        counts.update(sure=0, all=0)
        chosen = examples(bank, args.samples, [args.seed, number, 41], families=[family])
        pipeline.continue_documents([example.prompt for example in chosen],
                                    [list(render(example.prompt_images, split)) for example in chosen], seed=args.seed)
        share = counts["sure"] / max(counts["all"], 1)
        print(f"{family}: {100 * share:.1f}% of {counts['all']} image tokens taken as they stand "
              f"({counts['all'] / args.samples:.1f} per document)", flush=True)


if __name__ == "__main__":
    main()
