"""Training records: per-minibatch losses (CSV), per-epoch validation losses (JSON), and the curve (PNG)."""

from __future__ import annotations

import csv
from pathlib import Path

from ..io_utils import atomic_path, write_json


def write_history(run_dir: Path, stage: str, steps: list[dict], epochs: list[dict]) -> None:
    write_json(run_dir / f"{stage}_metrics.json", {"epochs": epochs, "steps": steps})
    if steps:
        with atomic_path(run_dir / f"{stage}_metrics.csv") as temp:
            with open(temp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(steps[0]))
                writer.writeheader()
                writer.writerows(steps)


def plot_curve(run_dir: Path, steps: list[dict], epochs: list[dict], path: Path | None = None) -> Path:
    """Train loss per minibatch (light) and its running mean, validation loss per epoch (markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = path or run_dir / "training_curve.png"
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    if steps:
        xs = [row["step"] for row in steps]
        losses = [row["loss"] for row in steps]
        axis.plot(xs, losses, color="tab:blue", alpha=0.25, linewidth=0.6, label="train (minibatch)")
        window = max(1, len(losses) // 50)
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        axis.plot(xs, smooth, color="tab:blue", linewidth=1.5, label="train (running mean)")
    # Runs before the validation split logged the test split each epoch; both are drawn when present.
    for key, color, label in (("validation_nll", "black", "validation"),
                              ("validation_text_nll", "tab:green", "validation, text"),
                              ("validation_image_nll", "tab:red", "validation, image"),
                              ("test_nll", "black", "test"), ("test_text_nll", "tab:green", "test, text"),
                              ("test_image_nll", "tab:red", "test, image")):
        points = [(row["step"], row[key]) for row in epochs if key in row]
        if points:
            axis.plot(*zip(*points), "o-", color=color, markersize=3, linewidth=1, label=label)
    axis.set_xlabel("step")
    axis.set_ylabel("nats / token")
    axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png")
    plt.close(figure)
    return path
