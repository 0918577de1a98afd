"""Where counting goes wrong: how many images the model draws against how many were asked, which of them show the
right digit, and, teacher-forced on real pictures of the answer, how likely it stops (<eod>) after each image.

    python scripts/counting_stops.py --checkpoint runs/best --samples 200

Free-running: the counting documents of scripts/document_table.py (same seed, same examples) under one document
setting; each drawing is read by the judge. Teacher-forced: the whole right document (real validation digits in the
asked colors) is read in one forward pass, and P(<eod>) is taken at each image's <eoi>: where the model should draw
on, it should be near 0; after the last, near 1.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

import numpy as np
import torch

from tinychameleon.data.colored import load_colored_mnist, load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.documents.document import Document
from tinychameleon.documents.families import FAMILIES, DigitBank, examples
from tinychameleon.evaluation.documents import render
from tinychameleon.evaluation.judge import load_or_train_judge
from tinychameleon.pipeline import Pipeline

SETTING = {"guidance": 2.0, "top_p": 1.0, "greedy_above": 0.7}     # document_table's "guidance 2, greedy above 0.7"


def free_running(pipeline, judge, chosen) -> dict:
    """Drawn against asked image counts (right / short / long, and right by the asked count), and per place in the
    answer how often the drawing shows the asked digit."""
    found = pipeline.continue_documents([example.prompt for example in chosen], [[] for _ in chosen], n=1, seed=0,
                                        **SETTING)
    counts, by_length, by_place = Counter(), defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    for example, (continuation,) in zip(chosen, found):
        asked = [picture.digit for picture in example.answer_images]
        drawn = judge.predict(continuation.images)["digit"].tolist() if len(continuation.images) else []
        difference = len(drawn) - len(asked)
        counts["right" if difference == 0 else "short" if difference < 0 else "long"] += 1
        by_length[len(asked)][0] += difference == 0
        by_length[len(asked)][1] += 1
        for place, (want, got) in enumerate(zip(asked, drawn)):
            by_place[place + 1][0] += want == got
            by_place[place + 1][1] += 1
    return {"image count": dict(counts),
            "count right, by images asked": {n: f"{a}/{b}" for n, (a, b) in sorted(by_length.items())},
            "digit right, by place": {n: f"{a}/{b}" for n, (a, b) in sorted(by_place.items())}}


@torch.no_grad()
def stop_probabilities(pipeline, split, chosen) -> dict:
    """Mean P(<eod>) at each <eoi> of the right documents, by (images asked, image number)."""
    tokenizer, vocab, found = pipeline.documents.tokenizer, pipeline.vocab, defaultdict(list)
    for example in chosen:
        codes = pipeline.image_tokenizer.encode(torch.from_numpy(render(example.answer_images, split)))
        ids = tokenizer.encode(tokenizer.bind(example.prompt, []), Document(list(codes), finished=True))
        probabilities = pipeline.model(torch.tensor([ids]))[0].float().softmax(-1)              # (T, vocab)
        ends = [position for position, token in enumerate(ids) if token == vocab.end_image]
        for number, position in enumerate(ends, start=1):
            found[(len(ends), number)].append(float(probabilities[position, vocab.end_document]))
    return {f"{asked} asked, after image {number}": round(float(np.mean(values)), 3)
            for (asked, number), values in sorted(found.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=200, help="counting documents")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pipeline = Pipeline.from_pretrained(args.checkpoint)
    cache = default_cache_dir()
    judge = load_or_train_judge(load_colored_mnist(pipeline.config.data_seed, cache)[0], cache, pipeline.config.data_seed)
    split = load_splits(pipeline.config.data_seed, cache)["validation"]
    bank = DigitBank(split.digits, split.foreground, split.background)
    # document_table's examples: evaluate_documents seeds each family with its place in the registry.
    chosen = examples(bank, args.samples, [args.seed, list(FAMILIES).index("counting"), 23], families=["counting"])
    print(json.dumps({"checkpoint": pipeline.source, "free running": free_running(pipeline, judge, chosen),
                      "P(<eod>) teacher-forced": stop_probabilities(pipeline, split, chosen)}, indent=1))


if __name__ == "__main__":
    main()
