"""The joint vocabulary: where image codes, words and special tokens live in one id space.

Layout (defined here and nowhere else):  [0, K) image codes · [K, K+31) words ·
then <bos>, <end of text>, <end of image>. The sampler's modality masks are built from
these ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.colored import ADJECTIVES, DIGIT_WORDS, HUES

WORDS: list[str] = ADJECTIVES + HUES + DIGIT_WORDS + ["on"]
SPECIAL_TOKENS = ["<bos>", "<end of text>", "<end of image>"]
TEXT_LENGTH = 6
IMAGE_LENGTH = 49  # 7 x 7 grid of codes
SEQUENCE_LENGTH = 1 + 1 + TEXT_LENGTH + 1 + IMAGE_LENGTH  # 58


@dataclass(frozen=True)
class Vocab:
    codebook_size: int

    @property
    def word_offset(self) -> int:
        return self.codebook_size

    @property
    def num_words(self) -> int:
        return len(WORDS)

    @property
    def bos(self) -> int:
        return self.codebook_size + len(WORDS)

    @property
    def end_of_text(self) -> int:
        return self.bos + 1

    @property
    def end_of_image(self) -> int:
        return self.bos + 2

    @property
    def size(self) -> int:
        return self.bos + len(SPECIAL_TOKENS)

    @property
    def image_range(self) -> range:
        return range(0, self.codebook_size)

    @property
    def word_range(self) -> range:
        return range(self.word_offset, self.word_offset + len(WORDS))

    def token_name(self, token: int) -> str:
        if token in self.image_range:
            return f"<img {token}>"
        if token in self.word_range:
            return WORDS[token - self.word_offset]
        return SPECIAL_TOKENS[token - self.bos]

    def to_dict(self) -> dict:
        return {"codebook_size": self.codebook_size, "words": WORDS, "special_tokens": SPECIAL_TOKENS,
                "word_offset": self.word_offset, "bos": self.bos, "end_of_text": self.end_of_text,
                "end_of_image": self.end_of_image, "size": self.size}
