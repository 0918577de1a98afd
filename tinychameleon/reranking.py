"""Self-reranking: the model scores its own candidates, in either reading direction.

One network has learnt both p(caption | image) (image-first sequences) and p(caption, image)
(text-first sequences), so it can check its own work, like DALL-E's CLIP reranking but with
no second model:

- text -> image: draw several images per prompt and keep the one whose prompt the model
  finds most likely as its caption, log p(prompt | image).
- image -> text: the greedy caption reads colors almost perfectly but misreads digits. For each
  digit word d, score the caption with d by Bayes' rule in both directions,
  log p(caption_d | image) + log p(caption_d, image), and keep the best. The text-first term is
  a generative classifier: it asks which digit's caption best *explains* the image's tokens.
  With views, the same scores are also taken on recolorings of the image shifted by a pixel (same
  strokes, other color pairs, each read with its own color words) and summed: low-contrast pairs
  quantize the digit's outline less cleanly, and every view gives other codes for it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .batching import batch_slices
from .data.colored import DIGIT_WORDS, VALID_PAIRS, recolor
from .model import KVCache, Transformer, evaluating, next_token_log_probs
from .sequences import IMAGE_FIRST, TEXT_FIRST, build_sequences, target_kinds
from .tokenizers.text import SLOTS
from .tokenizers.vocab import WORDS, Vocab

DIGIT_SLOT = [name for name, _ in SLOTS].index("digit")
DIGIT_WORD_IDS = [WORDS.index(word) for word in DIGIT_WORDS]


@torch.no_grad()
def token_log_probs(model: Transformer, sequences: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(B, T) sequences -> (B, T - 1) log-probability the model gives each next token."""
    evaluating(model)
    chunks = []
    for rows in batch_slices(len(sequences), batch_size):
        chunks.append(next_token_log_probs(model, sequences[rows]))
    return torch.cat(chunks)


def caption_given_image(model: Transformer, vocab: Vocab, word_ids: torch.Tensor, codes: torch.Tensor
                        ) -> torch.Tensor:
    """log p(caption | image) from the image-first reading: (B, 6) word ids, (B, L) codes -> (B,)."""
    orders = torch.full((len(codes),), IMAGE_FIRST, dtype=torch.long)
    sequences = build_sequences(vocab, word_ids, codes, orders)
    log_probs = token_log_probs(model, sequences)
    is_text, _ = target_kinds(vocab, sequences[:, 1:])
    return (log_probs * is_text).sum(dim=1)


def joint(model: Transformer, vocab: Vocab, word_ids: torch.Tensor, codes: torch.Tensor,
          kept: torch.Tensor | None = None) -> torch.Tensor:
    """log p(caption, image) from the text-first reading: (B,). With `kept` (B, L) booleans only the kept
    image tokens count: log p(caption, kept part), exact when the kept part is a prefix of the image."""
    orders = torch.full((len(codes),), TEXT_FIRST, dtype=torch.long)
    log_probs = token_log_probs(model, build_sequences(vocab, word_ids, codes, orders))   # (B, T - 1)
    if kept is not None:
        codes_at = slice(vocab.text_first_codes.start - 1, vocab.text_first_codes.stop - 1)  # their targets
        log_probs[:, codes_at] *= kept.to(log_probs.device)
    return log_probs.sum(dim=1)


def digit_candidates(word_ids: torch.Tensor) -> torch.Tensor:
    """(B, 6) word ids -> (B, 10, 6): each caption with every digit word in its digit slot."""
    candidates = word_ids[:, None, :].repeat(1, len(DIGIT_WORD_IDS), 1)
    candidates[:, :, DIGIT_SLOT] = torch.tensor(DIGIT_WORD_IDS, device=word_ids.device)
    return candidates


