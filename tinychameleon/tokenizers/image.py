"""The image tokenizer family: one interface, built by name from `VQConfig.kind`.

  vq, rvq, fsq      a VQ-VAE with one codebook, residual codebooks, or finite scalar codes (vqvae.py)
  pixels            a token per pixel, nothing learnt (pixels.py)
  palette, patches  two color tokens + the shape's codes from a VQ-VAE or a patch dictionary (palette.py)
  scales            two color tokens + the shape coded at six scales, coarse to fine (scales.py; for nextscale/)

Every image tokenizer is an nn.Module with
  tokens_per_image (L), token_count (K: ids 0..K-1), code_count (ids 0..code_count-1 are codes, the
  rest colors; codebook usage is measured over them)
  encode(images (B, 28, 28, 3) levels) -> (B, L) ids      decode(ids) -> (B, 28, 28, 3) uint8 levels
  position_tokens() -> (L, K) bools     token_follows() -> (K, K) bools or None   (sampling rules)
  kept_tokens(pixel mask (28, 28)) -> (L,) bools                                   (completion)
  autoencoder, training_targets(images)                                            (stage 1 training)
and optionally recolor(ids, foreground, background): the same image under other colors without
re-encoding (training's fresh color draws then cost nothing).
The vocabulary and every sequence offset derive from L and K (tokenizers/vocab.py), so the
transformer, sampler, training, evaluation and interfaces run unchanged for each kind.
"""

from __future__ import annotations

from ..config import IMAGE_TOKENIZER_KINDS, VQConfig
from .palette import PaletteTokenizer
from .pixels import PixelTokenizer
from .vqvae import VQVAE

TOKENIZER_KINDS = {"vq": VQVAE, "rvq": VQVAE, "fsq": VQVAE, "pixels": PixelTokenizer,
                   "palette": PaletteTokenizer, "patches": PaletteTokenizer, "scales": PaletteTokenizer}
assert tuple(TOKENIZER_KINDS) == IMAGE_TOKENIZER_KINDS, "config.py validates the kinds built here"


def build_image_tokenizer(config: VQConfig):
    return TOKENIZER_KINDS[config.kind](config)


def image_token_layout(config: VQConfig) -> tuple[int, int]:
    """(token_count, tokens_per_image) of the tokenizer a config builds, without building it."""
    return TOKENIZER_KINDS[config.kind].layout(config)
