"""The decoder-only transformer, built from primitives. It knows only token ids and tensors.

Token embeddings plus positions (learned absolute embeddings, or rotary embeddings (RoPE) that rotate
queries and keys by their position so attention sees only relative offsets) and, optionally, each image
token's place in its image (`image_slots`, derived from the ids themselves), pre-LayerNorm blocks of multi-head causal
self-attention and a GELU MLP, a final LayerNorm and an output head (optionally with a gated pointer beside it,
`CopyHead`, that copies an earlier token's id; and, in training only, a `digit_head` that reads each image's
digit off its <eoi>, from the final hidden state or from the residual stream after block `digit_layer`, with its own
weights or, `digit_head_tied`, the digit words' embeddings); with `patch_pixels`, a shape token's embedding also
carries a learned map of its 4x4 pixels. Attention has a
hand-written path (the reference) and a fused `scaled_dot_product_attention` fast path;
tests check that they agree. An optional `KVCache` (see sampling.py) makes decoding
incremental.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

DIGITS = 10  # the digit head's classes
PATCH_PIXELS = 16  # a `patches` shape token's 4x4 pixels (model.patch_pixels)


class KVCache:
    """A static, preallocated key/value cache: (layers, B, heads, max_len, head_dim) per k and v.

    `position` is how many slots are already filled. Preallocating once avoids a torch.cat per step
    and keeps shapes fixed for the whole decode.

    Rows may hold prompts of different lengths in one batch (e.g. the two streams of classifier-free
    guidance): `padding` (B,) counts the slots each row's prompt was left-padded by. Those slots are
    never attended to, and a row's token in slot s sits at position s - padding, so a padded row reads
    exactly as it would alone. Every row then advances one slot per step, all in one forward.
    """

    def __init__(self, config: ModelConfig, batch_size: int, max_length: int | None = None,
                 device=None, dtype=torch.float32, padding: torch.Tensor | None = None) -> None:
        head_dim = config.d_model // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_length or config.block_size, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.position = 0
        self.padding = None if padding is None or not padding.any() else padding.to(device)
        self.least_padding = 0 if self.padding is None else int(self.padding.min())
        self.image_run = torch.zeros(batch_size, dtype=torch.long, device=device)  # image tokens ending each row
        self.copy_keys = self.copy_ids = None                                         # model.copy_head, on first use

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor):
        """Write (B, nh, T, hs) new keys/values at the current position; return all cached so far."""
        T = key.shape[2]
        end = self.position + T
        self.keys[layer, :, :, self.position:end] = key
        self.values[layer, :, :, self.position:end] = value
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def update_copy(self, keys: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the copy head's (B, T, kd) pointer keys and the (B, T) ids they point at; return all so far."""
        B, T, _ = keys.shape
        if self.copy_keys is None:
            length = self.keys.shape[3]
            self.copy_keys = keys.new_zeros(B, length, keys.shape[2])
            self.copy_ids = ids.new_zeros(B, length)
        end = self.position + T
        self.copy_keys[:, self.position:end], self.copy_ids[:, self.position:end] = keys, ids
        return self.copy_keys[:, :end], self.copy_ids[:, :end]

    def positions(self, T: int) -> torch.Tensor:
        """Position ids of the next T tokens: (T,), or (B, T) when rows are padded."""
        slots = torch.arange(self.position, self.position + T, device=self.keys.device)
        if self.padding is None:
            return slots
        return (slots[None, :] - self.padding[:, None]).clamp(min=0)  # padding slots: any position, never read

    def attention_mask(self, T: int) -> torch.Tensor | None:
        """(B, 1, T, position + T) booleans for the next T tokens of padded rows: causal, and no padding slot
        is a key - except to itself, so that a padding query still has one key to attend to. None: unpadded."""
        if self.padding is None:
            return None
        slots = torch.arange(self.position + T, device=self.keys.device)
        real = slots[None, :] >= self.padding[:, None]                                  # (B, S)
        own = slots[None, :] == torch.arange(self.position, self.position + T, device=slots.device)[:, None]
        return ((causal_mask(T, self.position, slots.device)[None] & real[:, None, :]) | own[None])[:, None]

    def advance(self, steps: int) -> None:
        self.position += steps

    def repeat_rows(self, times: int, room: int | None = None) -> "KVCache":
        """A cache whose row b * times + j is a copy of row b: continue `times` ways from one prefix. With `room`, the
        copy holds only the prefix and `room` more tokens: copying the whole block-size cache `times` over costs
        more than the few tokens that follow it (a caption's last three words after a 54-token prefix)."""
        length = self.keys.shape[3] if room is None else min(self.keys.shape[3], self.position + room)
        repeated = KVCache.__new__(KVCache)
        repeated.keys = self.keys[:, :, :, :length].repeat_interleave(times, dim=1)
        repeated.values = self.values[:, :, :, :length].repeat_interleave(times, dim=1)
        repeated.position = self.position
        repeated.padding = None if self.padding is None else self.padding.repeat_interleave(times)
        repeated.least_padding = self.least_padding
        repeated.image_run = self.image_run.repeat_interleave(times)
        repeated.copy_keys, repeated.copy_ids = ((None, None) if self.copy_keys is None else
                                                 (self.copy_keys[:, :length].repeat_interleave(times, dim=0),
                                                  self.copy_ids[:, :length].repeat_interleave(times, dim=0)))
        return repeated


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.d_model % config.n_head == 0, "d_model must be divisible by n_head"
        self.n_head = config.n_head
        # The query, key and value projections as one matmul: one kernel instead of three per layer.
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.fused = True  # use fused_attention (torch's kernel); False runs the hand-written path

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0,
                mask: torch.Tensor | None = None, rotary: tuple | None = None) -> torch.Tensor:
        """mask (B, 1, T, S): which keys each query sees, for padded cached rows (KVCache.attention_mask).
        rotary: (cos, sin) of the new tokens' positions (Rotary.angles), or None for learned positions."""
        B, T, C = x.shape
        head_dim = C // self.n_head
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_head, head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, head_dim).transpose(1, 2)
        if rotary is not None:
            # Rotated before caching: a cached key keeps the rotation of its own position.
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        past = 0
        if kv_cache is not None:
            past = kv_cache.position
            k, v = kv_cache.update(layer, k, v)  # (B, nh, past + T, hs)
        dropout = self.dropout if self.training else 0.0
        if mask is not None:
            y = (fused_attention(q, k, v, attn_mask=mask, dropout_p=dropout) if self.fused
                 else manual_attention(q, k, v, mask, dropout, self.training))
        elif self.fused:
            if past == 0:
                y = fused_attention(q, k, v, is_causal=True, dropout_p=dropout)
            elif T == 1:
                # One new token sees every cached key: no mask to build at each decoding step.
                y = fused_attention(q, k, v, dropout_p=dropout)
            else:
                # New query i sits at absolute position past + i and may see keys 0..past + i.
                y = fused_attention(q, k, v, attn_mask=causal_mask(T, past, x.device), dropout_p=dropout)
        else:
            y = manual_attention(q, k, v, causal_mask(T, past, x.device), dropout, self.training)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.proj(y)


