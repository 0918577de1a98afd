"""The seed design's figures: training curve, three captioned 3x3 sample grids, a temperature sweep."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.colored import load_colored_mnist
from ..imaging import caption_grid
from ..io_utils import atomic_path
from ..pipeline import Pipeline
from ..training.logs import plot_curve

SWEEP_TEMPERATURES = (0.1, 0.5, 1.0, 1.5, 2.0)
SWEEP_PROMPTS = ("dark green eight on bright cyan", "plain white seven on dark blue", "light pink four on plain black")


def save_image(image, path: Path) -> Path:
    with atomic_path(path) as temp:
        image.save(temp, format="PNG")
    return path


def write_figures(pipeline: Pipeline, out_dir: str | Path, seed: int = 0, cache_dir=None, count: int = 9
                  ) -> dict[str, Path]:
    """Write training_curve.png and the three sample grids into out_dir; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    metrics_path = Path(pipeline.source) / "transformer_metrics.json"
    if metrics_path.exists():
        history = json.loads(metrics_path.read_text())
        written["training_curve"] = plot_curve(out_dir, history["steps"], history["epochs"],
                                               out_dir / "training_curve.png")
    _, test = load_colored_mnist(pipeline.config.data_seed, cache_dir)
    prompts = test.captions()[:count]
    images = pipeline.generate_images(prompts, n=1, seed=seed)
    written["text_to_image"] = save_image(caption_grid(images, prompts, title="text -> image (prompt below)"),
                                          out_dir / "text_to_image.png")
    real = test.images[:count]
    captions = pipeline.caption(real, seed=seed)
    written["image_to_text"] = save_image(caption_grid(real, captions, title="image -> text (real test images)"),
                                          out_dir / "image_to_text.png")
    sampled, sampled_captions = pipeline.sample(count, seed=seed)
    written["unconditional"] = save_image(caption_grid(sampled, sampled_captions, title="unconditional"),
                                          out_dir / "unconditional.png")
    written["temperature_sweep"] = save_image(temperature_sweep(pipeline, seed), out_dir / "temperature_sweep.png")
    return written


def temperature_sweep(pipeline: Pipeline, seed: int = 0, per_prompt: int = 2):
    """One column per temperature, rows = fixed prompts x samples: how sampling temperature trades
    variety for well-formed digits (the MNIST VQ-GPT seed's figure)."""
    rows = [prompt for prompt in SWEEP_PROMPTS for _ in range(per_prompt)]
    columns = [pipeline.generate_images(rows, n=1, seed=seed, temperature=t) for t in SWEEP_TEMPERATURES]
    images = [column[row] for row in range(len(rows)) for column in columns]
    captions = [f"t={t}: {' '.join(prompt.split()[:3])}" for prompt in rows for t in SWEEP_TEMPERATURES]
    return caption_grid(images, captions, columns=len(SWEEP_TEMPERATURES), scale=4,
                        title="temperature sweep (columns: 0.1, 0.5, 1.0, 1.5, 2.0)")


__all__ = ["write_figures"]
