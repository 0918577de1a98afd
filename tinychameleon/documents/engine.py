"""The decoding engine for documents: prefill, then one token per step for every row, each row under its own
grammar state. It knows no layout: prompts are lists of ids, the grammar says what may come next.

Rows hold prompts of different lengths (left-padded) and, with classifier-free guidance, a second
stream per row: the same document with its text left out (CM3Leon's unconditional stream). Both
streams run in one forward per step through one `RowCache`; a slot a row must not see (padding, or
a word in the unconditional stream) is marked invalid there, so every row reads exactly as it would
alone. Rows that reach <eod> leave the batch, so they stop costing work. On CUDA the rows instead stay in
one fixed-shape batch (`StaticReader`) so that each step replays a recorded CUDA graph: there, a step costs
about the same at any batch size, and the launches it saves are most of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import stop_if_expired
from ..decode_graph import replays, static_cache
from ..model import KVCache, Transformer, causal_mask, evaluating
from ..sampling import filter_logits, guided_logits, keep_sure, pick
from .grammar import DocumentGrammar


class RowCache:
    """A static key/value cache whose rows keep their own valid slots and positions.

    Every row advances one slot per step (one forward for the whole batch), but a slot written while
    `writing` marks it invalid is never read again and does not advance the row's position: left
    padding and the unconditional stream's skipped words are such slots. The model reads it through the
    same four calls as `KVCache` (positions, attention_mask, update, advance)."""

    def __init__(self, model: Transformer, batch_size: int, max_length: int, device) -> None:
        config = model.config
        head_dim = config.d_model // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_length, head_dim)
        self.keys = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.valid = torch.zeros(batch_size, max_length, dtype=torch.bool, device=device)
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.image_run = torch.zeros(batch_size, dtype=torch.long, device=device)   # model.image_slots
        self.copy_keys = self.copy_ids = None                                          # model.copy_head
        self.position = 0              # slots written so far (the same for every row)
        self.writing = None            # (B, T) validity of the slots the next forward writes

    @property
    def least_padding(self) -> int:
        """The model checks position - least_padding + T <= block_size: the longest row's real length."""
        return self.position - int(self.next_position.max())

    def positions(self, T: int) -> torch.Tensor:
        """(B, T) position ids of the new tokens: each row counts only its valid slots."""
        valid = self.writing.long()
        return self.next_position[:, None] + valid.cumsum(1) - valid

    def attention_mask(self, T: int) -> torch.Tensor:
        """(B, 1, T, S): causal over valid keys; each query also sees its own slot so that an invalid query
        still has a key (its output is never used)."""
        S = self.position + T
        keys = torch.cat([self.valid[:, :self.position], self.writing], dim=1)               # (B, S)
        causal = causal_mask(T, self.position, keys.device)                                  # (T, S)
        own = torch.arange(S, device=keys.device)[None, :] == torch.arange(self.position, S, device=keys.device)[:, None]
        return ((causal[None] & keys[:, None, :]) | own[None])[:, None]

    update = KVCache.update            # the same slots, written the same way
    update_copy = KVCache.update_copy

    def advance(self, steps: int) -> None:
        self.valid[:, self.position:self.position + steps] = self.writing
        self.next_position += self.writing.sum(1)
        self.position += steps
        self.writing = None

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows (the others have finished)."""
        self.keys, self.values = self.keys[:, rows], self.values[:, rows]
        self.valid, self.next_position = self.valid[rows], self.next_position[rows]
        self.image_run = self.image_run[rows]
        if self.copy_keys is not None:
            self.copy_keys, self.copy_ids = self.copy_keys[rows], self.copy_ids[rows]


@dataclass
class DecodeSettings:
    temperature: float = 1.0          # image tokens
    top_k: int = 0
    top_p: float = 1.0
    guidance: float = 1.0             # classifier-free guidance of image tokens (needs unconditional prompts)
    greedy_above: float = 1.0         # an image token the model alone is this sure of is taken (sampling.keep_sure)
    text_temperature: float = 0.0     # words, <boi> and <eod> (0: greedy)
    max_new_tokens: int = 0           # 0: up to the model's block size
    min_words: int = 0                # for this many steps a row writing text writes words: an answer asked to be
                                      # text (a caption) neither ends nor draws before it has begun


def left_padded(prompts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (B, P) ids left-padded with 0 and (B, P) validity."""
    P = max(len(ids) for ids in prompts)
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    valid = torch.zeros(len(prompts), P, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, P - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        valid[row, P - len(prompt):] = True
    return ids.to(device), valid.to(device)


@torch.no_grad()
def decode(model: Transformer, grammar: DocumentGrammar, prompts: list[list[int]], settings: DecodeSettings,
           unconditional: list[list[int]] | None = None, generator: torch.Generator | None = None,
           should_stop: Callable[[], bool] | None = None, use_cache: bool = True,
           static: bool | None = None) -> list[list[int]]:
    """Continue each prompt (ids, <bos> first) until <eod> or the room runs out; returns the new ids per row.

    unconditional: one prompt per row for the guidance stream (the document without its text); with it,
    image tokens are drawn from log p_uncond + guidance * (log p_cond - log p_uncond). should_stop is asked
    before every step; True abandons the work with DeadlineExceeded. use_cache=False re-reads every row
    whole at each step (the reference the cache is tested against). static: keep every row in one fixed-shape
    batch (`StaticReader`; default: on CUDA, where each step is then replayed as a recorded CUDA graph)."""
    evaluating(model)
    device = next(model.parameters()).device
    B = len(prompts)
    streams = [prompts] + ([unconditional] if unconditional is not None else [])
    rows = [ids for stream in streams for ids in stream]                                  # (groups * B) rows
    ids, valid = left_padded(rows, device)
    room = model.config.block_size - torch.tensor([len(prompt) for prompt in prompts], device=device)
    if settings.max_new_tokens:
        room = room.clamp(max=settings.max_new_tokens)
    steps = int(room.max())
    state = grammar.start(prompts)
    state.image_position, state.finished = state.image_position.to(device), state.finished.to(device)
    previous = torch.tensor([prompt[-1] for prompt in prompts], device=device)
    outputs = [[] for _ in range(B)]
    active = torch.arange(B, device=device)                 # original index of each remaining row
    if static is None:
        static = replays(device)
    reader_type = (StaticReader if static else CachedReader) if use_cache else FullReader
    reader = reader_type(model, ids, valid, ids.shape[1] + steps)
    logits = reader.prefill()                                                            # (groups * B, V)
    groups = len(streams)
    for step in range(steps):
        stop_if_expired(should_stop, "decoding")
        n = len(active)
        conditional = logits[:n]
        allowed = grammar.allowed(state, previous, room)
        in_image = state.image_position >= 0                                              # (n,)
        if step < settings.min_words:
            allowed = torch.where(in_image[:, None], allowed, allowed & grammar.words.to(device))
        image_logits = conditional
        if groups == 2:
            image_logits = guided_logits(conditional, logits[n:], settings.guidance)
        image_token = pick(filter_logits(image_logits, allowed, settings.temperature, settings.top_k or None,
                                         settings.top_p), settings.temperature, generator)
        image_token = keep_sure(image_token, conditional, allowed, settings.greedy_above)
        text_token = pick(filter_logits(conditional, allowed, settings.text_temperature, None),
                          settings.text_temperature, generator)
        token = torch.where(in_image, image_token, text_token)
        for row, value in zip(active.tolist(), token.tolist()):   # finished rows have left: each writes here
            outputs[row].append(value)
        state = grammar.advance(state, token)
        room = room - 1
        keep = ~state.finished & (room > 0)
        if not keep.any():
            break
        if not keep.all():                                   # finished rows leave the batch
            index = keep.nonzero().squeeze(1)
            state, room, token, active = state.select(index), room[index], token[index], active[index]
            streams_index = torch.cat([index + group * n for group in range(groups)])
            reader.select(streams_index)
            logits = logits[streams_index]
        previous = token
        # The unconditional stream does not see words (nor plans): its copy of one is an invalid slot.
        unseen = grammar.unseen_unconditionally(token)
        seen = torch.cat([torch.ones_like(token, dtype=torch.bool)] + [~unseen] * (groups - 1))
        stepped = reader.step(token.repeat(groups), seen)                                 # (groups * n, V)
        if groups == 2:
            # A stream that skipped the token has read nothing new, so its next prediction is the one it made
            # before: the skipped slot's own output is the model reading a token that stream never sees (after
            # a plan token, that output chose the image's colors from the plan alone).
            n = len(active)
            stepped[n:] = torch.where(unseen[:, None], logits[n:], stepped[n:])
        logits = stepped
    return outputs


class CachedReader:
    """Prefill once, then run only the new token of each row through the RowCache."""

    def __init__(self, model: Transformer, ids: torch.Tensor, valid: torch.Tensor, length: int) -> None:
        self.model, self.ids, self.valid = model, ids, valid
        self.cache = RowCache(model, len(ids), length, ids.device)

    def prefill(self) -> torch.Tensor:
        self.cache.writing = self.valid
        return self.model(self.ids, kv_cache=self.cache, last=1)[:, -1]

    def step(self, token: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        self.cache.writing = seen[:, None]
        return self.model(token[:, None], kv_cache=self.cache)[:, -1]

    def select(self, rows: torch.Tensor) -> None:
        self.cache.select(rows)


class StaticReader:
    """Every row stays in one fixed-shape batch through a `StaticKVCache`: a finished row goes on stepping into
    slots nobody reads (its work is not saved, unlike `CachedReader`'s), so that on CUDA each step replays one
    recorded CUDA graph (decode_graph.py). The rows still running are read out of the batch."""

    def __init__(self, model: Transformer, ids: torch.Tensor, valid: torch.Tensor, length: int) -> None:
        self.model, self.ids = model, ids
        self.cache, self.decode_step = static_cache(model, len(ids), length, ids.device)
        self.cache.start(valid)
        self.running = list(range(len(ids)))                             # the running rows, in the engine's order
        self.rows = torch.arange(len(ids), device=ids.device)           # the same, on the device
        # Each running row's length if every step of it is valid: exact for the prompts' rows, an upper bound for
        # guidance's text-free rows (shorter still). Their maximum is the longest running row, which the model's
        # length check reads (cache.least_padding), kept on the host: no device sync per step.
        self.lengths = valid.sum(1).tolist()

    def prefill(self) -> torch.Tensor:
        return self.model(self.ids, kv_cache=self.cache, last=1)[:, -1]

    def step(self, token: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        cache, B = self.cache, len(self.ids)
        tokens = torch.zeros(B, 1, dtype=torch.long, device=token.device)
        writing = torch.zeros(B, 1, dtype=torch.bool, device=token.device)
        tokens[self.rows, 0], writing[self.rows, 0] = token, seen
        cache.least_padding = cache.position - max(self.lengths[row] for row in self.running)
        logits = self.decode_step(tokens, writing)
        for row in self.running:
            self.lengths[row] += 1
        return logits[self.rows, -1]

    def select(self, rows: torch.Tensor) -> None:
        self.running = [self.running[index] for index in rows.tolist()]
        self.rows = self.rows[rows]


class FullReader:
    """No cache: each row's valid tokens so far, re-read whole at every step (one row at a time)."""

    def __init__(self, model: Transformer, ids: torch.Tensor, valid: torch.Tensor, length: int) -> None:
        self.model = model
        self.rows = [row[mask].tolist() for row, mask in zip(ids, valid)]

    def _read(self) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return torch.cat([self.model(torch.tensor([row], device=device))[:, -1] for row in self.rows])

    def prefill(self) -> torch.Tensor:
        return self._read()

    def step(self, token: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        self.rows = [row + [value] if keep else row for row, value, keep in zip(self.rows, token.tolist(), seen.tolist())]
        return self._read()

    def select(self, rows: torch.Tensor) -> None:
        self.rows = [self.rows[index] for index in rows.tolist()]
