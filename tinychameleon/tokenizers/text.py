"""Word tokenizer: six-word captions <-> word ids, with errors a person can act on."""

from __future__ import annotations

import difflib
import warnings

from ..data.colored import ADJECTIVES, COLOR_NAMES, DIGIT_WORDS, HUES, PALETTE
from ..errors import PromptError
from .vocab import WORDS

TEMPLATE = "<adjective> <color> <digit> on <adjective> <color>"
EXAMPLE = "dark green eight on bright cyan"
MAX_PROMPT_CHARACTERS = 200
BLANK = "*"  # a word for the model to fill: "dark green * on bright cyan"  # longer input is refused before any processing, and never echoed back in full


def quoted(text: str, limit: int = 60) -> str:
    """repr() of user text, cut to a short prefix for error messages."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def normalize_prompt(prompt: str) -> str:
    """The one normal form of a caption: lower case, single spaces."""
    return " ".join(prompt.lower().split())
# Which words may stand in each of the six slots.
SLOTS: list[tuple[str, list[str]]] = [
    ("adjective", ADJECTIVES), ("color", HUES), ("digit", DIGIT_WORDS),
    ("'on'", ["on"]), ("adjective", ADJECTIVES), ("color", HUES),
]


class PaletteWarning(UserWarning):
    """A well-formed color that is not one of the 31 palette colors."""


def warn_off_palette(words: list[str], stacklevel: int = 4) -> None:
    """A PaletteWarning for each adjective and hue side by side in `words` that name no palette color (the model
    never saw "light yellow"), with the palette's colors of that hue; stacklevel points at the caller's caller."""
    for adjective, hue in zip(words, words[1:]):
        if adjective in ADJECTIVES and hue in HUES and (adjective, hue) not in PALETTE:
            same_hue = [name for name in COLOR_NAMES if name.endswith(" " + hue)]
            warnings.warn(f"'{adjective} {hue}' is not a palette color; palette colors of hue {hue}: "
                          f"{', '.join(same_hue)}", PaletteWarning, stacklevel=stacklevel)


class WordTokenizer:
    """Maps words to ids 0..30 (add `Vocab.word_offset` for joint ids) and back."""

    def __init__(self) -> None:
        self.words = list(WORDS)
        self.word_to_id = {word: index for index, word in enumerate(self.words)}

    def normalize(self, prompt: str) -> list[str]:
        if not isinstance(prompt, str):
            raise PromptError(f"a prompt must be text, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARACTERS:
            raise PromptError(f"a prompt of {len(prompt)} characters is too long: at most {MAX_PROMPT_CHARACTERS} "
                              f"({TEMPLATE}, e.g. '{EXAMPLE}')")
        return normalize_prompt(prompt).split()

    def check(self, prompt: str, blanks: bool = False) -> list[str]:
        """Validate a prompt against the template; return its words. Raises PromptError.
        With blanks=True a word may be BLANK ("*"), to be filled by the model."""
        words = self.normalize(prompt)
        unknown = [word for word in words if word not in self.word_to_id and not (blanks and word == BLANK)]
        if unknown:
            hints = "; ".join(f"{quoted(word, 30)}: did you mean {', '.join(self.closest(word)) or 'nothing close'}?"
                              for word in unknown[:3])
            raise PromptError(f"unknown word{'s' if len(unknown) > 1 else ''} in {quoted(prompt)} ({hints}). "
                              f"Expected: {TEMPLATE}, e.g. '{EXAMPLE}'")
        if len(words) != len(SLOTS):
            raise PromptError(f"{quoted(prompt)} has {len(words)} words, expected 6: {TEMPLATE}, "
                              f"e.g. '{EXAMPLE}'")
        for position, (word, (slot, allowed)) in enumerate(zip(words, SLOTS)):
            if word not in allowed and word != BLANK:
                options = ", ".join(difflib.get_close_matches(word, allowed, n=3, cutoff=0) or allowed[:3])
                raise PromptError(f"word {position + 1} of {quoted(prompt)} is {word!r} but should be a {slot} "
                                  f"(closest: {options}). Expected: {TEMPLATE}")
        warn_off_palette(words)
        return words

    def fits_template(self, caption: str) -> bool:
        words = self.normalize(caption)
        return len(words) == len(SLOTS) and all(word in allowed for word, (_, allowed) in zip(words, SLOTS))

    def closest(self, word: str) -> list[str]:
        return difflib.get_close_matches(word, self.words, n=3, cutoff=0.5)

    def encode(self, prompt: str) -> list[int]:
        return [self.word_to_id[word] for word in self.check(prompt)]

    def encode_partial(self, prompt: str) -> list[int]:
        """Like encode, but each BLANK word becomes -1 (the model fills it)."""
        return [-1 if word == BLANK else self.word_to_id[word] for word in self.check(prompt, blanks=True)]

    def decode(self, ids) -> str:
        return " ".join(self.words[int(index)] for index in ids)
