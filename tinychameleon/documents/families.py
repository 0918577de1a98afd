"""The task families: seeded documents built from colored-MNIST digits, for training and for evaluation.

Each family turns a digit (and random draws) into an `Example`: a prompt with <image> placeholders,
the answer the model should continue with, and, for every placeholder, a `Picture` saying what that
image shows (which digit example lends its shape, in which two colors). The same examples feed
training (as token ids, the answer's images drawn from training digits) and evaluation (the prompt's
images shown as real pictures, the answer's judged). Families and their exact wording:

    digit color        <image> make the digit COLOR .          -> <image>
    background color   <image> make the background COLOR .     -> <image>
    swap               <image> swap the colors .               -> <image>
    change digit       <image> make it a DIGIT .               -> <image>
    what digit         <image> what digit is this ?            -> DIGIT .
    digit color name   <image> what color is the digit ?       -> COLOR .
    background name    <image> what color is the background ?  -> COLOR .
    addition           <image> plus <image> is                 -> DIGIT .        (sums up to nine)
    counting           count from DIGIT to DIGIT in COLOR on COLOR :  -> <image> <image> ...  (2-4 images)
    what comes next    <image> what comes next ?               -> DIGIT : <image>
    draw               COLOR DIGIT on COLOR                    -> <image>
    read               <image>                                 -> COLOR DIGIT on COLOR

Two stepping stones in words alone (train.word_families), for the families that combine digits:

    addition in words  DIGIT plus DIGIT is                     -> DIGIT .
    counting in words  count from DIGIT to DIGIT :             -> DIGIT DIGIT ... .   (2-4 digits)

With retrieval (CM3Leon), two more families put k retrieved documents of the bank in front, each as
"<image> CAPTION .", never the example itself (a `context`, trained at a lower loss weight):

    draw from memory   <image> CAPTION . ... COLOR DIGIT on COLOR  -> <image>
    read from memory   <image> CAPTION . ... <image>               -> COLOR DIGIT on COLOR
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..data.colored import COLOR_NAMES, DIGIT_WORDS, VALID_PAIRS, caption_of

VALID = np.zeros((len(COLOR_NAMES), len(COLOR_NAMES)), dtype=bool)
VALID[VALID_PAIRS[:, 0], VALID_PAIRS[:, 1]] = True


@dataclass(frozen=True)
class Picture:
    """An image of a document: the shape of digit example `shape` of the bank, painted in two colors.
    same_shape: the answer must keep that exact shape (edits); otherwise any shape of `digit` will do.
    stroke: 0 for the shape as written, s > 0 for it in the bank's s-th stroke style (data.colored.TRAINING_STROKES)."""
    shape: int
    digit: int
    foreground: int
    background: int
    same_shape: bool = True
    stroke: int = 0


@dataclass
class Example:
    family: str
    prompt: str                                         # with <image> placeholders
    prompt_images: list[Picture]
    answer: str                                         # what the model should write, <image> where it draws
    answer_images: list[Picture] = field(default_factory=list)
    context: str = ""                                   # retrieved documents read before the prompt
    context_images: list[Picture] = field(default_factory=list)

    @property
    def pictures(self) -> list[Picture]:
        """Every image of the document, in reading order."""
        return self.context_images + self.prompt_images + self.answer_images

    @property
    def text(self) -> str:
        """The whole document's words with <image> placeholders."""
        return " ".join(part for part in (self.context, self.prompt, self.answer) if part)


