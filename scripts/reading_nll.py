"""Likelihoods of checkpoints in both directions on one split: nats per pair, per image given its
caption, per caption given its image (how well the model reads images).

    python scripts/reading_nll.py runs/best-cw5 shipped --split validation --samples 5000
"""

from __future__ import annotations

import argparse

from tinychameleon.data.colored import load_splits
from tinychameleon.pipeline import Pipeline
from tinychameleon.training.lm_trainer import split_nll
from tinychameleon.training.run import caption_word_ids, encode_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help='run directories ("shipped" for the shipped checkpoint)')
    parser.add_argument("--split", choices=("train", "validation", "test"), default="validation")
    parser.add_argument("--samples", type=int, default=5000, help="the split's first N examples")
    args = parser.parse_args()
    split = load_splits(0)[args.split].subset(slice(0, args.samples))
    for checkpoint in args.checkpoints:
        pipeline = Pipeline.from_pretrained(None if checkpoint == "shipped" else checkpoint)
        codes = encode_images(pipeline.image_tokenizer, split.images, pipeline.device).long()
        metrics = split_nll(pipeline.model, pipeline.vocab, caption_word_ids(split), codes, split=args.split)
        print(checkpoint, " | ".join(f"{name} {metrics[f'{args.split}_nats_per_{name}']:.4f}"
                                     for name in ("pair", "image", "caption")), flush=True)


if __name__ == "__main__":
    main()
