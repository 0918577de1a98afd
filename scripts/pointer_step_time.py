"""One training step (forward + backward under bf16 autocast) of the best preset's transformer at batch 128 x 105
tokens: the plain head, the pointer head through its dense (B, T, V) mixture, and the pointer head through the
targets path that training uses (`Transformer.forward(ids, targets=)`). Interleaved, medians of 7; the two pointer
paths print the same loss.

    python scripts/pointer_step_time.py
"""

from __future__ import annotations

import statistics
import time

import torch

from tinychameleon.config import ModelConfig
from tinychameleon.model import Transformer, target_log_probs

VOCAB = 2085   # near the best preset's 2139 (2079 image ids, words and markers); BENCHMARKS' step times used 2085


def model(copy_head: bool) -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, n_layer=6, n_head=6, d_model=192, positions="rope", block_size=256,
                         copy_head=copy_head)
    return Transformer(config).train()


def step(net: Transformer, ids: torch.Tensor, dense: bool) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs = (target_log_probs(net(ids[:, :-1]).float(), ids[:, 1:]) if dense
                     else net(ids[:, :-1], targets=ids[:, 1:]))
    loss = -log_probs.mean()
    loss.backward()
    return float(loss.detach())


def main() -> None:
    ids = torch.randint(0, VOCAB, (128, 106), generator=torch.Generator().manual_seed(0))
    plain, pointer = model(False), model(True)
    cases = {"plain": (plain, False), "pointer, dense": (pointer, True), "pointer, targets": (pointer, False)}
    print({name: round(step(net, ids, dense), 6) for name, (net, dense) in cases.items()})
    times = {name: [] for name in cases}
    for _ in range(7):
        for name, (net, dense) in cases.items():
            started = time.perf_counter()
            step(net, ids, dense)
            times[name].append(time.perf_counter() - started)
    for name, values in times.items():
        print(f"{name}: {1000 * statistics.median(values):.0f} ms per step")


if __name__ == "__main__":
    main()
