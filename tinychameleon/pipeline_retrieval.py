"""What a Pipeline does with the retriever (CM3Leon): read a query's retrieved documents before drawing, reading
or continuing, and rerank best-of-n drawings (and caption digits) by CLIP. A mixin of `Pipeline`, kept apart so that the pipeline
stays about the model; every method uses the pipeline's document decoder (`documents/decoder.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import ConfigError, PromptError
from .reranking import DIGIT_SLOT, with_digits
from .tokenizers.vocab import TEXT_LENGTH


class RetrievalTasks:
    def _clip_best(self, words: torch.Tensor, codes: torch.Tensor, candidates: int) -> torch.Tensor:
        """Best of n by the retriever's image-caption similarity (DALL-E's and CM3Leon's CLIP reranking):
        (B*n, 6) word ids and (B*n, L) codes, prompt-major -> (B, L)."""
        retriever = self._load_retriever()
        images = self.image_tokenizer.decode(codes.to(self.device)).cpu().numpy()
        scores = torch.from_numpy(retriever.similarity(self._decode_words(words), images)).view(-1, candidates)
        best = scores.argmax(dim=1)
        return codes.view(-1, candidates, codes.shape[-1])[torch.arange(len(best)), best.to(codes.device)]

    def _clip_reader(self, codes: torch.Tensor, images: np.ndarray | None, weight: float,
                     views: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] = ()
                     ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """A second reader for the digit re-ranking (reranking.choose_digits): candidate captions (B, m, 6) word ids
        -> (B, m), `weight` times the retriever's cosine of each with its row's image (`images`, or the B images
        `codes` decode to), summed over the image and its `views` (word ids, codes, pixels), each view's captions
        in its own colors. None at weight 0; nothing runs until the re-ranking asks."""
        if not weight:
            return None

        def scores(candidates: torch.Tensor) -> torch.Tensor:
            retriever = self._load_retriever()
            pixels = images if images is not None else self.image_tokenizer.decode(codes.to(self.device)).cpu().numpy()
            B, m, _ = candidates.shape
            digits = candidates[:, :, DIGIT_SLOT]                                        # (B, m) word ids
            total = torch.zeros(B, m)
            for view_candidates, view_pixels in [(candidates, pixels),
                                                 *((with_digits(words, digits), view) for words, _, view in views)]:
                image_vectors = torch.from_numpy(retriever.embed_images(view_pixels))          # (B, D)
                texts = self._decode_words(view_candidates.reshape(B * m, -1))
                text_vectors = torch.from_numpy(retriever.embed_texts(texts)).view(B, m, -1)  # (B, m, D)
                total += (text_vectors * image_vectors[:, None]).sum(-1)
            return weight * total

        return scores

    def _load_retriever(self):
        from .retrieval.retriever import Retriever

        if self._retriever is None:
            self._retriever = Retriever.from_pretrained()
        return self._retriever

    def memory(self, memory: str | Path | None = None):
        """(retriever, bank): the shipped retriever and the training digits, or a folder (`--memory DIR`)."""
        from .retrieval.memory import load_bank

        key = None if memory is None else str(memory)   # a folder named "None" is not the default bank
        if key not in self._banks:
            retriever = self._load_retriever()
            self._banks[key] = (retriever, load_bank(retriever, memory))
        return self._banks[key]

    def _memory_rows(self, prompts: list[str], contexts: list[tuple[str, np.ndarray]], query_images=None
                     ) -> list[list[int]]:
        """Ids of "<context> <prompt>" documents; the prompt's own <image> (reading) is the query image."""
        images = [list(pictures) + ([] if query_images is None else [query_images[row]])
                  for row, (_, pictures) in enumerate(contexts)]
        return self.documents.prompt_ids([f"{context} {prompt}" for prompt, (context, _) in zip(prompts, contexts)], images)

    @torch.inference_mode()
    def draw_from_memory(self, prompts: list[str] | str, n: int = 1, seed: int | None = None, retrieve: int = 2,
                         memory: str | Path | None = None, **sampling) -> tuple[np.ndarray, list[str]]:
        """Text -> image after the prompt's `retrieve` nearest documents of the memory bank (default: the training
        digits; a folder changes what the model sees without retraining). Returns (len * n) images and prompts."""
        from .retrieval.augment import retrieve_contexts
        from .tokenizers.text import normalize_prompt

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        for prompt in prompts:
            self.tokenizer.check(prompt)                        # whole captions: no "*" blanks with retrieval
        self._check_retrieve(retrieve)
        retriever, bank = self.memory(memory)
        contexts = retrieve_contexts(retriever, bank, prompts, retrieve)
        settings = self.resolve_settings(self.document_overrides(sampling, "retrieved"))
        candidates = max(1, settings.image_candidates)       # best of n, as without retrieval (Pipeline._keep_best)
        rows = [ids + [self.vocab.begin_image] for ids in self._memory_rows(prompts, contexts)
                for _ in range(n * candidates)]
        span, plans = self.documents.grammar.image_span, set(self.vocab.plan_ids)   # span: L, and a plan if any
        written = self.documents.write(rows, settings, self._generator(seed), span + 1)
        codes = torch.tensor([[token for token in ids[:span] if token not in plans] for ids in written],
                             device=self.device)                                    # the grammar wrote it whole
        words = self.encode_prompts(prompts).to(self.device).repeat_interleave(n * candidates, dim=0)
        codes = self._keep_best(words, codes, settings, candidates)
        return self.image_tokenizer.decode(codes).cpu().numpy(), [normalize_prompt(p) for p in prompts for _ in range(n)]

    @torch.inference_mode()
    def caption_from_memory(self, images: np.ndarray, seed: int | None = None, retrieve: int = 2,
                            memory: str | Path | None = None, **sampling) -> list[str]:
        """Image -> text after the image's `retrieve` nearest documents of the memory bank."""
        from .retrieval.augment import retrieve_contexts

        images = np.asarray(images, dtype=np.uint8)
        images = images[None] if images.ndim == 3 else images
        self._check_retrieve(retrieve)
        retriever, bank = self.memory(memory)
        contexts = retrieve_contexts(retriever, bank, list(images), retrieve)
        rows = self._memory_rows(["<image>"] * len(images), contexts, images)
        # A caption is asked for: the answer's first six tokens are words (the model may not end or draw first).
        written = self.documents.write(rows, self._caption_settings(sampling), self._generator(seed), TEXT_LENGTH + 1,
                                       min_words=TEXT_LENGTH)
        tokenizer = self.documents.tokenizer
        return [" ".join(tokenizer.decode(ids).text.split()[:TEXT_LENGTH]) for ids in written]

    def _with_memory(self, prompts: list[str], images: list[list[np.ndarray]], retrieve: int, memory
                     ) -> tuple[list[str], list[list[np.ndarray]]]:
        """Prompts with their retrieved context in front (queried by the first image, else by the words)."""
        from .retrieval.augment import retrieve_contexts
        from .documents.document import IMAGE_PLACEHOLDER, split_words

        self._check_retrieve(retrieve)
        retriever, bank = self.memory(memory)
        queries = [group[0] if len(group) else " ".join(w for w in split_words(prompt) if w != IMAGE_PLACEHOLDER)
                   for prompt, group in zip(prompts, images)]
        contexts = retrieve_contexts(retriever, bank, queries, retrieve)
        return ([f"{context} {prompt}" for prompt, (context, _) in zip(prompts, contexts)],
                [list(pictures) + list(group) for group, (_, pictures) in zip(images, contexts)])

    def _check_retrieve(self, retrieve: int) -> None:
        if not self.vocab.documents:
            raise PromptError("this checkpoint was trained without documents; --retrieve needs one trained with "
                              "retrieved neighbours (train.retrieve)")
        most = self.vocab.max_retrieve
        if isinstance(retrieve, bool) or not isinstance(retrieve, int) or not 1 <= retrieve <= most:
            raise ConfigError(f"retrieve must be 1..{most} for this checkpoint (its documents hold "
                              f"{self.vocab.document_images} images: the neighbours and the query), "
                              f"got {str(retrieve)[:40]}")

