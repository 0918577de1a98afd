"""Are requests priced by the work they do? For every kind of request on the shipped models, the time the server
predicts before admitting it against the time it takes alone, in the real app (TestClient, one request at a time).

Two predictions per kind: the *first* request of a kind is priced from its model's calibrated generate, the *next*
ones from the batches the worker measured for that kind (web/worker.py, BatchTimes). A factor is measured /
predicted; docs/bad-input.md states the promise, and a slow test in tests/test_web.py holds it.

    python scripts/cost_check.py --repeats 3 --out runs/cost_check.json
"""

from __future__ import annotations

import argparse
import statistics
import time

from fastapi.testclient import TestClient

from tinychameleon.data.colored import load_splits
from tinychameleon.imaging import png_bytes
from tinychameleon.io_utils import write_json
from tinychameleon.pipeline import PRETRAINED, Pipeline
from tinychameleon.web.server import ServerSettings, create_app

PROMPT = "dark green eight on bright cyan"


def requests(digit: bytes) -> dict:
    """name -> a function posting that request with a client."""
    upload = {"file": ("a.png", digit)}
    return {
        "generate n=1": lambda c: c.post("/api/generate", json={"prompt": PROMPT, "n": 1}),
        "generate n=8": lambda c: c.post("/api/generate", json={"prompt": PROMPT, "n": 8}),
        "generate n=8 var": lambda c: c.post("/api/generate", json={"prompt": PROMPT, "n": 8, "model": "var"}),
        "sample n=8": lambda c: c.post("/api/sample", json={"n": 8}),
        "sample n=8 var": lambda c: c.post("/api/sample", json={"n": 8, "model": "var"}),
        "caption": lambda c: c.post("/api/caption", files=upload),
        "caption var": lambda c: c.post("/api/caption", files=upload, params={"model": "var"}),
        "complete n=8": lambda c: c.post("/api/complete", files=upload, data={"keep": "top", "n": "8"}),
        "complete n=8 with prompt": lambda c: c.post("/api/complete", files=upload,
                                                     data={"keep": "top", "n": "8", "prompt": "* * * on * *"}),
        "continue edit n=4": lambda c: c.post("/api/continue", files=[("images", ("a.png", digit))],
                                              data={"prompt": "<image> make the digit plain red .", "n": "4"}),
        "continue question n=4": lambda c: c.post("/api/continue", files=[("images", ("a.png", digit))],
                                                  data={"prompt": "<image> what digit is this ?", "n": "4"}),
    }


def cost_factors(app, posts: dict, repeats: int) -> dict:
    """Send each request 1 + repeats times, one at a time, to the real app; per request name: its cost, the
    first prediction (calibrated generate rate) and the steady one (its own measured rate) against the time."""
    worker, predictions = app.state.worker, []
    predict = worker.predicted_seconds

    def recording(job, waiting=True):   # what admission predicted
        seconds = predict(job, waiting)
        if waiting:
            predictions.append((job.cost, seconds))
        return seconds

    worker.predicted_seconds = recording
    rows = {}
    with TestClient(app) as client:
        for name, post in posts.items():
            timings = []
            for _ in range(1 + repeats):
                started = time.perf_counter()
                response = post(client)
                seconds = time.perf_counter() - started
                assert response.status_code == 200, (name, response.status_code, response.text)
                timings.append((*predictions[-1], seconds))
            (cost, first_predicted, first_seconds), steady = timings[0], timings[1:]
            rows[name] = {"cost": cost, "first seconds": round(first_seconds, 3),
                          "first predicted": round(first_predicted, 3),
                          "first factor": round(first_seconds / first_predicted, 2),
                          "seconds": round(statistics.median(t[2] for t in steady), 3),
                          "predicted": round(statistics.median(t[1] for t in steady), 3),
                          "factor": round(statistics.median(t[2] / t[1] for t in steady), 2)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed requests per kind after the first")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    digit = png_bytes(load_splits().validation.images[0])
    app = create_app(Pipeline.from_pretrained(), ServerSettings(timeout_s=60),
                     models={"var": Pipeline.from_pretrained(PRETRAINED["var"])})
    rows = cost_factors(app, requests(digit), args.repeats)
    for name, row in rows.items():
        print(f"{name:26s} cost {row['cost']:3d} | first {row['first seconds']:.2f}s predicted "
              f"{row['first predicted']:.2f}s (x{row['first factor']:.2f}) | then {row['seconds']:.2f}s predicted "
              f"{row['predicted']:.2f}s (x{row['factor']:.2f})")
    factors = [row["factor"] for row in rows.values()]
    first = [row["first factor"] for row in rows.values()]
    summary = {"steady factor range": [min(factors), max(factors)], "first factor range": [min(first), max(first)]}
    print(summary)
    if args.out:
        write_json(args.out, {"rows": rows, **summary})


if __name__ == "__main__":
    main()
