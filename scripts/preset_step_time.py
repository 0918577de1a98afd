"""Seconds per training step of the `best` (raster) and `var` (next-scale) presets' transformers, measured in one
run at their batch size, bf16 autocast and optimizer (random weights and tokens: speed does not depend on them).
`best documents` is a step on a batch of documents as long as the preset's average (98 tokens against a pair's 58).

    python scripts/preset_step_time.py --steps 20
    python scripts/preset_step_time.py --cases best --newton-schulz fp32 bf16   # Muon's iterations in either

With the steps per epoch this gives a training time free of whatever else the machine ran during a real run.
Like `train`, it first has malloc keep freed memory (device.keep_freed_memory).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tinychameleon import device
from tinychameleon.checkpoint import build_image_tokenizer, build_transformer
from tinychameleon.config import make_config
from tinychameleon.nextscale.objective import pair_loss
from tinychameleon.sequences import build_sequences
from tinychameleon.tokenizers.vocab import Vocab
from tinychameleon.training.lm_trainer import sequence_loss
from tinychameleon.training.optimizers import build_optimizer


DOCUMENT_TOKENS = 98   # a `best` epoch's document batches: 11 956 tokens in 128 rows on average


def step_seconds(preset: str, steps: int, precision: str | None = None, documents: bool = False,
                 newton_schulz: str | None = None) -> float:
    """Seconds per step; Muon's Newton-Schulz runs in `newton_schulz` ("fp32", "bf16"), by default as `train` runs
    it (in the precision the run resolves to)."""
    # `best` trains the `base` preset's transformer at its batch (and continues a run, so it has no config alone).
    config = make_config("base" if preset == "best" else preset, train={"precision": precision} if precision else {})
    vocab, settings = Vocab.for_config(config), config.train
    torch.manual_seed(0)
    model = build_transformer(config)
    trains_bf16 = device.trains_in_bf16(torch.device("cpu"), settings.precision)
    optimizer = build_optimizer(model, settings, fused=False,
                                bf16=trains_bf16 if newton_schulz is None else newton_schulz == "bf16")
    B = settings.batch_size
    words = torch.randint(0, vocab.num_words, (B, 6))
    codes = torch.randint(0, config.vq.codebook_size, (B, vocab.image_length))
    codes[:, :2] = config.vq.codebook_size + torch.randint(0, 31, (B, 2))
    orders = torch.arange(B) % 2
    coder = build_image_tokenizer(config).shape.eval() if config.vq.kind == "scales" else None

    def step():
        with device.autocast(torch.device("cpu"), precision=settings.precision):
            if documents:
                loss = sequence_loss(model, torch.randint(0, vocab.size, (B, DOCUMENT_TOKENS),
                                                          generator=torch.Generator().manual_seed(0)))
            elif coder is not None:
                loss = pair_loss(model, coder, vocab, words, codes, orders == 1, settings.text_dropout,
                                 settings.caption_loss_weight)
            else:
                loss = sequence_loss(model, build_sequences(vocab, words, codes, orders))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", nargs="*", default=[None], choices=["fp32", "bf16", "auto"],
                        help="train.precision to time (default: the preset's)")
    parser.add_argument("--cases", nargs="*", default=["best", "best documents", "var"],
                        choices=["best", "best documents", "var"])
    parser.add_argument("--newton-schulz", nargs="*", default=[None], choices=["fp32", "bf16"],
                        help="the precision of Muon's iterations to time (default: the run's, as train does)")
    args = parser.parse_args()
    device.keep_freed_memory()
    results = {}
    for _ in range(2):   # interleaved twice: a noisy machine shows as two different readings
        for case in args.cases:
            for precision in args.precision:
                for newton_schulz in args.newton_schulz:
                    key = " ".join([case] + ([precision] if precision else [])
                                   + ([f"newton-schulz {newton_schulz}"] if newton_schulz else []))
                    results.setdefault(key, []).append(
                        step_seconds(case.split()[0], args.steps, precision, case.endswith("documents"), newton_schulz))
    print(json.dumps({preset: [round(s, 3) for s in values] for preset, values in results.items()}))


if __name__ == "__main__":
    main()
