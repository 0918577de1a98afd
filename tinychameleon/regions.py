"""Regions of an image to keep when completing it: named halves or a mask, at pixel and token level.

A mask is (28, 28) booleans, True where the given pixels are kept. The image tokenizer says which
of its tokens a mask keeps (`kept_tokens`: a 4x4 patch's code only when all 16 of its pixels are);
the kept pixels of the other patches are pasted back after decoding, so every kept pixel comes back
unchanged.
"""

from __future__ import annotations

import io

import numpy as np

from .data.colored import color_counts, key_colors
from .errors import TinyChameleonError

SIZE = 28
KEEP_REGIONS = ("top", "bottom", "left", "right")


class RegionError(TinyChameleonError, ValueError):
    """A region to keep that is unknown, of the wrong size, or leaves nothing to fill."""


def keep_mask(keep: str | np.ndarray) -> np.ndarray:
    """'top' | 'bottom' | 'left' | 'right' (the half with rows / columns 0-13 or 14-27) or a (28, 28) mask."""
    if isinstance(keep, str):
        if keep not in KEEP_REGIONS:
            raise RegionError(f"--keep must be one of {', '.join(KEEP_REGIONS)} or a mask image, got {keep[:40]!r}")
        mask = np.zeros((SIZE, SIZE), dtype=bool)
        half = SIZE // 2
        {"top": mask[:half], "bottom": mask[half:], "left": mask[:, :half], "right": mask[:, half:]}[keep][...] = True
        return mask
    mask = np.asarray(keep)
    if mask.shape != (SIZE, SIZE):
        raise RegionError(f"a mask must be {SIZE}x{SIZE}, got {'x'.join(map(str, mask.shape))}")
    mask = mask.astype(bool)
    if mask.all():
        raise RegionError("the mask keeps every pixel: there is nothing to fill")
    return mask


def read_mask(source) -> np.ndarray:
    """A mask image (a path or an upload's bytes), exactly 28x28 pixels, whose white pixels are kept -> (28, 28)
    booleans. Any other size is refused, not resized (a 1x1 white mask would otherwise keep everything)."""
    from .imaging import image_size, read_image

    levels = read_image(source)               # unreadable files: ImageInputError
    width, height = image_size(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    if (width, height) != (SIZE, SIZE):
        raise RegionError(f"the mask is {width}x{height} pixels; a mask is {SIZE}x{SIZE} (white pixels are kept)")
    return mask_from_levels(levels)


def mask_from_levels(levels: np.ndarray) -> np.ndarray:
    """A mask image read as (28, 28, 3) levels -> keep its white (bright) pixels."""
    return keep_mask(np.asarray(levels).astype(int).sum(-1) >= 6)


def erase_outside(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 3) levels: pixels outside `mask` painted with each image's most common kept color (its
    background), so that nothing of the region to fill can leak into what the model reads."""
    images = np.asarray(images)
    common = color_counts(images[:, mask]).argmax(1)                            # (N,) color ids 0..63
    background = key_colors(common).astype(images.dtype)
    erased = images.copy()
    erased[:, ~mask] = background[:, None, :]
    return erased
