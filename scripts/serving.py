"""For the measuring scripts: run `tinychameleon serve` in the background, wait until it answers, stop it after.

    from serving import served
    with served(8766, "--timeout", "120") as (url, process): ...
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager

import httpx


@contextmanager
def served(port: int, *flags: str):
    process = subprocess.Popen([sys.executable, "-m", "tinychameleon", "serve", "--port", str(port), *flags])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)
