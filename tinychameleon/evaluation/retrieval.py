"""How well the retriever reads and finds: zero-shot reading, recall@k within a split, and search of the
training bank by text and by image, each with its ceiling beside it.

Captions repeat (7300 possible, 10k test digits), so a hit counts when its caption equals the query's,
not only when it is the query's own row.
"""

from __future__ import annotations

import time

import numpy as np

from ..data.colored import ColoredMNIST
from ..retrieval.memory import MemoryBank
from ..retrieval.retriever import Retriever, reading_accuracy


def recall_at(scores: np.ndarray, right: np.ndarray, ks=(1, 5)) -> dict[int, float]:
    """scores (Q, N), right (Q, N) bool -> share of queries with a right item among their k best."""
    order = np.argsort(-scores, axis=1)[:, :max(ks)]
    found = np.take_along_axis(right, order, axis=1)
    return {k: float(found[:, :k].any(1).mean()) for k in ks}


def evaluate_retriever(retriever: Retriever, split: ColoredMNIST, bank: MemoryBank, judge=None) -> dict:
    captions = np.array(split.captions())
    started = time.perf_counter()
    results = {"examples": len(split), **{f"reading_{key}": value
                                          for key, value in reading_accuracy(retriever, split).items()}}
    if judge is not None:  # the project's supervised judge, trained on the same training digits: a ceiling
        judged = judge.predict(split.images)
        results["judge_digit"] = float((judged["digit"] == split.digits).mean())
        results["judge_colors"] = float(((judged["foreground"] == split.foreground)
                                         & (judged["background"] == split.background)).mean())

    # Within the split: each caption against all images, each image against the split's distinct captions.
    text_vectors, image_vectors = retriever.embed_texts(list(captions)), retriever.embed_images(split.images)
    same = captions[:, None] == captions[None, :]                                     # (N, N)
    for k, value in recall_at(text_vectors @ image_vectors.T, same).items():
        results[f"text_to_image_recall@{k}"] = value
    distinct, inverse = np.unique(captions, return_inverse=True)
    right = inverse[:, None] == np.arange(len(distinct))[None, :]                     # (N images, C captions)
    for k, value in recall_at(image_vectors @ retriever.embed_texts(list(distinct)).T, right).items():
        results[f"image_to_text_recall@{k}"] = value

    # Search of the bank: a caption finds a document with that caption; an image finds one with its caption.
    bank_captions = set(bank.captions)
    text_hits = bank.search(text_vectors, 1)
    image_hits = bank.search(image_vectors, 1)
    results["text_search_top1"] = float(np.mean([hits[0].caption == caption for hits, caption in zip(text_hits, captions)]))
    results["image_search_top1"] = float(np.mean([hits[0].caption == caption
                                                  for hits, caption in zip(image_hits, captions)]))
    results["search_ceiling"] = float(np.mean([caption in bank_captions for caption in captions]))
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results
