"""Nearest neighbours by inner product of unit vectors, through faiss.

Two kinds: "exact" (IndexFlatIP: every query scans every vector) and "ivf" (IndexIVFFlat: vectors are
filed under their nearest of `lists` k-means centroids, and a query scans the `probes` nearest lists
only). "auto" picks exact up to EXACT_LIMIT vectors: measured on the 2-core CPU
(scripts/index_scale.py, BENCHMARKS.md), that is where an exact query stops fitting in about a millisecond.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from ..io_utils import atomic_path

EXACT_LIMIT = 100_000
INDEX_KINDS = ("auto", "exact", "ivf")


def default_probes(lists: int) -> int:
    """Lists an IVF query scans: 1/16 of them (at least 16). At 1 M entries that keeps recall@10 near 0.98
    at about 1.5 ms a query (BENCHMARKS.md)."""
    return min(lists, max(16, lists // 16))


def _faiss():
    import faiss  # imported late: `import tinychameleon` and the CLI's error paths stay cheap

    return faiss


class VectorIndex:
    """A faiss index over (N, D) float32 unit vectors; search returns (scores, ids), best first."""

    def __init__(self, index, probes: int = 0) -> None:
        self.index = index
        self.probes = probes
        if probes:
            index.nprobe = probes

    @classmethod
    def build(cls, vectors: np.ndarray, kind: str = "auto", lists: int | None = None, probes: int | None = None,
              seed: int = 0) -> "VectorIndex":
        faiss = _faiss()
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        count, dim = vectors.shape
        if kind == "exact" or (kind == "auto" and count <= EXACT_LIMIT):
            index = faiss.IndexFlatIP(dim)
            index.add(vectors)
            return cls(index)
        # About 4 sqrt(N) lists (faiss's rule of thumb), k-means on 64 vectors per list at most.
        lists = lists or max(1, min(count // 39, int(4 * math.sqrt(count))))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(count, size=min(count, 64 * lists), replace=False)
        index.cp.seed = seed
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        return cls(index, probes=probes or default_probes(lists))

    @property
    def kind(self) -> str:
        return "ivf" if self.probes else "exact"

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) unit vectors -> scores (Q, k') and ids (Q, k'), k' = min(k, N), best first."""
        k = min(k, len(self))
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    def save(self, path: Path) -> None:
        faiss = _faiss()
        with atomic_path(path) as temp:
            faiss.write_index(self.index, str(temp))

    @classmethod
    def load(cls, path: Path) -> "VectorIndex":
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            raise CheckpointError(f"{path} is not a readable faiss index: {str(error).splitlines()[0]}") from None
        probes = 0
        if isinstance(index, faiss.IndexIVF):
            probes = default_probes(index.nlist)
        return cls(index, probes)
