"""One training run, both stages: data -> VQ-VAE (stage 1) -> encoded dataset -> transformer (stage 2).

`train(config, run_dir)` is what the CLI's `train` subcommand calls. A stage whose weights
are complete is skipped, so `--resume` after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..batching import batch_slices
from ..config import RunConfig
from ..data.colored import TRAINING_STROKES, ColoredMNIST, load_splits, recolored_train, shifted, thickened
from ..data.mnist import default_cache_dir
from ..io_utils import atomic_path, write_json
from ..tokenizers.text import WordTokenizer
from ..checkpoint import VQVAE_FILE, inherited_config, load_config, load_image_tokenizer, module_hash, save_config
from ..device import init_distributed, keep_freed_memory, resolved_precision
from .documents import document_source, validation_documents
from .state import PROGRESS_FILE, mark_finished, remove_stale_temporaries, stage_finished
from .lm_trainer import train_transformer
from .vqvae_trainer import STATE_FILE as VQ_STATE_FILE
from .vqvae_trainer import reconstruction_metrics, train_vqvae


def caption_word_ids(split: ColoredMNIST) -> torch.Tensor:
    """(N, 6) word ids of the split's captions. Each distinct caption (~7300 among 55 000) is encoded once:
    a `best` stage encodes its ten colorings' captions, ~3 s word by word on the 2-core CPU."""
    tokenizer, captions = WordTokenizer(), split.captions()
    encoded = {caption: tokenizer.encode(caption) for caption in set(captions)}
    return torch.tensor([encoded[caption] for caption in captions], dtype=torch.long)


@torch.no_grad()
def encode_images(image_tokenizer, images: np.ndarray, device: torch.device, batch_size: int = 2000) -> torch.Tensor:
    image_tokenizer = image_tokenizer.to(device).eval()
    chunks = [image_tokenizer.encode(torch.from_numpy(images[rows]).to(device)).cpu()
              for rows in batch_slices(len(images), batch_size)]
    return torch.cat(chunks).to(torch.int16)


def cached_codes(image_tokenizer, split: ColoredMNIST, name: str, data_key: str, cache_dir: Path,
                 device: torch.device) -> torch.Tensor:
    """Image tokens of a split, computed once per (tokenizer weights, data) and cached on disk.

    The key counts the images: runs limited to their first N examples (--max-train-examples) share a
    tokenizer's weights - a weightless one (pixels) with every run - and must not read each other's rows."""
    path = cache_dir / "codes" / f"{name}-{module_hash(image_tokenizer)}-{data_key}-{len(split)}.npy"
    if path.exists():
        try:
            codes = np.load(path)
            if len(codes) == len(split):
                return torch.from_numpy(codes).long()
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below
    codes = encode_images(image_tokenizer, split.images, device)
    with atomic_path(path) as temp:
        with open(temp, "wb") as handle:
            np.save(handle, codes.numpy())
    return codes.long()


def data_key_of(config: RunConfig) -> str:
    """What a run's cached image tokens depend on beside the tokenizer's weights: its data seed and held-out pairs."""
    return f"seed{config.data_seed}-hold{config.train.holdout_pairs}-val"


def shared_codes(image_tokenizer, split: ColoredMNIST, name: str, data_key: str, cache_dir: Path,
                 device: torch.device, world) -> torch.Tensor:
    """`cached_codes` under torchrun: rank 0 encodes and caches, the others wait for it and read the cache."""
    if world.is_main:
        codes = cached_codes(image_tokenizer, split, name, data_key, cache_dir, device)
    world.barrier()
    return codes if world.is_main else cached_codes(image_tokenizer, split, name, data_key, cache_dir, device)


def limit(split: ColoredMNIST, count: int) -> ColoredMNIST:
    return split.subset(slice(0, count)) if count else split


