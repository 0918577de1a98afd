"""Learned vs rotary positions in a matched short run of the `base` recipe (10k training digits' pairs in both
orders + 20k documents, 1 epoch, the shipped image tokenizer): validation nats per pair and per document token.

    python scripts/positions_ab.py learned & python scripts/positions_ab.py rope    # ~13 min each, one thread each

Each run lands in runs/ab-POSITIONS; its last log line holds the validation numbers (BENCHMARKS.md, "Positions").
"""

from __future__ import annotations

import argparse
import time

import torch

from tinychameleon.config import POSITIONS, make_config
from tinychameleon.pipeline import PRETRAINED
from tinychameleon.training.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("positions", choices=POSITIONS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (two runs share a 2-core CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = make_config("base", model={"positions": args.positions},
                         train={"epochs": 1, "max_train_examples": 10000, "documents": 20000,
                                "max_validation_examples": 1000})
    started = time.time()
    train(config, f"runs/ab-{args.positions}", vqvae_from=PRETRAINED["raster"], progress=False,
          command=f"python scripts/positions_ab.py {args.positions}")
    print(f"wall {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
