"""The one registry of what the system can be asked to do. The CLI's commands, the web server's endpoints and the
worker's job kinds all read TASKS, so a task is named, described and run in one place.

A task that goes through the worker has a `run`: a batch of requests' rows (payload) -> one result per row, on a
Pipeline. Requests of a task that `shares_batches` (with equal settings and no fixed seed) merge into one pipeline
call; the others carry their own images and run alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str                      # the CLI command and the worker's job kind
    summary: str                   # the command's help and the endpoint's description
    endpoint: str                  # the JSON API's path
    run: Callable | None = None    # (pipeline, payload, seed, settings) -> results, one per payload row
    shares_batches: bool = False


def _generate(pipeline, prompts: list[str], seed, settings) -> list:
    """-> (image, the caption drawn for) per prompt: prompts may hold blanks the sampler fills."""
    return list(zip(*pipeline.draw(prompts, n=1, seed=seed, **settings)))


def _caption(pipeline, images: list[np.ndarray], seed, settings) -> list[str]:
    return pipeline.caption(np.stack(images), seed=seed, **settings)


def _sample(pipeline, rows: list[None], seed, settings) -> list:
    images, captions = pipeline.sample(len(rows), seed=seed, **settings)
    return list(zip(images, captions))


def _complete(pipeline, rows: list[tuple], seed, settings) -> list:
    """rows: n copies of (image, keep, prompt) -> (image, caption) per row."""
    levels, keep, prompt = rows[0]
    return list(zip(*pipeline.complete(levels[None], keep, prompt, n=len(rows), seed=seed, **settings)))


def _continue(pipeline, rows: list[tuple], seed, settings) -> list:
    """rows: n copies of (prompt, images) -> one Continuation per row."""
    prompt, images = rows[0]
    return pipeline.continue_documents(prompt, images, n=len(rows), seed=seed, **settings)[0]


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("generate", "text -> image: draw images for captions", "/api/generate", _generate, shares_batches=True),
    Task("caption", "image -> text: caption images (any size, RGB/RGBA/gray)", "/api/caption", _caption,
         shares_batches=True),
    Task("sample", "unconditional: sample image + caption pairs", "/api/sample", _sample, shares_batches=True),
    Task("complete", "keep part of each image and let the model draw the rest", "/api/complete", _complete),
    Task("continue", "mixed-modal documents: continue a prompt of words and <image> placeholders with text and "
                     "images the model decides to draw", "/api/continue", _continue),
    Task("search", "find the documents of a memory bank nearest to a text or an image", "/api/search"),
)}
