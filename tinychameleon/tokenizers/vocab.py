"""The joint vocabulary and the sequence layout: where image tokens, words and special tokens live
in one id space, and where each part of a sequence sits.

Ids (defined here and nowhere else):  [0, K) image tokens (K and the tokens per image come from the
image tokenizer) · [K, K+31) words · then <bos>, <end of text>, <end of image>, and <mask> for runs
trained with the causal-masked (CM3) objective · then, for runs trained on documents, the document
words (instructions, questions, punctuation) and <boi> <eoi> <eod>; for runs that mark where a prompt ends,
<eop>; for runs that plan their drawings (train.plan_tokens), ten plan tokens <plan zero> .. <plan nine> last.
New ids only ever go at the end,
so every older checkpoint keeps its ids. The sampler's modality masks are built from these ranges,
and every offset into a pair sequence is a property below, derived from the lengths (documents
derive their layout from their own segments: documents/document.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.colored import ADJECTIVES, DIGIT_WORDS, HUES
from .image import image_token_layout   # the tokenizer family knows its own counts

WORDS: list[str] = ADJECTIVES + HUES + DIGIT_WORDS + ["on"]
SPECIAL_TOKENS = ["<bos>", "<end of text>", "<end of image>"]
TEXT_LENGTH = 6
HEADER = 2             # <bos> and the marker naming the modality that comes first
MASK_TOKEN = "<mask>"
# Words that documents add to the caption words: instructions, questions and their punctuation.
DOCUMENT_WORDS = ["make", "the", "digit", "background", "swap", "colors", "it", "a", "what", "is", "this", "color",
                  "plus", "count", "from", "to", "in", "comes", "next", ".", "?", ":"]
DOCUMENT_TOKENS = ["<boi>", "<eoi>", "<eod>"]   # begin of image, end of image, end of document
PROMPT_END = "<eop>"   # end of prompt: what follows is the answer (a chat template's turn marker); never written
PLAN_TOKENS = [f"<plan {digit}>" for digit in DIGIT_WORDS]   # an image the model draws names its digit ...
PLAN_AT = 2   # ... after its first two tokens: the two colors of the palette kinds, before their first shape token
MAX_DOCUMENT_IMAGES = 4                          # the longest family (counting) draws four images
MAX_DOCUMENT_TEXT = 32                           # text tokens a document may hold besides its images
RETRIEVED_TEXT = 8     # room for each retrieved neighbour past the query's own ("<image> CAPTION ." is <= 7 words)


@dataclass(frozen=True)
class Vocab:
    image_tokens: int             # ids an image token can take (the image tokenizer's token_count)
    infill: bool = False          # with the <mask> sentinel of the causal-masked objective
    image_length: int = 49        # tokens per image (the image tokenizer's tokens_per_image)
    documents: bool = False       # with the document words and <boi> <eoi> <eod> (runs trained on documents)
    prompt_end: bool = False      # with <eop> after a document's prompt (runs trained with train.prompt_end)
    unconditional_without_eop: bool = False   # guidance's unconditional stream (a document without its words) has
                                              # no <eop> either (train.unconditional_without_eop)
    retrieve: int = 0             # most retrieved neighbours a document reads before its query (train.retrieve)
    plan_tokens: bool = False     # an image the model draws is <boi> c1 c2 <plan DIGIT> s1..s49 <eoi> (train.plan_tokens)
    prompt_plans: bool = False    # a prompt's images carry their plan too, given by a reader (train.prompt_plans)

    @classmethod
    def for_config(cls, config) -> "Vocab":
        """The vocabulary of a RunConfig: its image tokenizer's ids and length, and <mask> when it infills or
        draws next-scale (guidance's unconditional stream reads the caption as <mask> tokens)."""
        tokens, length = image_token_layout(config.vq)
        return cls(tokens, infill=config.train.infill_rate > 0 or config.vq.kind == "scales", image_length=length,
                   documents=config.train.documents > 0, prompt_end=config.train.prompt_end,
                   unconditional_without_eop=config.train.unconditional_without_eop, retrieve=config.train.retrieve,
                   plan_tokens=config.train.plan_tokens, prompt_plans=config.train.prompt_plans)

    @property
    def special_tokens(self) -> list[str]:
        return SPECIAL_TOKENS + ([MASK_TOKEN] if self.infill else [])

    @property
    def mask(self) -> int:
        if not self.infill:
            raise ValueError("this vocabulary has no <mask> token (the run was trained without infilling)")
        return self.bos + len(SPECIAL_TOKENS)

    # The layout of a plain sequence (text first / image first):
    #   <bos> <end of image> w1..w6 <end of text> i1..iL      <bos> <end of text> i1..iL <end of image> w1..w6
    @property
    def plain_length(self) -> int:
        """Tokens in a plain sequence: 58 for 49 image tokens."""
        return HEADER + TEXT_LENGTH + 1 + self.image_length

    @property
    def sequence_length(self) -> int:
        """The longest sequence the model must read: a masked-span sequence (two <mask> more) when it infills,
        a document of up to `document_images` images and `document_text` other tokens when it has documents."""
        pairs = self.plain_length + (2 if self.infill else 0)
        return max(pairs, self.document_length) if self.documents else pairs

    @property
    def document_images(self) -> int:
        """Images a document may hold: four (counting), or the retrieved neighbours and the query where more."""
        return max(MAX_DOCUMENT_IMAGES, self.retrieve + 1)

    @property
    def document_text(self) -> int:
        """Text tokens a document may hold besides its images; each neighbour past the fourth image adds its caption."""
        return MAX_DOCUMENT_TEXT + RETRIEVED_TEXT * (self.document_images - MAX_DOCUMENT_IMAGES)

    @property
    def max_retrieve(self) -> int:
        """Retrieved neighbours a document has room for beside its query."""
        return self.document_images - 1

    @property
    def prompt_image_span(self) -> int:
        """Tokens between a prompt image's <boi> and <eoi>: its image tokens, and its plan (train.prompt_plans)."""
        return self.image_length + self.prompt_plans

    @property
    def document_length(self) -> int:
        return self.document_text + self.document_images * (self.image_length + 2 + self.plan_tokens)

    @property
    def text_first_words(self) -> slice:
        return slice(HEADER, HEADER + TEXT_LENGTH)                                   # 2:8

    @property
    def text_first_codes(self) -> slice:
        return slice(self.text_first_words.stop + 1, self.plain_length)             # 9:58, after <end of text>

    @property
    def image_first_codes(self) -> slice:
        return slice(HEADER, HEADER + self.image_length)                             # 2:51

    @property
    def image_first_words(self) -> slice:
        return slice(self.image_first_codes.stop + 1, self.plain_length)            # 52:58, after <end of image>

    @property
    def word_offset(self) -> int:
        return self.image_tokens

    @property
    def digit_words(self) -> int:
        """Id of the word "zero"; the nine other digit words follow it."""
        return self.word_offset + WORDS.index(DIGIT_WORDS[0])

    @property
    def num_words(self) -> int:
        return len(WORDS)

    @property
    def bos(self) -> int:
        return self.image_tokens + len(WORDS)

    @property
    def end_of_text(self) -> int:
        return self.bos + 1

    @property
    def end_of_image(self) -> int:
        return self.bos + 2

    @property
    def document_word_offset(self) -> int:
        """First id of the document words (after the special tokens and <mask>)."""
        if not self.documents:
            raise ValueError("this vocabulary has no document tokens (the run was trained without documents)")
        return self.bos + len(self.special_tokens)

    @property
    def begin_image(self) -> int:
        return self.document_word_offset + len(DOCUMENT_WORDS)

    @property
    def end_image(self) -> int:
        return self.begin_image + 1

    @property
    def end_document(self) -> int:
        return self.begin_image + 2

    @property
    def end_prompt(self) -> int:
        if not self.prompt_end:
            raise ValueError("this vocabulary has no <eop> token (the run was trained without train.prompt_end)")
        return self.begin_image + len(DOCUMENT_TOKENS)

    @property
    def first_plan(self) -> int:
        """Id of <plan zero>; the nine other plans follow it."""
        if not self.plan_tokens:
            raise ValueError("this vocabulary has no plan tokens (the run was trained without train.plan_tokens)")
        return self.end_prompt + 1 if self.prompt_end else self.end_document + 1

    @property
    def plan_ids(self) -> list[int]:
        return list(range(self.first_plan, self.first_plan + len(PLAN_TOKENS))) if self.plan_tokens else []

    @property
    def text_words(self) -> list[str]:
        """Every word a document's text may hold, in id order of `text_ids`."""
        return WORDS + (DOCUMENT_WORDS if self.documents else [])

    @property
    def text_ids(self) -> list[int]:
        """Ids of `text_words`: the caption words, then the document words."""
        extra = list(range(self.document_word_offset, self.begin_image)) if self.documents else []
        return list(self.word_range) + extra

    @property
    def size(self) -> int:
        return self.bos + len(self.special_tokens) + (len(DOCUMENT_WORDS) + len(DOCUMENT_TOKENS) + self.prompt_end
                                                      + len(self.plan_ids) if self.documents else 0)

    @property
    def image_range(self) -> range:
        return range(0, self.image_tokens)

    @property
    def word_range(self) -> range:
        return range(self.word_offset, self.word_offset + len(WORDS))

    def token_name(self, token: int) -> str:
        if token in self.image_range:
            return f"<img {token}>"
        if token in self.word_range:
            return WORDS[token - self.word_offset]
        if token < self.bos + len(self.special_tokens):
            return self.special_tokens[token - self.bos]
        if token in self.plan_ids:
            return PLAN_TOKENS[token - self.first_plan]
        extra = DOCUMENT_WORDS + DOCUMENT_TOKENS + [PROMPT_END]
        return extra[token - self.document_word_offset]

    def to_dict(self) -> dict:
        return {"image_tokens": self.image_tokens, "image_length": self.image_length, "words": WORDS,
                "special_tokens": self.special_tokens,
                "word_offset": self.word_offset, "bos": self.bos, "end_of_text": self.end_of_text,
                "end_of_image": self.end_of_image, **({"mask": self.mask} if self.infill else {}),
                **({"document_words": DOCUMENT_WORDS, "document_word_offset": self.document_word_offset,
                    "begin_image": self.begin_image, "end_image": self.end_image,
                    "end_document": self.end_document} if self.documents else {}),
                **({"end_prompt": self.end_prompt} if self.prompt_end else {}),
                **({"plan_tokens": PLAN_TOKENS, "first_plan": self.first_plan} if self.plan_tokens else {}),
                "size": self.size}