def digit_for_kept_part(model: Transformer, vocab: Vocab, word_ids: torch.Tensor, codes: torch.Tensor,
                        kept: torch.Tensor) -> torch.Tensor:
    """(B, 6) captions of partly kept images -> the same with the digit whose caption best explains the kept
    tokens (B, L booleans): Bayes' rule, argmax_d log p(caption_d) + log p(kept part | caption_d).

    Reading the kept part as if it were a whole image guesses from half a stroke (the rest reads as
    erased background); this asks instead which digit's drawing would begin the way the kept part does.
    """
    B, digits = len(word_ids), len(DIGIT_WORD_IDS)
    candidates = digit_candidates(word_ids)                                           # (B, 10, 6)
    scores = joint(model, vocab, candidates.view(B * digits, -1), codes.repeat_interleave(digits, dim=0),
                   kept.repeat_interleave(digits, dim=0)).view(B, digits)
    return candidates[torch.arange(B), scores.argmax(dim=1)]


def best_images(model: Transformer, vocab: Vocab, word_ids: torch.Tensor, codes: torch.Tensor,
                candidates: int) -> torch.Tensor:
    """Keep one of each prompt's `candidates` images (rows prompt-major): (B*n, L) -> (B, L)."""
    scores = caption_given_image(model, vocab, word_ids, codes).view(-1, candidates)  # (B, n)
    best = scores.argmax(dim=1)
    return codes.view(-1, candidates, codes.shape[-1])[torch.arange(len(best)), best]


def view_pairs(views: int, seed: int = 123) -> np.ndarray:
    """The (foreground, background) color ids of the `views - 1` recolorings: fixed, seeded draws."""
    order = np.random.default_rng(seed).permutation(len(VALID_PAIRS))
    return VALID_PAIRS[order[:max(0, views - 1)]]


