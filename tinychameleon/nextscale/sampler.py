"""Sampling the next-scale transformer: a whole scale per forward pass, with a KV cache across scales.

`draw` turns (B, 9) captions into (B, 106) image ids in six passes: the caption and block 0 (both
colors and the 1x1 code) in one prefill, then one pass per finer scale, whose inputs are the codes
drawn so far summed and downsampled (the tokenizer's quantizer). Temperature, top-k / top-p and
classifier-free guidance (the unconditional stream reads the caption as <mask> tokens) apply to every
token of every scale, exactly as the raster sampler applies them per token (sampling.filter_logits).
`read` writes a caption for image ids, word by word, within the caption grammar (sampling.ModalityRules);
`rerank_digits` then picks its digit word by Bayes' rule in both orders, as reranking.py does for the raster model.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..batching import batch_slices
from ..decode_graph import captured_passes, replays
from ..device import DeviceTables
from ..errors import stop_if_expired
from ..model import KVCache, evaluating
from ..reranking import DIGIT_SLOT, DIGIT_WORD_IDS, choose_digits, with_digits
from ..sampling import ModalityRules, filter_logits, guided_logits, keep_sure, pick
from ..sequences import IMAGE_FIRST
from ..tokenizers.vocab import TEXT_LENGTH, Vocab
from .model import CAPTION, COLORS, NextScaleTransformer
from .objective import captions as caption_ids
from .objective import drawing_nll, reading_head


class ImageRules(DeviceTables):
    """Which ids may stand at each image slot (the tokenizer's position_tokens), and which background may
    follow a foreground (its token_follows), over the whole vocabulary."""

    def __init__(self, vocab: Vocab, tokenizer) -> None:
        K = vocab.image_tokens
        self.allowed = torch.zeros(vocab.image_length, vocab.size, dtype=torch.bool)
        self.allowed[:, :K] = tokenizer.position_tokens()
        self.follows = torch.ones(vocab.size, vocab.size, dtype=torch.bool)
        self.follows[:K, :K] = tokenizer.token_follows()


@torch.no_grad()
def draw(model: NextScaleTransformer, coder, vocab: Vocab, rules: ImageRules, words: torch.Tensor,
         temperature: float | list[float] = 1.0, top_k: int | None = None, top_p: float = 1.0, guidance: float = 1.0,
         generator: torch.Generator | None = None, use_cache: bool = True,
         should_stop: Callable[[], bool] | None = None, masked: bool = False, guided_blocks: int = 0,
         greedy_above: float = 1.0) -> torch.Tensor:
    """(B, 6) word ids -> (B, 106) image ids: fg, bg, then every scale's codes; `temperature` is one for all
    blocks or one per block. masked=True draws from nothing: the caption is read as <mask> tokens (the
    unconditional stream itself). guided_blocks=N > 0 guides the N coarsest blocks only: then the
    unconditional stream leaves the batch, so the finer blocks (most of the tokens) cost half. greedy_above:
    a token the caption-conditioned stream alone is this sure of is taken as it stands (sampling.keep_sure)."""
    evaluating(model)
    B, device, layout = len(words), words.device, model.layout
    streams = caption_ids(vocab, words, torch.full((B,), masked, dtype=torch.bool))
    if guidance != 1.0:   # both streams in one batch: one forward per scale reads the weights once for both
        streams = torch.cat([streams, caption_ids(vocab, words, torch.ones(B, dtype=torch.bool))])
    R = len(streams)
    starts, sizes = layout.block_starts(), layout.block_sizes

    def new_cache() -> KVCache:
        return KVCache(model.config, R, max_length=layout.drawing_length, device=device)

    # On CUDA each pass replays a recorded graph, unless guidance leaves the batch midway (other shapes after).
    shrinks = R > B and 0 < guided_blocks < len(sizes)
    passes = None
    if use_cache and replays(device) and not shrinks:
        passes = captured_passes(model, R, new_cache)
    cache = passes.cache if passes else (new_cache() if use_cache else None)
    image = torch.zeros(B, layout.image_length, dtype=torch.long, device=device)   # undrawn codes: 0, never read
    latents, f_hat = [], 0
    for block in range(len(sizes)):
        stop_if_expired(should_stop, "sampling")
        stop = starts[block] + sizes[block]
        new = model.embed_blocks(block, 1, latents[-1] if block else None, R)
        if cache is not None:   # only this block runs; the caption and coarser blocks are in the cache
            x = torch.cat([model.embed_tokens(streams), new], dim=1) if block == 0 else new
            mask = model.attention_bias[stop - x.shape[1]:stop, :stop]
            logits = passes.run(block, x, mask) if passes else model.run(x, mask, cache)
        else:                   # the reference: re-read everything so far
            earlier = model.embed_blocks(0, block, torch.cat(latents[:-1], 1) if block > 1 else None, R) \
                if block else None
            x = torch.cat([model.embed_tokens(streams)] + ([earlier] if block else []) + [new], dim=1)
            logits = model.run(x, model.attention_bias[:stop, :stop])
        logits = logits[:, -sizes[block]:]                                         # (R, n, V)
        conditional = logits[:B]
        if R > B:                                                                 # the two guidance streams
            logits = guided_logits(logits[:B], logits[B:], guidance)
        positions = layout.block_positions[block]
        positions = positions if isinstance(positions, slice) else positions.to(device)
        heat = temperature[block] if isinstance(temperature, (list, tuple)) else temperature
        tokens = sample_block(logits, rules, positions, heat, top_k, top_p, generator, first=block == 0,
                              conditional=conditional, greedy_above=greedy_above)
        image[:, positions] = tokens
        if block == len(sizes) - 1:
            break
        if R > B and block + 1 == guided_blocks:      # the coarse scales are set: the rest follow the caption alone
            R = B
            if cache is not None:
                cache.keys, cache.values = cache.keys[:, :B], cache.values[:, :B]
            streams, latents = streams[:B], [latent[:B] for latent in latents]
        scale = layout.block_scale[block]
        codes = coder.quantizer.split(image[:, COLORS:])[scale]                     # (B, s*s) this scale so far
        inputs, f_hat = layout.block_input(coder.quantizer, f_hat, codes, block)
        latents.append(inputs.repeat(R // B, 1, 1))
    return image


def sample_block(logits: torch.Tensor, rules: ImageRules, positions: slice | torch.Tensor, temperature: float, top_k,
                 top_p: float, generator, first: bool, conditional: torch.Tensor, greedy_above: float = 1.0
                 ) -> torch.Tensor:
    """(B, n, V) logits of one block at (n,) image positions -> (B, n) ids. In block 0 the slots go one after
    another, so the background is drawn among the partners of the drawn foreground; every other block is drawn at
    once. conditional (B, n, V): the unguided logits keep_sure reads (the same as `logits` without guidance).
    Tokens are drawn by inverting the CDF (sampling.pick): one random number per token, not one per vocabulary id."""
    B, n, V = logits.shape
    allowed = rules.allowed.to(logits.device)[positions]                             # (n, V)
    if not first:
        mask = allowed.repeat(B, 1)                                                 # (B * n, V)
        flat = filter_logits(logits.reshape(B * n, V), mask, temperature, top_k, top_p)
        tokens = pick(flat, temperature, generator, inverse_cdf=True)
        return keep_sure(tokens, conditional.reshape(B * n, V), mask, greedy_above).view(B, n)
    tokens, previous = [], None
    for slot in range(n):
        mask = allowed[slot].expand(B, V)
        if previous is not None:
            mask = mask & rules.follows.to(logits.device)[previous]
        previous = pick(filter_logits(logits[:, slot], mask, temperature, top_k, top_p), temperature, generator,
                        inverse_cdf=True)
        previous = keep_sure(previous, conditional[:, slot], mask, greedy_above)
        tokens.append(previous)
    return torch.stack(tokens, dim=1)


@torch.no_grad()
def read(model: NextScaleTransformer, coder, vocab: Vocab, rules: ModalityRules, image_ids: torch.Tensor,
         temperature: float = 0.0, top_k: int | None = None, top_p: float = 1.0,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 106) image ids -> (B, 6) caption word ids 0..30, one word per pass with a KV cache."""
    evaluating(model)
    B, device = len(image_ids), image_ids.device
    cache = KVCache(model.config, B, max_length=model.layout.reading_length, device=device)
    token = torch.full((B, 1), vocab.end_of_image, dtype=torch.long, device=device)
    logits = model.run(model.embed_reading(reading_head(vocab, image_ids), coder.features(image_ids[:, 2:]), token), None, cache)[:, -1]
    orders = torch.full((B,), IMAGE_FIRST, dtype=torch.long, device=device)
    words, previous = [], token[:, 0]
    for slot in range(TEXT_LENGTH):
        allowed = rules.mask(orders, vocab.image_first_words.start + slot, previous)
        previous = pick(filter_logits(logits, allowed, temperature, top_k, top_p), temperature, generator)
        words.append(previous)
        if slot == TEXT_LENGTH - 1:
            break
        logits = model.run(model.embed_tokens(previous[:, None], cache.position), None, cache)[:, -1]
    return torch.stack(words, dim=1) - vocab.word_offset


@torch.no_grad()
def rerank_digits(model: NextScaleTransformer, coder, vocab: Vocab, words: torch.Tensor, image_ids: torch.Tensor,
                  hypotheses: int = 10, second_reader: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  batch_size: int = 1000, views: list[tuple[torch.Tensor, torch.Tensor]] = ()) -> torch.Tensor:
    """(B, 6) caption word ids of (B, 106) images -> the same with each digit word replaced by the Bayes-best one,
    log p(caption_d | image) + log p(caption_d, image), chosen as the raster model's are (reranking.choose_digits):
    the reading order ranks all ten digits, its `hypotheses` likeliest get the drawing order's joint term (the
    costly one: 115 positions each), and `second_reader` maps those candidates (B, m, 6) to scores (B, m) added on
    top (CLIP's, caption_clip_weight). `views` are more (word ids, image ids) readings of the same images
    (recolored, shifted copies with their own color words); their scores are added to the image's own."""
    evaluating(model)
    B = len(words)
    readings = [(words, image_ids), *views]
    reading = sum(torch.cat([reading_per_digit(model, coder, vocab, view_words[rows], view_ids[rows])
                             for rows in batch_slices(B, max(1, batch_size // len(DIGIT_WORD_IDS)))])
                  for view_words, view_ids in readings)                                    # (B, 10)

    def joint_of(digit_ids: torch.Tensor) -> torch.Tensor:                                # (B, m) -> (B, m)
        m, scores = digit_ids.shape[1], []
        for view_words, view_ids in readings:
            candidates, images = with_digits(view_words, digit_ids).view(B * m, -1), view_ids.repeat_interleave(m, 0)
            for rows in batch_slices(len(candidates), batch_size):
                word_nll, image_nll = drawing_nll(model, coder, vocab, candidates[rows], images[rows])
                scores.append(-(word_nll.sum(1) + image_nll.sum(1)))
        return torch.cat(scores).view(len(readings), B, m).sum(0)

    return choose_digits(words, reading, hypotheses, joint_of, second_reader)


@torch.no_grad()
def reading_per_digit(model: NextScaleTransformer, coder, vocab: Vocab, words: torch.Tensor, image_ids: torch.Tensor
                      ) -> torch.Tensor:
    """log p(caption with digit d | image) for all ten digits d: (B, 6), (B, 106) -> (B, 10). Equals the reading
    order's NLL (objective.reading_nll) of each digit's caption, but the reading up to the digit word (the image
    and the words before it, 55 of 60 positions) runs once per image through the KV cache, and only the digit
    and the words after it once per digit."""
    evaluating(model)
    B, D = len(words), len(DIGIT_WORD_IDS)
    targets = words.long() + vocab.word_offset                                             # (B, 6) vocabulary ids
    digits = torch.tensor(DIGIT_WORD_IDS, device=words.device) + vocab.word_offset          # (10,)
    cache = KVCache(model.config, B, max_length=model.layout.reading_length, device=words.device)
    end = torch.full((B, 1), vocab.end_of_image, dtype=torch.long, device=words.device)
    inputs = torch.cat([end, targets[:, :DIGIT_SLOT]], dim=1)                              # (B, 1 + DIGIT_SLOT)
    x = model.embed_reading(reading_head(vocab, image_ids), coder.features(image_ids[:, 2:]), inputs)
    prefix = F.log_softmax(model.run(x, None, cache, last=DIGIT_SLOT + 1).float(), dim=-1)  # (B, 1 + slot, V)
    before = prefix[:, :DIGIT_SLOT].gather(-1, targets[:, :DIGIT_SLOT, None]).sum(dim=(1, 2))  # (B,)
    digit = prefix[:, DIGIT_SLOT, digits]                                                  # (B, 10)
    suffix = targets[:, DIGIT_SLOT:-1].repeat_interleave(D, dim=0)                         # (B*10, 6 - slot - 1)
    suffix[:, 0] = digits.repeat(B)
    repeated = cache.repeat_rows(D)
    after = F.log_softmax(model.run(model.embed_tokens(suffix, repeated.position), None, repeated).float(), dim=-1)
    after = after.gather(-1, targets[:, DIGIT_SLOT + 1:].repeat_interleave(D, dim=0)[..., None]).sum(dim=(1, 2))
    return before[:, None] + digit + after.view(B, D)
