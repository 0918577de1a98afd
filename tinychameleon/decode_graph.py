"""A decode step with every shape fixed, so that a GPU can replay it as one CUDA graph.

On a GPU a one-token decode step of this small model is bound by launching kernels, not by arithmetic:
about 2 ms at batch 1 and at batch 64 alike on an H200, no faster than two CPU cores (../BENCHMARKS.md,
"On a GPU"). A CUDA graph records the step's few hundred kernels once and replays them with one launch.
Replaying needs the step to read and write the same memory every time, so `StaticKVCache` keeps the
`KVCache` contract with fixed shapes: attention always reads every slot of a full-length cache (a mask
hides the slots not yet written) and the next slot is a device tensor, advanced in place by the step
itself. `CapturedStep` records `model(token, kv_cache=cache)` on first use and replays it after, and
`captured_step` keeps recorded steps for reuse: recording costs a few eager steps, which a 51-step image
would otherwise pay on every request. The next-scale sampler's six passes need no static cache: each block
always touches the same slots of a growing one, so `CapturedPasses` records one graph per block.

On the CPU the static cache runs eagerly (the tests compare it with `KVCache`); only CUDA captures.
`TINYCHAMELEON_CUDA_GRAPHS=0` (or `eager_steps()`, which the benchmark uses to compare) turns capture off.
"""

from __future__ import annotations

import os
import threading
import weakref
from contextlib import contextmanager
from typing import Callable

import torch

from .config import ModelConfig


class StaticKVCache:
    """The cache contract the model reads (positions, attention_mask, update, update_copy, advance, image_run) with
    every tensor's shape fixed for the whole decode: (layers, B, heads, max_length, head_dim) keys and values, read
    whole at each step under a mask, and `slot`, the next slot to write, a device tensor.

    Like the documents' `RowCache`, each row keeps its own valid slots and positions: a slot written while
    `writing` marks it invalid (left padding, a word in guidance's text-free stream, a finished row's step) is
    never read and does not advance the row's position. `start` readies it for a prefill; after it, every step
    writes with `step_writing`, a fixed (B, 1) buffer (all True unless the caller fills it).

    Two host numbers serve the model's length check (position - least_padding: the longest row's length), with no
    device sync per step: `position` mirrors `slot` (a replayed graph runs no Python, so `CapturedStep` advances
    it), and `least_padding` is set by `start` and, where rows finish while others go on, by the caller."""

    def __init__(self, config: ModelConfig, batch_size: int, max_length: int, device=None,
                 dtype=torch.float32) -> None:
        head_dim = config.d_model // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_length, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.every_slot = torch.arange(max_length, device=device)
        self.slot = torch.zeros((), dtype=torch.long, device=device)
        self.valid = torch.zeros(batch_size, max_length, dtype=torch.bool, device=device)
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.step_writing = torch.ones(batch_size, 1, dtype=torch.bool, device=device)
        self._image_run = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.copy_keys = self.copy_ids = None                                  # model.copy_head, on first use
        self.position, self.least_padding, self.writing = 0, 0, self.step_writing

    def start(self, valid: torch.Tensor) -> None:
        """Empty the cache, in place, for a prefill of (B, P) tokens of which `valid` says which are real (left
        padding is not). Old keys stay in memory but are never read: the mask shows only slots written since."""
        self.slot.zero_()
        self.valid.zero_()
        self.next_position.zero_()
        self.step_writing.fill_(True)
        self.image_run = torch.zeros_like(self._image_run)
        self.position, self.writing = 0, valid
        self.least_padding = valid.shape[1] - int(valid.sum(1).max())

    @property
    def image_run(self) -> torch.Tensor:
        return self._image_run

    @image_run.setter
    def image_run(self, value: torch.Tensor) -> None:
        self._image_run.copy_(value)       # in place: a replayed graph reads and writes this very memory

    def new_slots(self, T: int) -> torch.Tensor:
        """(T,) slots the next T tokens are written to."""
        return self.slot + self.every_slot[:T]

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, nh, T, hs) new keys/values at the next slots; return every slot, (B, nh, max_length, hs)."""
        slots = self.new_slots(key.shape[2])
        self.keys[layer].index_copy_(2, slots, key.to(self.keys.dtype))
        self.values[layer].index_copy_(2, slots, value.to(self.values.dtype))
        return self.keys[layer], self.values[layer]

    def update_copy(self, keys: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the copy head's (B, T, kd) pointer keys and (B, T) ids; return every slot's."""
        B, T, _ = keys.shape
        if self.copy_keys is None:       # the prefill runs first, outside any capture
            self.copy_keys = keys.new_zeros(B, len(self.every_slot), keys.shape[2])
            self.copy_ids = ids.new_zeros(B, len(self.every_slot))
        slots = self.new_slots(T)
        self.copy_keys.index_copy_(1, slots, keys.to(self.copy_keys.dtype))
        self.copy_ids.index_copy_(1, slots, ids)
        return self.copy_keys, self.copy_ids

    def positions(self, T: int) -> torch.Tensor:
        """(B, T) position ids of the new tokens: each row counts only its valid slots."""
        valid = self.writing.long()
        return self.next_position[:, None] + valid.cumsum(1) - valid

    def attention_mask(self, T: int) -> torch.Tensor:
        """(B, 1, T, max_length): each query sees the valid slots up to its own, and always its own (so that an
        invalid query still has a key; its output is never used). Slots not yet written are not valid."""
        slots = self.new_slots(T)
        keys = self.valid.index_copy(1, slots, self.writing.expand(-1, T))                  # (B, S)
        causal = self.every_slot[None, :] <= slots[:, None]                                # (T, S)
        own = self.every_slot[None, :] == slots[:, None]                                   # (T, S)
        return ((causal[None] & keys[:, None, :]) | own[None])[:, None]

    def advance(self, steps: int) -> None:
        """In place (part of the recorded step): the new slots' validity, each row's position, the next slot."""
        writing = self.writing.expand(-1, steps)
        self.valid.index_copy_(1, self.new_slots(steps), writing)
        self.next_position += writing.sum(1)
        self.slot += steps
        self.position += steps
        self.writing = self.step_writing


