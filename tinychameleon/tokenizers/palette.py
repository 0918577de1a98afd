"""Palette tokenizers (kinds "palette" and "patches"): an image is its two colors, then its digit's shape.

    tokens: <foreground color> <background color> s1..s49      (51 per image)

Every colored-MNIST image is one shape painted in two palette colors, so the tokenizer says so:
two color tokens (ids K..K+30, one per palette color) and a 7x7 grid of codes from a VQ-VAE that
sees only the binary shape (ids 0..K-1). Decoding paints the decoded shape in the two colors, so a
decoded image has exactly two palette colors - never a stray or mixed one - and a caption's colors
are single tokens the transformer copies instead of patterns spread over 49 codes. The shape codes
do not change when an image is recolored, so every coloring of a digit shares them.

The shape coder is a VQ-VAE on the binary shape (kind "palette") or a dictionary of the most
frequent 4x4 shape patches, fitted by counting (kind "patches", tokenizers/patches.py).
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import VQConfig
from ..data.colored import COLOR_RGB, VALID_PAIRS
from .patches import PatchDictionary
from .scales import MultiScaleVQVAE
from .vqvae import GRID, VQVAE, kept_patches

COLORS = len(COLOR_RGB)  # 31


def _nearest_palette_color() -> torch.Tensor:
    """(64,) the palette id nearest (in summed level difference) to each of the 64 2-bit RGB colors."""
    levels = torch.arange(64)
    rgb = torch.stack([levels // 16, levels // 4 % 4, levels % 4], dim=1)                 # (64, 3)
    distance = (rgb[:, None, :] - torch.as_tensor(COLOR_RGB, dtype=torch.long)[None]).abs().sum(-1)
    return distance.argmin(dim=1)


NEAREST = _nearest_palette_color()
VALID = torch.zeros(COLORS, COLORS, dtype=torch.bool)
VALID[VALID_PAIRS[:, 0], VALID_PAIRS[:, 1]] = True                                       # (fg, bg) pairs of the data
PARTNER = torch.as_tensor(np.abs(COLOR_RGB[:, None].astype(int) - COLOR_RGB[None].astype(int)).sum(-1)
                          ).argmax(dim=1)                                                  # the most distant color


SHAPE_CODERS = {"palette": VQVAE, "scales": MultiScaleVQVAE}   # "patches": a PatchDictionary (fitted, no network)


class PaletteTokenizer(torch.nn.Module):
    """Two color tokens and the shape's VQ codes; the same interface as `VQVAE` (tokenizers/image.py)."""

    tokens_per_image = 2 + GRID * GRID   # 51 for the raster kinds (an instance of kind "scales" has 2 + 104)

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        # Shapes are one plane of two levels: digit pixels (1) and background (0).
        self.shape = PatchDictionary(config.codebook_size) if config.kind == "patches" else \
            SHAPE_CODERS.get(config.kind, VQVAE)(config, planes=1, levels=2)
        self.tokens_per_image = self.layout(config)[1]

    @classmethod
    def layout(cls, config: VQConfig) -> tuple[int, int]:
        """(token_count, tokens_per_image): K shape codes and 31 colors; 2 + 49 tokens (2 + 104: "scales")."""
        return config.codebook_size + COLORS, 2 + SHAPE_CODERS.get(config.kind, VQVAE).layout(config)[1]

    @property
    def token_count(self) -> int:
        return self.layout(self.config)[0]

    @property
    def color_offset(self) -> int:
        return self.config.codebook_size

    @property
    def code_count(self) -> int:
        return self.color_offset  # ids below the colors: the shape codes

    def position_tokens(self) -> torch.Tensor:
        """(51, K + 31): two color positions, then 49 shape-code positions."""
        allowed = torch.zeros(self.tokens_per_image, self.token_count, dtype=torch.bool)
        allowed[:2, self.color_offset:] = True
        allowed[2:, :self.color_offset] = True
        return allowed

    def token_follows(self) -> torch.Tensor:
        """(K + 31, K + 31): after a foreground color, only a background it makes a pair of the data with."""
        follows = torch.ones(self.token_count, self.token_count, dtype=torch.bool)
        follows[self.color_offset:, self.color_offset:] = VALID
        return follows

    def kept_tokens(self, mask: torch.Tensor) -> torch.Tensor:
        """(28, 28) pixel mask -> (51,) booleans: both colors (read off the kept part) and the fully kept patches."""
        if self.config.kind == "scales":
            self.shape.kept_tokens(mask)   # raises: no token of a multi-scale image owns a patch
        return torch.cat([torch.ones(2, dtype=torch.bool), kept_patches(mask)])

    def split(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 28, 28, 3) levels -> foreground and background palette ids (B,), shape (B, 28, 28) 0/1.

        The background is the most common color, the shape every other pixel, the foreground the most
        common color among those (off-palette colors map to the nearest palette color)."""
        B = images.shape[0]
        flat = images.long().reshape(B, -1, 3)
        keys = (flat[..., 0] * 4 + flat[..., 1]) * 4 + flat[..., 2]                         # (B, 784) in 0..63
        counts = torch.zeros(B, 64, dtype=torch.long, device=images.device).scatter_add_(
            1, keys, torch.ones_like(keys))
        background_key = counts.argmax(dim=1)                                               # (B,)
        shape = keys != background_key[:, None]
        counts.scatter_(1, background_key[:, None], 0)
        nearest = NEAREST.to(images.device)
        background = nearest[background_key]
        foreground = torch.where(counts.amax(dim=1) > 0, nearest[counts.argmax(dim=1)],
                                 PARTNER.to(images.device)[background])
        return foreground, background, shape.view(B, 28, 28).to(torch.uint8)

    @property
    def autoencoder(self) -> VQVAE | PatchDictionary:
        """What stage 1 fits to `training_targets(images)`: the shape coder."""
        return self.shape

    def training_targets(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 28, 28, 3) levels -> (B, 28, 28, 1) shapes, what the shape VQ-VAE reconstructs."""
        return self.split(images)[2][..., None]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 28, 28, 3) levels -> (B, 51) ids: foreground, background, 49 shape codes."""
        foreground, background, shape = self.split(images)
        codes = self.shape.encode(shape[..., None])                                         # (B, 49)
        colors = torch.stack([foreground, background], dim=1) + self.color_offset          # (B, 2)
        return torch.cat([colors, codes], dim=1)

    def recolor(self, ids: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        """(B, 51) ids -> the same shapes under other colors (B,) palette ids, without re-encoding."""
        recolored = ids.clone()
        recolored[:, 0] = foreground.to(ids.device) + self.color_offset
        recolored[:, 1] = background.to(ids.device) + self.color_offset
        return recolored

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, 51) ids -> (B, 28, 28, 3) uint8 levels: the decoded shape in the two colors."""
        ids = ids.long()
        colors = (ids[:, :2] - self.color_offset).clamp(0, COLORS - 1)                      # (B, 2)
        codes = ids[:, 2:].clamp(0, self.color_offset - 1)
        shape = self.shape.decode_levels(codes)[..., 0].bool()                              # (B, 28, 28)
        rgb = torch.as_tensor(COLOR_RGB, dtype=torch.uint8, device=ids.device)
        return torch.where(shape[..., None], rgb[colors[:, 0]][:, None, None], rgb[colors[:, 1]][:, None, None])
