"""Memory banks: documents (an image and its caption) embedded by the retriever, with a faiss index.

The default bank is the 55k training digits. Any folder can be a bank instead: images plus a
`manifest.jsonl` of rows {"file": ..., "caption": ...} (what `generate` writes; other fields are
ignored). A bank is embedded once and cached under the cache directory, keyed by the retriever's
weights and the folder's content, so a changed file or caption rebuilds it and nothing is written
into the user's folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.colored import load_splits
from ..data.mnist import default_cache_dir
from ..errors import MemoryFolderError, PromptError, TinyChameleonError
from ..imaging import read_image
from ..io_utils import atomic_path, json_lines, write_json
from .index import VectorIndex
from .retriever import Retriever

MANIFEST = "manifest.jsonl"
MAX_MEMORY_ROWS = 1_000_000


@dataclass
class Hit:
    rank: int          # 1 = best
    score: float       # cosine similarity of the query with the document
    caption: str
    position: int      # row of the bank
    file: str | None   # memory folders: the image's path; the training bank: None (see position)

    def to_dict(self, query: int) -> dict:
        where = {"file": self.file} if self.file is not None else {"index": self.position}
        return {"query": query, "rank": self.rank, "score": round(self.score, 6), "caption": self.caption, **where}


@dataclass
class MemoryBank:
    name: str                    # "train" or the folder's path
    captions: list[str]
    vectors: np.ndarray          # (N, D) unit vectors of the documents
    index: VectorIndex
    files: list[str] | None      # paths of the images (folders only)
    cache_dir: str | Path | None = None
    _train_images: np.ndarray | None = None

    def images(self, positions: list[int]) -> np.ndarray:
        """The pictures of some documents, (len(positions), 28, 28, 3) levels (to show hits)."""
        if self.files is not None:
            return np.stack([read_image(self.files[position]) for position in positions])
        if self._train_images is None:
            self._train_images = load_splits(cache_dir=self.cache_dir).train.images
        return self._train_images[list(positions)]

    def __len__(self) -> int:
        return len(self.captions)

    def search(self, queries: np.ndarray, k: int, min_score: float = -1.0, distinct: float | None = None
               ) -> list[list[Hit]]:
        """(Q, D) query vectors -> per query the k best documents with score >= min_score (relevance), best first.

        distinct (CM3Leon's diversity): a hit whose vector has cosine >= distinct with the query or with a
        better hit is skipped as a near-duplicate, and the next one taken (None: plain top k)."""
        fetched = k if distinct is None else min(len(self), 4 * k + 16)
        scores, ids = self.index.search(queries, fetched)
        results = []
        for query, row_scores, row_ids in zip(queries, scores, ids):
            kept = [(float(score), int(row)) for score, row in zip(row_scores, row_ids) if row >= 0 and score >= min_score]
            if distinct is not None:
                kept = self._distinct(query, kept, k, distinct)
            results.append([Hit(rank + 1, score, self.captions[row], row, self.files[row] if self.files else None)
                            for rank, (score, row) in enumerate(kept[:k])])
        return results

    def _distinct(self, query: np.ndarray, candidates: list[tuple[float, int]], k: int, threshold: float
                  ) -> list[tuple[float, int]]:
        chosen = []
        for score, row in candidates:
            vector = self.vectors[row]
            if float(vector @ query) >= threshold:
                continue                                 # the query itself (or a copy of it) is no news
            if any(float(vector @ self.vectors[other]) >= threshold for _, other in chosen):
                continue
            chosen.append((score, row))
            if len(chosen) == k:
                break
        return chosen


def embed_queries(retriever: Retriever, queries: list) -> np.ndarray:
    """Queries (text strings or (28, 28, 3) level images, mixed) -> (Q, D) vectors, in order."""
    texts = [row for row, query in enumerate(queries) if isinstance(query, str)]
    images = [row for row, query in enumerate(queries) if not isinstance(query, str)]
    vectors = np.zeros((len(queries), retriever.config.embed_dim), np.float32)
    if texts:
        vectors[texts] = retriever.embed_texts([queries[row] for row in texts])
    if images:
        vectors[images] = retriever.embed_images(np.stack([queries[row] for row in images]))
    return vectors


def _cached(directory: Path, build) -> tuple[np.ndarray, list[str], VectorIndex]:
    """Vectors, captions and index from `directory`, or built by build() -> (vectors, captions) and saved."""
    paths = directory / "vectors.npy", directory / "captions.json", directory / "index.faiss"
    if all(path.exists() for path in paths):
        try:
            return np.load(paths[0]), json.loads(paths[1].read_text()), VectorIndex.load(paths[2])
        except (OSError, ValueError, TinyChameleonError):
            pass  # a damaged cache is rebuilt, never trusted
    vectors, captions = build()
    index = VectorIndex.build(vectors)
    with atomic_path(paths[0]) as temp:
        with open(temp, "wb") as handle:
            np.save(handle, vectors)
    write_json(paths[1], captions)
    index.save(paths[2])
    return vectors, captions, index


def training_bank(retriever: Retriever, cache_dir: str | Path | None = None) -> MemoryBank:
    """The 55k training digits (validation and test digits never enter) as a bank; `index` hits are rows
    of `load_splits().train`."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()

    def build():
        train = load_splits(cache_dir=cache_dir).train
        captions = train.captions()
        return retriever.embed_documents(captions, train.images), captions

    vectors, captions, index = _cached(cache / "memory" / f"train-{retriever.version}", build)
    return MemoryBank("train", captions, vectors, index, None, cache_dir)


def read_memory_manifest(folder: Path) -> tuple[list[str], list[Path]]:
    """Captions and image paths of a memory folder, checked row by row (one clear error for the first bad row)."""
    manifest = folder / MANIFEST
    if not folder.is_dir():
        raise MemoryFolderError(f"--memory {folder} is not a folder")
    if not manifest.is_file():
        raise MemoryFolderError(f"--memory {folder} has no {MANIFEST} (rows {{\"file\": \"a.png\", \"caption\": \"...\"}}, "
                           "as tinychameleon generate writes)")
    captions, files = [], []
    for number, row in json_lines(manifest, "memory manifest", MemoryFolderError):
        if not isinstance(row, dict) or not isinstance(row.get("file"), str) or not isinstance(row.get("caption"), str):
            raise MemoryFolderError(f'{manifest} line {number} must hold {{"file": "a.png", "caption": "..."}}')
        path = folder / row["file"]
        if not path.is_file():
            raise MemoryFolderError(f"{manifest} line {number}: {row['file']} is not a file in {folder}")
        captions.append(row["caption"])
        files.append(path)
        if len(files) > MAX_MEMORY_ROWS:
            raise MemoryFolderError(f"{manifest} has more than {MAX_MEMORY_ROWS} rows")
    if not files:
        raise MemoryFolderError(f"{manifest} lists no images")
    return captions, files


def folder_bank(retriever: Retriever, folder: str | Path, cache_dir: str | Path | None = None) -> MemoryBank:
    """A user's folder as a bank; every caption and image is checked before any embedding."""
    folder = Path(folder)
    captions, files = read_memory_manifest(folder)
    for number, caption in enumerate(captions):
        try:
            retriever.words_of(caption)
        except PromptError as error:
            raise MemoryFolderError(f"{folder / MANIFEST} row {number + 1}: {error}") from None
    digest = hashlib.sha256(retriever.version.encode())
    for caption, path in zip(captions, files):
        stat = path.stat()
        digest.update(json.dumps([caption, path.name, stat.st_size, stat.st_mtime_ns]).encode())
    cache = Path(cache_dir) if cache_dir else default_cache_dir()

    def build():
        images = np.stack([read_image(path) for path in files])  # an unreadable image: ImageInputError names it
        return retriever.embed_documents(captions, images), captions

    vectors, captions, index = _cached(cache / "memory" / f"folder-{digest.hexdigest()[:16]}", build)
    return MemoryBank(str(folder), captions, vectors, index, [str(path) for path in files], cache_dir)


def neighbour_table(vectors: np.ndarray, count: int) -> np.ndarray:
    """(N, D) document vectors -> (N, count) rows of each one's nearest other documents, best first: the
    example itself and exact copies of it (similarity > 0.9999) are never among them."""
    index = VectorIndex.build(vectors, kind="exact")
    scores, ids = index.search(vectors, count + 8)
    table = np.empty((len(vectors), count), dtype=np.int64)
    for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
        keep = row_ids[(row_ids != row) & (row_scores < 0.9999) & (row_ids >= 0)][:count]
        if len(keep) < count:
            raise TinyChameleonError(f"document {row} has fewer than {count} distinct neighbours")
        table[row] = keep
    return table


def load_bank(retriever: Retriever, memory: str | Path | None = None, cache_dir: str | Path | None = None
              ) -> MemoryBank:
    return training_bank(retriever, cache_dir) if memory is None else folder_bank(retriever, memory, cache_dir)