class DigitBank:
    """The digits a family may use (one split): digit labels and each example's own colors; with retrieval,
    `neighbours` (N, M) are each example's M nearest other examples and `retrieve` how many of them a
    document reads (or, with `retrieve_min`, a number drawn evenly from retrieve_min..retrieve); `strokes` is
    how many stroke styles besides the digits' own a retrieval document may be drawn in (its tokens come from the
    caller's codes of the restyled digits); `words`: the stepping stones (WORD_FAMILIES) are drawn too."""

    def __init__(self, digits: np.ndarray, foreground: np.ndarray, background: np.ndarray,
                 neighbours: np.ndarray | None = None, retrieve: int = 0, strokes: int = 0,
                 retrieve_min: int = 0, words: bool = False) -> None:
        self.digits, self.foreground, self.background = (np.asarray(a, dtype=np.int64)
                                                         for a in (digits, foreground, background))
        self.by_digit = [np.flatnonzero(self.digits == d) for d in range(10)]
        self.neighbours, self.retrieve, self.strokes, self.retrieve_min = neighbours, retrieve, strokes, retrieve_min
        self.words = words

    def any_of(self, digit: int, rng: np.random.Generator) -> int:
        return int(rng.choice(self.by_digit[digit]))


def other_color(rng: np.random.Generator, keep: int, current: int, as_foreground: bool) -> int:
    """A color, not `current`, that makes a valid pair with `keep` (the color that stays)."""
    partners = VALID[:, keep] if as_foreground else VALID[keep, :]
    choices = np.flatnonzero(partners & (np.arange(len(COLOR_NAMES)) != current))
    return int(rng.choice(choices))


def random_pair(rng: np.random.Generator) -> tuple[int, int]:
    foreground, background = VALID_PAIRS[rng.integers(len(VALID_PAIRS))]
    return int(foreground), int(background)


def source(bank: DigitBank, index: int) -> Picture:
    return Picture(index, int(bank.digits[index]), int(bank.foreground[index]), int(bank.background[index]))


def digit_color(bank, index, rng) -> Example:
    image = source(bank, index)
    new = other_color(rng, image.background, image.foreground, as_foreground=True)
    return Example("digit color", f"<image> make the digit {COLOR_NAMES[new]} .", [image], "<image>",
                   [Picture(index, image.digit, new, image.background)])


def background_color(bank, index, rng) -> Example:
    image = source(bank, index)
    new = other_color(rng, image.foreground, image.background, as_foreground=False)
    return Example("background color", f"<image> make the background {COLOR_NAMES[new]} .", [image], "<image>",
                   [Picture(index, image.digit, image.foreground, new)])


def swap(bank, index, rng) -> Example:
    image = source(bank, index)
    return Example("swap", "<image> swap the colors .", [image], "<image>",
                   [Picture(index, image.digit, image.background, image.foreground)])


def change_digit(bank, index, rng) -> Example:
    image = source(bank, index)
    new = int(rng.choice([d for d in range(10) if d != image.digit]))
    return Example("change digit", f"<image> make it a {DIGIT_WORDS[new]} .", [image], "<image>",
                   [Picture(bank.any_of(new, rng), new, image.foreground, image.background, same_shape=False)])


def what_digit(bank, index, rng) -> Example:
    image = source(bank, index)
    return Example("what digit", "<image> what digit is this ?", [image], f"{DIGIT_WORDS[image.digit]} .")


def digit_color_name(bank, index, rng) -> Example:
    image = source(bank, index)
    return Example("digit color name", "<image> what color is the digit ?", [image],
                   f"{COLOR_NAMES[image.foreground]} .")


def background_name(bank, index, rng) -> Example:
    image = source(bank, index)
    return Example("background name", "<image> what color is the background ?", [image],
                   f"{COLOR_NAMES[image.background]} .")


def addends(rng: np.random.Generator) -> tuple[int, int]:
    """Two digits whose sum is drawn evenly from zero to nine, then how it splits: drawing the first digit evenly
    instead makes "nine" the answer 29 % of the time, a prior a model can score on without reading either image."""
    total = int(rng.integers(0, 10))
    first = int(rng.integers(0, total + 1))
    return first, total - first


def counted(rng: np.random.Generator) -> range:
    """The digits a counting document asks for: two to four in a row, within zero..nine."""
    count = int(rng.integers(2, 5))
    start = int(rng.integers(0, 11 - count))
    return range(start, start + count)


def addition(bank, index, rng) -> Example:
    first, second = (source(bank, bank.any_of(digit, rng)) for digit in addends(rng))
    return Example("addition", "<image> plus <image> is", [first, second],
                   f"{DIGIT_WORDS[first.digit + second.digit]} .")


