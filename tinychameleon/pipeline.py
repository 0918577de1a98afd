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
from .errors import ConfigError, DeadlineExceeded
from .data.colored import caption_of, recolor
from .reranking import best_images, rerank_digits, view_pairs
from .sampling import ModalityRules, generate
from .sequences import image_prefix, split_sequences, text_prefix
from .tokenizers.text import WordTokenizer
from .tokenizers.vocab import IMAGE_LENGTH, SEQUENCE_LENGTH, TEXT_LENGTH, Vocab
from .checkpoint import SAMPLING_FILE, load_config, load_sampling, load_transformer, load_vqvae
from .device import resolve_device

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
FIRST_MODALITY = ("text", "image", "model")  # sample(first=...)


class Pipeline:
    def __init__(self, config: RunConfig, vqvae, model, device: torch.device,
                 sampling: SamplingConfig | None = None, source: str = "") -> None:
        self.config, self.vqvae, self.model, self.device = config, vqvae, model, device
        self.sampling = sampling or SamplingConfig()
        self.vocab = Vocab(config.vq.codebook_size)
        self.rules = ModalityRules(self.vocab, grammar=self.sampling.grammar)
        self.tokenizer = WordTokenizer()
        self.source = source
        self._limits = threading.local()  # per-thread deadline set by time_limit()

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu",
                        sampling: SamplingConfig | None = None) -> "Pipeline":
        """Load a run directory (default: the checkpoint shipped inside the package)."""
        path = Path(path) if path else PRETRAINED_DIR
        config = load_config(path)
        torch_device = resolve_device(device)
        vqvae = load_vqvae(path, config).to(torch_device)
        model = load_transformer(path, config).to(torch_device)
        if sampling is None and (path / SAMPLING_FILE).exists():
            sampling = load_sampling(path / SAMPLING_FILE)
        return cls(config, vqvae, model, torch_device, sampling, str(path))

    def resolve_settings(self, overrides: dict) -> SamplingConfig:
        """The pipeline's settings with per-call overrides, validated (ConfigError names a bad one)."""
        known = {f for f in SamplingConfig.__dataclass_fields__}
        unknown = [key for key in overrides if key not in known]
        if unknown:
            raise ConfigError(f"unknown sampling setting {unknown[0]!r}")
        return replace(self.sampling, **{key: value for key, value in overrides.items() if value is not None}).validate()

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
        if self._expired():
            raise DeadlineExceeded("stopped: the time limit passed")

    def _generate(self, prefix: torch.Tensor, settings: SamplingConfig, generator,
                  length: int = SEQUENCE_LENGTH) -> torch.Tensor:
        outputs = []
        for start in range(0, len(prefix), settings.batch_size):
            self._check_time()
            chunk = prefix[start:start + settings.batch_size].to(self.device)
            outputs.append(generate(self.model, chunk, self.rules, settings.temperature, settings.top_k or None,
                                    settings.guidance, generator, length=length, should_stop=self._expired))
        return torch.cat(outputs)

    def _draw_codes(self, words: torch.Tensor, settings: SamplingConfig, generator) -> torch.Tensor:
        """(B, 6) word ids -> (B, 49) codes; the best of `image_candidates` draws per row."""
        candidates = max(1, settings.image_candidates)
        repeated = words.repeat_interleave(candidates, dim=0)
        _, codes = split_sequences(self.vocab, self._generate(text_prefix(self.vocab, repeated), settings,
                                                              generator))
        if candidates > 1:
            self._check_time()
            codes = best_images(self.model, self.vocab, repeated.to(self.device), codes, candidates)
        return codes

    def _write_words(self, codes: torch.Tensor, settings: SamplingConfig, generator,
                     images: np.ndarray | None = None) -> torch.Tensor:
        """(B, 49) codes -> (B, 6) caption word ids, at the caption temperature unless one was asked for.

        With `images` (the pixels behind `codes`) and caption_views > 1, the digit is re-ranked
        on recolorings of them too.
        """
        words, _ = split_sequences(self.vocab, self._generate(image_prefix(self.vocab, codes), settings, generator))
        if settings.rerank_captions and settings.temperature <= 0:
            # Only greedy captions are re-ranked: a sampled caption should stay a sample.
            self._check_time()
            views = [] if images is None else self._recolored_views(images, settings.caption_views)
            words = rerank_digits(self.model, self.vocab, words, codes, views)
        return words

    def _recolored_views(self, images: np.ndarray, views: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(word ids, codes) of each recoloring of `images`; the digit word is a placeholder."""
        readings = []
        for foreground, background in view_pairs(views):
            pixels = torch.from_numpy(recolor(images, foreground, background)).to(self.device)
            words = torch.tensor(self.tokenizer.encode(caption_of(0, foreground, background)), device=self.device)
            readings.append((words.repeat(len(images), 1), self.vqvae.encode(pixels)))
        return readings

    def _decode_words(self, words: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(row) for row in words.cpu()]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Captions -> (B, 6) word ids; PromptError for one that does not fit the template."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return torch.tensor([self.tokenizer.encode(prompt) for prompt in prompts], dtype=torch.long)

    def generate_images(self, prompts: list[str] | str, n: int = 1, seed: int | None = None, **sampling) -> np.ndarray:
        """Text -> image: (len(prompts) * n, 28, 28, 3) uint8 levels, prompt-major order."""
        settings = self.resolve_settings(sampling)
        words = self.encode_prompts(prompts).repeat_interleave(n, dim=0)
        if len(words) == 0:
            return np.zeros((0, 28, 28, 3), dtype=np.uint8)
        return self.vqvae.decode(self._draw_codes(words, settings, self._generator(seed))).cpu().numpy()

    def _caption_settings(self, sampling: dict) -> SamplingConfig:
        settings = self.resolve_settings(sampling)
        if sampling.get("temperature") is None:
            settings = replace(settings, temperature=settings.caption_temperature)
        return settings

    def caption(self, images: np.ndarray, seed: int | None = None, **sampling) -> list[str]:
        """Image -> text: (B, 28, 28, 3) levels 0..3 -> B captions."""
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 3:
            images = images[None]
        if len(images) == 0:
            return []
        codes = self.vqvae.encode(torch.from_numpy(images).to(self.device))
        words = self._write_words(codes, self._caption_settings(sampling), self._generator(seed), images)
        return self._decode_words(words)

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
        heads = torch.full((n, 2), self.vocab.bos, dtype=torch.long)                 # <bos> <marker>
        if first == "model":
            heads = self._generate(heads[:, :1], settings, generator, length=2)
        else:
            # The marker after <bos> names the modality that has *ended*: text first is <bos> <end of image>.
            heads[:, 1] = self.vocab.end_of_image if first == "text" else self.vocab.end_of_text
        if ancestral:
            words, codes = split_sequences(self.vocab, self._generate(heads, replace(settings, guidance=1.0),
                                                                      generator))
            return self.vqvae.decode(codes).cpu().numpy(), self._decode_words(words)
        heads = heads.to(self.device)
        image_first = heads[:, 1] == self.vocab.end_of_text
        words = torch.zeros(n, TEXT_LENGTH, dtype=torch.long, device=self.device)
        codes = torch.zeros(n, IMAGE_LENGTH, dtype=torch.long, device=self.device)
        text_rows, image_rows = (~image_first).nonzero().squeeze(1), image_first.nonzero().squeeze(1)
        if len(text_rows):
            drawn = self._generate(heads[text_rows], settings, generator, length=2 + TEXT_LENGTH)
            words[text_rows] = drawn[:, 2:] - self.vocab.word_offset
            codes[text_rows] = self._draw_codes(words[text_rows].cpu(), settings, generator)
        if len(image_rows):
            drawn = self._generate(heads[image_rows], settings, generator, length=2 + IMAGE_LENGTH)
            codes[image_rows] = drawn[:, 2:]
            words[image_rows] = self._write_words(drawn[:, 2:], self._caption_settings(sampling), generator)
        return self.vqvae.decode(codes).cpu().numpy(), self._decode_words(words)
