"""The VQ-VAE's quantizers: one codebook, residual codebooks, or finite scalar quantization.

Each maps encoder vectors (B, C, H, W) to `(quantized, indices, loss)` like vector-quantize-pytorch,
with indices (B, H, W, depth): `depth` codes per vector, each in 0..codebook_size-1; and each rebuilds
vectors from indices with `get_output_from_indices`. The kinds they serve (tokenizers/vqvae.py):

- "vq":  EMAQuantizer, one codebook of K learnt vectors (VQ-VAE, van den Oord et al. 2017).
- "rvq": ResidualQuantizer, `depth` EMA codebooks, each coding what the previous ones left (RQ-VAE,
         Lee et al. 2022): K**depth combinations from depth*K vectors, at depth tokens per position.
- "scales": MultiScaleQuantizer, one shared codebook coding the map at several resolutions, each scale
         what the coarser ones left (VAR, Tian et al. 2024): the next-scale transformer's tokens.
- "fsq": FSQuantizer, each of a few dimensions squashed and rounded to a handful of levels (Mentzer
         et al. 2023): the codebook is the grid of level combinations, nothing to learn, no codebook
         loss and no dead codes.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import FSQ_LEVELS, NEXT_SCALES, VQConfig


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
    if config.kind == "scales":
        return MultiScaleQuantizer(NEXT_SCALES, *settings)
    return EMAQuantizer(*settings)


class MultiScaleQuantizer(nn.Module):
    """Residual quantization over scales (VAR, Tian et al. 2024): one shared EMA codebook codes the 7x7 map
    at 1x1, then 2x2, ... 7x7, each scale coding what the coarser ones left.

    Scale k area-downsamples the residual to s_k x s_k, takes each vector's nearest code, upsamples the
    codes back to 7x7 (bicubic) and refines them with its own 3x3 conv ("phi", half of the output) before
    subtracting: the coarse scales carry the digit's overall form in a few tokens, the fine ones its
    strokes. Indices are (B, sum s_k^2), scale by scale, raster order inside a scale."""

    depth = 1

    def __init__(self, scales: tuple[int, ...], codebook_size: int, code_dim: int, beta: float, decay: float,
                 dead_threshold: float) -> None:
        super().__init__()
        self.scales, self.codebook_size, self.dim = tuple(scales), codebook_size, code_dim
        self.book = EMAQuantizer(codebook_size, code_dim, beta, decay, dead_threshold)
        self.refine = nn.ModuleList(nn.Conv2d(code_dim, code_dim, 3, padding=1) for _ in scales)

    @property
    def tokens(self) -> int:
        return sum(s * s for s in self.scales)

    def upsampled(self, scale: int, indices: torch.Tensor, size: int, keep: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """(B, s*s) codes of scale number `scale` -> (B, C, size, size): their vectors, upsampled and refined.
        keep (s*s,) booleans: only those cells' codes count, the others are zero vectors (a scale drawn in parts:
        what its first part says about the rest, spread by the refining conv)."""
        side = self.scales[scale]
        vectors = self.book.codebook[indices.long()]                                   # (B, s*s, C)
        if keep is not None:
            vectors = vectors * keep[:, None].to(vectors.dtype)
        vectors = vectors.view(-1, side, side, self.dim).permute(0, 3, 1, 2)
        if side != size:
            vectors = F.interpolate(vectors, size=(size, size), mode="bicubic", align_corners=False)
        # Half each: (refined + vectors) halved is 0.5 * vectors + 0.5 * refined to the bit (halving is exact). The
        # sum is out of place so that under bf16 autocast the bf16 conv output still promotes to fp32 with the vectors.
        return (self.refine[scale](vectors) + vectors).mul_(0.5)

    def pyramid(self, z: torch.Tensor, update: bool = False):
        """(B, C, H, W) -> (f_hat (B, C, H, W) built from the codes alone, indices (B, tokens))."""
        B, C, H, W = z.shape
        residual, total, indices = z.detach(), torch.zeros_like(z), []
        for scale, side in enumerate(self.scales):
            coarse = F.adaptive_avg_pool2d(residual, side) if side != H else residual   # "area" downsampling
            flat = channels_last(coarse)                                                  # (B*s*s, C)
            if update and self.training:
                index = self.book(coarse)[1].reshape(B, side * side)                      # EMA step on this scale
            else:
                index = self.book.nearest(flat).view(B, side * side)
            step = self.upsampled(scale, index, H)
            total = total + step
            residual = residual - step.detach()
            indices.append(index)
        return total, torch.cat(indices, dim=1)

    def forward(self, z: torch.Tensor):
        f_hat, indices = self.pyramid(z, update=True)
        # The encoder commits to the codes' sum; the refining convs learn to make that sum match the encoder.
        loss = self.book.beta * F.mse_loss(z, f_hat.detach()) + F.mse_loss(f_hat, z.detach())
        return z + (f_hat - z).detach(), indices, loss                                  # straight-through

    def get_output_from_indices(self, indices: torch.Tensor, size: int = 7) -> torch.Tensor:
        """(B, tokens) -> (B, C, size, size): the sum of every scale's upsampled codes."""
        return sum(self.upsampled(scale, part, size) for scale, part in enumerate(self.split(indices)))

    def split(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """(B, tokens) -> one (B, s*s) tensor per scale."""
        return list(indices.split([s * s for s in self.scales], dim=1))

    def input_at(self, f_hat: torch.Tensor, scale: int) -> torch.Tensor:
        """(B, C, 7, 7) partial sum -> (B, s*s, C) the input of scale number `scale`."""
        side = self.scales[scale]
        coarse = F.adaptive_avg_pool2d(f_hat, side) if side != f_hat.shape[-1] else f_hat
        return coarse.flatten(2).transpose(1, 2)