def counting(bank, index, rng) -> Example:
    digits = counted(rng)
    foreground, background = random_pair(rng)
    pictures = [Picture(bank.any_of(d, rng), d, foreground, background, same_shape=False) for d in digits]
    return Example("counting", f"count from {DIGIT_WORDS[digits[0]]} to {DIGIT_WORDS[digits[-1]]} in "
                   f"{COLOR_NAMES[foreground]} on {COLOR_NAMES[background]} :", [],
                   " ".join(["<image>"] * len(digits)), pictures)


def addition_in_words(bank, index, rng) -> Example:
    first, second = addends(rng)
    return Example("addition in words", f"{DIGIT_WORDS[first]} plus {DIGIT_WORDS[second]} is", [],
                   f"{DIGIT_WORDS[first + second]} .")


def counting_in_words(bank, index, rng) -> Example:
    digits = counted(rng)
    return Example("counting in words", f"count from {DIGIT_WORDS[digits[0]]} to {DIGIT_WORDS[digits[-1]]} :", [],
                   " ".join(DIGIT_WORDS[digit] for digit in digits) + " .")


def what_comes_next(bank, index, rng) -> Example:
    image = source(bank, index)
    if image.digit == 9:                                              # nine has no next digit: use an eight
        image = source(bank, bank.any_of(8, rng))
    following = image.digit + 1
    return Example("what comes next", "<image> what comes next ?", [image], f"{DIGIT_WORDS[following]} : <image>",
                   [Picture(bank.any_of(following, rng), following, image.foreground, image.background,
                            same_shape=False)])


def draw(bank, index, rng) -> Example:
    image = source(bank, index)
    return Example("draw", caption_of(image.digit, image.foreground, image.background), [], "<image>",
                   [Picture(index, image.digit, image.foreground, image.background, same_shape=False)])


def read(bank, index, rng) -> Example:
    image = source(bank, index)
    return Example("read", "<image>", [image], caption_of(image.digit, image.foreground, image.background))


def context_text(captions: list[str]) -> str:
    """Retrieved documents as the model reads them: "<image> CAPTION ." each (training and inference alike)."""
    return " ".join(f"<image> {caption} ." for caption in captions)


def memory_context(pictures: list[Picture]) -> str:
    return context_text([caption_of(p.digit, p.foreground, p.background) for p in pictures])


UNRELATED = 0.25  # share of retrieved slots given to a random document: retrieval at inference is not always right


def retrieved(bank, index, rng) -> list[Picture]:
    """`bank.retrieve` (or between bank.retrieve_min and it) of the example's neighbours, drawn at random among its
    M nearest (diversity), each replaced by a random other document with probability UNRELATED (the model learns
    not to trust them blindly)."""
    count = int(rng.integers(bank.retrieve_min, bank.retrieve + 1)) if bank.retrieve_min else bank.retrieve
    chosen = rng.choice(bank.neighbours[index], size=count, replace=False)
    unrelated = rng.random(count) < UNRELATED
    chosen[unrelated] = rng.integers(0, len(bank.digits) - 1, size=int(unrelated.sum()))
    chosen[unrelated & (chosen >= index)] += 1          # any document but the example itself
    return [source(bank, int(row)) for row in chosen]


def in_one_stroke(bank, pictures: list[Picture], rng) -> list[Picture]:
    """The pictures of a retrieval document, all in one stroke style drawn at random (the digits' own among them):
    a memory's style is shared by what it holds, so its strokes tell the model how to draw the query."""
    if not bank.strokes:
        return pictures
    stroke = int(rng.integers(0, bank.strokes + 1))
    return [replace(picture, stroke=stroke) for picture in pictures]


def draw_from_memory(bank, index, rng) -> Example:
    image, context = source(bank, index), retrieved(bank, index, rng)
    *context, image = in_one_stroke(bank, context + [replace(image, same_shape=False)], rng)
    return Example("draw from memory", caption_of(image.digit, image.foreground, image.background), [], "<image>",
                   [image], memory_context(context), context)


