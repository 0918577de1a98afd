"""How well does a checkpoint know each family's answer image? Nats of the last image of validation documents
(its tokens + <eoi> <eod>), per family: copying strokes shows up here long before whole answers come out right.

    python scripts/answer_nll.py runs/ab-learned runs/ab-rope [--documents 100]
"""

from __future__ import annotations

import argparse

import torch

from tinychameleon.data.colored import load_splits
from tinychameleon.documents.batches import example_documents, padded
from tinychameleon.documents.document import DocumentTokenizer
from tinychameleon.documents.families import examples
from tinychameleon.model import next_token_log_probs
from tinychameleon.pipeline import Pipeline
from tinychameleon.training.documents import bank_of

FAMILIES = ("digit color", "swap", "change digit", "what comes next", "counting")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--documents", type=int, default=100, help="per family")
    args = parser.parse_args()
    split = load_splits().validation
    bank = bank_of(split)
    for path in args.checkpoints:
        pipeline = Pipeline.from_pretrained(path)
        codes = pipeline.image_tokenizer.encode(torch.as_tensor(split.images))
        answer = pipeline.vocab.image_length + 2
        row = []
        for number, family in enumerate(FAMILIES):
            chosen = examples(bank, args.documents, [0, number], families=[family])
            ids, weights = padded(example_documents(chosen, codes, pipeline.image_tokenizer.recolor,
                                                    DocumentTokenizer(pipeline.vocab)), pipeline.vocab.end_document)
            with torch.no_grad():
                log_probs = next_token_log_probs(pipeline.model, ids)           # (B, T-1)
            ends = weights.sum(1).long()                                        # targets per document
            nats = sum(-float(log_probs[r, ends[r] - answer:ends[r]].sum()) for r in range(len(ids)))
            row.append(f"{family} {nats / len(ids):.1f}")
        print(f"{path}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
