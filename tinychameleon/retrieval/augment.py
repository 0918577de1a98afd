"""Retrieval as a document transform (CM3Leon): a query's nearest documents of a memory bank become the
context a prompt is read after, "<image> CAPTION . <image> CAPTION . <the prompt>", as in training
(documents/families.py, the "from memory" families)."""

from __future__ import annotations

import numpy as np

from ..documents.families import context_text
from .memory import MemoryBank, embed_queries
from .retriever import Retriever


DISTINCT = 0.98  # retrieved documents this alike (cosine) to the query or to a better one are skipped (diversity)


def retrieve_contexts(retriever: Retriever, bank: MemoryBank, queries: list, k: int
                      ) -> list[tuple[str, np.ndarray]]:
    """Per query (a text or a (28, 28, 3) image): its k nearest documents, near-duplicates skipped, as a context
    string with <image> placeholders and their (k, 28, 28, 3) pictures, in that order (nearest first)."""
    contexts = []
    for hits in bank.search(embed_queries(retriever, queries), k, distinct=DISTINCT):
        contexts.append((context_text([hit.caption for hit in hits]), bank.images([hit.position for hit in hits])))
    return contexts
