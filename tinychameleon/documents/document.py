"""A document is any sequence of text segments and images; this module turns one into token ids and back.

    <bos> w w w <boi> i1..iL <eoi> w w <boi> i1..iL <eoi> ... <eod>

Runs trained with train.prompt_end also mark where the prompt ends and the answer begins, as a chat template
marks the assistant's turn: "<image> what digit is this ?" -> "two ." is

    <bos> <boi> i1..iL <eoi> what digit is this ? <eop> two . <eod>

The prompt's end is given, never written by the model; without it a prompt of one image cannot say
"caption this" apart from "an image, then a question about it". Runs trained with plan tokens name the
digit of each image an answer draws after its two colors, before its first stroke, <boi> c1 c2 <plan two>
s1..s49 <eoi>: the model writes it, reading drops it. A prompt's images have none, or, in runs trained with
train.prompt_plans, theirs too, given with the prompt (at inference the pair reader writes it).

Text is words separated by spaces (the caption words, the document words and the punctuation
". ? :" as words of their own); an image is its L image tokens between <boi> and <eoi>; <eod>
closes a finished document. A prompt is a string whose `<image>` placeholders are bound, in order,
to a list of images (the Hugging Face processor convention). Where images start, which positions
are image tokens and what the sampler may write next all follow from these ids (grammar.py), never
from fixed offsets.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import PromptError
from ..tokenizers.text import quoted, warn_off_palette
from ..tokenizers.vocab import PLAN_AT, Vocab

IMAGE_PLACEHOLDER = "<image>"
MAX_PROMPT_CHARACTERS = 400
PUNCTUATION = re.compile(r"([.?:])")


@dataclass
class Document:
    """segments: text (a string of words) or an image ((L,) image token ids), in reading order."""

    segments: list = field(default_factory=list)   # an image may open with its plan token (DocumentTokenizer.planned)
    finished: bool = True        # it ended with <eod> (False: it ran out of room, or is a prompt)

    @property
    def images(self) -> list[torch.Tensor]:
        return [segment for segment in self.segments if not isinstance(segment, str)]

    @property
    def text(self) -> str:
        """The words with <image> where each image stands."""
        return " ".join(segment if isinstance(segment, str) else IMAGE_PLACEHOLDER for segment in self.segments)


@dataclass
class Continuation:
    """What the model wrote after a prompt: its text (<image> where it drew), the images it drew
    ((k, 28, 28, 3) levels, in order) and whether it ended the document itself."""

    text: str
    images: np.ndarray
    finished: bool


def split_words(text: str) -> list[str]:
    """The one normal form of document text: lower case, punctuation as separate words, single spaces."""
    return PUNCTUATION.sub(r" \1 ", text.lower().replace(IMAGE_PLACEHOLDER, f" {IMAGE_PLACEHOLDER} ")).split()


def token_count(words: list[str], image_length: int) -> int:
    """Tokens that words (with <image> placeholders) take in a document: one per word, an image's tokens plus
    <boi> and <eoi> per placeholder."""
    return sum(image_length + 2 if word == IMAGE_PLACEHOLDER else 1 for word in words)


class DocumentTokenizer:
    """Documents and prompts <-> token ids of one vocabulary (one with document tokens)."""

    def __init__(self, vocab: Vocab) -> None:
        if not vocab.documents:
            raise PromptError("this checkpoint was trained without documents; train one with documents "
                              "(tinychameleon train --preset best) to continue documents")
        self.vocab = vocab
        self.word_to_id = dict(zip(vocab.text_words, vocab.text_ids))
        self.id_to_word = {index: word for word, index in self.word_to_id.items()}

    def check(self, prompt: str, image_count: int | None = None) -> list[str]:
        """The prompt's words (with <image> placeholders); PromptError names unknown words and their closest
        known ones, too long a prompt, or a number of images that does not match the placeholders."""
        if not isinstance(prompt, str):
            raise PromptError(f"a prompt must be text, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARACTERS:
            raise PromptError(f"a prompt of {len(prompt)} characters is too long: at most {MAX_PROMPT_CHARACTERS}")
        words = split_words(prompt)
        unknown = [word for word in words if word != IMAGE_PLACEHOLDER and word not in self.word_to_id]
        if unknown:
            hints = "; ".join(f"{quoted(word, 30)}: did you mean "
                              f"{', '.join(difflib.get_close_matches(word, list(self.word_to_id), n=3, cutoff=0.5)) or 'nothing close'}?"
                              for word in unknown[:3])
            raise PromptError(f"unknown word{'s' if len(unknown) > 1 else ''} in {quoted(prompt)} ({hints})")
        placeholders = words.count(IMAGE_PLACEHOLDER)
        if image_count is not None and placeholders != image_count:
            raise PromptError(f"{quoted(prompt)} has {placeholders} {IMAGE_PLACEHOLDER} placeholder"
                              f"{'s' if placeholders != 1 else ''} but {image_count} image"
                              f"{'s were' if image_count != 1 else ' was'} given: one image per placeholder, in order")
        if not words:
            raise PromptError("the prompt is empty: give words, <image> placeholders, or both")
        warn_off_palette(words)
        text_tokens = len(words) - placeholders
        tokens = 1 + token_count(words, self.vocab.prompt_image_span) + self.vocab.prompt_end   # <bos>, words, images, <eop>
        vocab = self.vocab
        if placeholders > vocab.document_images or text_tokens > vocab.document_text or tokens >= vocab.sequence_length:
            raise PromptError(f"{quoted(prompt)} is too long for the model: at most {vocab.document_images} images and "
                              f"{vocab.document_text} other words in a document, with room left for the answer "
                              f"({tokens} of {vocab.sequence_length} tokens)")
        return words

    def bind(self, prompt: str, images: list[torch.Tensor]) -> Document:
        """A prompt string and the image tokens of its placeholders -> an unfinished Document."""
        words = self.check(prompt, len(images))
        segments, text, pending = [], [], iter(images)
        for word in words:
            if word == IMAGE_PLACEHOLDER:
                if text:
                    segments.append(" ".join(text))
                    text = []
                segments.append(next(pending))
            else:
                text.append(word)
        if text:
            segments.append(" ".join(text))
        return Document(segments, finished=False)

    def encode(self, document: Document, answer: Document | None = None) -> list[int]:
        """<bos>, the segments, and <eod> when the document is finished; an unfinished one is a prompt, closed by
        <eop> where the vocabulary marks prompts. With `answer`: the prompt, then the answer's segments and <eod>
        (a training document)."""
        vocab = self.vocab
        ids = [vocab.bos] + self.segment_ids(document.segments)
        if not document.finished and vocab.prompt_end:
            ids.append(vocab.end_prompt)
        if answer is not None:
            return ids + self.segment_ids(answer.segments) + [vocab.end_document]
        if document.finished:
            ids.append(vocab.end_document)
        return ids

    def planned(self, image: torch.Tensor, digit: int, given: bool = False) -> torch.Tensor:
        """(L,) image tokens -> (L + 1,): the image as an answer draws it, its plan token after its two colors
        (train.plan_tokens; unchanged without). `given`: a prompt's image, planned only with train.prompt_plans."""
        if not self.vocab.plan_tokens or (given and not self.vocab.prompt_plans):
            return image
        plan = torch.tensor([self.vocab.first_plan + digit], dtype=image.dtype)
        return torch.cat([image[:PLAN_AT], plan, image[PLAN_AT:]])

    def segment_ids(self, segments: list) -> list[int]:
        ids = []
        for segment in segments:
            if isinstance(segment, str):
                ids.extend(self.word_to_id[word] for word in split_words(segment))
            else:
                ids.extend([self.vocab.begin_image, *(int(token) for token in segment), self.vocab.end_image])
        return ids

    def decode(self, ids) -> Document:
        """Token ids (a prompt's continuation, or a whole document with or without <bos>) -> Document.
        Reading stops at <eod>; an image cut short (no <eoi>) is dropped and the document marked unfinished; plan
        tokens are dropped (an image is its L image tokens)."""
        vocab = self.vocab
        segments, words, image, finished = [], [], None, False
        skipped = ({vocab.bos, vocab.end_prompt} if vocab.prompt_end else {vocab.bos}) | set(vocab.plan_ids)
        for token in (int(token) for token in ids):
            if token in skipped:
                continue
            if token == vocab.end_document:
                finished = True
                break
            if token == vocab.begin_image:
                image = []
                if words:
                    segments.append(" ".join(words))
                    words = []
            elif token == vocab.end_image and image is not None:
                segments.append(torch.tensor(image, dtype=torch.long))
                image = None
            elif image is not None:
                image.append(token)
            elif token in self.id_to_word:
                words.append(self.id_to_word[token])
        if words:
            segments.append(" ".join(words))
        return Document(segments, finished=finished and image is None)
