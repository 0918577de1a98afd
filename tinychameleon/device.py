"""Device choice, mixed precision and torchrun/DistributedDataParallel setup."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str = "auto") -> torch.device:
    """A device name -> torch.device; ConfigError for names torch does not know or hardware that is absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d{1,3})?", str(name)):
        raise ConfigError(f"unknown device {str(name)[:40]!r}; choose {DEVICE_NAMES}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is available")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True, precision: str = "fp32"):
    """bf16 autocast (no loss scaling needed) on CUDA, and on CPU when precision is "bf16"; else plain fp32.

    CPUs with AVX512-BF16 run bf16 matmuls faster than fp32; without it bf16 is emulated and slower,
    which is why the CPU path is opt-in (train.precision) rather than automatic.
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and precision == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Distributed:
    """Who this process is under torchrun; rank 0 of 1 when run plainly."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def agree(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's decision, shared by every rank (a plain run just returns it)."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.broadcast(value, src=0)
        return bool(value.item())


def init_distributed(device_name: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the process group torchrun set up (env RANK/WORLD_SIZE), or run single-process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank), device