def colorings(config: RunConfig, image_tokenizer, train_split: ColoredMNIST, train_codes: torch.Tensor, data_key: str,
              cache_dir: Path, device: torch.device, world) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Word ids (D, N, 6) and image tokens (D, N, L) of the D = train.colorings color draws of the training set,
    and with train.shifted_reading the tokens (D, N, L) of each draw's digits moved by 1-2 pixels (else None)."""
    words, codes, moved = [], [], []
    for draw in range(config.train.colorings):
        split = train_split if draw == 0 else limit(
            recolored_train(draw, config.data_seed, cache_dir, config.train.holdout_pairs),
            config.train.max_train_examples)
        words.append(caption_word_ids(split))
        if draw == 0:
            codes.append(train_codes)
        elif hasattr(image_tokenizer, "recolor"):
            # Tokens that keep color apart from shape: the same shape codes under the draw's two colors.
            codes.append(image_tokenizer.recolor(train_codes, torch.from_numpy(split.foreground),
                                                 torch.from_numpy(split.background)))
        else:
            codes.append(shared_codes(image_tokenizer, split, "train", f"{data_key}-draw{draw}", cache_dir, device,
                                      world))
        if config.train.shifted_reading:
            moved.append(shared_codes(image_tokenizer, shifted(split, [config.data_seed, draw, 1]), "train",
                                      f"{data_key}-draw{draw}-shifted", cache_dir, device, world))
    return torch.stack(words), torch.stack(codes), torch.stack(moved) if moved else None


SEGMENT_FILE = "segment.json"  # when this segment of the run started, and the wall time of earlier ones


