"""The documents a run trains on beside its pairs: a fresh seeded set of task-family examples each epoch,
built from the training digits only, and a fixed set from the validation digits to score every epoch."""

from __future__ import annotations

from typing import Callable

import torch

from ..config import RunConfig
from ..data.colored import COLOR_ID, ColoredMNIST, recolor
from ..documents.batches import (LossWeights, digit_labels, example_documents, image_digits, length_batches, padded,
                                 prefix_lengths)
from ..documents.document import DocumentTokenizer
from ..documents.families import DigitBank, examples
from ..retrieval.memory import neighbour_table
from ..retrieval.retriever import Retriever
from ..tokenizers.vocab import Vocab

VALIDATION_DOCUMENTS = 512


NEIGHBOURS = 8  # a retrieval-augmented document reads `train.retrieve` of its example's 8 nearest (diversity)


def bank_of(split: ColoredMNIST, retrieve: int = 0, strokes: int = 0, retrieve_min: int = 0, words: bool = False
            ) -> DigitBank:
    """The split's digits; with `retrieve`, each example's nearest shapes by the shipped retriever.

    Neighbours are found by shape alone (every digit painted white on black before it is embedded) and shown
    in their own colors: what a neighbour can teach is how the digit is drawn, while the digit and its colors
    must come from the document's own words (families.retrieved also mixes in unrelated documents)."""
    if not retrieve:
        return DigitBank(split.digits, split.foreground, split.background, words=words)
    shapes = recolor(split.images, COLOR_ID["plain white"], COLOR_ID["plain black"])
    vectors = Retriever.from_pretrained().embed_images(shapes)
    return DigitBank(split.digits, split.foreground, split.background, neighbour_table(vectors, NEIGHBOURS), retrieve,
                     strokes, retrieve_min, words)


def document_source(config: RunConfig, image_tokenizer, train_split: ColoredMNIST, train_codes: torch.Tensor
                    ) -> Callable[[int], list[tuple[torch.Tensor, ...]]]:
    """epoch -> that epoch's document batches ((B, T) ids, (B, T-1) loss weights, and with model.digit_head (B, T)
    digit labels at each image's <eoi>), the same on every rank.
    The tokenizer repaints a digit's tokens with `recolor` (RunConfig.validate admits only such kinds).
    train_codes are the digits' tokens (N, L), or (1 + S, N, L) with their S training stroke styles after them
    (train.memory_strokes)."""
    settings, vocab = config.train, Vocab.for_config(config)
    strokes = len(train_codes) - 1 if train_codes.dim() == 3 else 0
    tokenizer, bank = DocumentTokenizer(vocab), bank_of(train_split, settings.retrieve, strokes, settings.retrieve_min,
                                                        settings.word_families)
    weighting = LossWeights(settings.context_loss_weight, settings.answer_loss_weight,
                            vocab.image_tokens if settings.answer_words_only else 0, given_token(vocab),
                            given_plans(vocab), settings.decision_loss_weight, vocab.end_image)

    def documents(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(settings.seed * 7937 + epoch)
        chosen = examples(bank, settings.documents, [settings.seed, epoch, 22], shares=settings.family_shares)
        dropout = torch.rand(len(chosen), generator=generator) < settings.text_dropout
        dropout &= torch.tensor([bool(example.pictures) for example in chosen])   # words alone have nothing to keep
        ids = example_documents(chosen, train_codes, image_tokenizer.recolor, tokenizer, dropout)
        prefixes = prefix_lengths(chosen, vocab, dropout)
        digits = image_digits(chosen) if config.model.digit_head else None
        return length_batches(ids, settings.batch_size, generator, vocab.end_document, prefixes, weighting, digits,
                              vocab.end_image, vocab.begin_image if settings.digit_plan else -1)

    return documents


def validation_documents(config: RunConfig, image_tokenizer, split: ColoredMNIST, codes: torch.Tensor
                         ) -> tuple[torch.Tensor, ...]:
    """A fixed seeded set of documents of the validation digits: (B, T) ids and (B, T-1) weights, and with
    model.digit_head (B, T) digit labels."""
    vocab = Vocab.for_config(config)
    chosen = examples(bank_of(split), VALIDATION_DOCUMENTS, [config.data_seed, 1, 22])
    ids = example_documents(chosen, codes, image_tokenizer.recolor, DocumentTokenizer(vocab))
    ids, weights = padded(ids, vocab.end_document, prefix_lengths(chosen, vocab),
                          LossWeights(given=given_token(vocab), given_plans=given_plans(vocab)))
    if not config.model.digit_head:
        return ids, weights
    return ids, weights, digit_labels(ids, image_digits(chosen), vocab.end_image)


def given_token(vocab: Vocab) -> int:
    """<eop>, where the vocabulary has it: the prompt's end is the user's to give, not the model's to predict."""
    return vocab.end_prompt if vocab.prompt_end else -1


def given_plans(vocab: Vocab) -> int:
    """<plan zero>'s id where the prompt's images carry plans (train.prompt_plans): given with the prompt, never
    predicted (-1 otherwise)."""
    return vocab.first_plan if vocab.prompt_plans else -1
