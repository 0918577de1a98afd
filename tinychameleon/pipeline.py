"""The public Python API: load a checkpoint, then draw images, write captions, or sample both.

    from tinychameleon import Pipeline
    pipe = Pipeline.from_pretrained()                 # the shipped checkpoint
    images = pipe.generate_images(["dark green eight on bright cyan"], n=4)   # (4, 28, 28, 3) levels
    captions = pipe.caption(images)
    images, captions = pipe.sample(8)
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import RunConfig, SamplingConfig
from .errors import ConfigError, PromptError
from .data.colored import caption_of
from .reranking import DIGIT_SLOT, DIGIT_WORD_IDS, view_images
from .sampling import ModalityRules
from .sequences import IMAGE_FIRST, TEXT_FIRST, header, split_sequences
from .tokenizers.text import WordTokenizer
from .tokenizers.vocab import HEADER, TEXT_LENGTH, WORDS, Vocab
from .checkpoint import SAMPLING_FILE, load_config, load_sampling, load_transformer, load_image_tokenizer
from .device import resolve_device
from .documents.decoder import DocumentDecoder
from .documents.document import Continuation
from .pairs import PairDecoder
from .pipeline_completion import CompletionTasks
from .pipeline_retrieval import RetrievalTasks
from .pipeline_scales import NextScaleTasks

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
# Shipped checkpoints by name (`--checkpoint var`, `Pipeline.from_pretrained("var")`); a directory of that name,
# where one exists, is loaded instead.
PRETRAINED = {"raster": PRETRAINED_DIR, "var": PRETRAINED_DIR / "var", "memory": PRETRAINED_DIR / "memory"}
FIRST_MODALITY = ("text", "image", "model")  # sample(first=...)


def resolve_checkpoint(path: str | Path | None) -> Path:
    """A run directory, or the shipped checkpoint a name stands for (None: the default, "raster")."""
    if path is None:
        return PRETRAINED["raster"]
    if str(path) in PRETRAINED and not Path(path).is_dir():
        return PRETRAINED[str(path)]
    return Path(path)


class Pipeline(CompletionTasks, RetrievalTasks, NextScaleTasks):
    """Each request method (draw, caption, sample, continue_documents, complete, ..._from_memory) runs under
    torch.inference_mode: no autograd bookkeeping per op makes a request 4-7 % faster than plain no_grad, with the
    same answers (scripts/inference_mode_latency.py). What they return is numpy or text, so no inference tensor
    leaves a request, and the weights still train afterwards (tests/test_pipeline.py)."""

    def __init__(self, config: RunConfig, image_tokenizer, model, device: torch.device,
                 sampling: SamplingConfig | None = None, source: str = "") -> None:
        self.config, self.image_tokenizer, self.model, self.device = config, image_tokenizer, model, device
        self.sampling = sampling or SamplingConfig()
        self.vocab = Vocab.for_config(config)
        self.rules = ModalityRules(self.vocab, grammar=self.sampling.grammar,
                                   image_positions=image_tokenizer.position_tokens(),
                                   image_follows=image_tokenizer.token_follows()).to(device)
        self.tokenizer = WordTokenizer()
        self.pairs = PairDecoder(model, self.vocab, image_tokenizer, self.rules, device, self._expired)
        self.documents = DocumentDecoder(model, self.vocab, image_tokenizer, device, self._expired, self._read_digits)
        self.source = source
        self._limits = threading.local()  # per-thread deadline set by time_limit()
        self._retriever = None            # the shipped retriever and its memory banks (None: the training digits),
        self._banks: dict = {}            # loaded on first use

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu",
                        sampling: SamplingConfig | None = None) -> "Pipeline":
        """Load a run directory, or a shipped checkpoint by name ("raster", the default, "var" or "memory")."""
        path = resolve_checkpoint(path)
        config = load_config(path)
        torch_device = resolve_device(device)
        image_tokenizer = load_image_tokenizer(path, config).to(torch_device)
        model = load_transformer(path, config).to(torch_device)
        if sampling is None and (path / SAMPLING_FILE).exists():
            sampling = load_sampling(path / SAMPLING_FILE)
        return cls(config, image_tokenizer, model, torch_device, sampling, str(path))

    def resolve_settings(self, overrides: dict) -> SamplingConfig:
        """The pipeline's settings with per-call overrides, validated (ConfigError names a bad one)."""
        known = {f for f in SamplingConfig.__dataclass_fields__}
        unknown = [key for key in overrides if key not in known]
        if unknown:
            raise ConfigError(f"unknown sampling setting {unknown[0]!r}")
        settings = replace(self.sampling, **{key: value for key, value in overrides.items() if value is not None})
        return self._check_decoding_settings(settings.validate())

    def document_overrides(self, overrides: dict, entry: str = "documents") -> dict:
        """A call's overrides for images inside documents: sampling.json's `documents` entries (or `retrieved`, for a
        drawing after retrieved documents), then the call's own (a `continue --temperature` still wins)."""
        return {**getattr(self.sampling, entry), **{key: value for key, value in overrides.items() if value is not None}}

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ConfigError(f"seed must be an integer between 0 and 2**63 - 1, got {str(seed)[:40]}")
        return torch.Generator(device=self.device).manual_seed(seed)

    @contextmanager
    def time_limit(self, seconds: float | None, pause: Callable[[], None] | None = None):
        """Within this block, work on this thread stops with DeadlineExceeded once `seconds` have passed
        (checked between decode steps and batches), so abandoned requests free the CPU. `pause`, if given,
        is called at each of those checks and may block: the server uses it to let light requests run
        before a heavy one takes its next step."""
        previous = getattr(self._limits, "deadline", None), getattr(self._limits, "pause", None)
        self._limits.deadline = None if seconds is None else time.monotonic() + seconds
        self._limits.pause = pause
        try:
            yield
        finally:
            self._limits.deadline, self._limits.pause = previous

    def _expired(self) -> bool:
        pause = getattr(self._limits, "pause", None)
        if pause is not None:
            pause()
        deadline = getattr(self._limits, "deadline", None)
        return deadline is not None and time.monotonic() > deadline

    def _check_time(self) -> None:
        self.pairs.check_time()          # one deadline check: the pair decoder asks this pipeline's _expired

    def _draw_codes(self, words: torch.Tensor, settings: SamplingConfig, generator,
                    kept: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 6) word ids -> (B, L) codes; the best of `image_candidates` draws per row (by the model's own
        reading of the prompt, or CLIP's). kept (B, L): image tokens to keep (-1 where the model draws)."""
        candidates = max(1, settings.image_candidates)
        repeated = words.repeat_interleave(candidates, dim=0)
        if self.next_scale:
            if kept is not None:
                self._require_raster("completion")
            return self._draw_scales(repeated, settings, generator, candidates)
        codes = self.pairs.draw(repeated, settings, generator, candidates,
                                None if kept is None else kept.repeat_interleave(candidates, dim=0))
        return self._keep_best(repeated, codes, settings, candidates)

    def _keep_best(self, words: torch.Tensor, codes: torch.Tensor, settings: SamplingConfig, candidates: int
                   ) -> torch.Tensor:
        """(B*n, 6) word ids and (B*n, L) codes, prompt-major -> (B, L): per prompt the drawing CLIP finds closest
        to it (settings.clip_rerank), else the one the model reads its prompt back from likeliest."""
        if candidates == 1:
            return codes
        if settings.clip_rerank:
            self._check_time()
            return self._clip_best(words, codes, candidates)
        return self.pairs.best_of(words, codes, candidates)

    def _write_words(self, codes: torch.Tensor, settings: SamplingConfig, generator,
                     images: np.ndarray | None = None) -> torch.Tensor:
        """(B, L) codes -> (B, 6) caption word ids (`images`: the pixels behind them, which the re-ranking's views
        and CLIP read)."""
        if self.next_scale:
            return self._read_scales(codes, settings, generator, images)
        views = self._caption_views(images, settings)
        return self.pairs.read(codes, settings, generator, [(words, view) for words, view, _ in views],
                               self._clip_reader(codes, images, settings.caption_clip_weight, views))

    def _read_digits(self, codes: torch.Tensor, images: np.ndarray) -> torch.Tensor:
        """(B, L) codes and their pixels -> (B,) the digit each image's caption reads, at the shipped caption
        settings (greedy, re-ranked): the plans of a prompt's images in runs trained with train.prompt_plans."""
        words = self._write_words(codes, self._caption_settings({}), None, images)          # (B, 6) word ids
        digits = torch.full((len(WORDS),), -1, dtype=torch.long, device=words.device)
        digits[DIGIT_WORD_IDS] = torch.arange(len(DIGIT_WORD_IDS), device=words.device)
        return digits[words[:, DIGIT_SLOT]]

    def _caption_views(self, images: np.ndarray | None, settings: SamplingConfig
                       ) -> list[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """(word ids, codes, pixels) of each of the caption_views - 1 views of `images` the re-ranking reads
        (reranking.view_images: recolored, shifted by a pixel; the digit word a placeholder); none unless it runs."""
        if images is None or not settings.reranks_captions:
            return []
        views = []
        for foreground, background, pixels in view_images(images, settings.caption_views):
            words = torch.tensor(self.tokenizer.encode(caption_of(0, foreground, background)), device=self.device)
            codes = self.image_tokenizer.encode(torch.from_numpy(pixels).to(self.device))
            views.append((words.repeat(len(images), 1), codes, pixels))
        return views

    def _decode_words(self, words: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(row) for row in words.cpu()]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Captions -> (B, 6) word ids; PromptError for one that does not fit the template."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return torch.tensor([self.tokenizer.encode(prompt) for prompt in prompts], dtype=torch.long)

    def generate_images(self, prompts: list[str] | str, n: int = 1, seed: int | None = None, **sampling) -> np.ndarray:
        """Text -> image: (len(prompts) * n, 28, 28, 3) uint8 levels, prompt-major order."""
        return self.draw(prompts, n, seed, **sampling)[0]

    @torch.inference_mode()
    def draw(self, prompts: list[str] | str, n: int = 1, seed: int | None = None, **sampling
             ) -> tuple[np.ndarray, list[str]]:
        """Text -> image with the captions drawn for: a prompt may leave words blank ("dark green * on * *");
        the model fills each sample's blanks first (within the grammar and palette), then draws its image."""
        settings = self.resolve_settings(sampling)
        generator = self._generator(seed)
        partial = self.encode_partial(prompts).repeat_interleave(n, dim=0)
        if len(partial) == 0:
            return np.zeros((0, 28, 28, 3), dtype=np.uint8), []
        words = self.fill_blanks(partial, settings, generator)
        images = self.image_tokenizer.decode(self._draw_codes(words, settings, generator)).cpu().numpy()
        return images, self._decode_words(words)

    def encode_partial(self, prompts: list[str] | str) -> torch.Tensor:
        """Captions that may hold "*" blanks -> (B, 6) word ids, -1 at each blank."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return torch.tensor([self.tokenizer.encode_partial(prompt) for prompt in prompts], dtype=torch.long
                            ).view(-1, TEXT_LENGTH)

    def fill_blanks(self, partial: torch.Tensor, settings: SamplingConfig, generator,
                    codes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 6) word ids with -1 blanks -> (B, 6) complete word ids, drawn as a prompt or, with codes (B, L),
        read off those images (PairDecoder.fill_blanks)."""
        return self.pairs.fill_blanks(partial, settings, generator, codes)

    def _caption_settings(self, sampling: dict) -> SamplingConfig:
        """Settings of an image -> text request: the caption's own temperature and guidance unless the call
        names `temperature` / `guidance` itself. Guidance tuned for images would otherwise also run an
        unconditional stream for every caption (twice the decoding) that the caption was never chosen with."""
        settings = self.resolve_settings(sampling)
        if sampling.get("temperature") is None:
            settings = replace(settings, temperature=settings.caption_temperature)
        if sampling.get("guidance") is None:
            settings = replace(settings, guidance=settings.caption_guidance)
        return settings

    @torch.inference_mode()
    def caption(self, images: np.ndarray, seed: int | None = None, **sampling) -> list[str]:
        """Image -> text: (B, 28, 28, 3) levels 0..3 -> B captions."""
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 3:
            images = images[None]
        if len(images) == 0:
            return []
        settings = self._caption_settings(sampling)
        if self.next_scale and settings.guidance != 1.0:   # refused, never ignored: its reading has no guidance
            raise ConfigError("guidance on captions is a raster-decoding setting; the next-scale model reads "
                              "captions without it (leave it at 1)")
        codes = self.image_tokenizer.encode(torch.from_numpy(images).to(self.device))
        words = self._write_words(codes, settings, self._generator(seed), images)
        return self._decode_words(words)

    @torch.inference_mode()
    def sample(self, n: int, seed: int | None = None, first: str = "text", ancestral: bool = False, **sampling
               ) -> tuple[np.ndarray, list[str]]:
        """Unconditional: n (image, caption) pairs from nothing.

        first: the modality drawn freely from the model: "text" (default), "image", or "model" (the
        model picks each row's order, as in training). The second is then made exactly like a
        conditional request (guidance and candidates for images; greedy, re-ranked captions).
        Caption-first is the default because the model's free-running images are its weakest output
        (often ill-formed digits no caption can match), while its guided images are its best.
        ancestral=True draws every token in one plain pass instead (no guidance, no re-ranking):
        samples of the model's joint distribution as it stands.
        """
        if first not in FIRST_MODALITY:
            raise ValueError(f"first must be one of {', '.join(FIRST_MODALITY)}, got {first!r}")
        settings = self.resolve_settings(sampling)
        generator = self._generator(seed)
        if self.next_scale:
            return self._sample_next_scale(n, settings, generator, first, ancestral, sampling)
        if first == "model":
            heads = self.pairs.generate(header(self.vocab, n, None), settings, generator, length=HEADER)
        else:
            heads = header(self.vocab, n, TEXT_FIRST if first == "text" else IMAGE_FIRST)   # <bos> <marker>
        if ancestral:
            plain = replace(settings, guidance=1.0, cd_k=0)
            words, codes = split_sequences(self.vocab, self.pairs.generate(heads, plain, generator))
            return self.image_tokenizer.decode(codes).cpu().numpy(), self._decode_words(words)
        heads = heads.to(self.device)
        image_first = heads[:, 1] == self.vocab.end_of_text
        words = torch.zeros(n, TEXT_LENGTH, dtype=torch.long, device=self.device)
        codes = torch.zeros(n, self.vocab.image_length, dtype=torch.long, device=self.device)
        text_rows, image_rows = (~image_first).nonzero().squeeze(1), image_first.nonzero().squeeze(1)
        if len(text_rows):
            # The caption is drawn like a prompt of blanks: grammar, palette and a color pair the data has.
            blanks = torch.full((len(text_rows), TEXT_LENGTH), -1, dtype=torch.long)
            words[text_rows] = self.fill_blanks(blanks, settings, generator).to(self.device)
            codes[text_rows] = self._draw_codes(words[text_rows].cpu(), settings, generator)
        if len(image_rows):
            drawn = self.pairs.generate(heads[image_rows], settings, generator, length=self.vocab.image_first_codes.stop)
            codes[image_rows] = drawn[:, self.vocab.image_first_codes]
            words[image_rows] = self._write_words(codes[image_rows], self._caption_settings(sampling), generator)
        return self.image_tokenizer.decode(codes).cpu().numpy(), self._decode_words(words)

    @torch.inference_mode()
    def continue_documents(self, prompts: list[str] | str, images: list[list[np.ndarray]] | None = None, n: int = 1,
                           seed: int | None = None, retrieve: int = 0, memory: str | Path | None = None,
                           **sampling) -> list[list[Continuation]]:
        """Mixed-modal documents: each prompt (words with <image> placeholders, bound in order to its list of
        (28, 28, 3) level images) is continued n times; the model writes text, decides when to draw, and
        ends the document. Returns, per prompt, n Continuations (text with <image> where it drew, images).
        With `retrieve` K, the K nearest documents of the memory bank to the prompt's first image (or to its
        words, if it has none) are read first.

            pipe.continue_documents("<image> make the digit normal red .", [[image]])[0][0].images[0]
        """
        self._require_raster("continuing documents")
        tokenizer = self.documents.tokenizer
        if isinstance(prompts, str):      # one prompt: `images` is its list of images
            prompts, images = [prompts], [list(images) if images is not None else []]
        images = images if images is not None else [[] for _ in prompts]
        if len(images) != len(prompts):
            raise PromptError(f"{len(prompts)} prompts but {len(images)} image lists: one list per prompt")
        settings = self.resolve_settings(self.document_overrides(sampling))
        generator = self._generator(seed)
        for prompt, group in zip(prompts, images):
            tokenizer.check(prompt, len(group))                 # every prompt is checked before any work
        if retrieve:
            prompts, images = self._with_memory(prompts, images, retrieve, memory)
        return self.documents.continue_documents(prompts, images, n, settings, generator)
