"""Regions of an image to keep when completing it: named halves or a mask, at pixel and token level.

A mask is (28, 28) booleans, True where the given pixels are kept. The image tokenizer says which
of its tokens a mask keeps (`kept_tokens`: a 4x4 patch's code only when all 16 of its pixels are);
the kept pixels of the other patches are pasted back after decoding, so every kept pixel comes back
unchanged. A prompt that names colors must name the kept pixels' own, in their roles (`check_kept_colors`).
"""

from __future__ import annotations

import io

import numpy as np

from .data.colored import COLOR_ID, COLOR_RGB, color_counts, key_colors
from .errors import PromptError, TinyChameleonError
from .imaging import image_size, read_image, two_colors
from .tokenizers.vocab import WORDS

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


def check_kept_colors(images: np.ndarray, mask: np.ndarray, partial: np.ndarray) -> None:
    """(N, 28, 28, 3) levels, a (28, 28) mask and (N, 6) caption word ids (-1 at blanks): a prompt's colors must
    paint the kept pixels in their roles: the named digit color is the kept ink, the named background the kept
    paper (the image's most common color), not merely the same two colors. PromptError names the first misfit."""
    for index, (image, row) in enumerate(zip(images, partial)):
        named = {}
        for role, slots in (("digit", slice(0, 2)), ("background", slice(4, 6))):
            if (row[slots] >= 0).all():
                name = " ".join(WORDS[int(w)] for w in row[slots])
                if name not in COLOR_ID:  # generate only warns; here the color must paint kept pixels
                    raise PromptError(f"'{name}' is not a palette color, so it cannot match the kept part "
                                      f"of image {index}")
                named[role] = (name, tuple(COLOR_RGB[COLOR_ID[name]]))
        ink, paper = (tuple(int(v) for v in color) for color in two_colors(image))
        kept = {tuple(int(v) for v in color) for color in image[mask].reshape(-1, 3)}
        for role, shown in (("digit", ink), ("background", paper)):
            if role == "digit" and ink == paper:
                continue  # a one-color image shows no ink to compare with
            if role in named and shown in kept and named[role][1] != shown:
                raise PromptError(f"the prompt's colors do not match the kept part of image {index}: it names "
                                  f"the {role} '{named[role][0]}', but the kept {role} is another color"
                                  + (" (ink and paper swapped?)" if named[role][1] in kept else ""))
        if len(named) == 2 and not kept <= {named["digit"][1], named["background"][1]}:
            raise PromptError(f"the prompt's colors do not match the kept part of image {index}: it shows "
                              f"{len(kept - {c for _, c in named.values()})} other color(s)")