def read_from_memory(bank, index, rng) -> Example:
    image, context = source(bank, index), retrieved(bank, index, rng)
    *context, image = in_one_stroke(bank, context + [image], rng)
    return Example("read from memory", "<image>", [image], caption_of(image.digit, image.foreground, image.background),
                   [], memory_context(context), context)


# The one registry of families: name -> (builder, share of training documents). Shares and
# train.answer_loss_weight were tried against these in matched short runs (BENCHMARKS.md, "Document mixture").
FAMILIES: dict[str, tuple[Callable, float]] = {
    "digit color": (digit_color, 1.0), "background color": (background_color, 1.0), "swap": (swap, 1.0),
    "change digit": (change_digit, 1.0), "what digit": (what_digit, 1.0), "digit color name": (digit_color_name, 0.5),
    "background name": (background_name, 0.5), "addition": (addition, 1.0), "counting": (counting, 1.0),
    "what comes next": (what_comes_next, 1.0), "draw": (draw, 0.5), "read": (read, 0.5),
}
# Stepping stones (train.word_families): addition and counting in words alone, a few tokens each, so the sums and
# the order of the digits are learned apart from reading and drawing them; measured like the others, not part of
# the twelve.
WORD_FAMILIES: dict[str, tuple[Callable, float]] = {
    "addition in words": (addition_in_words, 0.5), "counting in words": (counting_in_words, 0.5),
}
# Families that read retrieved documents: chosen only from a bank with neighbours (train.retrieve > 0).
MEMORY_FAMILIES: dict[str, tuple[Callable, float]] = {
    "draw from memory": (draw_from_memory, 4.0), "read from memory": (read_from_memory, 2.0),
}


ALL_FAMILIES = {**FAMILIES, **WORD_FAMILIES, **MEMORY_FAMILIES}   # every builder and share, by name


def family_shares(overrides: dict[str, float] | None = None, words: bool = False, retrieve: bool = False
                  ) -> dict[str, float]:
    """Every family's share of the training documents: the registries', with `overrides` (train.family_shares) on
    top. Refused (ValueError): an unknown name (with the closest ones), and a share of a family this run never draws
    (a stepping stone without `words`, a memory family without `retrieve`), which would be silently ignored."""
    shares = {name: share for name, (_, share) in ALL_FAMILIES.items()}
    for name in overrides or {}:
        if name not in shares:
            close = difflib.get_close_matches(name, list(shares), n=3, cutoff=0.5)
            raise ValueError(f"unknown family {name!r} in the family shares" +
                             (f" (did you mean {', '.join(map(repr, close))}?)" if close else
                              f"; families: {', '.join(shares)}"))
        if name in WORD_FAMILIES and not words or name in MEMORY_FAMILIES and not retrieve:
            needs = "train.word_families (--word-families)" if name in WORD_FAMILIES else "train.retrieve (--retrieve)"
            raise ValueError(f"family {name!r} is drawn only with {needs}: its share would be ignored")
    return {**shares, **(overrides or {})}


def examples(bank: DigitBank, count: int, seed: int | list[int], families: list[str] | None = None,
             shares: dict[str, float] | None = None) -> list[Example]:
    """`count` seeded examples; each picks a family (by its share, or evenly among `families`) and a digit.
    `shares` overrides some families' shares (train.family_shares)."""
    rng = np.random.default_rng(seed)
    names = families or [*FAMILIES, *(WORD_FAMILIES if bank.words else ()), *(MEMORY_FAMILIES if bank.retrieve else ())]
    share_of = family_shares(shares, bank.words, bool(bank.retrieve))
    weights = np.array([1.0 if families else share_of[name] for name in names])
    if weights.sum() <= 0:
        raise ValueError("every family drawn has share 0: give one a positive share")
    chosen = rng.choice(len(names), size=count, p=weights / weights.sum())
    indices = rng.integers(0, len(bank.digits), size=count)
    return [ALL_FAMILIES[names[family]][0](bank, int(index), rng) for family, index in zip(chosen, indices)]
