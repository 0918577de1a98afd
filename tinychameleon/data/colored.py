"""Text-labeled colored MNIST: the palette, valid color pairs, coloring and captions.

Every image is 28x28x3 with 2 bits per channel (levels 0..3). Digit pixels (MNIST
intensity >= 0.5) take the foreground color, the rest the background color. The caption
is six words, foreground first: "dark green eight on bright cyan".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .mnist import load_mnist

# (adjective, color) -> RGB levels 0..3. The order fixes color ids everywhere.
PALETTE: dict[tuple[str, str], tuple[int, int, int]] = {
    ("plain", "black"): (0, 0, 0), ("dark", "gray"): (1, 1, 1), ("plain", "gray"): (2, 2, 2),
    ("plain", "white"): (3, 3, 3), ("normal", "red"): (3, 0, 0), ("dark", "red"): (2, 0, 1),
    ("plain", "orange"): (3, 1, 0), ("light", "orange"): (3, 2, 1), ("plain", "brown"): (2, 1, 0),
    ("plain", "gold"): (3, 2, 0), ("plain", "yellow"): (3, 3, 1), ("bright", "yellow"): (3, 3, 0),
    ("dark", "yellow"): (1, 2, 0), ("plain", "green"): (0, 3, 0), ("light", "green"): (1, 3, 1),
    ("dark", "green"): (1, 2, 1), ("plain", "turquoise"): (0, 2, 2), ("light", "turquoise"): (1, 3, 2),
    ("bright", "cyan"): (0, 3, 3), ("light", "cyan"): (2, 3, 3), ("plain", "blue"): (0, 0, 3),
    ("dark", "blue"): (0, 0, 2), ("light", "blue"): (1, 2, 3), ("plain", "purple"): (2, 0, 2),
    ("light", "purple"): (2, 1, 3), ("dark", "purple"): (1, 1, 2), ("bright", "magenta"): (3, 0, 3),
    ("plain", "magenta"): (3, 1, 2), ("dark", "magenta"): (1, 0, 2), ("light", "pink"): (3, 2, 3),
    ("plain", "pink"): (3, 2, 2),
}
COLOR_NAMES: list[str] = [f"{adjective} {color}" for adjective, color in PALETTE]
COLOR_RGB = np.array(list(PALETTE.values()), dtype=np.uint8)  # (31, 3)
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ADJECTIVES = sorted({adjective for adjective, _ in PALETTE})
HUES = sorted({color for _, color in PALETTE})
MIN_PAIR_DISTANCE = 3  # summed absolute channel difference between foreground and background


def valid_pairs() -> np.ndarray:
    """All (foreground id, background id) pairs whose colors differ enough: (730, 2)."""
    distance = np.abs(COLOR_RGB[:, None, :].astype(int) - COLOR_RGB[None, :, :].astype(int)).sum(-1)
    return np.argwhere(distance >= MIN_PAIR_DISTANCE)


VALID_PAIRS = valid_pairs()


def caption_of(digit: int, foreground: int, background: int) -> str:
    return f"{COLOR_NAMES[foreground]} {DIGIT_WORDS[digit]} on {COLOR_NAMES[background]}"


def colorize(digit_images: np.ndarray, foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 intensities + color ids (N,) -> (N, 28, 28, 3) uint8 levels 0..3."""
    mask = torch.as_tensor(np.asarray(digit_images) >= 128)[..., None]  # intensity >= 0.5 in the 1/256 scale
    # torch.where rather than numpy's: numpy broadcasts the (N, 1, 1, 3) colors ~2.5x slower over 60k images
    colors = (torch.as_tensor(COLOR_RGB[np.asarray(ids)])[:, None, None, :] for ids in (foreground, background))
    return torch.where(mask, *colors).numpy()


def color_keys(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 3) levels -> (N, 784) one id 0..63 per pixel color."""
    flat = images.reshape(len(images), -1, 3).astype(np.int64)
    return (flat[..., 0] * 4 + flat[..., 1]) * 4 + flat[..., 2]


def key_colors(keys: np.ndarray) -> np.ndarray:
    """Color ids 0..63 (any shape) -> their levels, shape (..., 3): the inverse of color_keys."""
    keys = np.asarray(keys)
    return np.stack([keys // 16, keys // 4 % 4, keys % 4], axis=-1)


def color_counts(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 3) levels -> (N, 64) pixels of each of the 64 colors, per image."""
    keys = color_keys(images)
    counts = np.zeros((len(images), 64), dtype=np.int64)
    np.add.at(counts, (np.arange(len(images))[:, None], keys), 1)
    return counts


