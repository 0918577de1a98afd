"""Does a heavy kind of request starve small ones? Median latency of a small generate while 3 clients loop on
`complete` (n=8, no prompt: draws, reads and redraws), against the same 3 clients looping on small generates.
Serves the shipped checkpoint; statuses of every request are counted.

    python scripts/complete_fairness.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections import Counter

import httpx
import numpy as np
from PIL import Image

from serving import served

SMALL = {"prompt": "plain white seven on dark blue", "n": 1, "candidates": 1}


def digit_png() -> bytes:
    from tinychameleon.data.colored import load_splits

    image = load_splits().test.images[0] * 85
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


async def condition(url: str, background: str, seconds: float, upload: bytes) -> tuple[float, Counter]:
    statuses, probe = Counter(), []
    stop_at = time.perf_counter() + seconds

    async def loop_client(http):
        while time.perf_counter() < stop_at:
            if background == "complete":
                response = await http.post("/api/complete", files={"file": ("a.png", upload)},
                                           data={"keep": "top", "n": "8"})
            else:
                response = await http.post("/api/generate", json=SMALL)
            statuses[response.status_code] += 1
            if response.status_code == 503:
                await asyncio.sleep(float(response.headers.get("retry-after", 1)))

    async def probe_client(http):
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            response = await http.post("/api/generate", json=SMALL)
            statuses[response.status_code] += 1
            probe.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await asyncio.gather(*(loop_client(http) for _ in range(3)), probe_client(http))
    return statistics.median(probe), statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--port", type=int, default=8767)
    args = parser.parse_args()
    with served(args.port) as (url, server):
        upload = digit_png()
        results = {name: asyncio.run(condition(url, name, args.seconds, upload)) for name in ("generate", "complete")}
        for name, (median, statuses) in results.items():
            print(f"3 clients looping on {name}: small generate median {median * 1000:.0f} ms; statuses {dict(statuses)}")
        ratio = results["complete"][0] / results["generate"][0]
        print(f"ratio {ratio:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
