"""A decode step with every shape fixed, so that a GPU can replay it as one CUDA graph.

On a GPU a one-token decode step of this small model is bound by launching kernels, not by arithmetic:
about 2 ms at batch 1 and at batch 64 alike on an H200, no faster than two CPU cores (../BENCHMARKS.md,
"On a GPU"). A CUDA graph records the step's few hundred kernels once and replays them with one launch.
Replaying needs the step to read and write the same memory every time, so `StaticKVCache` keeps the
`KVCache` contract with fixed shapes: attention always reads every slot of a full-length cache (a mask
hides the slots not yet written) and the next slot is a device tensor, advanced in place by the step
itself. `CapturedStep` records `model(token, kv_cache=cache)` on first use and replays it after, and
`captured_step` keeps recorded steps for reuse: recording costs a few eager steps, which a 51-step image
would otherwise pay on every request.

On the CPU the static cache runs eagerly (the tests compare it with `KVCache`); only CUDA captures.
`TINYCHAMELEON_CUDA_GRAPHS=0` (or `eager_steps()`, which the benchmark uses to compare) turns capture off.
"""

from __future__ import annotations

import os
import threading
import weakref
from contextlib import contextmanager

import torch

from .config import ModelConfig


class StaticKVCache:
    """`KVCache`'s contract (update, update_copy, positions, attention_mask, advance, image_run) with every
    tensor's shape fixed for the whole decode: (layers, B, heads, max_length, head_dim) keys and values, read
    whole at each step under a mask, and `slot`, the next slot to write, a device tensor.

    `position` mirrors `slot` on the host for the model's length check; a replayed graph does not run Python,
    so `CapturedStep` advances the mirror itself. padding (B,): slots each row's prompt was left-padded by."""

    def __init__(self, config: ModelConfig, batch_size: int, max_length: int, device=None,
                 dtype=torch.float32, padding: torch.Tensor | None = None) -> None:
        head_dim = config.d_model // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_length, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.slot = torch.zeros((), dtype=torch.long, device=device)
        self.position = 0
        self.padding = (torch.zeros(batch_size, dtype=torch.long) if padding is None else padding).to(device)
        self.least_padding = int(self.padding.min())
        self.every_slot = torch.arange(max_length, device=device)
        self._image_run = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.copy_keys = self.copy_ids = None                                  # model.copy_head, on first use

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
        """(B, T) position ids of the next T tokens: a row's slot less its padding (padding slots: 0, never read)."""
        return (self.new_slots(T)[None, :] - self.padding[:, None]).clamp(min=0)

    def attention_mask(self, T: int) -> torch.Tensor:
        """(B, 1, T, max_length): each query sees the written, unpadded slots up to its own, and always its own
        (so a padding query still has a key). Slots not yet written are hidden like padding."""
        queries = self.new_slots(T)[:, None]                                               # (T, 1)
        causal = self.every_slot[None, :] <= queries                                       # (T, S)
        real = self.every_slot[None, :] >= self.padding[:, None]                           # (B, S)
        own = self.every_slot[None, :] == queries                                          # (T, S)
        return ((causal[None] & real[:, None, :]) | own[None])[:, None]

    def advance(self, steps: int) -> None:
        self.slot += steps               # in place: part of the recorded step
        self.position += steps

    def reset(self, padding: torch.Tensor) -> None:
        """Empty the cache for a new decode whose rows are left-padded by `padding` (B,), in place. Old keys stay
        in memory but are never read: the mask shows only slots written since."""
        self.padding.copy_(padding)
        self.least_padding = int(self.padding.min())
        self.slot.zero_()
        self.position = 0
        self.image_run = torch.zeros_like(self._image_run)


class CapturedStep:
    """`model(tokens, kv_cache=cache)` for (B, 1) tokens, recorded as a CUDA graph on the first call and replayed
    at every call after: one launch per step instead of one per kernel. The returned logits live in the graph's
    own memory and are overwritten by the next call (read them before stepping again)."""

    WARM_UP = 2     # eager runs before recording: lazily built kernels and workspaces must exist before capture

    def __init__(self, model, cache: StaticKVCache) -> None:
        self.model, self.cache = model, cache
        self.tokens = torch.zeros(len(cache.padding), 1, dtype=torch.long, device=cache.keys.device)
        self.graph = None
        self.logits = None

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            self._record()
        self.tokens.copy_(tokens)
        self.graph.replay()
        self.cache.position += 1
        return self.logits

    def _record(self) -> None:
        """Warm up on a side stream (as torch.cuda.graphs asks), put back the state the warm-up advanced, record.
        Under autocast, without its cache of cast weights: a cached cast is freed when the caller's autocast
        ends, and a replay would read freed memory."""
        cache = self.cache
        saved = cache.slot.clone(), cache.image_run.clone(), cache.position
        same_autocast = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"),
                                       enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), same_autocast:
            for _ in range(self.WARM_UP):
                self.model(self.tokens, kv_cache=cache)
        torch.cuda.current_stream().wait_stream(side)
        # The warm-up wrote slots the real steps overwrite before anything reads them (the mask hides them).
        cache.slot.copy_(saved[0])
        cache.image_run = saved[1]
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), same_autocast:
            self.logits = self.model(self.tokens, kv_cache=cache)
        cache.position = saved[2]        # recording ran the Python (position += 1) but no kernel


_eager = threading.local()


def capture_on_cuda() -> bool:
    """Whether decoding on CUDA replays recorded steps (the default) rather than running each step eagerly."""
    return os.environ.get("TINYCHAMELEON_CUDA_GRAPHS", "1") != "0" and not getattr(_eager, "on", False)


@contextmanager
def eager_steps():
    """Within, this thread's CUDA decodes run every step eagerly (the before of a before/after)."""
    _eager.on = True
    try:
        yield
    finally:
        _eager.on = False


POOL_SIZE = 8      # recorded steps kept per model and thread; the oldest is dropped first
_pool: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def captured_step(model, padding: torch.Tensor, max_length: int) -> CapturedStep:
    """A recorded step of `model` for len(padding) rows and a max_length-slot cache, emptied and given this (B,)
    padding: the one recorded by an earlier decode of the same shape on this thread if there is one (the web
    worker and a script's loop decode one request after another), else a new one, recorded on first use."""
    steps = _pool.setdefault(model, {})
    # A step recorded under autocast computes in its dtype whatever the caller's context later: part of the key.
    key = (threading.get_ident(), len(padding), max_length, torch.is_autocast_enabled("cuda"))
    if key not in steps:
        if len(steps) >= POOL_SIZE:
            steps.pop(next(iter(steps)))
        device = next(model.parameters()).device
        steps[key] = CapturedStep(model, StaticKVCache(model.config, len(padding), max_length, device, padding=padding))
    step = steps[key]
    step.cache.reset(padding.to(step.cache.padding.device))
    return step
