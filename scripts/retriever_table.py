"""The retriever's numbers on one split: zero-shot reading (beside the judge, a supervised reader of the same
training digits), recall@1/@5 within the split, search of the training bank by text and by image, and the time
of 256 searches in one `--queries-file` call, process start included.

    python scripts/retriever_table.py --split test --json runs/retriever_test.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tinychameleon.data.colored import load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.evaluation.judge import load_or_train_judge
from tinychameleon.evaluation.retrieval import evaluate_retriever
from tinychameleon.retrieval.memory import training_bank
from tinychameleon.retrieval.retriever import Retriever


def time_queries_file(split, count: int = 256) -> float:
    """Seconds for `tinychameleon search --queries-file` with `count` text queries (new captions), start included."""
    with tempfile.TemporaryDirectory() as folder:
        queries = Path(folder) / "queries.jsonl"
        queries.write_text("".join(json.dumps({"text": caption}) + "\n" for caption in split.captions()[:count]))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tinychameleon", "search", "--queries-file", str(queries), "-k", "5",
                        "--json"], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--retriever", help="retriever directory (default: the shipped one)")
    parser.add_argument("--json")
    args = parser.parse_args()
    splits = load_splits()
    retriever = Retriever.from_pretrained(args.retriever)
    judge = load_or_train_judge(splits.train, default_cache_dir(), 0, progress=False)
    results = evaluate_retriever(retriever, splits[args.split], training_bank(retriever), judge)
    results["queries_file_256_s"] = round(time_queries_file(splits[args.split]), 2)
    results["split"] = args.split
    for key, value in results.items():
        print(f"{key:>24}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
