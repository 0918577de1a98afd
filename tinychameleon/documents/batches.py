"""Examples -> token ids -> training batches: documents of different lengths, right-padded, with loss masks.

Position ids need nothing special: padding goes at the end, where causal attention keeps it from
every real token, and its targets carry no loss. Batches group documents of similar length, so little
of a batch is padding.
"""

from __future__ import annotations

import torch

from .document import IMAGE_PLACEHOLDER, Document, DocumentTokenizer, split_words
from .families import Example, Picture


def picture_codes(pictures: list[Picture], codes: torch.Tensor, recolor) -> torch.Tensor:
    """(M, L) image tokens of the pictures: each example's shape tokens under the picture's two colors.
    codes (N, L) are the bank's tokens; recolor is the image tokenizer's recolor(ids, foreground, background)."""
    if not pictures:
        return codes[:0]
    shapes = torch.tensor([picture.shape for picture in pictures])
    foreground = torch.tensor([picture.foreground for picture in pictures])
    background = torch.tensor([picture.background for picture in pictures])
    return recolor(codes[shapes], foreground, background)


def example_documents(examples: list[Example], codes: torch.Tensor, recolor, tokenizer: DocumentTokenizer,
                      text_dropout: torch.Tensor | None = None) -> list[list[int]]:
    """The finished documents (prompt, then answer) as ids. Rows marked in text_dropout (len(examples),) keep
    their images only: what the unconditional stream of guidance reads."""
    pictures = [picture for example in examples for picture in example.pictures]
    images = iter(picture_codes(pictures, codes, recolor))
    documents = []
    for row, example in enumerate(examples):
        bound = [next(images) for _ in range(len(example.pictures))]
        if text_dropout is not None and text_dropout[row]:
            document = Document(bound)
        else:
            document = tokenizer.bind(example.text, bound)
            document.finished = True
        documents.append(tokenizer.encode(document))
    return documents


def prefix_lengths(examples: list[Example], image_length: int, text_dropout: torch.Tensor | None = None
                   ) -> list[tuple[int, int]]:
    """(context end, answer start) of each document, in tokens from its <bos>: where its retrieved context ends
    (0 without one) and where its answer begins. A row marked in text_dropout has neither: (0, 0)."""

    def tokens(text: str) -> int:
        return sum(image_length + 2 if word == IMAGE_PLACEHOLDER else 1 for word in split_words(text))

    lengths = []
    for row, example in enumerate(examples):
        if text_dropout is not None and text_dropout[row]:
            lengths.append((0, 0))
            continue
        context = 1 + tokens(example.context) if example.context else 0
        lengths.append((context, 1 + tokens(example.context) + tokens(example.prompt)))
    return lengths


def padded(documents: list[list[int]], pad: int, prefixes: list[tuple[int, int]] | None = None,
           context_weight: float = 1.0, answer_weight: float = 1.0, image_tokens: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids right-padded with `pad` and (B, T-1) loss weights: 1 on each real next token, 0 on padding,
    `context_weight` on the tokens of a retrieved context and `answer_weight` on the answer's (prefixes: each
    document's (context end, answer start), from prefix_lengths); with image_tokens > 0, only on the answer's
    other tokens than image tokens (ids below image_tokens): its words, <boi>, <eoi> and <eod>."""
    T = max(len(ids) for ids in documents)
    ids = torch.full((len(documents), T), pad, dtype=torch.long)
    weights = torch.zeros(len(documents), T - 1)
    for row, document in enumerate(documents):
        ids[row, :len(document)] = torch.tensor(document, dtype=torch.long)
        weights[row, :len(document) - 1] = 1.0
        context, answer = prefixes[row] if prefixes else (0, 0)
        if context:
            weights[row, :context - 1] = context_weight         # targets 1..c-1 lie in the context
        if answer and answer_weight != 1.0:
            targets = torch.tensor(document[answer:])                      # the answer's tokens and <eod>
            chosen = targets >= image_tokens                               # all of them when image_tokens is 0
            weights[row, answer - 1:len(document) - 1][chosen] = answer_weight
    return ids, weights


def length_batches(documents: list[list[int]], batch_size: int, generator: torch.Generator, pad: int,
                   prefixes: list[tuple[int, int]] | None = None, context_weight: float = 1.0,
                   answer_weight: float = 1.0, image_tokens: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Whole batches of documents of similar length (sorted by length, random among equals), in random order;
    the last partial batch is dropped."""
    tiebreak = torch.rand(len(documents), generator=generator).tolist()
    order = sorted(range(len(documents)), key=lambda i: (len(documents[i]), tiebreak[i]))
    prefixes = prefixes or [(0, 0)] * len(documents)
    batches = [padded([documents[i] for i in order[start:start + batch_size]], pad,
                      [prefixes[i] for i in order[start:start + batch_size]], context_weight, answer_weight,
                      image_tokens)
               for start in range(0, len(order) - batch_size + 1, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
