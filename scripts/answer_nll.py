"""How well does a checkpoint know each family's answer? Nats of the answer of validation documents (its words
or image tokens, <eoi> and <eod> included), per family: copying strokes or routing a question to the right part
of the image shows up here long before whole answers come out right.

    python scripts/answer_nll.py runs/ab-learned runs/ab-rope [--documents 100]
"""

from __future__ import annotations

import argparse

import torch

from tinychameleon.data.colored import load_splits
from tinychameleon.documents.batches import example_documents, padded, prefix_lengths
from tinychameleon.documents.document import DocumentTokenizer
from tinychameleon.documents.families import FAMILIES, examples
from tinychameleon.model import next_token_log_probs
from tinychameleon.pipeline import Pipeline
from tinychameleon.training.documents import bank_of


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
        row = []
        for number, family in enumerate(FAMILIES):
            chosen = examples(bank, args.documents, [0, number], families=[family])
            ids, answer = padded(example_documents(chosen, codes, pipeline.image_tokenizer.recolor,
                                                   DocumentTokenizer(pipeline.vocab)), pipeline.vocab.end_document)
            for document, (_, start) in enumerate(prefix_lengths(chosen, pipeline.vocab)):
                answer[document, :start - 1] = 0                                     # the answer's targets only
            with torch.no_grad():
                log_probs = next_token_log_probs(pipeline.model, ids)           # (B, T-1)
            row.append(f"{family} {-float((log_probs * answer).sum()) / len(ids):.2f}")
        print(f"{path}: " + " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
