"""Load mix against a running server: heavy requests beside light ones and health checks.

    python scripts/load_mix.py http://127.0.0.1:8000 --heavy 4 --light-clients 16 --seconds 20

Prints one line: health p50/p99, light p50/p95, status counts. Used for the hardening numbers
in BENCHMARKS.md; tests/test_server_live.py runs a small version against the tiny checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import numpy as np

PROMPT = "dark green eight on bright cyan"
HEAVY = {"prompt": PROMPT, "n": 64, "candidates": 4, "guidance": 2.0}   # the cost budget's maximum (512 rows)
LIGHT = {"prompt": PROMPT, "n": 1, "candidates": 1, "guidance": 2.0}


async def mix(url: str, heavy: int, light_clients: int, seconds: float) -> dict:
    health, light, statuses = [], [], {}
    stop_at = time.perf_counter() + seconds

    async def heavy_client(http):
        while time.perf_counter() < stop_at:
            response = await http.post("/api/generate", json=HEAVY)
            statuses[f"heavy {response.status_code}"] = statuses.get(f"heavy {response.status_code}", 0) + 1

    async def light_client(http, index):
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            if index % 2:
                response = await http.get("/api/health")
                health.append(time.perf_counter() - started)
            else:
                response = await http.post("/api/generate", json=LIGHT)
                light.append(time.perf_counter() - started)
            key = f"light {response.status_code}"
            statuses[key] = statuses.get(key, 0) + 1
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await asyncio.gather(*(heavy_client(http) for _ in range(heavy)),
                             *(light_client(http, index) for index in range(light_clients)))
        after = time.perf_counter()
        final = await http.post("/api/generate", json=LIGHT)
        recovered_s = time.perf_counter() - after
    return {"health_p50_ms": 1000 * float(np.percentile(health, 50)), "health_p99_ms": 1000 * float(np.percentile(health, 99)),
            "light_p50_ms": 1000 * float(np.percentile(light, 50)), "light_p95_ms": 1000 * float(np.percentile(light, 95)),
            "statuses": statuses, "after_mix_status": final.status_code, "after_mix_s": recovered_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--heavy", type=int, default=4)
    parser.add_argument("--light-clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(mix(args.url, args.heavy, args.light_clients, args.seconds))))


if __name__ == "__main__":
    main()
