"""Server memory under a burst of large uploads: baseline RSS, peak RSS during 12 concurrent 4096x4096 PNG
uploads to /api/caption, and RSS a few seconds after (read from /proc of the server process).

    python scripts/upload_memory.py --uploads 12 --size 4096
"""

from __future__ import annotations

import argparse
import asyncio
import io
import threading
import time

import httpx
from PIL import Image, ImageDraw

from serving import served


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def big_png(size: int) -> bytes:
    image = Image.new("RGB", (size, size), (0, 0, 170))
    ImageDraw.Draw(image).line((size // 2, size // 8, size // 2 + size // 40, size * 7 // 8), fill=(255, 255, 255),
                               width=size // 14)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def burst(url: str, data: bytes, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=120) as client:
        responses = await asyncio.gather(*(client.post(url + "/api/caption", files={"file": ("big.png", data)})
                                           for _ in range(count)))
    return [response.status_code for response in responses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=12)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    with served(args.port, "--queue-size", "64", "--timeout", "120") as (url, server):
        data = big_png(args.size)
        asyncio.run(burst(url, big_png(64), 1))          # warm up: the first request loads lazily
        time.sleep(1)
        baseline = rss_mb(server.pid)
        peak, done = baseline, threading.Event()

        def watch():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mb(server.pid))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.perf_counter()
        codes = asyncio.run(burst(url, data, args.uploads))
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
        time.sleep(3)
        after = rss_mb(server.pid)
        print(f"{args.uploads} uploads of {args.size}x{args.size} ({len(data) / 1024:.0f} KB each): status "
              f"{sorted(set(codes))}, {seconds:.1f} s; RSS baseline {baseline:.0f} MB, peak {peak:.0f} MB "
              f"(+{peak - baseline:.0f}), 3 s after {after:.0f} MB (+{after - baseline:.0f})")


if __name__ == "__main__":
    main()
