"""Examples -> token ids -> training batches: documents of different lengths, right-padded, with loss masks.

Position ids need nothing special: padding goes at the end, where causal attention keeps it from
every real token, and its targets carry no loss. Batches group documents of similar length, so little
of a batch is padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .document import Document, DocumentTokenizer, split_words, token_count
from .families import Example, Picture
from ..tokenizers.vocab import PLAN_TOKENS, Vocab


def picture_codes(pictures: list[Picture], codes: torch.Tensor, recolor) -> torch.Tensor:
    """(M, L) image tokens of the pictures: each example's shape tokens under the picture's two colors.
    codes (N, L) are the bank's tokens, or (1 + S, N, L) with its S stroke styles after them; recolor is the
    image tokenizer's recolor(ids, foreground, background)."""
    if not pictures:
        return codes.reshape(-1, codes.shape[-1])[:0]
    shapes = torch.tensor([picture.shape for picture in pictures])
    if codes.dim() == 3:    # (1 + S, N, L) -> ((1 + S) * N, L): stroke s of shape i is row s * N + i
        shapes = shapes + codes.shape[1] * torch.tensor([picture.stroke for picture in pictures])
        codes = codes.reshape(-1, codes.shape[-1])
    elif any(picture.stroke for picture in pictures):
        raise ValueError("pictures in a stroke style need the codes of the restyled digits: (1 + S, N, L)")
    foreground = torch.tensor([picture.foreground for picture in pictures])
    background = torch.tensor([picture.background for picture in pictures])
    return recolor(codes[shapes], foreground, background)


def example_documents(examples: list[Example], codes: torch.Tensor, recolor, tokenizer: DocumentTokenizer,
                      text_dropout: torch.Tensor | None = None) -> list[list[int]]:
    """The finished documents (context and prompt, then answer) as ids, the answer's images opened with their plan
    tokens where the vocabulary has them (DocumentTokenizer.planned), and the given images too with prompt_plans.
    Rows marked in text_dropout (len(examples),) keep their images only, without plans: what the unconditional
    stream of guidance reads (one finished document, without <eop>, where the vocabulary says that stream has none)."""
    pictures = [picture for example in examples for picture in example.pictures]
    images = iter(picture_codes(pictures, codes, recolor))
    documents = []
    for row, example in enumerate(examples):
        given = [next(images) for _ in range(len(example.context_images) + len(example.prompt_images))]
        drawn = [next(images) for _ in range(len(example.answer_images))]
        if text_dropout is not None and text_dropout[row]:      # guidance's stream: no words, and so no plans
            if tokenizer.vocab.unconditional_without_eop:
                documents.append(tokenizer.encode(Document(given + drawn)))
                continue
            prompt, answer = Document(given, finished=False), Document(drawn)
        else:
            given = [tokenizer.planned(image, picture.digit, given=True)
                     for image, picture in zip(given, example.context_images + example.prompt_images)]
            prompt = tokenizer.bind(" ".join(part for part in (example.context, example.prompt) if part), given)
            drawn = [tokenizer.planned(image, picture.digit) for image, picture in zip(drawn, example.answer_images)]
            answer = tokenizer.bind(example.answer, drawn)
        documents.append(tokenizer.encode(prompt, answer))
    return documents


def prefix_lengths(examples: list[Example], vocab: Vocab, text_dropout: torch.Tensor | None = None
                   ) -> list[tuple[int, int]]:
    """(context end, answer start) of each document, in tokens from its <bos>: where its retrieved context ends
    (0 without one) and where its answer begins (after the prompt's <eop>, where the vocabulary has it). A row
    marked in text_dropout has neither: (0, 0)."""

    def tokens(text: str) -> int:
        return token_count(split_words(text), vocab.prompt_image_span)

    lengths = []
    for row, example in enumerate(examples):
        if text_dropout is not None and text_dropout[row]:
            lengths.append((0, 0))
            continue
        context = 1 + tokens(example.context) if example.context else 0
        lengths.append((context, 1 + tokens(example.context) + tokens(example.prompt) + vocab.prompt_end))
    return lengths


@dataclass(frozen=True)
class LossWeights:
    """How a document's targets weigh in the loss, beside 1 for every real next token and 0 for padding."""

    context: float = 1.0          # the tokens of a retrieved context
    answer: float = 1.0           # the answer's tokens (what follows the prompt, <eod> included)
    image_tokens: int = 0         # > 0: `answer` only on the answer's ids from here up (its words, <boi> <eoi> <eod>)
    given: int = -1               # a token the model is given, never asked for (<eop>): its targets weigh 0
    given_plans: int = -1         # <plan zero>'s id where the prompt's images carry plans (train.prompt_plans): the
                                  # reader gives them, so a plan before the answer weighs 0 as a target
    decision: float = 0.0         # > 0: the weight of the answer's targets right after one of its images (after
    end_image: int = -1           # `end_image`): <boi> to draw again, <eod> to stop, or a word


