"""How the memory index scales: build time, memory and one-query latency, exact vs IVF, up to 1 M entries.

Synthetic embeddings shaped like the retriever's: unit vectors scattered around 7300 centres (one per
possible caption), so neighbours are as clustered as in a real bank. Recall@10 of the IVF index is
measured against the exact one on the same queries.

    python scripts/index_scale.py --sizes 10000,100000,300000,1000000 --json runs/index_scale.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from tinychameleon.retrieval.index import VectorIndex


def synthetic(count: int, dim: int, seed: int, centres: int = 7300, spread: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, dim)).astype(np.float32)
    middle /= np.linalg.norm(middle, axis=1, keepdims=True)
    vectors = middle[rng.integers(0, centres, count)] + spread / np.sqrt(dim) * rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def one_query_ms(index: VectorIndex, queries: np.ndarray, k: int = 10) -> float:
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query[None], k)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,300000,1000000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        vectors = synthetic(size, args.dim, seed=0)
        queries = synthetic(args.queries, args.dim, seed=1)
        row = {"entries": size, "megabytes": round(vectors.nbytes / 2**20, 1)}
        for kind in ("exact", "ivf"):
            started = time.perf_counter()
            index = VectorIndex.build(vectors, kind=kind)
            row[f"{kind}_build_s"] = round(time.perf_counter() - started, 2)
            row[f"{kind}_query_ms"] = round(one_query_ms(index, queries), 3)
            _, ids = index.search(queries, 10)
            row[f"{kind}_ids"] = ids
        exact, approximate = row.pop("exact_ids"), row.pop("ivf_ids")
        row["ivf_recall@10"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approximate)])), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
