"""Resume state: model + optimizer + progress at the end of each epoch, written atomically.

Loaded with `weights_only=True`: a state file holds tensors, numbers, strings and containers,
never code to run, so a crafted file in a run directory cannot execute anything.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import save_weights
from ..errors import CheckpointError
from ..io_utils import atomic_path
from .logs import write_history


def save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as temp:
        torch.save(state, temp)


def load_state(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
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
               weights_file: str, state_file: str, step_log: list, epoch_log: list, keep_weights: bool = True) -> None:
    """End of an epoch: weights (unless an earlier epoch stays the best), resume state and history, atomically."""
    if keep_weights:
        save_weights(model, run_dir / weights_file)
    save_state(run_dir / state_file, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                      "epoch": epoch_log[-1]["epoch"], "steps": step_log, "epochs": epoch_log})
    write_history(run_dir, stage, step_log, epoch_log)