# Each view also moves the digit by one pixel (rows, columns): a tokenizer of 4x4 patches then sees other
# patches of the same strokes, a new reading even where the shape codes ignore color (palette kinds).
# MNIST digits sit in a 20x20 box with a 4-pixel margin, so a one-pixel shift stays inside the data.
VIEW_SHIFTS = [(0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]


def view_images(images: np.ndarray, views: int) -> list[tuple[int, int, np.ndarray]]:
    """(foreground, background, images) of each of the `views - 1` views: recolored and shifted by a pixel."""
    return [(int(foreground), int(background),
             np.roll(recolor(images, foreground, background), VIEW_SHIFTS[index % len(VIEW_SHIFTS)], axis=(1, 2)))
            for index, (foreground, background) in enumerate(view_pairs(views))]


@torch.no_grad()
def caption_given_image_per_digit(model: Transformer, vocab: Vocab, word_ids: torch.Tensor, codes: torch.Tensor,
                                  batch_size: int = 128) -> torch.Tensor:
    """log p(caption with digit d | image) for all 10 digits d: (B, 6), (B, L) -> (B, 10).

    Equals caption_given_image on the 10 candidates, but the image-first reading shares everything
    before the digit word (54 of 57 predictions' context), so the prefix runs once per image through
    the KV cache and only the last three tokens run once per digit: about 7x less work.
    """
    evaluating(model)
    digits = torch.tensor(DIGIT_WORD_IDS, device=word_ids.device) + vocab.word_offset
    D = len(digits)
    digit_position = vocab.image_first_words.start + DIGIT_SLOT                     # 54 for L = 49
    orders = torch.full((len(codes),), IMAGE_FIRST, dtype=torch.long)
    sequences = build_sequences(vocab, word_ids, codes, orders)                   # (B, T)
    chunks = []
    for batch in batch_slices(len(sequences), batch_size):
        rows = sequences[batch]
        B = len(rows)
        parameter = next(model.parameters())
        cache = KVCache(model.config, B, device=parameter.device, dtype=parameter.dtype)
        prefix = F.log_softmax(model(rows[:, :digit_position], kv_cache=cache, last=3).float(), dim=-1)   # (B, 3, V)
        # Positions 51, 52 predict the two words before the digit; position 53 predicts the digit.
        before = prefix[:, :2].gather(-1, rows[:, digit_position - 2:digit_position, None]).sum(dim=(1, 2))
        digit = prefix[:, 2, digits]                                              # (B, 10)
        suffix = rows[:, digit_position:-1].repeat_interleave(D, dim=0)           # (B*10, 3): digit, w4, w5
        suffix[:, 0] = digits.repeat(B)
        after = F.log_softmax(model(suffix, kv_cache=cache.repeat_rows(D, room=suffix.shape[1])).float(), dim=-1)
        targets = rows[:, digit_position + 1:].repeat_interleave(D, dim=0)        # (B*10, 3): w4, w5, w6
        after = after.gather(-1, targets[..., None]).sum(dim=(1, 2)).view(B, D)
        chunks.append(before[:, None] + digit + after)
    return torch.cat(chunks)


def digit_scores(model: Transformer, vocab: Vocab, word_ids: torch.Tensor, codes: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes score of every digit word in each caption: -> candidates (B, 10, 6) and scores (B, 10)."""
    B, digits = len(word_ids), len(DIGIT_WORD_IDS)
    candidates = digit_candidates(word_ids)                                       # (B, 10, 6)
    repeated_codes = codes.repeat_interleave(digits, dim=0)                       # (B*10, L)
    scores = (caption_given_image_per_digit(model, vocab, word_ids, codes)
              + joint(model, vocab, candidates.view(B * digits, -1), repeated_codes).view(B, digits))
    return candidates, scores


def rerank_digits(model: Transformer, vocab: Vocab, word_ids: torch.Tensor, codes: torch.Tensor,
                  views: list[tuple[torch.Tensor, torch.Tensor]] = (), hypotheses: int = 10,
                  second_reader: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Replace each caption's digit word by the Bayes-best one: (B, 6) word ids, (B, L) codes -> (B, 6).

    `views` are extra (word ids, codes) readings of the same images (recolorings with their own
    color words); their digit scores are added to the image's own. Only the `hypotheses` digits the
    cheap image-first reading ranks highest get the costly text-first (joint) term: the true digit is
    almost always among the reading's top few, and each pruned digit saves a 54-token pass per reading.
    With hypotheses = 10 this is the full Bayes rule over every digit. `second_reader` maps the candidate
    captions (B, m, 6) to scores (B, m) added to the model's (another model's reading, e.g. CLIP's).
    """
    readings = [(word_ids, codes), *views]
    reading = sum(caption_given_image_per_digit(model, vocab, words, image) for words, image in readings)  # (B, 10)

    def joint_of(digit_ids: torch.Tensor) -> torch.Tensor:                        # (B, m) -> (B, m)
        B, m = digit_ids.shape
        return sum(joint(model, vocab, with_digits(words, digit_ids).view(B * m, -1),
                         image.repeat_interleave(m, dim=0)).view(B, m) for words, image in readings)

    return choose_digits(word_ids, reading, hypotheses, joint_of, second_reader)


def with_digits(word_ids: torch.Tensor, digit_ids: torch.Tensor) -> torch.Tensor:
    """(B, 6) captions, (B, m) digit word ids -> (B, m, 6): each caption with each of its row's digits."""
    candidates = word_ids[:, None, :].repeat(1, digit_ids.shape[1], 1)
    candidates[:, :, DIGIT_SLOT] = digit_ids
    return candidates


def choose_digits(word_ids: torch.Tensor, reading: torch.Tensor, hypotheses: int,
                  joint_of: Callable[[torch.Tensor], torch.Tensor],
                  second_reader: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The Bayes choice of a caption's digit, for any model that scores captions both ways: (B, 6) captions and
    `reading` (B, 10), log p(caption_d | image) for every digit d -> the captions with the best digit. The
    `hypotheses` likeliest by the reading get `joint_of` their digit word ids (B, m) -> log p(caption_d, image)
    (B, m), and `second_reader`'s scores of their captions (B, m, 6) -> (B, m)."""
    B, kept = len(word_ids), max(1, min(hypotheses, len(DIGIT_WORD_IDS)))
    scores, keep = reading.topk(kept, dim=1)                                      # (B, m) each
    digit_ids = torch.tensor(DIGIT_WORD_IDS, device=word_ids.device)[keep]        # (B, m) word ids
    scores = scores + joint_of(digit_ids)
    if second_reader is not None:
        scores = scores + second_reader(with_digits(word_ids, digit_ids)).to(scores.device)
    reranked = word_ids.clone()
    reranked[:, DIGIT_SLOT] = digit_ids[torch.arange(B), scores.argmax(dim=1)]
    return reranked
