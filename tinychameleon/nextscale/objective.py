"""What the next-scale transformer is trained and scored on: -log p of every target in both orders.

One function per order, shared by training, the validation NLL and reranking, so the three never
disagree on what a token's loss is.
"""

from __future__ import annotations

import torch

from ..model import target_log_probs
from ..sequences import text_prefix
from ..tokenizers.vocab import Vocab
from .model import CAPTION, NextScaleTransformer


def captions(vocab: Vocab, words: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 6) word ids 0..30 -> (B, 9) <bos> <end of image> w1..w6 <end of text> (the raster model's text prompt);
    rows in `masked` (B,) have <mask> for every word (guidance's unconditional stream, and caption dropout)."""
    ids = text_prefix(vocab, words)
    if masked is not None:
        words_slots = vocab.text_first_words
        ids[:, words_slots] = torch.where(masked[:, None].to(ids.device), vocab.mask, ids[:, words_slots])
    return ids


def reading_head(vocab: Vocab, image_ids: torch.Tensor) -> torch.Tensor:
    """(B, 106) image ids -> (B, 4) <bos> <end of text> fg bg: the reading order's tokens before the latent."""
    markers = torch.tensor([vocab.bos, vocab.end_of_text], device=image_ids.device).expand(len(image_ids), 2)
    return torch.cat([markers, image_ids[:, :2].long()], dim=1)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V), (B, T) -> (B, T) nats, in fp32."""
    return -target_log_probs(logits.float(), targets)


def drawing_nll(model: NextScaleTransformer, coder, vocab: Vocab, words: torch.Tensor, image_ids: torch.Tensor,
                masked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The drawing order: -log p of the caption's words (B, 6) and of the image's tokens (B, 106, in the drawing
    order's: layout.order) given it.
    `coder` is the tokenizer's multi-scale shape coder: image_ids[:, 2:] are its codes."""
    ids = captions(vocab, words, masked)
    with torch.no_grad():   # the tokenizer is frozen in stage 2
        latents = model.layout.drawing_inputs(coder.quantizer, image_ids[:, 2:])
    logits = model.drawing_logits(ids, latents)
    word_nll = token_nll(logits[:, 1:1 + words.shape[1]], ids[:, 2:2 + words.shape[1]])
    return word_nll, token_nll(logits[:, CAPTION:], image_ids[:, model.layout.order.to(image_ids.device)].long())


def reading_nll(model: NextScaleTransformer, coder, vocab: Vocab, words: torch.Tensor, image_ids: torch.Tensor
                ) -> torch.Tensor:
    """The reading order: -log p(w_i | image, w_<i), (B, 6)."""
    targets = words.long() + vocab.word_offset
    tail = torch.cat([torch.full((len(words), 1), vocab.end_of_image, device=words.device), targets[:, :-1]], dim=1)
    logits = model.reading_logits(reading_head(vocab, image_ids), coder.features(image_ids[:, 2:]), tail)
    return token_nll(logits[:, -words.shape[1]:], targets)


def pair_loss(model: NextScaleTransformer, coder, vocab: Vocab, words: torch.Tensor, image_ids: torch.Tensor,
              reading: torch.Tensor, caption_dropout: float = 0.0, caption_weight: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean training NLL per token of a batch of pairs: rows in `reading` (B,) are read (image -> caption,
    their words weighted `caption_weight`), the others drawn (caption, then the image), a `caption_dropout`
    share of those with the caption as <mask> tokens (no loss on them): guidance's unconditional stream."""
    total, count = image_ids.new_zeros((), dtype=torch.float32), 0.0
    drawing = (~reading).nonzero().squeeze(1)
    if len(drawing):
        masked = torch.rand(len(drawing), generator=generator).to(words.device) < caption_dropout
        word_nll, image_nll = drawing_nll(model, coder, vocab, words[drawing], image_ids[drawing], masked)
        kept = (~masked).float()[:, None]
        total = total + (word_nll * kept).sum() + image_nll.sum()
        count += float(kept.sum()) * word_nll.shape[1] + image_nll.numel()
    read_rows = reading.nonzero().squeeze(1)
    if len(read_rows):
        read_nll = reading_nll(model, coder, vocab, words[read_rows], image_ids[read_rows])
        total = total + caption_weight * read_nll.sum()
        count += caption_weight * read_nll.numel()
    return total / count


@torch.no_grad()
def split_nll(model: NextScaleTransformer, coder, vocab: Vocab, words: torch.Tensor, image_ids: torch.Tensor,
              split: str = "validation", batch_size: int = 500) -> dict:
    """The raster model's NLL report (training/lm_trainer.split_nll) for a next-scale model, same keys:
    per token overall / text / image, and per pair, per image (given the caption), per caption (read)."""
    was_training = model.training
    model.eval()
    sums = {"words": 0.0, "image": 0.0, "read": 0.0}
    for start in range(0, len(words), batch_size):
        rows = slice(start, start + batch_size)
        word_nll, image_nll = drawing_nll(model, coder, vocab, words[rows], image_ids[rows])
        sums["words"] += float(word_nll.double().sum())
        sums["image"] += float(image_nll.double().sum())
        sums["read"] += float(reading_nll(model, coder, vocab, words[rows], image_ids[rows]).double().sum())
    model.train(was_training)
    N, W, L = len(words), words.shape[1], image_ids.shape[1]
    return {f"{split}_nll": (sums["words"] + sums["image"] + sums["read"]) / (N * (2 * W + L)),
            f"{split}_text_nll": (sums["words"] + sums["read"]) / (2 * N * W),
            f"{split}_image_nll": sums["image"] / (N * L),
            f"{split}_text_first_nll": (sums["words"] + sums["image"]) / (N * (W + L)),
            f"{split}_image_first_nll": sums["read"] / (N * W),
            f"{split}_nats_per_pair": (sums["words"] + sums["image"]) / N,
            f"{split}_nats_per_image": sums["image"] / N,
            f"{split}_nats_per_caption": sums["read"] / N}
