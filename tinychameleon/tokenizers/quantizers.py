"""The VQ-VAE's quantizers: one codebook, residual codebooks, or finite scalar quantization.

Each maps encoder vectors (B, C, H, W) to `(quantized, indices, loss)` like vector-quantize-pytorch,
with indices (B, H, W, depth): `depth` codes per vector, each in 0..codebook_size-1; and each rebuilds
vectors from indices with `get_output_from_indices`. The kinds they serve (tokenizers/vqvae.py):

- "vq":  EMAQuantizer, one codebook of K learnt vectors (VQ-VAE, van den Oord et al. 2017).
- "rvq": ResidualQuantizer, `depth` EMA codebooks, each coding what the previous ones left (RQ-VAE,
         Lee et al. 2022): K**depth combinations from depth*K vectors, at depth tokens per position.
- "fsq": FSQuantizer, each of a few dimensions squashed and rounded to a handful of levels (Mentzer
         et al. 2023): the codebook is the grid of level combinations, nothing to learn, no codebook
         loss and no dead codes.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import FSQ_LEVELS, VQConfig


def channels_last(z: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def channels_first(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B*H*W, C) -> (B, C, H, W) shaped like `like`."""
    B, C, H, W = like.shape
    return flat.view(B, H, W, C).permute(0, 3, 1, 2)


class EMAQuantizer(nn.Module):
    """Nearest-code quantizer with an EMA codebook, a straight-through estimator, commitment loss and
    restarts of dead codes from recent encoder outputs."""

    depth = 1

    def __init__(self, codebook_size: int, code_dim: int, beta: float, decay: float, dead_threshold: float) -> None:
        super().__init__()
        self.codebook_size, self.dim = codebook_size, code_dim
        self.beta, self.decay, self.dead_threshold = beta, decay, dead_threshold
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim) * 0.1)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("code_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 ; the ||x||^2 term does not change the argmin.
        distance = -2 * flat @ self.codebook.t() + self.codebook.pow(2).sum(1)
        return distance.argmin(dim=1)

    def quantize_indices(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, C) vectors -> (N, 1) code indices."""
        return self.nearest(flat)[:, None]

    def get_output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, 1) -> (N, C) code vectors."""
        return self.codebook[indices[:, 0].long()]

    def forward(self, z: torch.Tensor):
        flat = channels_last(z)                                        # (B*H*W, C)
        if self.training and not bool(self.initialized):
            # k-means++-free init: start the codebook on random encoder outputs so no code starts dead.
            picks = flat[torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)]
            self.codebook.copy_(picks.detach())
            self.code_sum.copy_(picks.detach())
            self.initialized.fill_(True)
        indices = self.nearest(flat.detach())
        if self.training:
            self._ema_update(flat.detach(), indices)
        quantized = channels_first(self.codebook[indices], z)
        loss = self.beta * F.mse_loss(z, quantized.detach())
        quantized = z + (quantized - z).detach()  # straight-through estimator
        B, _, H, W = z.shape
        return quantized, indices.view(B, H, W, 1), loss

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        one_hot = F.one_hot(indices, self.codebook_size).type_as(flat)  # (N, K)
        self.cluster_size.mul_(self.decay).add_(one_hot.sum(0), alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(one_hot.t() @ flat, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (total + self.codebook_size * 1e-5) * total  # Laplace smoothing
        self.codebook.copy_(self.code_sum / smoothed[:, None])
        dead = self.cluster_size < self.dead_threshold
        if dead.any():
            # Restart dead codes on random encoder outputs of this batch, so every code stays in use.
            count = int(dead.sum())
            picks = flat[torch.randint(0, flat.shape[0], (count,), device=flat.device)]
            self.codebook[dead] = picks
            self.code_sum[dead] = picks
            self.cluster_size[dead] = 1.0


class ResidualQuantizer(nn.Module):
    """`depth` EMA quantizers in a chain: quantizer d codes the residual the first d left."""

    def __init__(self, depth: int, codebook_size: int, code_dim: int, beta: float, decay: float,
                 dead_threshold: float) -> None:
        super().__init__()
        self.depth, self.codebook_size, self.dim = depth, codebook_size, code_dim
        self.layers = nn.ModuleList(EMAQuantizer(codebook_size, code_dim, beta, decay, dead_threshold)
                                    for _ in range(depth))

    def quantize_indices(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, depth)."""
        residual, indices = flat, []
        for layer in self.layers:
            index = layer.nearest(residual)
            residual = residual - layer.codebook[index]
            indices.append(index)
        return torch.stack(indices, dim=1)

    def get_output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, depth) -> (N, C): the sum of each layer's code."""
        return sum(layer.codebook[indices[:, d].long()] for d, layer in enumerate(self.layers))

    def forward(self, z: torch.Tensor):
        residual, total, loss, indices = z, torch.zeros_like(z), z.new_zeros(()), []
        for layer in self.layers:
            quantized, index, layer_loss = layer(residual)
            residual = residual - quantized.detach()
            total = total + quantized.detach()
            loss = loss + layer_loss
            indices.append(index)
        return z + (total - z).detach(), torch.cat(indices, dim=-1), loss   # straight-through


class FSQuantizer(nn.Module):
    """Finite scalar quantization: dimension i is bounded to levels[i] values and rounded (straight-through).

    An index is the mixed-radix number of the rounded values, so the codebook is implicit: every one of
    prod(levels) combinations is a code, and none can die."""

    depth = 1

    def __init__(self, levels: list[int]) -> None:
        super().__init__()
        self.dim, self.codebook_size = len(levels), math.prod(levels)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = torch.cumprod(torch.tensor([1] + list(levels[:-1])), dim=0)
        self.register_buffer("basis", basis, persistent=False)                    # mixed-radix place values

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """(..., d) -> values in (-(L-1)/2, (L-1)/2) per dimension, shifted by 1/2 for even L so rounding
        gives exactly L integers (the FSQ paper's recipe)."""
        half = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def digits(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, d) integer levels 0..L-1."""
        return (self.bound(flat).round() + self.levels // 2).long()

    def quantize_indices(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, 1)."""
        return (self.digits(flat) * self.basis).sum(dim=1, keepdim=True)

    def get_output_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(N, 1) -> (N, d) values in [-1, 1]."""
        digits = indices.long() // self.basis % self.levels.long()                  # (N, d)
        return (digits - self.levels // 2) / (self.levels // 2)

    def forward(self, z: torch.Tensor):
        flat = channels_last(z)
        bounded = self.bound(flat)
        rounded = bounded + (bounded.round() - bounded).detach()                    # straight-through
        quantized = channels_first(rounded / (self.levels // 2), z)
        indices = self.quantize_indices(flat.detach())
        B, _, H, W = z.shape
        return quantized, indices.view(B, H, W, 1), z.new_zeros(())                # no codebook loss


def build_quantizer(config: VQConfig) -> nn.Module:
    if config.kind == "fsq":
        return FSQuantizer(FSQ_LEVELS[config.codebook_size])
    settings = (config.codebook_size, config.code_dim, config.beta, config.ema_decay, config.dead_code_threshold)
    if config.kind == "rvq":
        return ResidualQuantizer(config.residual_depth, *settings)
    return EMAQuantizer(*settings)
