"""Work in slices of rows: every batched loop in the package (encoding, sampling, scoring) uses this."""

from __future__ import annotations

from typing import Iterator


def batch_slices(total: int, size: int) -> Iterator[slice]:
    """slice(0, size), slice(size, 2 * size), ... covering range(total); the last may be shorter."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))
