"""Stage 1: train the image tokenizer on the colored train split.

Every kind fits its `autoencoder` to its `training_targets` (the colored images for "vq", the digit
shapes for "palette" and "patches"): a VQ-VAE by gradient descent, a patch dictionary by counting."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..batching import batch_slices
from ..config import RunConfig
from ..checkpoint import VQVAE_FILE, build_image_tokenizer, save_weights
from .logs import write_history
from .state import elapsed_before, resume_from, save_epoch
from .schedule import warmup_cosine

STATE_FILE = "vqvae_state.pt"


@torch.no_grad()
def reconstruction_metrics(tokenizer, images: np.ndarray, batch_size: int = 1000,
                           device: torch.device | str = "cpu") -> dict:
    """Pixel-exact accuracy (all 3 channels right) and codebook usage (the VQ codes) on a split."""
    tokenizer.eval()
    codebook_size = tokenizer.code_count   # the code ids (not the colors)
    correct, counts = 0, torch.zeros(codebook_size)
    for rows in batch_slices(len(images), batch_size):
        batch = torch.from_numpy(images[rows]).to(device)
        ids = tokenizer.encode(batch)
        correct += (tokenizer.decode(ids) == batch).all(-1).sum().item()
        codes = ids.flatten().cpu()
        counts += torch.bincount(codes[codes < codebook_size], minlength=codebook_size).float()
    probabilities = counts / counts.sum()
    entropy = -(probabilities[probabilities > 0] * probabilities[probabilities > 0].log()).sum()
    return {"pixel_exact": correct / (len(images) * 28 * 28),
            "code_usage": (counts > 0).float().mean().item(),
            "code_perplexity": entropy.exp().item()}


def fit_directly(tokenizer, targets: torch.Tensor, check_images: np.ndarray, run_dir: Path, device: torch.device):
    started = time.time()
    fitted = tokenizer.autoencoder.fit(targets)
    metrics = reconstruction_metrics(tokenizer, check_images, device=device)
    epoch_log = [{"epoch": 1, "step": 0, **fitted, **metrics, "elapsed_s": time.time() - started}]
    print(f"{tokenizer.config.kind} tokenizer: {fitted['summary']} | validation pixel-exact"
          f" {metrics['pixel_exact']:.4f} | {time.time() - started:.0f}s", flush=True)
    save_weights(tokenizer, run_dir / VQVAE_FILE)
    write_history(run_dir, "vqvae", [], epoch_log)
    return tokenizer.eval()


def train_vqvae(config: RunConfig, train_images: np.ndarray, validation_images: np.ndarray, run_dir: Path,
                device: torch.device, resume: bool = False, progress: bool = True):
    """Train (or resume) the tokenizer; writes vqvae.safetensors and vqvae_metrics.json each epoch."""
    settings = config.vq_train
    torch.manual_seed(config.train.seed)
    tokenizer = build_image_tokenizer(config).to(device)
    network = tokenizer.autoencoder
    targets = tokenizer.training_targets(torch.from_numpy(train_images).to(device))  # the whole split, on the device
    if hasattr(network, "fit"):   # fitted by counting (or nothing to fit): no epochs, no optimizer
        return fit_directly(tokenizer, targets, validation_images[:2000], run_dir, device)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings.lr)
    steps_per_epoch = len(train_images) // settings.batch_size
    total_steps = settings.epochs * steps_per_epoch
    start_epoch, step_log, epoch_log = resume_from(run_dir / STATE_FILE, tokenizer, optimizer) if resume else (0, [], [])
    if start_epoch:
        print(f"vqvae: resuming after epoch {start_epoch}")
    check_images = validation_images[:2000]  # per-epoch check; the whole validation split is reported at the end
    started = time.time() - elapsed_before(epoch_log)   # a resumed run's clock goes on from its last save
    for epoch in range(start_epoch, settings.epochs):
        tokenizer.train()
        generator = torch.Generator().manual_seed(config.train.seed * 1000 + epoch)
        order = torch.randperm(len(targets), generator=generator).to(device)
        bar = tqdm(range(steps_per_epoch), desc=f"vqvae epoch {epoch + 1}/{settings.epochs}",
                   disable=not progress, leave=False)
        for batch_index in bar:
            step = epoch * steps_per_epoch + batch_index
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * warmup_cosine(step, total_steps, settings.warmup_steps)
            batch = targets[order[batch_index * settings.batch_size:(batch_index + 1) * settings.batch_size]]
            _, _, loss = network(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step_log.append({"step": step, "epoch": epoch, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]})
            if batch_index % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        metrics = reconstruction_metrics(tokenizer, check_images, device=device)
        epoch_log.append({"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, **metrics,
                          "elapsed_s": time.time() - started})
        print(f"vqvae epoch {epoch + 1}/{settings.epochs}: loss {np.mean([r['loss'] for r in step_log[-steps_per_epoch:]]):.4f}"
              f" | validation pixel-exact {metrics['pixel_exact']:.4f} | codes used {metrics['code_usage']:.1%}"
              f" | perplexity {metrics['code_perplexity']:.1f} | {time.time() - started:.0f}s", flush=True)
        save_epoch(run_dir, "vqvae", tokenizer, optimizer, VQVAE_FILE, STATE_FILE, step_log, epoch_log)
    return tokenizer.eval()