WARM_UP = 2     # eager runs before recording: lazily built kernels and workspaces must exist before capture


def record(run: Callable[[], torch.Tensor], rewind: Callable[[], None]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Record `run` (a forward that advances a cache) as a CUDA graph: warm it up on a side stream (as
    torch.cuda.graphs asks), rewind() the state each run advanced, record, rewind again (recording runs the Python,
    whose bookkeeping advances, but no kernel). Returns the graph and the output tensor its replays fill. Under
    autocast, without autocast's cache of cast weights: a cached cast is freed when the caller's autocast ends,
    and a replay would read freed memory."""
    same_autocast = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"),
                                   enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), same_autocast:
        for _ in range(WARM_UP):
            run()
            rewind()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), same_autocast:
        output = run()
    rewind()
    return graph, output


class CapturedStep:
    """`model(tokens, kv_cache=cache)` for (B, 1) tokens, recorded as a CUDA graph on the first call and replayed
    at every call after: one launch per step instead of one per kernel. The returned logits live in the graph's
    own memory and are overwritten by the next call (read them before stepping again)."""

    def __init__(self, model, cache: StaticKVCache) -> None:
        self.model, self.cache = model, cache
        self.tokens = torch.zeros(len(cache.valid), 1, dtype=torch.long, device=cache.keys.device)
        self.graph = self.logits = None

    def __call__(self, tokens: torch.Tensor, writing: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, 1); writing (B, 1): which rows' slots this step are valid (default: all)."""
        cache = self.cache
        if self.graph is None:
            state = (cache.slot, cache.valid, cache.next_position, cache.image_run)
            saved, position = [tensor.clone() for tensor in state], cache.position

            def rewind() -> None:   # the warm-up wrote slots that real steps overwrite before anything reads them
                for tensor, value in zip(state, saved):
                    tensor.copy_(value)
                cache.position = position

            self.graph, self.logits = record(lambda: self.model(self.tokens, kv_cache=cache), rewind)
        self.tokens.copy_(tokens)
        if writing is not None:         # else as `start` left it: every row's slot valid
            cache.step_writing.copy_(writing)
        self.graph.replay()
        cache.position += 1
        return self.logits


class EagerStep:
    """`CapturedStep`'s call, run eagerly: on the CPU (a static cache, or a growing `KVCache`), and where replaying
    is off."""

    def __init__(self, model, cache) -> None:
        self.model, self.cache = model, cache

    def __call__(self, tokens: torch.Tensor, writing: torch.Tensor | None = None) -> torch.Tensor:
        if writing is not None:
            self.cache.step_writing.copy_(writing)
        return self.model(tokens, kv_cache=self.cache)


class CapturedPasses:
    """The next-scale sampler's passes, one recorded CUDA graph per block. Block b of every drawing reads the caption
    and the coarser blocks' cache slots and writes its own, always the same ones, so each pass replays exactly as it
    was recorded: six launches per drawing instead of one per kernel. `cache` is a plain growing `KVCache`."""

    def __init__(self, model, cache) -> None:
        self.model, self.cache = model, cache
        self.inputs, self.graphs, self.logits = {}, {}, {}

    def run(self, block: int, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """model.run(x, mask, cache) for block `block` ((R, T, C) inputs of its new positions) -> (R, T, V) logits,
        in the graph's memory until this block's next pass. Block 0 starts a new drawing (an empty cache)."""
        if block == 0:
            self.cache.position = 0
        start = self.cache.position
        if block not in self.graphs:
            self.inputs[block] = x.clone()

            def rewind() -> None:
                self.cache.position = start

            self.graphs[block], self.logits[block] = record(
                lambda: self.model.run(self.inputs[block], mask, self.cache), rewind)
        self.inputs[block].copy_(x)
        self.graphs[block].replay()
        self.cache.position = start + x.shape[1]
        return self.logits[block]


_eager = threading.local()


def replays(device) -> bool:
    """Whether a decode on `device` replays recorded steps: on CUDA by default; never elsewhere, or under
    TINYCHAMELEON_CUDA_GRAPHS=0 or `eager_steps()`."""
    return (torch.device(device).type == "cuda" and os.environ.get("TINYCHAMELEON_CUDA_GRAPHS", "1") != "0"
            and not getattr(_eager, "on", False))


@contextmanager
def eager_steps():
    """Within, this thread's CUDA decodes run every step eagerly (the before of a before/after)."""
    _eager.on = True
    try:
        yield
    finally:
        _eager.on = False


POOL_SIZE = 8      # recorded steps or passes kept per model and thread; the oldest is dropped first
_pool: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_placed: "weakref.WeakKeyDictionary[torch.nn.Module, int]" = weakref.WeakKeyDictionary()   # weights' address


def pooled(model, shape: tuple, build: Callable[[], object]):
    """The recorder kept for `model` and this shape on this thread (the web worker and a script's loop decode one
    request after another, so a request pays no recording), or build() one. A step recorded under autocast computes
    in its dtype whatever the caller's context later: that is part of the key."""
    kept = _pool.setdefault(model, {})
    weights = next(model.parameters()).data_ptr()
    if _placed.get(model) != weights:   # moved or cast since recording: those graphs would read freed memory
        kept.clear()
        _placed[model] = weights
    key = (threading.get_ident(), torch.is_autocast_enabled("cuda"), *shape)
    if key not in kept:
        if len(kept) >= POOL_SIZE:
            kept.pop(next(iter(kept)))
        kept[key] = build()
    return kept[key]


LENGTH_STEP = 32   # a recorded step's cache length is rounded up to this: documents' lengths vary with their prompts


def captured_step(model, rows: int, max_length: int) -> CapturedStep:
    """A recorded step of `model` for `rows` rows and a cache of at least max_length slots (see `pooled`); call its
    cache's `start` before the prefill. Slots past those a decode fills cost a little attention, no results."""
    device = next(model.parameters()).device
    max_length = -(-max_length // LENGTH_STEP) * LENGTH_STEP
    return pooled(model, ("step", rows, max_length),
                  lambda: CapturedStep(model, StaticKVCache(model.config, rows, max_length, device)))


def static_cache(model, rows: int, max_length: int, device) -> tuple[StaticKVCache, CapturedStep | EagerStep]:
    """A static cache for a decode of `rows` rows and the step that runs on it, called as step(tokens, writing):
    where `replays(device)`, a pooled recorded step and its cache; elsewhere a fresh cache, stepped eagerly."""
    if replays(device):
        step = captured_step(model, rows, max_length)
        return step.cache, step
    cache = StaticKVCache(model.config, rows, max_length, device)
    return cache, EagerStep(model, cache)


def captured_passes(model, rows: int, cache: Callable[[], object]) -> CapturedPasses:
    """The recorded passes of the next-scale `model` for `rows` rows (see `pooled`); cache() builds their cache."""
    return pooled(model, ("passes", rows), lambda: CapturedPasses(model, cache()))
