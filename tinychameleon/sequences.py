"""The token stream: how a caption and an image become one sequence (58 tokens for 49 image tokens).

  text first : <bos> <end of image> w1..w6 <end of text> i1..iL
  image first: <bos> <end of text> i1..iL <end of image> w1..w6

L, the tokens per image, comes from the image tokenizer; every offset is a `Vocab` property.

The marker after <bos> says which modality comes first ("the other one has ended").

Causal-masked (CM3) sequences, for runs trained to infill: one span inside one modality is cut
out, a <mask> stands where it was, and the span follows a second <mask> at the end, so the model
writes the span having read both sides of it:

  <bos> <end of image> w1..w6 <end of text> i1..i20 <mask> i29..i49 <mask> i21..i28   (60 tokens)
"""

from __future__ import annotations

import torch

from .tokenizers.vocab import TEXT_LENGTH, Vocab

TEXT_FIRST, IMAGE_FIRST = 0, 1


def build_sequences(vocab: Vocab, word_ids: torch.Tensor, codes: torch.Tensor, orders: torch.Tensor
                    ) -> torch.Tensor:
    """word_ids (B, 6) in 0..30, codes (B, L), orders (B,) -> token ids (B, vocab.plain_length)."""
    B = word_ids.shape[0]
    device = codes.device
    words = word_ids.long().to(device) + vocab.word_offset
    codes = codes.long()

    def column(token: int) -> torch.Tensor:
        return torch.full((B, 1), token, dtype=torch.long, device=device)

    bos, eot, eoi = column(vocab.bos), column(vocab.end_of_text), column(vocab.end_of_image)
    text_first = torch.cat([bos, eoi, words, eot, codes], dim=1)
    image_first = torch.cat([bos, eot, codes, eoi, words], dim=1)
    return torch.where(orders.to(device).bool()[:, None], image_first, text_first)


def masked_span_sequences(vocab: Vocab, sequences: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move span [start, start + length) of each row to the end behind <mask> sentinels.

    sequences (B, T), starts and lengths (B,) -> (B, T + 2) sequences and (B, T + 1) loss weights (1.0 or
    0.0 per predicted token). A row with length 0 is left as it was, padded with two <mask> tokens
    whose predictions carry no loss. The first <mask>'s own prediction carries no loss either: where
    a hole begins is the caller's choice, not something to learn.
    """
    B, T = sequences.shape
    device = sequences.device
    starts, lengths = starts.to(device)[:, None], lengths.to(device)[:, None]      # (B, 1)
    plain = lengths == 0
    starts = torch.where(plain, torch.full_like(starts, T), starts)
    p = torch.arange(T + 2, device=device)[None]                                    # (1, T + 2) output positions
    source = torch.full((B, T + 2), T, dtype=torch.long, device=device)            # index T = <mask>
    source = torch.where(p < starts, p, source)                                     # before the hole
    tail = (p > starts) & (p <= T - lengths)                                        # after the hole
    source = torch.where(tail, p - 1 + lengths, source)
    moved = p >= T + 2 - lengths                                                    # the span, at the end
    source = torch.where(moved, starts + p - (T + 2 - lengths), source)
    padded = torch.cat([sequences, torch.full((B, 1), vocab.mask, dtype=torch.long, device=device)], dim=1)
    masked = padded.gather(1, source)
    weights = torch.ones(B, T + 1, device=device)
    rows = torch.arange(B, device=device)
    hole = torch.where(plain[:, 0], torch.full_like(rows, T - 1), starts[:, 0] - 1)  # target index of 1st <mask>
    weights[rows, hole] = 0.0
    weights[plain[:, 0], T] = 0.0                                                   # the padding's second token
    return masked, weights


def image_first_rows(vocab: Vocab, sequences: torch.Tensor) -> torch.Tensor:
    """(B,) whether each row reads its image first (its marker after <bos> says the text has "ended")."""
    return sequences[:, 1] == vocab.end_of_text


def random_spans(vocab: Vocab, sequences: torch.Tensor, rate: float, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick spans for the CM3 objective: a `rate` share of rows gets one span, inside the image (L of
    L + 6 times) or inside the caption, of uniform length and place; the rest stay plain."""
    B, L = len(sequences), vocab.image_length
    draws = torch.rand(B, 4, generator=generator)
    image_first = image_first_rows(vocab, sequences).cpu()
    in_image = draws[:, 0] < L / (L + TEXT_LENGTH)
    first = torch.where(in_image, torch.where(image_first, vocab.image_first_codes.start, vocab.text_first_codes.start),
                        torch.where(image_first, vocab.image_first_words.start, vocab.text_first_words.start))
    size = torch.where(in_image, L, TEXT_LENGTH)
    lengths = 1 + (draws[:, 1] * size).long()                                       # 1..size
    starts = first + (draws[:, 2] * (size - lengths + 1)).long()                    # span stays in its modality
    lengths = torch.where(draws[:, 3] < rate, lengths, torch.zeros_like(lengths))
    return masked_span_sequences(vocab, sequences, starts, lengths)


def header(vocab: Vocab, rows: int, order: int | None) -> torch.Tensor:
    """<bos> and the order's marker, (rows, 2); order None gives <bos> alone, (rows, 1), for the model to choose.
    The marker names the modality that has *ended*: text first is <bos> <end of image>."""
    if order is None:
        return torch.full((rows, 1), vocab.bos, dtype=torch.long)
    marker = vocab.end_of_image if order == TEXT_FIRST else vocab.end_of_text
    return torch.tensor([vocab.bos, marker], dtype=torch.long).repeat(rows, 1)


def text_prefix(vocab: Vocab, word_ids: torch.Tensor) -> torch.Tensor:
    """Prompt for text -> image: <bos> <end of image> w1..w6 <end of text>  (B, 9), on word_ids' device."""
    B, device = word_ids.shape[0], word_ids.device
    bos = torch.full((B, 1), vocab.bos, dtype=torch.long, device=device)
    eoi = torch.full((B, 1), vocab.end_of_image, dtype=torch.long, device=device)
    eot = torch.full((B, 1), vocab.end_of_text, dtype=torch.long, device=device)
    return torch.cat([bos, eoi, word_ids.long() + vocab.word_offset, eot], dim=1)


def image_prefix(vocab: Vocab, codes: torch.Tensor) -> torch.Tensor:
    """Prompt for image -> text: <bos> <end of text> i1..iL <end of image>  (B, L + 3)."""
    B = codes.shape[0]
    bos = torch.full((B, 1), vocab.bos, dtype=torch.long, device=codes.device)
    eot = torch.full((B, 1), vocab.end_of_text, dtype=torch.long, device=codes.device)
    eoi = torch.full((B, 1), vocab.end_of_image, dtype=torch.long, device=codes.device)
    return torch.cat([bos, eot, codes.long(), eoi], dim=1)


def split_sequences(vocab: Vocab, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) finished sequences -> word ids (B, 6) in 0..30 and image tokens (B, L)."""
    image_first = image_first_rows(vocab, sequences)[:, None]
    words = torch.where(image_first, sequences[:, vocab.image_first_words], sequences[:, vocab.text_first_words])
    codes = torch.where(image_first, sequences[:, vocab.image_first_codes], sequences[:, vocab.text_first_codes])
    words = words - vocab.word_offset
    return words, codes


def target_kinds(vocab: Vocab, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of predicted positions that are words / image codes (structure tokens are neither)."""
    is_text = (targets >= vocab.word_offset) & (targets < vocab.word_offset + vocab.num_words)
    is_image = targets < vocab.image_tokens
    return is_text, is_image
