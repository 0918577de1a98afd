"""Atomic file writes: a crash mid-write never leaves a half-written checkpoint or cache."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; on success it is renamed over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        os.chmod(temp, 0o644)  # mkstemp makes 0600 files; caches and checkpoints are meant to be shared
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def write_json(path: str | Path, data) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(data, indent=2) + "\n")


def json_lines(path: str | Path, what: str, error=None):
    """(line number, value) of each non-blank line of a JSON-lines file. An unreadable file or a line that is
    not JSON raises `error` (a user-facing exception class; TinyChameleonError by default) naming `what`."""
    from .errors import TinyChameleonError

    error = error or TinyChameleonError
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as failure:
        raise error(f"cannot read {what} {path}: {failure}") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as failure:
                raise error(f"{path} line {number} is not JSON: {failure.msg}") from None
