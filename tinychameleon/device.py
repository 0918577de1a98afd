"""Device choice, mixed precision and torchrun/DistributedDataParallel setup."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from .errors import ConfigError


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


class DeviceTables:
    """For rule tables a sampler reads at every step: `to(device)` moves every tensor attribute once and returns
    the object. Without it each step's `.to(device)` copies the table from the host again: on a GPU the pair
    rules' 2,100 x 2,100 `follows` table (4.4 MB) cost more than the replayed decode step itself."""

    def to(self, device):
        for name, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4   # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next tensors instead of giving it back to the system.

    By default glibc maps every block over a few MB (a batch's logits, their gradients and fp32 copies) fresh from
    the kernel and unmaps it when freed, so each training step page-faults and zeroes hundreds of MB again. Kept, a
    `best` step on real batches took 773-817 ms against 1045-1163 (pairs) and 1456-1514 against 1919-1958 ms
    (documents) on a 2-core CPU (BENCHMARKS.md, "Training keeps freed memory"). The price: the process keeps its
    peak memory instead of shrinking after it, so only training sets it. Returns whether malloc took the settings
    (False off glibc: macOS, Windows, musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) & bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bf16 matmuls in hardware: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX.
    Elsewhere bf16 is emulated: on a 2-core AVX2-only CPU one `best` training step took 40.1 s under bf16 autocast
    against 2.6 s in fp32 (BENCHMARKS.md, "bf16 on a CPU without it")."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")   # private but stable since torch 2.1
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolved_precision(device: torch.device, precision: str) -> str:
    """train.precision as a run uses it: on CUDA always bf16 (see autocast); elsewhere "auto" is bf16 where the CPU
    has it natively (native_bf16), else fp32, and "fp32" and "bf16" stand as asked."""
    if device.type == "cuda":
        return "bf16"
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def trains_in_bf16(device: torch.device, precision: str) -> bool:
    """Whether a run with train.precision `precision` on `device` computes in bf16 (autocast, Muon's iterations)."""
    return resolved_precision(device, precision) == "bf16"


def precision_notice(device: torch.device, precision: str) -> str | None:
    """One line for the training log where the precision a run uses is not what its config says, or is slow here."""
    if device.type != "cpu":
        return None
    if precision == "auto" and not native_bf16(device):
        return ("train.precision auto: this CPU has no native bf16 (AVX512-BF16 or AMX), so the transformer trains "
                "in fp32 (bf16 would be emulated, ~15x slower)")
    if precision == "bf16" and not native_bf16(device):
        return ("train.precision bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): emulated, ~15x slower "
                "than fp32; \"auto\" picks fp32 here")
    return None


def autocast(device: torch.device, enabled: bool = True, precision: str = "fp32"):
    """bf16 autocast (no loss scaling needed) on CUDA, and on CPU when precision resolves to "bf16"; else fp32.

    CPUs with AVX512-BF16 run bf16 matmuls faster than fp32; without it bf16 is emulated and far slower,
    which is why the CPU path is opt-in (train.precision "bf16", or "auto" where the CPU has it).
    """
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and device.type == "cpu" and trains_in_bf16(device, precision):
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


def close_distributed() -> bool:
    """Leave the process group, where this process joined one (then True; a plain run never joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        return True
    return False


def exit_without_teardown(code: int = 0) -> NoReturn:
    """End a torchrun rank whose work is done, written and closed, without the interpreter's teardown.

    Why: gloo's worker thread frees a finished collective's tensors after `wait()` has returned, and freeing a
    tensor that Python created takes the GIL. A rank that exits right after its last collective
    (`Distributed.agree` ends every epoch) can be tearing the interpreter down by then; a thread that asks for
    the GIL during teardown is ended, inside a destructor, and the rank aborts ("terminate called without an
    active exception", -6 under torchrun). Measured on the 2-core CPU: 7 of 157 runs of the DDP test, with the
    group destroyed first; 1 of 73 with a barrier before that. Leaving the group does not stop gloo's threads,
    so only skipping the teardown is certain (PyTorch's own proposed fix, pytorch/pytorch#179291, was dropped)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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