def padded(documents: list[list[int]], pad: int, prefixes: list[tuple[int, int]] | None = None,
           weighting: LossWeights = LossWeights()) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids right-padded with `pad` and (B, T-1) loss weights (prefixes: each document's (context end,
    answer start), from prefix_lengths)."""
    T = max(len(ids) for ids in documents)
    ids = torch.full((len(documents), T), pad, dtype=torch.long)
    weights = torch.zeros(len(documents), T - 1)
    for row, document in enumerate(documents):
        ids[row, :len(document)] = torch.tensor(document, dtype=torch.long)
        weights[row, :len(document) - 1] = 1.0
        context, answer = prefixes[row] if prefixes else (0, 0)
        if context:
            weights[row, :context - 1] = weighting.context          # targets 1..c-1 lie in the context
        if answer and weighting.answer != 1.0:
            targets = torch.tensor(document[answer:])                      # the answer's tokens and <eod>
            chosen = targets >= weighting.image_tokens                     # all of them when image_tokens is 0
            weights[row, answer - 1:len(document) - 1][chosen] = weighting.answer
        if answer and weighting.given_plans >= 0:
            targets = torch.tensor(document[1:answer])                     # the context's and prompt's targets
            given = (targets >= weighting.given_plans) & (targets < weighting.given_plans + len(PLAN_TOKENS))
            weights[row, :answer - 1][given] = 0.0
        if answer and weighting.decision:
            previous = torch.tensor(document[answer - 1:-1])               # the token before each answer target
            weights[row, answer - 1:len(document) - 1][previous == weighting.end_image] = weighting.decision
    weights[ids[:, 1:] == weighting.given] = 0.0
    return ids, weights


def image_digits(examples: list[Example]) -> list[list[int]]:
    """The digit each image of each example's document shows, in reading order."""
    return [[picture.digit for picture in example.pictures] for example in examples]


def digit_labels(ids: torch.Tensor, digits: list[list[int]], end_image: int, begin_image: int = -1,
                 answer_starts: list[int] | None = None) -> torch.Tensor:
    """(B, T) ids -> (B, T) labels: at each image's <eoi>, the digit that image shows (`digits`, from image_digits,
    one row per document); with `begin_image` and each row's answer start (prefix_lengths; 0: no answer), also at
    each <boi> the answer writes, the digit of the image it begins (the plan, before the image's first token: a
    prompt's image cannot be known there); -1 everywhere else."""
    labels = torch.full_like(ids, -1)
    flat = torch.tensor([digit for row in digits for digit in row], dtype=torch.long)
    rows, positions = (ids == end_image).nonzero(as_tuple=True)    # row by row, left to right: reading order
    assert len(flat) == len(rows), "one digit per <eoi>"
    labels[rows, positions] = flat
    if answer_starts is not None:
        rows, positions = (ids == begin_image).nonzero(as_tuple=True)                # the same order: image by image
        starts = torch.tensor(answer_starts, dtype=torch.long)[rows]
        planned = (starts > 0) & (positions >= starts)
        labels[rows[planned], positions[planned]] = flat[planned]
    return labels


def length_batches(documents: list[list[int]], batch_size: int, generator: torch.Generator, pad: int,
                   prefixes: list[tuple[int, int]] | None = None, weighting: LossWeights = LossWeights(),
                   digits: list[list[int]] | None = None, end_image: int = -1, plan_at: int = -1
                   ) -> list[tuple[torch.Tensor, ...]]:
    """Whole batches of documents of similar length (sorted by length, random among equals), in random order;
    the last partial batch is dropped. Each is (ids, weights), and with `digits` (image_digits) also (B, T)
    digit_labels at `end_image` (and at the answers' `plan_at`, <boi>, when given)."""
    tiebreak = torch.rand(len(documents), generator=generator).tolist()
    order = sorted(range(len(documents)), key=lambda i: (len(documents[i]), tiebreak[i]))
    prefixes = prefixes or [(0, 0)] * len(documents)
    batches = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        chosen = order[start:start + batch_size]
        ids, weights = padded([documents[i] for i in chosen], pad, [prefixes[i] for i in chosen], weighting)
        starts = [prefixes[i][1] for i in chosen] if plan_at >= 0 else None
        labels = () if digits is None else (digit_labels(ids, [digits[i] for i in chosen], end_image, plan_at, starts),)
        batches.append((ids, weights, *labels))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
