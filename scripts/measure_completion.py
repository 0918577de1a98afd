"""Completion and partial-prompt quality of a checkpoint, judged on held-out images (validation by default).

    python scripts/measure_completion.py --samples 300 --out runs/completion.json

Top (and bottom: the hole comes first, so only an infilling model reads what follows it) half kept
with the true caption: judged digit = caption digit, judged all three attributes, kept pixels unchanged; caption
withheld: completed image agrees with its own caption; partial prompts (one blank pattern per
example): filled caption well-formed, image agrees with the filled caption.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tinychameleon.data.colored import load_colored_mnist, load_splits, parse_caption
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.evaluation.judge import load_or_train_judge
from tinychameleon.evaluation.metrics import caption_accuracy, unconditional_metrics
from tinychameleon.io_utils import write_json
from tinychameleon.pipeline import Pipeline

PATTERNS = ["* * {digit} on * *", "{fg} * on {bg}", "{fg} {digit} on * *", "* * * on {bg}"]


def partial_prompts(pipe: Pipeline, judge, captions: list[str]) -> dict:
    """One blank pattern per example: the filled caption is well-formed, keeps the given words, fits the image."""
    prompts = []
    for index, caption in enumerate(captions):
        words = caption.split()
        prompts.append(PATTERNS[index % len(PATTERNS)].format(fg=" ".join(words[:2]), digit=words[2],
                                                              bg=" ".join(words[4:])))
    images, filled = pipe.draw(prompts, seed=0)
    well_formed = [parse_caption(text) is not None for text in filled]
    keeps_given = [all(g == "*" or g == f for g, f in zip(p.split(), text.split())) for p, text in zip(prompts, filled)]
    return {"well_formed": float(np.mean(well_formed)), "keeps_given_words": float(np.mean(keeps_given)),
            "image_matches_filled_caption": unconditional_metrics(judge.predict(images), filled)["agreement"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--out", default="runs/completion.json")
    parser.add_argument("--candidates", type=int, help="image candidates for the caption-withheld completion "
                                                       "(default: the checkpoint's sampling.json)")
    parser.add_argument("--withheld-only", action="store_true", help="measure only the caption-withheld completion")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint)
    judge = load_or_train_judge(load_colored_mnist(0)[0], default_cache_dir(), 0)
    split = load_splits(0)[args.split].subset(slice(args.offset, args.offset + args.samples))
    captions = split.captions()
    results, started = {"split": args.split, "samples": len(split), "offset": args.offset,
                        "checkpoint": pipe.source}, time.time()

    for keep, rows in () if args.withheld_only else (("top", slice(0, 14)), ("bottom", slice(14, 28))):
        completed, _ = pipe.complete(split.images, keep, captions, seed=0)
        judged = judge.predict(completed)
        results[f"{keep}_kept_with_caption"] = {
            "digit": float((judged["digit"] == split.digits).mean()),
            "all_three": unconditional_metrics(judged, captions)["agreement"],
            "kept_pixels_unchanged": bool((completed[:, rows] == split.images[:, rows]).all())}
    withheld = {} if args.candidates is None else {"image_candidates": args.candidates}
    completed, own = pipe.complete(split.images, "top", None, seed=0, **withheld)
    judged = judge.predict(completed)
    results["top_kept_caption_withheld"] = {
        **withheld, "agreement": unconditional_metrics(judged, own)["agreement"],
        "digit_agreement": float(np.mean(judged["digit"] == np.array([parse_caption(c)[0] for c in own]))),
        "caption_exact_vs_truth": caption_accuracy(own, split.digits, split.foreground, split.background)["exact"]}
    if not args.withheld_only:
        results["partial_prompts"] = partial_prompts(pipe, judge, captions)
    results["elapsed_s"] = time.time() - started
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
