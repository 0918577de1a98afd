"""Shared fixtures: a tiny checkpoint trained once per session on real (subsampled) data."""

from __future__ import annotations

import pytest

from tinychameleon.config import make_config
from tinychameleon.data.mnist import default_cache_dir


@pytest.fixture(scope="session")
def cache_dir():
    return default_cache_dir()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cache_dir):
    """Train the `tiny` preset end to end (VQ-VAE + transformer) into a fresh run directory."""
    from tinychameleon.training.run import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(make_config("tiny"), run_dir, cache_dir=cache_dir, progress=False, device_name="cpu")
    return run_dir


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_run):
    from tinychameleon.pipeline import Pipeline

    return Pipeline.from_pretrained(tiny_run)


@pytest.fixture(scope="session")
def colored(cache_dir):
    from tinychameleon.data.colored import load_colored_mnist

    return load_colored_mnist(0, cache_dir)


@pytest.fixture(scope="session")
def document_run(tmp_path_factory, cache_dir):
    """The `tiny` preset with a patches tokenizer (documents repaint a digit's color tokens) trained on pairs and
    256 task-family documents, their prompts closed by <eop> as in the shipped recipe: a checkpoint that speaks in
    documents (badly, but by the rules)."""
    from tinychameleon.training.run import train

    run_dir = tmp_path_factory.mktemp("runs") / "documents"
    config = make_config("tiny", vq={"kind": "patches", "codebook_size": 64},
                         train={"documents": 256, "prompt_end": True})
    train(config, run_dir, cache_dir=cache_dir, progress=False, device_name="cpu")
    return run_dir


@pytest.fixture(scope="session")
def document_pipeline(document_run):
    from tinychameleon.pipeline import Pipeline

    return Pipeline.from_pretrained(document_run)


@pytest.fixture(scope="session")
def scales_run(tmp_path_factory, cache_dir):
    """The `tiny` preset as a next-scale run: a multi-scale tokenizer and a next-scale transformer."""
    from tinychameleon.training.run import train

    run_dir = tmp_path_factory.mktemp("runs") / "scales"
    config = make_config("tiny", vq={"kind": "scales", "codebook_size": 16})
    train(config, run_dir, cache_dir=cache_dir, progress=False, device_name="cpu")
    return run_dir
