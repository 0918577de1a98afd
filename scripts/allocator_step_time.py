"""Training steps of the `best` recipe on real batches (pairs, then documents) with glibc's default malloc and with
freed memory kept (device.keep_freed_memory, what `train` sets), each in a fresh process, alternated.

    python scripts/allocator_step_time.py --run runs/best-intel/base --steps 15 --rounds 2

A process first loads what a training run holds (the ten colorings' tokens, an epoch's documents), so its heap looks
like a real run's: the default malloc's cost depends on what the process allocated before.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from tinychameleon.checkpoint import build_transformer, load_config, load_image_tokenizer
from tinychameleon.data.colored import load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.device import Distributed, autocast, keep_freed_memory
from tinychameleon.sequences import build_sequences
from tinychameleon.tokenizers.vocab import Vocab
from tinychameleon.training.documents import document_source
from tinychameleon.training.lm_trainer import epoch_batches, sequence_loss
from tinychameleon.training.optimizers import build_optimizer
from tinychameleon.training.run import colorings, data_key_of, shared_codes


def step_milliseconds(run: str, steps: int) -> dict:
    """Median ms of a training step on `steps` pair batches and `steps` document batches of epoch 0."""
    config, cache, cpu = load_config(run), default_cache_dir(), torch.device("cpu")
    tokenizer = load_image_tokenizer(run, config)
    splits = load_splits(config.data_seed, cache, config.train.holdout_pairs)
    data_key = data_key_of(config)
    codes = shared_codes(tokenizer, splits.train, "train", data_key, cache, cpu, Distributed())
    words, codes, _ = colorings(config, tokenizer, splits.train, codes, data_key, cache, cpu, Distributed())
    documents = document_source(config, tokenizer, splits.train, codes[0])(0)
    vocab, settings = Vocab.for_config(config), config.train
    torch.manual_seed(0)
    model = build_transformer(config).train()
    optimizer = build_optimizer(model, settings, fused=False)

    def step(sequences, weights=None) -> float:
        started = time.perf_counter()
        with autocast(cpu, precision=settings.precision):
            loss = sequence_loss(model, sequences, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        return 1000 * (time.perf_counter() - started)

    pairs = [build_sequences(vocab, words[0][rows], codes[0][rows], orders)
             for _, (rows, orders) in zip(range(steps + 2), epoch_batches(len(codes[0]), settings.batch_size, 1, 0))]
    pair_times = [step(sequences) for sequences in pairs][2:]                  # two warm-up steps
    document_times = [step(ids, weights) for ids, weights, *_ in documents[:steps + 2]][2:]
    return {"pairs": statistics.median(pair_times), "documents": statistics.median(document_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/best-intel/base", help="a `base` run (its tokenizer and config)")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["default", "kept"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "kept":
            keep_freed_memory()
        print(json.dumps(step_milliseconds(args.run, args.steps)))
        return
    results = {"default": [], "kept": []}
    for _ in range(args.rounds):
        for mode in results:
            output = subprocess.run([sys.executable, __file__, "--run", args.run, "--steps", str(args.steps),
                                     "--child", mode], capture_output=True, text=True, check=True).stdout
            results[mode].append(json.loads(output.splitlines()[-1]))
            print(mode, results[mode][-1], flush=True)
    print(json.dumps({mode: {kind: [round(row[kind]) for row in rows] for kind in ("pairs", "documents")}
                      for mode, rows in results.items()}))


if __name__ == "__main__":
    main()
