"""Checkpoint directories: JSON config + safetensors weights + vocabulary, written atomically.

A run directory holds everything needed to rebuild the models:
  config.json         RunConfig (both stages)
  vocab.json          the joint id layout
  vqvae.safetensors   image tokenizer weights (stage 1)
  model.safetensors   transformer weights (stage 2)
  *_state.pt          optimizer + progress, for --resume
  metrics.json/.csv, training_curve.png
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import RunConfig
from ..errors import CheckpointError
from ..io_utils import atomic_path, write_json
from ..model import Transformer
from ..tokenizers.vocab import Vocab
from ..tokenizers.vqvae import VQVAE

CONFIG_FILE, VOCAB_FILE = "config.json", "vocab.json"
VQVAE_FILE, MODEL_FILE = "vqvae.safetensors", "model.safetensors"


def save_weights(module: torch.nn.Module, path: Path) -> None:
    state = {key: value.detach().contiguous().cpu() for key, value in module.state_dict().items()}
    with atomic_path(path) as temp:
        save_file(state, str(temp))


def load_weights(module: torch.nn.Module, path: Path) -> None:
    try:
        state = load_file(str(path))
        module.load_state_dict(state)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path} is corrupt or does not match its config: {str(error).splitlines()[0]}") from None


def save_config(run_dir: Path, config: RunConfig) -> None:
    write_json(run_dir / CONFIG_FILE, config.to_dict())
    write_json(run_dir / VOCAB_FILE, Vocab(config.vq.codebook_size).to_dict())


def load_config(run_dir: str | Path) -> RunConfig:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"checkpoint directory {run_dir} does not exist")
    path = run_dir / CONFIG_FILE
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} is not a checkpoint: {CONFIG_FILE} is missing") from None
    except (json.JSONDecodeError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from None


def build_vqvae(config: RunConfig) -> VQVAE:
    return VQVAE(config.vq)


def build_transformer(config: RunConfig) -> Transformer:
    config.model.vocab_size = Vocab(config.vq.codebook_size).size
    return Transformer(config.model)


def _load_module(run_dir, config, filename: str, build, what: str):
    run_dir = Path(run_dir)
    config = config or load_config(run_dir)
    path = run_dir / filename
    if not path.exists():
        raise CheckpointError(f"{run_dir} has no trained {what} ({filename} is missing)")
    module = build(config)
    load_weights(module, path)
    return module.eval()


def load_vqvae(run_dir: str | Path, config: RunConfig | None = None) -> VQVAE:
    return _load_module(run_dir, config, VQVAE_FILE, build_vqvae, "image tokenizer")


def load_transformer(run_dir: str | Path, config: RunConfig | None = None) -> Transformer:
    return _load_module(run_dir, config, MODEL_FILE, build_transformer, "transformer")


def module_hash(module: torch.nn.Module) -> str:
    """A short content hash of a module's weights: keys the cache of encoded datasets."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as temp:
        torch.save(state, temp)


def load_state(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated state file should say so, not crash deep in torch
        raise CheckpointError(f"cannot resume: {path} is corrupt ({error}); delete it to start over") from None


def resume_from(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list, list]:
    """Restore model and optimizer from a state file; return (epochs done, step log, epoch log)."""
    state = load_state(path)
    if not state:
        return 0, [], []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], state["steps"], state["epochs"]


def save_epoch(run_dir: Path, stage: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               weights_file: str, state_file: str, step_log: list, epoch_log: list) -> None:
    """End of an epoch: weights, resume state and history, each written atomically."""
    from .logs import write_history

    save_weights(model, run_dir / weights_file)
    save_state(run_dir / state_file, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                      "epoch": epoch_log[-1]["epoch"], "steps": step_log, "epochs": epoch_log})
    write_history(run_dir, stage, step_log, epoch_log)
