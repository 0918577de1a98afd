"""The multi-scale shape coder of the "scales" tokenizer kind: a VQ-VAE whose 7x7 latent is coded at
1x1, 2x2, 3x3, 4x4, 5x5 and 7x7 by one shared codebook (quantizers.MultiScaleQuantizer, as in VAR).

    tokens: <foreground color> <background color> | 1 | 4 | 9 | 16 | 25 | 49 shape codes   (2 + 104)

It is the shape half of a palette tokenizer (palette.py keeps the two color tokens and paints the
decoded shape in them, so decoded images stay two-colored), and what the next-scale transformer
(nextscale/) predicts one whole scale at a time. Its ids are ordered coarse to fine, so a raster
model could read them too; completion of kept pixels has no meaning here (no id owns a patch).
"""

from __future__ import annotations

import torch

from ..config import NEXT_SCALES, VQConfig
from .vqvae import GRID, VQVAE


class MultiScaleVQVAE(VQVAE):
    """A VQ-VAE on the binary shape with a multi-scale residual quantizer; ids (B, 104) coarse to fine."""

    @classmethod
    def layout(cls, config: VQConfig) -> tuple[int, int]:
        return config.codebook_size, sum(side * side for side in NEXT_SCALES)

    @property
    def tokens_per_image(self) -> int:
        return self.quantizer.tokens

    def position_tokens(self) -> torch.Tensor:
        """Every code may stand at every position: the codebook is shared by all scales."""
        return torch.ones(self.tokens_per_image, self.token_count, dtype=torch.bool)

    def kept_tokens(self, mask: torch.Tensor) -> torch.Tensor:
        raise ValueError("a multi-scale image has no token per patch: completing kept pixels needs a raster "
                         "tokenizer (patches, palette or vq)")

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 28, 28, planes) levels -> (B, 104) ids, scale by scale."""
        return self.quantizer.pyramid(self.encode_latent(images))[1]

    @torch.no_grad()
    def decode_logits(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decode_latent(self.quantizer.get_output_from_indices(codes, GRID))

    @torch.no_grad()
    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, 104) ids -> (B, 49, C): the finest reconstruction's latent vectors in raster order (what the
        next-scale transformer reads when it captions an image)."""
        return self.quantizer.get_output_from_indices(codes, GRID).flatten(2).transpose(1, 2)
