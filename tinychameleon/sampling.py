"""The sampling engine: modality rules as logit masks, temperature / top-k, a KV cache,
classifier-free guidance, batched over many prompts. Kept apart from the model.

Because every sequence has the same fixed layout once its order (the token after <bos>)
is known, the rules are a precomputed table `allowed[order, position, token]`; decoding a
batch is one table lookup per step.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .decode_graph import EagerStep, replays, static_cache
from .device import DeviceTables
from .errors import stop_if_expired
from .model import KVCache, Transformer, evaluating
from .sequences import IMAGE_FIRST, TEXT_FIRST
from .data.colored import ADJECTIVES, HUES, PALETTE
from .tokenizers.text import SLOTS
from .tokenizers.vocab import WORDS, Vocab


class ModalityRules(DeviceTables):
    """allowed[order, position] is the set of tokens that may stand at `position`."""

    def __init__(self, vocab: Vocab, grammar: bool = True, image_positions: torch.Tensor | None = None,
                 image_follows: torch.Tensor | None = None) -> None:
        """grammar=True is finer than the modality rule: each of the six word slots takes only its
        own word class, so every caption fits "<adjective> <color> <digit> on <adjective> <color>".

        The image tokenizer may restrict its own tokens: image_positions (L, K) says which image ids
        may stand at each image position (e.g. colors first, then shape codes), image_follows (K, K)
        which image id may follow which (e.g. only color pairs the data has). Default: any, anywhere."""
        self.vocab = vocab
        allowed = torch.zeros(2, vocab.plain_length, vocab.size, dtype=torch.bool)
        K = vocab.image_tokens
        if image_positions is None:
            image_positions = torch.ones(vocab.image_length, K, dtype=torch.bool)
        allowed[:, 0, vocab.bos] = True
        allowed[:, 1, [vocab.end_of_image, vocab.end_of_text]] = True  # either order may start
        allowed[TEXT_FIRST, vocab.text_first_words.stop, vocab.end_of_text] = True
        allowed[TEXT_FIRST, vocab.text_first_codes, :K] = image_positions
        allowed[IMAGE_FIRST, vocab.image_first_codes, :K] = image_positions
        allowed[IMAGE_FIRST, vocab.image_first_codes.stop, vocab.end_of_image] = True
        for order, first_word in ((TEXT_FIRST, vocab.text_first_words.start),
                                  (IMAGE_FIRST, vocab.image_first_words.start)):
            for slot, (_, slot_words) in enumerate(SLOTS):
                choices = slot_words if grammar else WORDS
                allowed[order, first_word + slot, [vocab.word_offset + WORDS.index(w) for w in choices]] = True
        self.allowed = allowed
        # follows[previous, token]: with grammar, an adjective admits only the hues it has in the palette,
        # so "bright black" cannot be written. Everything else may follow anything the table allows.
        follows = torch.ones(vocab.size, vocab.size, dtype=torch.bool)
        if image_follows is not None:
            follows[:K, :K] = image_follows
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


class SpanRules:
    """Rules for the span written after the second <mask> of a causal-masked (infill) sequence: image
    codes only. Positions there depend on the hole, so there is no per-position table to look up."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.codes = torch.zeros(vocab.size, dtype=torch.bool)
        self.codes[:vocab.image_tokens] = True

    def mask(self, orders: torch.Tensor, position: int, previous: torch.Tensor) -> torch.Tensor:
        return self.codes.to(orders.device).expand(len(orders), -1)

    def order_of(self, marker: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(marker)


def filter_logits(logits: torch.Tensor, allowed: torch.Tensor, temperature: float, top_k: int | None,
                  top_p: float = 1.0) -> torch.Tensor:
    """Mask disallowed tokens, then temperature, top-k and top-p (nucleus: the smallest set of tokens whose
    probabilities sum to at least top_p)."""
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if temperature <= 0:
        return logits  # greedy: the caller takes the argmax
    if temperature != 1.0:   # dividing by 1 would copy the logits to change nothing
        logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = logits.masked_fill(outside_nucleus(logits, top_p), float("-inf"))
    return logits


NUCLEUS_FIRST = 256   # likeliest tokens ranked before falling back to a full sort (see outside_nucleus)


def outside_nucleus(logits: torch.Tensor, top_p: float, first: int = NUCLEUS_FIRST) -> torch.Tensor:
    """(B, V) booleans: the tokens each row drops under top-p, those whose higher-ranked tokens already hold
    top_p of the mass. On the CPU a top-p near 1 keeps a few hundred of the 2000+ ids, so the `first` likeliest
    are ranked with topk (several times cheaper than sorting every id); only rows whose `first` hold less than
    top_p are sorted whole. On a GPU every row is sorted whole: one kernel there, while asking which rows fall
    short would stall the host at every decode step. Both rank the same probabilities, so the masks are equal
    (tests/test_sampling.py)."""
    probabilities = F.softmax(logits, dim=-1)
    if logits.is_cuda:
        return sorted_outside_nucleus(logits, probabilities, top_p)
    order = torch.topk(logits, min(first, logits.shape[-1]), dim=-1).indices       # (B, k), likeliest first
    mass = probabilities.gather(-1, order)
    before = mass.cumsum(dim=-1) - mass                                            # mass of the tokens ranked above
    drop = torch.ones_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
    short = (before[:, -1] + mass[:, -1]) < top_p                                  # the nucleus goes past `first`
    if short.any():
        rows = short.nonzero().squeeze(1)
        drop[rows] = sorted_outside_nucleus(logits[rows], probabilities[rows], top_p)
    return drop


def sorted_outside_nucleus(logits: torch.Tensor, probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """outside_nucleus by sorting every id of every row."""
    order = torch.sort(logits, dim=-1, descending=True).indices
    mass = probabilities.gather(-1, order)
    return torch.zeros_like(order, dtype=torch.bool).scatter(-1, order, mass.cumsum(-1) - mass >= top_p)


def guided_logits(conditional: torch.Tensor, unconditional: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance on logits of any shape (..., vocab): log p_uncond + guidance * (log p_cond -
    log p_uncond). Every sampler (pairs, documents, next-scale) combines its two streams with this."""
    free = F.log_softmax(unconditional.float(), -1)
    return free + guidance * (F.log_softmax(conditional.float(), -1) - free)


def contrastive_scores(conditional: torch.Tensor, unconditional: torch.Tensor, allowed: torch.Tensor, k: int,
                       alpha: float) -> torch.Tensor:
    """CD-K (CM3Leon): among allowed tokens whose conditional probability is at least alpha x the k-th largest,
    score log p_cond - log p_uncond; every other token gets -inf. Inputs are (B, vocab) logits."""
    conditional, unconditional = F.log_softmax(conditional.float(), -1), F.log_softmax(unconditional.float(), -1)
    masked = conditional.masked_fill(~allowed, float("-inf"))
    kth = torch.topk(masked, min(k, masked.shape[-1]), dim=-1).values[:, -1:]
    keep = allowed & (masked >= kth + math.log(alpha))
    return (conditional - unconditional).masked_fill(~keep, float("-inf"))


def certainty(conditional: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, V) logits and allowed tokens -> (B,) probability of the likeliest allowed token (the mass renormalised
    over the allowed ones) and (B,) that token."""
    return F.softmax(conditional.float().masked_fill(~allowed, float("-inf")), -1).max(-1)


def keep_sure(token: torch.Tensor, conditional: torch.Tensor, allowed: torch.Tensor, greedy_above: float) -> torch.Tensor:
    """(B,) drawn tokens -> the same, except where the model alone (the conditional logits, before guidance and
    temperature) gives one allowed token more than `greedy_above` of its probability: that token is taken. A copied
    stroke is such a token, and sampling or guiding it only risks breaking the copy, while a fresh drawing's
    uncertain tokens keep their variety (greedy_above 1 = off; 0 = greedy on the conditional logits)."""
    if greedy_above >= 1.0:
        return token
    sure, likeliest = certainty(conditional, allowed)
    return torch.where(sure > greedy_above, likeliest, token)


def pick(logits: torch.Tensor, temperature: float, generator: torch.Generator | None, inverse_cdf: bool = False
         ) -> torch.Tensor:
    """(B, V) filtered logits -> (B,) tokens: the argmax at temperature <= 0, else one draw from their softmax.

    inverse_cdf=True draws with one uniform number per row (`invert_cdf`), where torch.multinomial draws one
    exponential number per vocabulary entry: a 49-token block of the next-scale sampler costs 0.1 ms instead of
    0.6 on the 2-core CPU. Both draw from the same distribution, but not the same tokens for a seed, so the raster
    sampler (one token a row per step, where the draw costs little) keeps multinomial and its seeded outputs."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probabilities = F.softmax(logits, dim=-1)
    if inverse_cdf:
        uniforms = torch.rand(len(probabilities), 1, generator=generator, device=probabilities.device)
        return invert_cdf(probabilities, uniforms)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


def invert_cdf(probabilities: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """(B, V) probabilities, (B, 1) uniform numbers in [0, 1) -> (B,) the first token whose cumulative
    probability exceeds uniform x total: token i with probability p_i / total. Never a token of probability 0:
    where rounding makes uniform x total reach the total, the last token with any probability is taken."""
    cumulative = probabilities.cumsum(dim=-1)                                          # (B, V), nondecreasing
    tokens = torch.searchsorted(cumulative, uniforms * cumulative[:, -1:], right=True)   # (B, 1)
    last = cumulative.argmax(dim=-1, keepdim=True)      # where the total is first reached: the last with mass
    return torch.minimum(tokens, last).squeeze(1)


@torch.no_grad()
def generate(model: Transformer, prefix: torch.Tensor, rules: ModalityRules, temperature: float = 1.0,
             top_k: int | None = None, guidance: float = 1.0, generator: torch.Generator | None = None,
             use_cache: bool = True, length: int | None = None,
             should_stop: Callable[[], bool] | None = None, forced: torch.Tensor | None = None,
             top_p: float = 1.0, cd_k: int = 0, cd_alpha: float = 0.1,
             unconditional_prefix: torch.Tensor | None = None, greedy_above: float = 1.0,
             static: bool | None = None) -> torch.Tensor:
    """Complete (B, P) prefixes (all the same length, starting with <bos>) to (B, length) sequences
    (default: a whole plain sequence; a shorter length stops early, e.g. after the first modality).

    guidance > 1 applies classifier-free guidance to the second modality: the unconditional
    stream is the other ordering, `<bos> <marker>`, which starts with that same modality. With
    cd_k > 0 the two streams are combined by contrastive decoding (contrastive_scores) instead.
    forced (B, length) holds a token id to keep at each position, or -1 where the model draws:
    completion and infilling (kept image tokens, given caption words) fed through the same cache.
    should_stop is asked before every decode step; when it answers True the work is abandoned
    with DeadlineExceeded (a server request whose client has stopped waiting).
    unconditional_prefix replaces the default unconditional stream (infilling reads the image-first
    masked sequence without its caption). greedy_above: see keep_sure. static: see Stream (the default replays
    each step as a recorded CUDA graph on a GPU).
    """
    evaluating(model)
    B, P = prefix.shape
    length = length or rules.vocab.plain_length
    sequences = torch.empty(B, length, dtype=torch.long, device=prefix.device)
    sequences[:, :P] = prefix
    prefixes = [prefix]
    guided = (guidance != 1.0 or cd_k) and (P >= 3 or unconditional_prefix is not None)
    if guided:
        # Unconditional stream: <bos>, then the marker that opens the modality being generated.
        if unconditional_prefix is None:
            unconditional_prefix = torch.stack([prefix[:, 0], prefix[:, -1]], dim=1)
        prefixes.append(unconditional_prefix)
    # Both guidance streams run as one batch: one forward per step reads the weights once for both.
    streams = Stream(model, prefixes, use_cache, length, static)
    logits, *free_logits = streams.prefill()
    orders = rules.order_of(prefix[:, 1]) if P >= 2 else torch.zeros(B, dtype=torch.long, device=prefix.device)
    for position in range(P, length):
        stop_if_expired(should_stop, "sampling")
        allowed = rules.mask(orders, position, sequences[:, position - 1])
        conditional = logits
        if guided and cd_k:
            logits = contrastive_scores(logits, free_logits[0], allowed, cd_k, cd_alpha)
        elif guided:
            logits = guided_logits(logits, free_logits[0], guidance)
        token = pick(filter_logits(logits, allowed, temperature, top_k, top_p), temperature, generator)
        token = keep_sure(token, conditional, allowed, greedy_above)
        if forced is not None:
            token = torch.where(forced[:, position] >= 0, forced[:, position], token)
        sequences[:, position] = token
        if position == 1:
            orders = rules.order_of(token)
        if position == length - 1:
            break
        logits, *free_logits = streams.decode_one_token(token)
    return sequences


class Stream:
    """Token streams read by the model together: prefill the prompts once, then decode one token at a time.

    Each prompt group (B, P_i) is one stream (e.g. the conditional and unconditional streams of
    guidance); all rows of all groups run in one forward per step, shorter prompts left-padded
    (KVCache.padding) so every row reads as it would alone. Every step appends the same (B,) tokens to
    each group. With use_cache (the default) each step runs only the new tokens through the static KV
    cache; without, each group re-reads its whole stream (the reference the cache is tested against).
    """

    def __init__(self, model: Transformer, prefixes: list[torch.Tensor], use_cache: bool = True,
                 length: int | None = None, static: bool | None = None) -> None:
        """length: the longest sequence a row will reach (default: the model's block size), so the cache holds
        no more slots than the decode can fill. static: decode through a `StaticKVCache` (default: on CUDA, where
        each step is then replayed as one recorded CUDA graph, unless decode_graph.replays() says no; on the
        CPU it runs eagerly, for the tests)."""
        self.model, self.tokens = model, list(prefixes)
        self.sizes = [len(prefix) for prefix in prefixes]
        self.cache = self.step = None
        if use_cache:
            device = prefixes[0].device
            longest = max(prefix.shape[1] for prefix in prefixes)
            padding = torch.cat([torch.full((len(prefix),), longest - prefix.shape[1], dtype=torch.long)
                                 for prefix in prefixes])
            self.padded = torch.cat([F.pad(prefix, (longest - prefix.shape[1], 0), value=0) for prefix in prefixes])
            slots = (length or model.config.block_size) + int(padding.max())
            if static is None:
                static = replays(device)
            if static:
                self.cache, self.step = static_cache(model, len(padding), slots, device)
                self.cache.start((torch.arange(longest)[None, :] >= padding[:, None]).to(device))
            else:
                self.cache = KVCache(model.config, len(padding), max_length=slots, device=device, padding=padding)
                self.step = EagerStep(model, self.cache)

    def prefill(self) -> list[torch.Tensor]:
        """Read the prompts; per group, (B_i, vocab) logits for the token after it."""
        if self.cache is not None:
            return list(self.model(self.padded, kv_cache=self.cache, last=1)[:, -1].split(self.sizes))
        return [self.model(tokens)[:, -1] for tokens in self.tokens]

    def decode_one_token(self, token: torch.Tensor) -> list[torch.Tensor]:
        """Append (B,) tokens to every group; per group, (B, vocab) logits for the next one."""
        if self.cache is not None:  # the cache holds the past: only the new tokens run
            tokens = token.repeat(len(self.sizes))[:, None]                            # (groups * B, 1)
            return list(self.step(tokens)[:, -1].split(self.sizes))
        self.tokens = [torch.cat([tokens, token[:, None]], dim=1) for tokens in self.tokens]
        return [self.model(tokens)[:, -1] for tokens in self.tokens]
