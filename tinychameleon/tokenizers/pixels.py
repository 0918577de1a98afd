"""Raw pixels as tokens (kind "pixels"): the iGPT baseline, with nothing learnt.

Every pixel is one token, its 2-bit RGB color r*16 + g*4 + b (64 ids), in raster order: 784 tokens
per image, 16x the 49 of the VQ kinds, so a transformer step costs ~16x more tokens (and attention
over sequences 14x longer). Encoding is exact and there is nothing to fit; what the model must learn
is everything - the palette, the two-color rule, the strokes - one pixel at a time.
"""

from __future__ import annotations

import torch

from ..config import VQConfig

SIDE = 28


class PixelTokenizer(torch.nn.Module):
    """The image tokenizer interface (tokenizers/image.py) with a token per pixel."""

    tokens_per_image = SIDE * SIDE
    token_count = 64
    code_count = token_count  # every id is a code (a color)

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def layout(cls, config: VQConfig) -> tuple[int, int]:
        return cls.token_count, cls.tokens_per_image

    def position_tokens(self) -> torch.Tensor:
        """(784, 64): any color anywhere; like iGPT, the model has to learn which colors the data uses."""
        return torch.ones(self.tokens_per_image, self.token_count, dtype=torch.bool)

    def token_follows(self) -> None:
        return None

    @staticmethod
    def kept_tokens(mask: torch.Tensor) -> torch.Tensor:
        """(28, 28) pixel mask -> (784,): a pixel's token is kept when the pixel is."""
        return torch.as_tensor(mask).reshape(-1).bool()

    @property
    def autoencoder(self) -> "PixelTokenizer":
        return self

    @staticmethod
    def training_targets(images: torch.Tensor) -> torch.Tensor:
        return images

    def fit(self, images: torch.Tensor) -> dict:
        """Nothing to learn: stage 1 of a pixel run is instant."""
        return {"summary": "nothing to fit: a token is a pixel's color"}

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 28, 28, 3) levels -> (B, 784) ids."""
        levels = images.long()
        return ((levels[..., 0] * 4 + levels[..., 1]) * 4 + levels[..., 2]).reshape(images.shape[0], -1)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, 784) ids -> (B, 28, 28, 3) uint8 levels."""
        ids = ids.long().clamp(0, self.token_count - 1).view(-1, SIDE, SIDE)
        return torch.stack([ids // 16, ids // 4 % 4, ids % 4], dim=-1).to(torch.uint8)