def image_slots(ids: torch.Tensor, image_tokens: int, image_length: int, carried: torch.Tensor | None = None,
                first_plan: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids -> ((B, T) each token's place in its image, (B,) image tokens that end each row).

    A token's place is how many image tokens (ids below image_tokens) came since the last other token (an
    image always opens with <boi> or a pair's marker), plus `carried` (B,): the image tokens that ended the
    rows' previous chunk, so a cached decode counts as a whole read does. Other tokens get image_length.
    A plan token (ids first_plan .. first_plan + 9; 0: none) between an image's colors and its shape neither
    counts nor ends the run and takes the place of the token before it: the shape keeps the places it has in an
    image without a plan (a prompt's), where the pointer copies from."""
    B, T = ids.shape
    is_image = ids < image_tokens
    is_plan = (ids >= first_plan) & (ids < first_plan + DIGITS) if first_plan else torch.zeros_like(is_image)
    steps = torch.arange(T, device=ids.device).expand(B, T)
    last_other = torch.where(is_image | is_plan, -1, steps).cummax(dim=1).values       # (B, T); -1: none yet
    counted = is_image.long().cumsum(1)                                                # (B, T) image tokens so far
    run = counted - is_image.long() - torch.where(last_other >= 0, counted.gather(1, last_other.clamp(min=0)), 0)
    if carried is not None:                                                            # image tokens just before
        run = torch.where(last_other < 0, run + carried[:, None], run)
    slots = torch.where(is_image, run.clamp(max=image_length - 1),
                        torch.where(is_plan, (run - 1).clamp(min=0, max=image_length - 1), image_length))
    return slots, torch.where(is_image[:, -1], slots[:, -1] + 1, torch.where(is_plan[:, -1], run[:, -1], 0))


def causal_mask(T: int, past: int, device) -> torch.Tensor:
    """(T, past + T) boolean mask, True where query i may attend to key j."""
    query_positions = torch.arange(past, past + T, device=device)[:, None]
    key_positions = torch.arange(past + T, device=device)[None, :]
    return key_positions <= query_positions


def fused_attention(q, k, v, **options) -> torch.Tensor:
    """F.scaled_dot_product_attention, run in fp32 on the CPU even under bf16 autocast: torch's CPU flash-attention
    kernel is slower in bf16 than in fp32 (forward and backward of (128, 6, 98, 32): 173 against 41 ms). In fp32 a
    `best` training step takes 22-33 % less time and a `var` step 43 % less (BENCHMARKS.md, "Attention in fp32 on the
    CPU"). Autocast is turned off for the call, or it would cast the fp32 inputs back to bf16. CUDA keeps bf16."""
    if q.device.type != "cpu" or q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, **options)
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **options).to(q.dtype)


def manual_attention(q, k, v, mask, dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs)) v with a boolean mask; the reference for the fused path."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, nh, T, S)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)
    if dropout and training:
        weights = F.dropout(weights, dropout)
    return weights @ v  # (B, nh, T, hs)


