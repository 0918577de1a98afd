"""Resume state: model + optimizer + progress at the end of each epoch, written atomically.

Loaded with `weights_only=True`: a state file holds tensors, numbers, strings and containers,
never code to run, so a crafted file in a run directory cannot execute anything.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import torch

from ..checkpoint import save_weights
from ..errors import CheckpointError
from ..io_utils import atomic_path, write_json
from .logs import write_history


PROGRESS_FILE = "progress.json"  # which stages are finished: the one record "done" is read from


def read_progress(run_dir: Path) -> dict:
    """{"vqvae": {"finished": bool}, "transformer": {...}}; a missing or unreadable record means nothing is."""
    try:
        progress = json.loads((Path(run_dir) / PROGRESS_FILE).read_text())
        return progress if isinstance(progress, dict) else {}
    except (OSError, ValueError):
        return {}


def stage_finished(run_dir: Path, stage: str) -> bool:
    entry = read_progress(run_dir).get(stage)
    return isinstance(entry, dict) and entry.get("finished") is True


def mark_finished(run_dir: Path, stage: str) -> None:
    """Written last, after every artifact of the stage, in one atomic step: a kill at any earlier instant
    (inside any save included) leaves the stage unfinished, and --resume continues it."""
    progress = read_progress(run_dir)
    progress[stage] = {"finished": True}
    write_json(Path(run_dir) / PROGRESS_FILE, progress)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Temp files of writes a kill interrupted (atomic_path names them .NAME.*.tmp); they are never data."""
    stale = sorted(Path(run_dir).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as temp:
        try:
            torch.save(state, temp)
        except RuntimeError as error:  # torch reports a failed write (a full disk) as a RuntimeError
            raise OSError(errno.EIO, f"writing {path} failed ({str(error).splitlines()[0]}); is the disk full?") from None


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


def elapsed_before(epoch_log: list[dict]) -> float:
    """Seconds of training the epochs so far took (0 for a fresh run): a resumed run's per-epoch `elapsed_s` goes on
    from there, so its curve and logs count the whole run, not only the last segment."""
    return max((row.get("elapsed_s", 0.0) for row in epoch_log), default=0.0)


def save_epoch(run_dir: Path, stage: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               weights_file: str, state_file: str, step_log: list, epoch_log: list, keep_weights: bool = True) -> None:
    """End of an epoch: weights (unless an earlier epoch stays the best), resume state and history, atomically."""
    if keep_weights:
        save_weights(model, run_dir / weights_file)
    save_state(run_dir / state_file, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                      "epoch": epoch_log[-1]["epoch"], "steps": step_log, "epochs": epoch_log})
    write_history(run_dir, stage, step_log, epoch_log)