def start_segment(run_dir: Path, resume: bool) -> float:
    """Record this segment's start; return the wall time the run's earlier (interrupted) segments spent.

    An interrupted segment wrote nothing at its end, so its time is counted up to the newest file it
    saved (the last epoch it finished): work after that was lost and is redone in this segment."""
    earlier, path = 0.0, run_dir / SEGMENT_FILE
    if resume and path.exists():
        try:
            previous = json.loads(path.read_text())
            saved = max(f.stat().st_mtime for f in run_dir.iterdir() if f.name != SEGMENT_FILE)
            earlier = float(previous["earlier_s"]) + max(0.0, saved - float(previous["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable record: count this segment only
    write_json(path, {"started": time.time(), "earlier_s": earlier})
    return earlier


def run_info(started: float, device: torch.device, world, command: str, earlier: float = 0.0,
             precision: str = "fp32") -> dict:
    """What reproducing this run needs to know: the command, the wall time (all segments of a resumed run),
    the machine it ran on and the precision its transformer trained in (train.precision resolved there)."""
    return {"command": command, "wall_time_s": round(earlier + time.time() - started, 1), "device": str(device),
            "precision": resolved_precision(device, precision),
            "world_size": world.world_size, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def finished(run_dir: Path, stage: str) -> bool:
    """Whether a stage is finished: progress.json says so. Runs from before that record count as finished
    where their last artifact exists (stage 1: its validation metrics; stage 2: run_info.json)."""
    if (run_dir / PROGRESS_FILE).exists():
        return stage_finished(run_dir, stage)
    last = {"vqvae": "vqvae_validation_metrics.json", "transformer": "run_info.json"}[stage]
    return (run_dir / last).exists()


def train(config: RunConfig, run_dir: str | Path, resume: bool = False, vqvae_from: str | Path | None = None,
          device_name: str = "auto", cache_dir: str | Path | None = None, progress: bool = True,
          compile_model: bool = False, command: str = "") -> Path:
    """Train both stages into run_dir (config, weights, vocab, metrics, curve); returns run_dir."""
    run_dir = Path(run_dir)
    # Tiny gradients in the VQ-VAE become denormal floats, which CPUs process ~3x slower; flush them to zero.
    torch.set_flush_denormal(True)
    keep_freed_memory()    # each step would otherwise page-fault its large tensors in afresh (device.py)
    world, device = init_distributed(device_name)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if resume and (run_dir / "config.json").exists():
        config = load_config(run_dir)  # the run's own config wins over command-line presets
    config = inherited_config(config, vqvae_from)      # a fine-tune's shape and tokenizer are its source's
    vqvae_from = vqvae_from or config.train.init_from
    started, earlier = time.time(), 0.0
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for path in remove_stale_temporaries(run_dir):
            print(f"removed {path.name}, the temp file of a write that was interrupted")
        earlier = start_segment(run_dir, resume)  # before anything is written: it reads the last save's time
        save_config(run_dir, config)
    splits = load_splits(config.data_seed, cache_dir, config.train.holdout_pairs)
    train_split = limit(splits.train, config.train.max_train_examples)
    validation_split = limit(splits.validation, config.train.max_validation_examples)  # the test split stays unseen

    # Stage 1: the image tokenizer (trained by rank 0 only; the others wait, then load it). Whether a stage
    # is finished is read from progress.json alone (written last): weights without it are a stage cut short.
    vq_done = finished(run_dir, "vqvae")
    if vqvae_from and world.is_main and not vq_done:
        with atomic_path(run_dir / VQVAE_FILE) as temp:
            shutil.copyfile(Path(vqvae_from) / VQVAE_FILE, temp)
        mark_finished(run_dir, "vqvae")
        vq_done = True
    if not vq_done and world.is_main:
        train_vqvae(config, train_split.images, validation_split.images, run_dir, device, resume, progress)
        metrics = reconstruction_metrics(load_image_tokenizer(run_dir, config).to(device), validation_split.images,
                                         device=device)
        write_json(run_dir / "vqvae_validation_metrics.json", metrics)
        mark_finished(run_dir, "vqvae")
        (run_dir / VQ_STATE_FILE).unlink(missing_ok=True)
    world.barrier()
    image_tokenizer = load_image_tokenizer(run_dir, config)

    # Stage 2: the transformer on cached token tensors.
    data_key = data_key_of(config)
    train_codes = shared_codes(image_tokenizer, train_split, "train", data_key, cache_dir, device, world)
    validation_codes = shared_codes(image_tokenizer, validation_split, "validation", data_key, cache_dir, device, world)
    if resume and finished(run_dir, "transformer"):
        print(f"{run_dir} is already fully trained; nothing to resume")
        (run_dir / SEGMENT_FILE).unlink(missing_ok=True)
        return run_dir
    train_words, train_codes, shifted_codes = colorings(config, image_tokenizer, train_split, train_codes, data_key,
                                                        cache_dir, device, world)
    documents = validation = None
    if config.train.documents:  # task-family documents beside the pairs, from the training digits only
        codes = train_codes[0]
        if config.train.memory_strokes:   # the training digits' tokens in each training stroke style, cached too
            codes = torch.stack([codes] + [shared_codes(image_tokenizer, thickened(train_split, stroke), "train",
                                                        f"{data_key}-{stroke}", cache_dir, device, world)
                                           for stroke in TRAINING_STROKES])
        documents = document_source(config, image_tokenizer, train_split, codes)
        validation = validation_documents(config, image_tokenizer, validation_split, validation_codes)
    train_transformer(config, train_words, train_codes, caption_word_ids(validation_split), validation_codes,
                      run_dir, device, resume, progress, world, compile_model, shifted_codes=shifted_codes,
                      documents=documents, validation_documents=validation, image_tokenizer=image_tokenizer)
    if world.is_main:
        write_json(run_dir / "run_info.json", run_info(started, device, world, command, earlier,
                                                          config.train.precision))
        mark_finished(run_dir, "transformer")
        (run_dir / "train_state.pt").unlink(missing_ok=True)
        (run_dir / SEGMENT_FILE).unlink(missing_ok=True)
        print(f"done in {time.time() - started:.0f}s: checkpoint in {run_dir}")
    return run_dir