def digit_pixels(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 3) levels -> (N, 28, 28) bool: the pixels that differ from the image's most common color.

    The background covers ~80 % of every colored MNIST image, so this is the digit's shape.
    """
    keys = color_keys(images)
    return (keys != color_counts(images).argmax(axis=1)[:, None]).reshape(len(images), 28, 28)


def shape_mask(images: torch.Tensor) -> torch.Tensor:
    """(B, 28, 28, 3) levels -> (B, 1, 28, 28) float on the images' device: digit_pixels as one input plane, the
    same under any two colors (what the judge reads its digit from, and the retriever's shape plane)."""
    return torch.from_numpy(digit_pixels(images.cpu().numpy())).float()[:, None].to(images.device)


def recolor(images: np.ndarray, foreground, background) -> np.ndarray:
    """The same digit pixels under another color pair: (N, 28, 28, 3) levels -> (N, 28, 28, 3). The colors
    are one id for every image, or (N,) ids, one pair per image."""
    ids = np.full(len(images), foreground), np.full(len(images), background)
    return colorize(digit_pixels(images).astype(np.uint8) * 255, *ids).astype(np.uint8)


MAX_SHIFT = 2  # shifted copies move a digit by up to this many pixels each way (MNIST leaves a 4-pixel margin)


def shifted(split: "ColoredMNIST", seed: int | list[int], max_shift: int = MAX_SHIFT) -> "ColoredMNIST":
    """The same digits, each moved by a random non-zero (dy, dx) of at most `max_shift` pixels per axis,
    the uncovered border painted in its background color: the same captions, other token grids.

    MNIST centres every digit by its centre of mass, so a shifted copy is a digit the data never
    shows in that place; training reads such copies (train.shifted_reading) but never draws them.
    """
    moves = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)
             if (dy, dx) != (0, 0)]
    choice = np.random.default_rng(seed).integers(0, len(moves), size=len(split))
    images = np.broadcast_to(COLOR_RGB[split.background][:, None, None, :], split.images.shape).copy()
    size = split.images.shape[1]
    for index, (dy, dx) in enumerate(moves):
        rows = np.flatnonzero(choice == index)
        images[rows, max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = \
            split.images[rows, max(-dy, 0):size + min(-dy, 0), max(-dx, 0):size + min(-dx, 0)]
    return ColoredMNIST(images, split.digits, split.foreground, split.background)


# Stroke styles: the neighbourhood each digit pixel spreads to. "bolder" (one pixel wider all round: ink 2.0x) is
# the memory of the style-from-memory measurement; training (train.memory_strokes) sees only strokes spread one
# way, by one pixel each side (ink 1.5x) or two (ink 1.9x), so that memory's style is one the model never drew.
STROKES = {
    "wider": [(0, dx) for dx in (-1, 0, 1)],
    "taller": [(dy, 0) for dy in (-1, 0, 1)],
    "widest": [(0, dx) for dx in (-2, -1, 0, 1, 2)],
    "tallest": [(dy, 0) for dy in (-2, -1, 0, 1, 2)],
    "bolder": [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
}
TRAINING_STROKES = ("wider", "taller", "widest", "tallest")


def thickened(split: "ColoredMNIST", stroke: str) -> "ColoredMNIST":
    """The same digits in the same colors, every digit pixel spread over the neighbourhood STROKES[stroke]."""
    size = split.images.shape[1]
    reach = max(max(abs(dy), abs(dx)) for dy, dx in STROKES[stroke])
    shape = np.pad(digit_pixels(split.images), ((0, 0), (reach, reach), (reach, reach)))
    grown = np.zeros((len(split), size, size), dtype=bool)
    for dy, dx in STROKES[stroke]:
        grown |= shape[:, reach + dy:reach + dy + size, reach + dx:reach + dx + size]
    images = colorize(grown.astype(np.uint8) * 255, split.foreground, split.background).astype(np.uint8)
    return ColoredMNIST(images, split.digits, split.foreground, split.background)


def in_random_strokes(split: "ColoredMNIST", strokes: tuple[str, ...], seed: int = 0) -> "ColoredMNIST":
    """The same digits in the same colors, each in one stroke style drawn at random: as written or one of
    `strokes` (names of STROKES), with equal chances."""
    choice = np.random.default_rng(seed).integers(0, len(strokes) + 1, size=len(split))
    images = split.images.copy()
    for index, stroke in enumerate(strokes, start=1):
        rows = np.flatnonzero(choice == index)
        images[rows] = thickened(split.subset(rows), stroke).images
    return ColoredMNIST(images, split.digits, split.foreground, split.background)


def holdout_pair_ids(count: int, seed: int = 1234) -> np.ndarray:
    """Indices into VALID_PAIRS held out from training for the compositional-generalisation study."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(len(VALID_PAIRS), size=count, replace=False))


@dataclass
class ColoredMNIST:
    """One split: images (N, 28, 28, 3) levels, digits (N,), foreground/background color ids (N,)."""

    images: np.ndarray
    digits: np.ndarray
    foreground: np.ndarray
    background: np.ndarray

    def __len__(self) -> int:
        return len(self.digits)

    def captions(self) -> list[str]:
        return [caption_of(d, f, b) for d, f, b in zip(self.digits, self.foreground, self.background)]

    def subset(self, index) -> "ColoredMNIST":
        return ColoredMNIST(self.images[index], self.digits[index], self.foreground[index], self.background[index])


def make_split(digit_images: np.ndarray, labels: np.ndarray, seed: int | list[int], allowed_pairs: np.ndarray | None = None
               ) -> ColoredMNIST:
    """Draw a valid color pair per image, uniformly and reproducibly from `seed`."""
    pairs = VALID_PAIRS if allowed_pairs is None else VALID_PAIRS[allowed_pairs]
    choice = pairs[np.random.default_rng(seed).integers(0, len(pairs), size=len(labels))]
    foreground, background = choice[:, 0], choice[:, 1]
    return ColoredMNIST(colorize(digit_images, foreground, background).astype(np.uint8),
                        labels.astype(np.int64), foreground.astype(np.int64), background.astype(np.int64))


def training_pairs(holdout_pairs: int) -> np.ndarray | None:
    """Indices into VALID_PAIRS that training may use (None = all of them)."""
    if not holdout_pairs:
        return None
    return np.setdiff1d(np.arange(len(VALID_PAIRS)), holdout_pair_ids(holdout_pairs))


def load_colored_mnist(seed: int = 0, cache_dir: str | Path | None = None, holdout_pairs: int = 0
                       ) -> tuple[ColoredMNIST, ColoredMNIST]:
    """(train, test) colored splits. With `holdout_pairs`, train never sees those color pairs."""
    mnist = load_mnist(cache_dir)
    train = make_split(mnist["train_images"], mnist["train_labels"], seed, training_pairs(holdout_pairs))
    test = make_split(mnist["test_images"], mnist["test_labels"], seed + 1)
    return train, test


# The validation split: 5000 of the 60k MNIST training digits, the same ones in every run (their own
# fixed seed, whatever the data seed). Training never sees them; every choice is made on them, and
# the test split is kept for the final report.
VALIDATION_SIZE = 5000
VALIDATION_SEED = 20_261_123
MNIST_TRAIN_SIZE = 60_000


def validation_rows() -> np.ndarray:
    """Sorted indices of the validation digits among the 60k training digits."""
    return np.sort(np.random.default_rng(VALIDATION_SEED).choice(MNIST_TRAIN_SIZE, VALIDATION_SIZE, replace=False))


def training_rows() -> np.ndarray:
    """Sorted indices of the 55k digits the recipe trains on (all training digits but the validation ones)."""
    return np.setdiff1d(np.arange(MNIST_TRAIN_SIZE), validation_rows())


@dataclass
class Splits:
    train: ColoredMNIST        # 55k: what the tokenizer and the transformer learn from
    validation: ColoredMNIST   # 5k of the training digits, never trained on: every choice is made here
    test: ColoredMNIST         # 10k MNIST test digits: the final report only

    def __getitem__(self, name: str) -> ColoredMNIST:
        if name not in ("train", "validation", "test"):
            raise KeyError(f"unknown split {name!r}; choose train, validation or test")
        return getattr(self, name)


def load_splits(seed: int = 0, cache_dir: str | Path | None = None, holdout_pairs: int = 0) -> Splits:
    """Train / validation / test. Colors come from `load_colored_mnist`, so a digit keeps its coloring."""
    full_train, test = load_colored_mnist(seed, cache_dir, holdout_pairs)
    return Splits(full_train.subset(training_rows()), full_train.subset(validation_rows()), test)


def recolored_train(draw: int, seed: int = 0, cache_dir: str | Path | None = None, holdout_pairs: int = 0
                    ) -> ColoredMNIST:
    """The 55k training digits (validation excluded) under color draw number `draw` (0: `load_splits().train`).

    Same digits, fresh color pairs: the transformer then sees each digit shape under several
    colorings, which regularises its reading of shape apart from color. Draws k >= 1 use the
    seed sequence [seed, k], so they never coincide with the test split's seed + 1.
    """
    if draw == 0:
        return load_splits(seed, cache_dir, holdout_pairs).train
    mnist = load_mnist(cache_dir)
    full = make_split(mnist["train_images"], mnist["train_labels"], [seed, draw], training_pairs(holdout_pairs))
    return full.subset(training_rows())


COLOR_ID = {name: index for index, name in enumerate(COLOR_NAMES)}


def parse_caption(caption: str) -> tuple[int, int, int] | None:
    """'dark green eight on bright cyan' -> (digit, fg id, bg id); None unless well-formed and in the palette."""
    words = caption.split()
    if len(words) != 6 or words[3] != "on" or words[2] not in DIGIT_WORDS:
        return None
    foreground, background = " ".join(words[:2]), " ".join(words[4:])
    if foreground not in COLOR_ID or background not in COLOR_ID:
        return None
    return DIGIT_WORDS.index(words[2]), COLOR_ID[foreground], COLOR_ID[background]
