"""Documents on one model: prompts with their images -> ids, ids -> what each row writes (batched, under the
document grammar, deadline-checked), and written ids -> Continuations with pixels. `Pipeline` turns requests
into these steps (and the retrieval tasks put retrieved documents in front); this module knows nothing of
checkpoints or sampler defaults.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np
import torch

from ..batching import batch_slices
from ..config import SamplingConfig
from ..errors import stop_if_expired
from .document import Continuation, Document, DocumentTokenizer
from .engine import DecodeSettings, decode
from .grammar import DocumentGrammar


class DocumentDecoder:
    """`expired` says when the caller's deadline has passed (checked between batches and decode steps);
    `read_digits` maps a prompt's images, (N, L) codes and their (N, 28, 28, 3) pixels, to the (N,) digits they
    show: the plans a run trained with train.prompt_plans reads in its prompts."""

    def __init__(self, model, vocab, image_tokenizer, device, expired: Callable[[], bool],
                 read_digits: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None = None) -> None:
        self.model, self.vocab, self.image_tokenizer, self.device, self.expired = \
            model, vocab, image_tokenizer, device, expired
        self.read_digits = read_digits

    @cached_property
    def tokenizer(self) -> DocumentTokenizer:
        """Built on first use (not cached while it refuses: a checkpoint trained without documents gets its clear
        message on every call)."""
        return DocumentTokenizer(self.vocab)

    @cached_property
    def grammar(self) -> DocumentGrammar:
        """Built on first use, after `tokenizer` has refused a checkpoint without documents."""
        return DocumentGrammar(self.vocab, self.image_tokenizer.position_tokens(),
                               self.image_tokenizer.token_follows()).to(self.device)

    def prompt_ids(self, prompts: list[str], images: list[list[np.ndarray]]) -> list[list[int]]:
        """Prompts with <image> placeholders and their (28, 28, 3) level images -> ids (<bos> first, <eop> last
        where the vocabulary has it), each checked; every image of every prompt is encoded in one batch."""
        tokenizer = self.tokenizer
        counts = [len(group) for group in images]
        for prompt, count in zip(prompts, counts):
            tokenizer.check(prompt, count)                      # every prompt is checked before any work
        pictures = [np.asarray(image, dtype=np.uint8) for group in images for image in group]
        codes = iter(self.prompt_images(np.stack(pictures)) if pictures else [])
        return [tokenizer.encode(tokenizer.bind(prompt, [next(codes) for _ in range(count)]))
                for prompt, count in zip(prompts, counts)]

    def prompt_images(self, pictures: np.ndarray) -> list[torch.Tensor]:
        """(N, 28, 28, 3) levels -> each image's ids as a prompt holds them: its codes, and with train.prompt_plans
        the plan of the digit `read_digits` reads in it after its colors (one batch for all)."""
        codes = self.image_tokenizer.encode(torch.from_numpy(pictures).to(self.device))
        if not self.vocab.prompt_plans:
            return list(codes.cpu())
        if self.read_digits is None:
            raise ValueError("this run's prompts carry their images' plans (train.prompt_plans): give a reader")
        stop_if_expired(self.expired)
        # Each distinct picture is read once: a request for n continuations may bind the same image n times, and
        # the reading is deterministic (greedy), so the copies share it exactly.
        _, first, copies = np.unique(pictures.reshape(len(pictures), -1), axis=0, return_index=True,
                                     return_inverse=True)
        order = np.argsort(first)                        # the distinct pictures in the order they first appear
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        read = self.read_digits(codes[first[order]], pictures[first[order]])
        digits = read[torch.as_tensor(rank[copies.reshape(-1)], device=read.device)].tolist()
        return [self.tokenizer.planned(image, digit, given=True) for image, digit in zip(codes.cpu(), digits)]

    def write(self, rows: list[list[int]], settings: SamplingConfig, generator, max_new_tokens: int = 0,
              min_words: int = 0) -> list[list[int]]:
        """Prompt ids -> the ids each row writes, in batches of settings.batch_size; for the first min_words
        steps a row writing text writes words (DecodeSettings.min_words)."""
        decode_settings = DecodeSettings(settings.temperature, settings.top_k, settings.top_p, settings.guidance,
                                         greedy_above=settings.greedy_above,
                                         text_temperature=settings.caption_temperature,
                                         max_new_tokens=max_new_tokens, min_words=min_words)
        written = []
        for chunk in batch_slices(len(rows), settings.batch_size):
            stop_if_expired(self.expired)
            unconditional = None
            if settings.guidance != 1.0:   # the unconditional stream: the document without its words
                unconditional = [self.grammar.without_words(ids) for ids in rows[chunk]]
            written += decode(self.model, self.grammar, rows[chunk], decode_settings, unconditional, generator,
                              should_stop=self.expired)
        return written

    def continuation(self, ids: list[int]) -> Continuation:
        """Written ids -> the text (<image> where the model drew), the images as levels, and whether it ended."""
        document: Document = self.tokenizer.decode(ids)
        codes = document.images
        images = (self.image_tokenizer.decode(torch.stack(codes).to(self.device)).cpu().numpy() if codes
                  else np.zeros((0, 28, 28, 3), dtype=np.uint8))
        return Continuation(document.text, images, document.finished)

    def continue_documents(self, prompts: list[str], images: list[list[np.ndarray]], n: int,
                           settings: SamplingConfig, generator) -> list[list[Continuation]]:
        """Each prompt continued n times: per prompt, n Continuations."""
        rows = [ids for ids in self.prompt_ids(prompts, images) for _ in range(n)]
        continuations = [self.continuation(ids) for ids in self.write(rows, settings, generator)]
        return [continuations[index * n:(index + 1) * n] for index in range(len(prompts))]
