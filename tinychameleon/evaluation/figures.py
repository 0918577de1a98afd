"""The seed design's figures: training curve and three captioned 3x3 sample grids."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.colored import load_colored_mnist
from ..imaging import caption_grid
from ..io_utils import atomic_path
from ..pipeline import Pipeline
from ..training.logs import plot_curve


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
    return written


__all__ = ["write_figures"]
