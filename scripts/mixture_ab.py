"""Release 5's document mixture vs the reweighted one in a matched short run of the `base` recipe (the same run
as scripts/positions_ab.py: 10k training digits' pairs in both orders + 20k documents, 1 epoch, rotary positions,
the shipped image tokenizer). Compare with `python scripts/answer_nll.py runs/ab-release5 runs/ab-reweighted`
(nats of each family's answer on validation) and the runs' last log lines (nats per pair).

    python scripts/mixture_ab.py release5 & python scripts/mixture_ab.py reweighted   # ~13 min each, a thread each

release5: every family's share as in release 5 (documents/families.FAMILIES), answers weighted like the prompt;
reweighted: more of the cheap questions, addition and counting, less draw / read, and answers at 3x
(train.answer_loss_weight); reweighted-pairs: the same but draw and
read at release 5's shares; answer-words: release 5's shares, the answers' words (not their images) at 3x
(train.answer_words_only). --seed 1 on an arm shows how far apart two seeds of one recipe land.
"""

from __future__ import annotations

import argparse
import time

import torch

from tinychameleon.config import make_config
from tinychameleon.documents import families
from tinychameleon.pipeline import PRETRAINED
from tinychameleon.training.run import train

REWEIGHTED = {"digit color name": 1.0, "background name": 1.5, "addition": 1.5, "counting": 1.25,
              "draw": 0.25, "read": 0.25}   # every other family: 1.0, as in release 5 (documents/families.FAMILIES)
ARMS = {"release5": 1.0, "reweighted": 3.0, "reweighted-pairs": 3.0,    # arm -> train.answer_loss_weight
        "answer-words": 3.0}
WORDS_ONLY = {"answer-words"}                   # arms whose weight lands on the answer's words only
SHARES = {"release5": {}, "answer-words": {}, "reweighted": REWEIGHTED,      # reweighted-pairs: draw and read keep release 5's shares
          "reweighted-pairs": {**REWEIGHTED, "draw": 0.5, "read": 0.5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arm", choices=list(ARMS))
    parser.add_argument("--seed", type=int, default=0, help="train.seed (another seed: how noisy one run is)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (two runs share a 2-core CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, share in SHARES[args.arm].items():
        families.FAMILIES[name] = (families.FAMILIES[name][0], share)
    config = make_config("base", train={"epochs": 1, "max_train_examples": 10000, "documents": 20000,
                                        "max_validation_examples": 1000, "answer_loss_weight": ARMS[args.arm],
                                        "seed": args.seed, "answer_words_only": args.arm in WORDS_ONLY})
    started = time.time()
    name = args.arm + (f"-seed{args.seed}" if args.seed else "")
    train(config, f"runs/ab-{name}", vqvae_from=PRETRAINED["raster"], progress=False,
          command=f"python scripts/mixture_ab.py {args.arm} --seed {args.seed}")
    print(f"wall {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
