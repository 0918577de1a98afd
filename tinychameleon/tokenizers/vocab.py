"""The joint vocabulary: where image codes, words and special tokens live in one id space.

Layout (defined here and nowhere else):  [0, K) image codes · [K, K+31) words ·
then <bos>, <end of text>, <end of image>, and <mask> for runs trained with the causal-masked
(CM3) objective. The sampler's modality masks are built from these ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.colored import ADJECTIVES, DIGIT_WORDS, HUES

WORDS: list[str] = ADJECTIVES + HUES + DIGIT_WORDS + ["on"]
SPECIAL_TOKENS = ["<bos>", "<end of text>", "<end of image>"]
TEXT_LENGTH = 6
IMAGE_LENGTH = 49  # 7 x 7 grid of codes
SEQUENCE_LENGTH = 1 + 1 + TEXT_LENGTH + 1 + IMAGE_LENGTH  # 58
MASK_TOKEN = "<mask>"
INFILL_LENGTH = SEQUENCE_LENGTH + 2  # a masked span: one <mask> where it was, one before it at the end


@dataclass(frozen=True)
class Vocab:
    codebook_size: int
    infill: bool = False          # with the <mask> sentinel of the causal-masked objective

    @classmethod
    def for_config(cls, config) -> "Vocab":
        """The vocabulary of a RunConfig: its tokenizer's codes, and <mask> when it trains with infilling."""
        return cls(config.vq.codebook_size, infill=config.train.infill_rate > 0)

    @property
    def special_tokens(self) -> list[str]:
        return SPECIAL_TOKENS + ([MASK_TOKEN] if self.infill else [])

    @property
    def mask(self) -> int:
        if not self.infill:
            raise ValueError("this vocabulary has no <mask> token (the run was trained without infilling)")
        return self.bos + len(SPECIAL_TOKENS)

    @property
    def sequence_length(self) -> int:
        """The longest sequence the model must read: a masked-span sequence when it infills."""
        return INFILL_LENGTH if self.infill else SEQUENCE_LENGTH

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
        return self.bos + len(self.special_tokens)

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
        return self.special_tokens[token - self.bos]

    def to_dict(self) -> dict:
        return {"codebook_size": self.codebook_size, "words": WORDS, "special_tokens": self.special_tokens,
                "word_offset": self.word_offset, "bos": self.bos, "end_of_text": self.end_of_text,
                "end_of_image": self.end_of_image, **({"mask": self.mask} if self.infill else {}), "size": self.size}
