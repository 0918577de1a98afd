"""The sampling engine: modality rules as logit masks, temperature / top-k, a KV cache,
classifier-free guidance, batched over many prompts. Kept apart from the model.

Because every sequence has the same fixed layout once its order (the token after <bos>)
is known, the rules are a precomputed table `allowed[order, position, token]`; decoding a
batch is one table lookup per step.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .errors import DeadlineExceeded

from .model import KVCache, Transformer
from .sequences import IMAGE_FIRST, TEXT_FIRST
from .data.colored import ADJECTIVES, HUES, PALETTE
from .tokenizers.text import SLOTS
from .tokenizers.vocab import SEQUENCE_LENGTH, WORDS, Vocab


class ModalityRules:
    """allowed[order, position] is the set of tokens that may stand at `position`."""

    def __init__(self, vocab: Vocab, grammar: bool = True) -> None:
        """grammar=True is finer than the modality rule: each of the six word slots takes only its
        own word class, so every caption fits "<adjective> <color> <digit> on <adjective> <color>"."""
        self.vocab = vocab
        allowed = torch.zeros(2, SEQUENCE_LENGTH, vocab.size, dtype=torch.bool)
        codes = slice(0, vocab.codebook_size)
        allowed[:, 0, vocab.bos] = True
        allowed[:, 1, [vocab.end_of_image, vocab.end_of_text]] = True  # either order may start
        allowed[TEXT_FIRST, 8, vocab.end_of_text] = True
        allowed[TEXT_FIRST, 9:58, codes] = True
        allowed[IMAGE_FIRST, 2:51, codes] = True
        allowed[IMAGE_FIRST, 51, vocab.end_of_image] = True
        for order, first_word in ((TEXT_FIRST, 2), (IMAGE_FIRST, 52)):
            for slot, (_, slot_words) in enumerate(SLOTS):
                choices = slot_words if grammar else WORDS
                allowed[order, first_word + slot, [vocab.word_offset + WORDS.index(w) for w in choices]] = True
        self.allowed = allowed
        # follows[previous, token]: with grammar, an adjective admits only the hues it has in the palette,
        # so "bright black" cannot be written. Everything else may follow anything the table allows.
        follows = torch.ones(vocab.size, vocab.size, dtype=torch.bool)
        if grammar:
            hues = [vocab.word_offset + WORDS.index(hue) for hue in HUES]
            for adjective in ADJECTIVES:
                row = vocab.word_offset + WORDS.index(adjective)
                follows[row, hues] = False
                follows[row, [vocab.word_offset + WORDS.index(h) for a, h in PALETTE if a == adjective]] = True
        self.follows = follows

    def mask(self, orders: torch.Tensor, position: int, previous: torch.Tensor) -> torch.Tensor:
        """(B,) orders and previous tokens -> (B, vocab) booleans for the token at `position`."""
        return self.allowed.to(orders.device)[orders, position] & self.follows.to(orders.device)[previous]

    def order_of(self, marker: torch.Tensor) -> torch.Tensor:
        """The token after <bos> -> TEXT_FIRST / IMAGE_FIRST."""
        return (marker == self.vocab.end_of_text).long()


def filter_logits(logits: torch.Tensor, allowed: torch.Tensor, temperature: float, top_k: int | None
                  ) -> torch.Tensor:
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if temperature <= 0:
        return logits  # greedy: the caller takes the argmax
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probabilities = F.softmax(logits, dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate(model: Transformer, prefix: torch.Tensor, rules: ModalityRules, temperature: float = 1.0,
             top_k: int | None = None, guidance: float = 1.0, generator: torch.Generator | None = None,
             use_cache: bool = True, length: int = SEQUENCE_LENGTH,
             should_stop: Callable[[], bool] | None = None, forced: torch.Tensor | None = None) -> torch.Tensor:
    """Complete (B, P) prefixes (all the same length, starting with <bos>) to (B, length) sequences
    (length < 58 stops early, e.g. after the first modality).

    guidance > 1 applies classifier-free guidance to the second modality: the unconditional
    stream is the other ordering, `<bos> <marker>`, which starts with that same modality.
    forced (B, length) holds a token id to keep at each position, or -1 where the model draws:
    completion and infilling (kept image tokens, given caption words) fed through the same cache.
    should_stop is asked before every decode step; when it answers True the work is abandoned
    with DeadlineExceeded (a server request whose client has stopped waiting).
    """
    model.eval()
    B, P = prefix.shape
    device = prefix.device
    sequences = torch.empty(B, length, dtype=torch.long, device=device)
    sequences[:, :P] = prefix
    guided = guidance != 1.0 and P >= 3
    cache = KVCache(model.config, B, device=device) if use_cache else None
    logits = model(prefix, kv_cache=cache)[:, -1]
    if guided:
        # Unconditional stream: <bos>, then the marker that opens the modality being generated.
        free = torch.stack([prefix[:, 0], prefix[:, -1]], dim=1)
        free_cache = KVCache(model.config, B, device=device) if use_cache else None
        free_logits = model(free, kv_cache=free_cache)[:, -1]
        offset = P - 2  # conditional position p == unconditional position p - offset
    orders = rules.order_of(prefix[:, 1]) if P >= 2 else None
    for position in range(P, length):
        if should_stop is not None and should_stop():
            raise DeadlineExceeded("sampling stopped: the time limit passed")
        if guided:
            conditional, unconditional = F.log_softmax(logits.float(), -1), F.log_softmax(free_logits.float(), -1)
            logits = unconditional + guidance * (conditional - unconditional)
        step_orders = orders if orders is not None else torch.zeros(B, dtype=torch.long, device=device)
        allowed = rules.mask(step_orders, position, sequences[:, position - 1])
        token = pick(filter_logits(logits, allowed, temperature, top_k), temperature, generator)
        if forced is not None:
            token = torch.where(forced[:, position] >= 0, forced[:, position], token)
        sequences[:, position] = token
        if position == 1:
            orders = rules.order_of(token)
        if position == length - 1:
            break
        if use_cache:
            logits = model(token[:, None], kv_cache=cache)[:, -1]
        else:
            logits = model(sequences[:, :position + 1])[:, -1]
        if guided:
            if use_cache:
                free_logits = model(token[:, None], kv_cache=free_cache)[:, -1]
            else:
                free_sequence = torch.cat([free, sequences[:, P:position + 1]], dim=1)
                free_logits = model(free_sequence)[:, -1]
            assert free_cache is None or free_cache.position == position + 1 - offset
    return sequences
