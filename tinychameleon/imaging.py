"""Images in and out: any picture -> 28x28 2-bit levels, levels -> PNG, and captioned grids."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .data.colored import key_colors
from .errors import ImageInputError, ImageTooLargeError
from .io_utils import atomic_path

LEVEL_SCALE = 85  # level 0..3 -> channel value 0..255
MAX_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding them
# The formats read; anything else (EPS, which PIL would hand to Ghostscript, PDF, ...) is refused unopened.
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def levels_to_pil(levels: np.ndarray, scale: int = 1) -> Image.Image:
    """(28, 28, 3) levels 0..3 -> RGB image, optionally scaled up crisply (nearest neighbour)."""
    image = Image.fromarray((np.asarray(levels, dtype=np.uint8) * LEVEL_SCALE).astype(np.uint8), "RGB")
    return image.resize((28 * scale, 28 * scale), Image.NEAREST) if scale > 1 else image


def pil_to_levels(image: Image.Image) -> np.ndarray:
    """Any PIL image (RGB, RGBA, grayscale, palette, 16-bit or float; any size) -> (28, 28, 3) uint8 levels."""
    if image.getexif().get(0x0112, 1) != 1:        # a phone photo is read the way it is shown (no copy otherwise)
        image = ImageOps.exif_transpose(image)
    if image.mode in ("F", "I", "I;16", "I;16B", "I;16L"):
        # 16-bit and float images: scale their own range to 0..255 (a plain convert would clip to black).
        values = np.asarray(image, dtype=np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))  # transparent pixels read as black
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    ink, paper = image_two_colors(image)
    if image.size != (28, 28):
        image = image.resize((28, 28), Image.BOX if min(image.size) >= 28 else Image.NEAREST)
    values = np.asarray(image, dtype=np.float32) / LEVEL_SCALE                              # (28, 28, 3)
    # Every image of the data has exactly two colors. Shrinking a drawing blends its stroke's edges with
    # the paper into in-between colors that no digit has (a thin white stroke on blue would read as
    # gray); each pixel takes whichever of the two colors it is nearer to instead.
    nearer_ink = np.square(values - ink).sum(-1) < np.square(values - paper).sum(-1)
    return np.where(nearer_ink[..., None], ink, paper).astype(np.uint8)


def image_two_colors(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """two_colors of a full-size RGB image, counted inside PIL: each channel rounded to its level by a lookup
    table, then the (at most 64) colors counted. No numpy copy of the pixels is made, so a 4096x4096 upload
    costs about two images of 50 MB, not the ~370 MB of integer arrays counting them in numpy took."""
    rounded = image.point([(value + LEVEL_SCALE // 2) // LEVEL_SCALE for value in range(256)] * 3)
    # [(pixels, (r, g, b))], most common first; ties go to the lower color id, as in two_colors' argmax
    counts = sorted(rounded.getcolors(64), key=lambda entry: (-entry[0], entry[1]))
    paper = counts[0][1]
    ink = counts[1][1] if len(counts) > 1 else paper
    return np.array(ink, dtype=np.float32), np.array(paper, dtype=np.float32)


def two_colors(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) levels -> the ink and paper colors (3,) each: the paper is the most common color, the ink
    the most common other one (the paper again for a one-color image). Read at full size, where a stroke's
    core outnumbers its anti-aliased edge. The ids are color_keys' (computed here without its int64 copy
    of every channel, which a full-size upload would make hundreds of megabytes)."""
    keys = (levels[..., 0] * 16 + levels[..., 1] * 4 + levels[..., 2]).astype(np.int64).ravel()
    counts = np.bincount(keys, minlength=64)
    paper = int(counts.argmax())
    counts[paper] = 0
    ink = int(counts.argmax()) if counts.any() else paper
    return tuple(key_colors(key).astype(np.float32) for key in (ink, paper))


def read_image(source: str | Path | bytes) -> np.ndarray:
    """Read a file path or raw bytes as (28, 28, 3) levels; ImageInputError on anything unreadable."""
    name = "upload" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)) and Path(source).exists() and not Path(source).is_file():
        # A FIFO or device named like an image would block the open() below forever.
        raise ImageInputError(f"{name} is not a regular file")
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as error:
        raise ImageInputError(f"cannot open {name}: {error.strerror or error}") from None
    with handle, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(handle, formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(f"{name} is {width}x{height} pixels, more than the {MAX_PIXELS} allowed")
            image.load()
            return pil_to_levels(image)
        except ImageInputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLargeError(f"{name} claims more pixels than the {MAX_PIXELS} allowed "
                                     "(a decompression bomb?)") from None
        except UnidentifiedImageError:
            raise ImageInputError(f"{name} is not a readable image (accepted: "
                                  f"{', '.join(ACCEPTED_FORMATS)})") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageInputError(f"{name} is not a readable image: {error}") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding its pixels."""
    with Image.open(path) as image:
        return image.size


def save_png(levels: np.ndarray, path: str | Path) -> None:
    """Write atomically: a failed write (full or read-only disk) leaves no partial file behind."""
    with atomic_path(path) as temp:
        levels_to_pil(levels).save(temp, format="PNG")


def png_bytes(levels: np.ndarray, scale: int = 1) -> bytes:
    buffer = io.BytesIO()
    levels_to_pil(levels, scale).save(buffer, format="PNG")
    return buffer.getvalue()


def caption_grid(images: np.ndarray, captions: list[str], columns: int = 3, scale: int = 6,
                 title: str | None = None) -> Image.Image:
    """A grid of scaled-up images with their captions written underneath each one."""
    font = ImageFont.load_default()
    cell, text_height = 28 * scale, 30
    rows = (len(images) + columns - 1) // columns
    top = 24 if title else 0
    width = columns * (cell + 10) + 10
    sheet = Image.new("RGB", (width, top + rows * (cell + text_height + 10) + 10), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((10, 6), title, fill="black", font=font)
    for index, (levels, caption) in enumerate(zip(images, captions)):
        x = 10 + (index % columns) * (cell + 10)
        y = top + 10 + (index // columns) * (cell + text_height + 10)
        sheet.paste(levels_to_pil(levels, scale), (x, y))
        words = caption.split()
        lines = [" ".join(words[:3]), " ".join(words[3:])] if len(words) > 3 else [caption]
        for line_index, line in enumerate(lines):
            draw.text((x, y + cell + 2 + 13 * line_index), line, fill="black", font=font)
    return sheet
