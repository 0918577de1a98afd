"""What a Pipeline does with a next-scale checkpoint (`--checkpoint var`): draw a scale per forward pass,
read captions in the same weights, and keep the best of n drawings by the model's own reading of the
prompt. A mixin of `Pipeline`: the pipeline's public methods (generate, caption, sample) stay the same
for either generator and call these where the raster model would decode token by token."""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np
import torch

from .batching import batch_slices
from .config import SamplingConfig
from .errors import ConfigError
from .nextscale import sampler
from .nextscale.model import NextScaleTransformer
from .nextscale.objective import reading_nll
from .tokenizers.vocab import TEXT_LENGTH

# Raster-only settings: each names a decoding the next-scale sampler does not have (refused, never ignored).
RASTER_ONLY_SETTINGS = {"cd_k": 0, "mixed_pool": False, "caption_guidance": 1.0}
# Next-scale-only settings: (off value, what it does there and why the raster model has no use for it).
NEXT_SCALE_ONLY_SETTINGS = {
    "fine_temperature": (1.0, "sets each scale's temperature of the next-scale model; the raster model draws with "
                              "one temperature"),
    "guided_scales": (0, "picks the scales of the next-scale model that guidance steers; the raster model guides "
                         "every token"),
}


class NextScaleTasks:
    @property
    def next_scale(self) -> bool:
        return isinstance(self.model, NextScaleTransformer)

    def _require_raster(self, task: str) -> None:
        if self.next_scale:
            raise ConfigError(f"{task} needs the raster model: the next-scale model (this checkpoint) draws whole "
                              "images from captions and reads them; use the default checkpoint")

    def _check_decoding_settings(self, settings: SamplingConfig) -> SamplingConfig:
        """Refuse a setting the checkpoint's generator has no use for, naming it (never ignore one)."""
        if not self.next_scale:
            for name, (off, why) in NEXT_SCALE_ONLY_SETTINGS.items():
                if getattr(settings, name) != off:
                    raise ConfigError(f"{name} {why} (leave it at {off:g})")
            return settings
        for name, off in RASTER_ONLY_SETTINGS.items():
            if getattr(settings, name) != off:
                raise ConfigError(f"{name} is a raster-decoding setting; the next-scale model has no such decoding "
                                  f"(leave it at {off})")
        return settings

    def _scale_temperatures(self, settings: SamplingConfig) -> list[float]:
        """One temperature per block, by its scale: `temperature` at the coarsest, times `fine_temperature` at the
        finest (both halves of a checkerboard's finest scale)."""
        layout = self.model.layout
        finest = len(layout.scales) - 1
        return [settings.temperature * (1 + (settings.fine_temperature - 1) * scale / finest)
                for scale in layout.block_scale]

    def _guided_blocks(self, settings: SamplingConfig) -> int:
        """guided_scales counts scales; the sampler counts blocks (a checkerboard's finest scale is two)."""
        if not settings.guided_scales:
            return 0
        return sum(scale < settings.guided_scales for scale in self.model.layout.block_scale)

    @cached_property
    def _image_rules(self) -> sampler.ImageRules:
        return sampler.ImageRules(self.vocab, self.image_tokenizer).to(self.device)

    def _draw_scales(self, words: torch.Tensor, settings: SamplingConfig, generator, candidates: int = 1,
                     masked: bool = False) -> torch.Tensor:
        """(B * candidates, 6) word ids, prompt-major -> (B, 106) image ids: every candidate drawn a scale per
        pass, then the one whose prompt the model reads back likeliest (or CLIP's choice). masked=True draws
        from nothing (the caption read as <mask> tokens; the words are placeholders)."""
        codes = []
        for rows in batch_slices(len(words), settings.batch_size):
            self._check_time()
            codes.append(sampler.draw(self.model, self.image_tokenizer.shape, self.vocab, self._image_rules,
                                      words[rows].to(self.device), self._scale_temperatures(settings), settings.top_k or None,
                                      settings.top_p, settings.guidance, generator, should_stop=self._expired,
                                      masked=masked, guided_blocks=self._guided_blocks(settings),
                                      greedy_above=settings.greedy_above))
        codes = torch.cat(codes)
        if candidates == 1:
            return codes
        self._check_time()
        if settings.clip_rerank:
            return self._clip_best(words, codes, candidates)
        with torch.no_grad():
            scores = -reading_nll(self.model, self.image_tokenizer.shape, self.vocab, words.to(self.device),
                                  codes).sum(1)
        best = scores.view(-1, candidates).argmax(dim=1)
        return codes.view(-1, candidates, codes.shape[-1])[torch.arange(len(best)), best]

    def _read_scales(self, codes: torch.Tensor, settings: SamplingConfig, generator,
                     images: np.ndarray | None = None) -> torch.Tensor:
        """(B, 106) image ids -> (B, 6) caption word ids, within the caption grammar; greedy captions' digits
        re-ranked by Bayes' rule with rerank_captions, on the image and its views (caption_views; plus CLIP's
        reading of `images` and the views, caption_clip_weight)."""
        words = []
        for rows in batch_slices(len(codes), settings.batch_size):
            self._check_time()
            chunk = codes[rows].to(self.device)
            read = sampler.read(self.model, self.image_tokenizer.shape, self.vocab, self.rules, chunk,
                                settings.temperature, settings.top_k or None, settings.top_p, generator)
            if settings.reranks_captions:
                self._check_time()
                pixels = None if images is None else images[rows]
                views = self._caption_views(pixels, settings)
                read = sampler.rerank_digits(self.model, self.image_tokenizer.shape, self.vocab, read, chunk,
                                             settings.caption_hypotheses,
                                             self._clip_reader(chunk, pixels, settings.caption_clip_weight, views),
                                             views=[(view_words, view) for view_words, view, _ in views])
            words.append(read)
        return torch.cat(words)

    def _draw_unconditional_scales(self, n: int, settings: SamplingConfig, generator) -> torch.Tensor:
        """n images from nothing: the caption read as <mask> tokens (guidance's unconditional stream), drawn plain."""
        return self._draw_scales(torch.zeros(n, TEXT_LENGTH, dtype=torch.long), replace(settings, guidance=1.0),
                                 generator, masked=True)

    def _sample_next_scale(self, n: int, settings: SamplingConfig, generator, first: str, ancestral: bool,
                           sampling: dict) -> tuple[np.ndarray, list[str]]:
        """`sample` for the next-scale model, which writes the caption first in its one generative order
        (first="model" is that order). first="image" draws from the masked caption, then reads the image."""
        if ancestral:
            settings = replace(settings, guidance=1.0)
        if first == "image":
            codes = self._draw_unconditional_scales(n, settings, generator)
            words = self._write_words(codes, self._caption_settings(sampling), generator)
        else:
            blanks = torch.full((n, TEXT_LENGTH), -1, dtype=torch.long)
            words = self.fill_blanks(blanks, settings, generator)
            codes = self._draw_codes(words, settings, generator)
        return self.image_tokenizer.decode(codes).cpu().numpy(), self._decode_words(words)