class Rotary(nn.Module):
    """Rotary position embeddings (RoPE, Su et al.): channel pair i of a head is rotated by position *
    base^(-2i / head_dim). The dot product of a rotated query and key then depends only on their offset,
    so "the token 58 back" is one pattern at every position: copying a shape from an earlier image is
    learnt once, not once per absolute position."""

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        assert head_dim % 2 == 0, "rotary embeddings need an even head dimension"
        self.register_buffer("inverse_frequencies", base ** (-torch.arange(0, head_dim, 2).float() / head_dim),
                             persistent=False)

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) or (B, T) -> (cos, sin), each (1 or B, 1, T, head_dim / 2), ready for `rotate`."""
        angles = positions.float()[..., None] * self.inverse_frequencies     # (T, hs/2) or (B, T, hs/2)
        if angles.dim() == 2:
            angles = angles[None]
        return angles.cos()[:, None], angles.sin()[:, None]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) queries or keys: each channel pair (first half, second half) by its angle."""
    first, second = x.float().chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1).type_as(x)


def dropped(dropout: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    """dropout(x), without the module call where it is the identity (p = 0, every shipped config, or eval mode):
    a module call costs microseconds, and a next-scale image makes 72 of them (torch's own dropout also returns x
    untouched there, drawing no random numbers, so skipping it changes nothing)."""
    return dropout(x) if dropout.p and dropout.training else x


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, 4 * config.d_model)
        self.down = nn.Linear(4 * config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropped(self.dropout, self.down(F.gelu(self.up(x))))


def target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) targets -> (B, T) log-softmax at each target."""
    return -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                            reduction="none").view_as(targets)


SLOT_BIAS_SCALE = 10.0


class CopyHead(nn.Module):
    """A pointer beside the output head (the pointer-generator of See et al. 2017): with a learned gate, the next
    token is copied from an earlier position instead of generated - one attention over the final hidden states,
    its weights summed per token id. An edit's 49 shape tokens are the prompt's; the output head regenerates
    such a copy from embeddings in which patches a pixel apart sit close (BENCHMARKS.md, "Image slots"), while a
    pointer writes the very id it points at. (Measured with the best preset from nothing: 84 % of digit-color edits
    copied exactly against 25 %; with text-dropped documents kept apart from prompts, validation edits 91.5-93.5 %
    against 69.5-70.5 % and the questions as before, so the best preset has it since release 7; BENCHMARKS.md,
    "A pointer head" and "Release 7".)"""

    def __init__(self, d_model: int, key_dim: int = 64, slots: int = 0) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, key_dim, bias=False)
        self.key = nn.Linear(d_model, key_dim, bias=False)
        self.gate = nn.Linear(d_model, 1)
        # model.pointer_slots: scores += bias[slot of the position predicting, slot of the position looked at]
        # (image_slots' numbering, the last row and column every non-image token). Zero at first: a model fine-tuned
        # from one without it starts where that one was.
        self.slot_bias = nn.Parameter(torch.zeros(slots + 1, slots + 1)) if slots else None

    def look(self, hidden: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, query_slots: torch.Tensor | None = None,
             key_slots: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, T, C), keys (B, S, kd) of every position so far, mask (B or 1, T, S) -> where the pointer
        looks, (B, T, S) weights, and its (B, T, 1) gate logits (sigmoid: the share it copies). With the slot bias,
        query_slots (B, T) and key_slots (B, S) are the positions' image slots (model.image_slots)."""
        scores = self.query(hidden) @ keys.transpose(1, 2) / math.sqrt(keys.shape[-1])              # (B, T, S)
        if self.slot_bias is not None:
            # Scaled so that Adam's steps of ~lr move a score by ~SLOT_BIAS_SCALE * lr: one tune epoch can open it.
            scores = scores + SLOT_BIAS_SCALE * self.slot_bias[query_slots[:, :, None], key_slots[:, None, :]]
        return F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1), self.gate(hidden)

    def forward(self, hidden: torch.Tensor, logits: torch.Tensor, keys: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor, targets: torch.Tensor | None = None, query_slots: torch.Tensor | None = None,
                key_slots: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (B, T, C) and head logits (B, T, V) of the new tokens; keys (B, S, kd) and ids (B, S) of every
        position so far, the new ones last; mask (B or 1, T, S) booleans -> (B, T, V) log-probabilities of
        "generate" and "copy" mixed by the gate; with targets (B, T), only each target's: (B, T). Training asks
        for those alone, which spares the (B, T, V) copy distribution (the pointer's weights on the positions
        holding the target are summed instead of scattered over every id)."""
        with torch.autocast(device_type=hidden.device.type, enabled=False):   # log-probabilities want fp32
            hidden, logits = hidden.float(), logits.float()
            weights, gate = self.look(hidden, keys.float(), mask, query_slots, key_slots)  # (B, T, S), (B, T, 1)
            B, T, S = weights.shape
            if targets is None:
                generated = F.log_softmax(logits, -1)                                                # (B, T, V)
                copied = torch.zeros_like(logits).scatter_add_(2, ids[:, None, :].expand(B, T, S), weights)
            else:
                gate = gate[..., 0]                                                                  # (B, T)
                generated = target_log_probs(logits, targets)                                       # (B, T)
                copied = (weights * (ids[:, None, :] == targets[:, :, None])).sum(-1)                # (B, T)
            # clamp: a log(0) would send a NaN gradient through logaddexp; the clamped entries get none.
            return torch.logaddexp(generated + F.logsigmoid(-gate), copied.clamp_min(1e-30).log() + F.logsigmoid(gate))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attention = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, kv_cache=None, layer=0, mask=None, rotary=None):
        x = x + dropped(self.dropout, self.attention(self.norm1(x), kv_cache, layer, mask, rotary))
        return x + self.mlp(self.norm2(x))


def evaluating(model: nn.Module) -> nn.Module:
    """model.eval(), unless it already is: eval() walks every submodule, and a request would pay that walk each
    time (74 modules in the next-scale model, ~0.5 ms of a 25 ms request on a 2-core CPU)."""
    return model.eval() if model.training else model


def init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, and residual output projections scaled by
    1 / sqrt(2 * n_layer) so the residual stream's variance stays ~1 however deep the model."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    for name, parameter in model.named_parameters():
        if name.endswith("proj.weight") or name.endswith("down.weight"):
            nn.init.normal_(parameter, std=0.02 / math.sqrt(2 * n_layer))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.vocab_size > 0, "set ModelConfig.vocab_size from the joint vocabulary"
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        # One of the two: learned absolute positions, or rotary ones (no parameters).
        if config.positions == "rope":
            self.rotary = Rotary(config.d_model // config.n_head)
        else:
            self.position_embedding = nn.Embedding(config.block_size, config.d_model)
        if config.image_slots:
            # Slot s of an answer's image is often slot s of a prompt's image (an edit copies 49 shape tokens). With
            # positions alone the copy must find an offset that changes with the instruction's length; with the
            # slot in the embedding it is one content match. The last row is every non-image token. (Measured with
            # the best preset: edits copied worse, so the misses are not about finding the patch; BENCHMARKS.md.)
            assert config.image_tokens > 0 and config.image_length > 0, "fill model.image_tokens / image_length"
            self.slot_embedding = nn.Embedding(config.image_length + 1, config.d_model)
        if config.patch_pixels:
            # Row i: shape token i's 4x4 pixels as -1 / +1 (set_patch_pixels), 0 for every other id. Saved with the
            # weights, so a checkpoint reads without its tokenizer.
            assert config.image_tokens > 0, "fill model.image_tokens"
            self.register_buffer("patch_pixels", torch.zeros(config.image_tokens, PATCH_PIXELS))
            self.pixel_embedding = nn.Linear(PATCH_PIXELS, config.d_model, bias=False)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.copy_head:
            self.copy = CopyHead(config.d_model, slots=config.image_length if config.pointer_slots else 0)
        if config.digit_head and config.digit_head_tied:
            self.digit_scale = nn.Parameter(torch.ones(()))   # the head's weights are the digit words' embeddings
        elif config.digit_head:
            self.digit_head = nn.Linear(config.d_model, DIGITS)
        init_weights(self, config.n_layer)
        if config.patch_pixels:
            nn.init.zeros_(self.pixel_embedding.weight)   # a fine-tune that adds it starts where its source was
        if config.copy_head:
            # The gate starts nearly shut (sigmoid(-4) = 0.018): a model fine-tuned from one without the pointer
            # starts where that one was.
            nn.init.constant_(self.copy.gate.bias, -4.0)

    def set_patch_pixels(self, patterns: torch.Tensor) -> None:
        """patterns (K, 16) 0/1: the `patches` tokenizer's K shape tokens (ids 0..K-1), as model.patch_pixels reads
        them."""
        self.patch_pixels.zero_()
        self.patch_pixels[:len(patterns)] = 2 * patterns.to(self.patch_pixels) - 1

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C) token embeddings, plus with model.patch_pixels a map of shape tokens' pixels."""
        x = self.token_embedding(ids)
        if self.config.patch_pixels:
            pixels = self.patch_pixels[ids.clamp(max=self.config.image_tokens - 1)]                 # (B, T, 16)
            pixels = pixels * (ids < self.config.image_tokens)[..., None]
            x = x + self.pixel_embedding(pixels)
        return x

    def set_fused_attention(self, fused: bool) -> None:
        for block in self.blocks:
            block.attention.fused = fused

    def forward(self, ids: torch.Tensor, kv_cache: KVCache | None = None, targets: torch.Tensor | None = None,
                last: int = 0, digits: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) -> logits (B, T, vocab); with the copy head they are log-probabilities, which every caller
        can read as logits (softmax leaves them as they are). With a cache, ids are the next T tokens. With
        targets (B, T): the log-probability of each target, (B, T) (what training reads; cheaper with the pointer).
        last > 0: only the last `last` positions' logits, (B, last, vocab): a prefill reads one, and the (B, T,
        vocab) output of long prompts (three with the pointer's mixture) is most of a prefill's memory.
        digits (B, T), with the digit head and targets: the digit each position should read (-1: none) -> (the
        targets' log-probabilities, the digit head's mean cross-entropy over the positions that have one)."""
        assert not (last and targets is not None), "targets score every position"
        B, T = ids.shape
        if kv_cache is None:
            positions, mask = torch.arange(T, device=ids.device), None
        else:
            positions, mask = kv_cache.positions(T), kv_cache.attention_mask(T)  # the mask is None unless padded
        end = T + (0 if kv_cache is None else kv_cache.position - kv_cache.least_padding)
        assert end <= self.config.block_size, "sequence longer than block_size"
        rotary = None
        if self.config.positions == "rope":
            x, rotary = self.embed(ids), self.rotary.angles(positions)                      # (B, T, C)
        else:
            x = self.embed(ids) + self.position_embedding(positions)                        # (B, T, C)
        slots = None
        if self.config.image_slots or self.config.pointer_slots:
            slots, image_run = image_slots(ids, self.config.image_tokens, self.config.image_length,
                                           None if kv_cache is None else kv_cache.image_run,
                                           self.config.first_plan)                              # (B, T)
            if kv_cache is not None:
                kv_cache.image_run = image_run
        if self.config.image_slots:
            x = x + self.slot_embedding(slots)
        past = 0 if kv_cache is None else kv_cache.position
        read = None
        for layer, block in enumerate(self.blocks):
            x = block(x, kv_cache, layer, mask, rotary)
            if layer + 1 == self.config.digit_layer:
                read = x                                      # the digit head's input: the stream after this block
        hidden = self.norm(x)
        if self.config.copy_head:   # every position's pointer key is kept, whichever positions are read out
            keys, token_ids = self.copy.key(hidden), ids
            if kv_cache is not None:
                keys, token_ids = kv_cache.update_copy(keys, ids)
            seen = causal_mask(T, past, ids.device)[None] if mask is None else mask[:, 0]           # (B or 1, T, S)
            # A cache holds every position so far in token_ids: their slots are counted afresh (slots never read are
            # masked). Without one, token_ids are ids, whose slots are counted above.
            key_slots = None
            if self.config.pointer_slots:
                key_slots = slots if kv_cache is None else image_slots(
                    token_ids, self.config.image_tokens, self.config.image_length,
                    first_plan=self.config.first_plan)[0]                                           # (B, S)
        digit_loss = None if digits is None else self.digit_loss(hidden if read is None else read, digits)
        if last:
            hidden = hidden[:, -last:]                                                              # (B, last, C)
        logits = self.head(hidden)
        if self.config.copy_head:
            query_slots = None if slots is None else slots[:, -hidden.shape[1]:]
            logits = self.copy(hidden, logits, keys, token_ids, seen[:, -hidden.shape[1]:], targets, query_slots,
                               key_slots)
        elif targets is not None:
            logits = target_log_probs(logits.float(), targets)                                      # (B, T)
        if kv_cache is not None:
            kv_cache.advance(T)
        return logits if digit_loss is None else (logits, digit_loss)

    def digit_logits(self, states: torch.Tensor) -> torch.Tensor:
        """(..., C) states the digit head reads -> (..., 10) logits. The residual stream after a middle block is
        normalised first (without parameters: the final LayerNorm's output needs none, and neither does a probe)."""
        if self.config.digit_layer:
            states = F.layer_norm(states, states.shape[-1:])
        if self.config.digit_head_tied:
            start = self.config.digit_words
            words = self.token_embedding.weight[start:start + DIGITS]                              # (10, C)
            return self.digit_scale * states @ words.t()
        return self.digit_head(states)

    def digit_loss(self, hidden: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the digit head at the positions whose digit is given ((B, T) digits, -1 elsewhere);
        a batch without any reads 0, still tied to the head so every parameter gets a gradient (DDP asks it).
        `hidden` is what the head reads: the final hidden state, or the stream after block model.digit_layer."""
        chosen = digits >= 0
        logits = self.digit_logits(hidden[chosen]).float()                                     # (positions, 10)
        if not len(logits):
            return logits.sum()         # 0, from an empty read of the head
        return F.cross_entropy(logits, digits[chosen])


@contextmanager
def hidden_states(model: Transformer, after_block: int = 0):
    """Within: seen["hidden"] holds the (B, T, C) states of the model's latest forward: the final hidden states
    (after the last LayerNorm: what the output head and the pointer read), or with `after_block` k the residual
    stream after block k (what the digit head reads with model.digit_layer k; `model.digit_logits` reads either)."""
    module = model.blocks[after_block - 1] if after_block else model.norm
    seen = {}
    hook = module.register_forward_hook(lambda module, inputs, output: seen.__setitem__("hidden", output))
    try:
        yield seen
    finally:
        hook.remove()


def next_token_log_probs(model, sequences: torch.Tensor) -> torch.Tensor:
    """(B, T) sequences -> (B, T-1) log-probability of each next token under `model` (a Transformer, or
    one wrapped by DDP / torch.compile). The training loss (its negative mean), the NLL report and the
    self-reranking scores all come from this one function."""
    return model(sequences[:, :-1], targets=sequences[:, 1:])
