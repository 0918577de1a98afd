"""Every task family under a few sampler settings, on documents of held-out digits (validation by default):
where the shipped document settings are chosen.

    python scripts/document_table.py --checkpoint runs/best-docs --samples 100 --out runs/document_table.json

Rule: the setting with the highest mean family accuracy; ties (within one point) go to the cheaper one.
`--split train` asks the same questions of the digits the model trained on: a family no better there than on
validation is not learnt, where one that is better there is memorised.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from tinychameleon.data.colored import load_colored_mnist, load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.documents.families import FAMILIES, WORD_FAMILIES
from tinychameleon.evaluation.documents import evaluate_documents
from tinychameleon.evaluation.judge import load_or_train_judge
from tinychameleon.io_utils import write_json
from tinychameleon.pipeline import Pipeline

SETTINGS = {
    "shipped": {},                                   # the checkpoint's sampling.json
    "plain (temperature 1)": {"guidance": 1.0, "top_p": 1.0},
    "guidance 2": {"guidance": 2.0, "top_p": 1.0},
    "guidance 2, top-p 0.8": {"guidance": 2.0, "top_p": 0.8},
    "greedy images": {"guidance": 1.0, "temperature": 0.0},
    "guidance 1.75, temperature 0.7": {"guidance": 1.75, "temperature": 0.7},
    "guidance 1.75, temperature 0.5": {"guidance": 1.75, "temperature": 0.5},
    "guidance 1.75, top-p 0.8": {"guidance": 1.75, "temperature": 1.0, "top_p": 0.8},
    "guidance 1.75, top-p 0.5": {"guidance": 1.75, "temperature": 1.0, "top_p": 0.5},
    "guidance 1.75, temperature 0.7, top-p 0.8": {"guidance": 1.75, "temperature": 0.7, "top_p": 0.8},
    "guidance 1.75, greedy images": {"guidance": 1.75, "temperature": 0.0},
    "guidance 1.25, greedy images": {"guidance": 1.25, "temperature": 0.0},
    "guidance 1.5, greedy images": {"guidance": 1.5, "temperature": 0.0},
    "guidance 1.75, temperature 0.3": {"guidance": 1.75, "temperature": 0.3},
    "guidance 2, greedy above 0.5": {"guidance": 2.0, "top_p": 1.0, "greedy_above": 0.5},
    "guidance 2, greedy above 0.3": {"guidance": 2.0, "top_p": 1.0, "greedy_above": 0.3},
    "guidance 2, greedy above 0.7": {"guidance": 2.0, "top_p": 1.0, "greedy_above": 0.7},
    "guidance 1.5, greedy above 0.5": {"guidance": 1.5, "top_p": 1.0, "greedy_above": 0.5},
    "guidance 1.5, greedy above 0.7": {"guidance": 1.5, "top_p": 1.0, "greedy_above": 0.7},
    "guidance 2.5, greedy above 0.5": {"guidance": 2.5, "top_p": 1.0, "greedy_above": 0.5},
    "guidance 2, greedy above 0.9": {"guidance": 2.0, "top_p": 1.0, "greedy_above": 0.9},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=100, help="documents per family")
    parser.add_argument("--split", choices=("validation", "test", "train"), default="validation")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS), metavar="SETTING",
                        help="names from SETTINGS")
    parser.add_argument("--families", nargs="*", default=None, choices=[*FAMILIES, *WORD_FAMILIES], metavar="FAMILY",
                        help="family names (default: the twelve; the stepping stones in words only when named)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    pipeline = Pipeline.from_pretrained(args.checkpoint)
    cache = default_cache_dir()
    judge = load_or_train_judge(load_colored_mnist(pipeline.config.data_seed, cache)[0], cache, pipeline.config.data_seed)
    split = load_splits(pipeline.config.data_seed, cache)[args.split]
    table = {}
    for name in args.settings:
        results, _ = evaluate_documents(pipeline, judge, split, args.samples, args.seed, SETTINGS[name], args.families)
        table[name] = results
        mean = np.mean([row["accuracy"] for row in results.values()])
        print(f"{name}: mean {100 * mean:.1f}% | " + " | ".join(f"{family} {100 * row['accuracy']:.1f}"
                                                               for family, row in results.items()), flush=True)
    if args.out:
        write_json(args.out, {"checkpoint": pipeline.source, "split": args.split, "samples": args.samples,
                              "table": table})
    print(json.dumps({name: {f: round(r["accuracy"], 3) for f, r in rows.items()} for name, rows in table.items()}))


if __name__ == "__main__":
    main()
