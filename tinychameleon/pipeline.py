"""The public Python API: load a checkpoint, then draw images, write captions, or sample both.

    from tinychameleon import Pipeline
    pipe = Pipeline.from_pretrained()                 # the shipped checkpoint
    images = pipe.generate_images(["dark green eight on bright cyan"], n=4)   # (4, 28, 28, 3) levels
    captions = pipe.caption(images)
    images, captions = pipe.sample(8)
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .config import RunConfig, SamplingConfig
from .errors import PromptError
from .sampling import ModalityRules, generate
from .sequences import image_prefix, split_sequences, text_prefix
from .tokenizers.text import WordTokenizer
from .tokenizers.vocab import Vocab
from .training.checkpoint import load_config, load_transformer, load_vqvae
from .training.device import resolve_device

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


class Pipeline:
    def __init__(self, config: RunConfig, vqvae, model, device: torch.device,
                 sampling: SamplingConfig | None = None, source: str = "") -> None:
        self.config, self.vqvae, self.model, self.device = config, vqvae, model, device
        self.sampling = sampling or SamplingConfig()
        self.vocab = Vocab(config.vq.codebook_size)
        self.rules = ModalityRules(self.vocab, grammar=self.sampling.grammar)
        self.tokenizer = WordTokenizer()
        self.source = source

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu",
                        sampling: SamplingConfig | None = None) -> "Pipeline":
        """Load a run directory (default: the checkpoint shipped inside the package)."""
        path = Path(path) if path else PRETRAINED_DIR
        config = load_config(path)
        torch_device = resolve_device(device)
        vqvae = load_vqvae(path, config).to(torch_device)
        model = load_transformer(path, config).to(torch_device)
        if sampling is None and (path / "sampling.json").exists():
            import json

            sampling = SamplingConfig(**json.loads((path / "sampling.json").read_text()))
        return cls(config, vqvae, model, torch_device, sampling, str(path))

    def _settings(self, overrides: dict) -> SamplingConfig:
        return replace(self.sampling, **{key: value for key, value in overrides.items() if value is not None})

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(seed)

    def _generate(self, prefix: torch.Tensor, settings: SamplingConfig, generator) -> torch.Tensor:
        outputs = []
        for start in range(0, len(prefix), settings.batch_size):
            chunk = prefix[start:start + settings.batch_size].to(self.device)
            outputs.append(generate(self.model, chunk, self.rules, settings.temperature, settings.top_k or None,
                                    settings.guidance, generator))
        return torch.cat(outputs)

    def encode_prompts(self, prompts: list[str], strict_palette: bool = False) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        with warnings.catch_warnings():
            if strict_palette:
                warnings.simplefilter("error")
            try:
                return torch.tensor([self.tokenizer.encode(prompt) for prompt in prompts], dtype=torch.long)
            except UserWarning as warning:
                raise PromptError(str(warning)) from None

    def generate_images(self, prompts: list[str] | str, n: int = 1, seed: int | None = None, **sampling) -> np.ndarray:
        """Text -> image: (len(prompts) * n, 28, 28, 3) uint8 levels, prompt-major order."""
        settings = self._settings(sampling)
        words = self.encode_prompts(prompts).repeat_interleave(n, dim=0)
        if len(words) == 0:
            return np.zeros((0, 28, 28, 3), dtype=np.uint8)
        sequences = self._generate(text_prefix(self.vocab, words), settings, self._generator(seed))
        _, codes = split_sequences(self.vocab, sequences)
        return self.vqvae.decode(codes).cpu().numpy()

    def caption(self, images: np.ndarray, seed: int | None = None, **sampling) -> list[str]:
        """Image -> text: (B, 28, 28, 3) levels 0..3 -> B captions."""
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 3:
            images = images[None]
        if len(images) == 0:
            return []
        codes = self.vqvae.encode(torch.from_numpy(images).to(self.device))
        settings = self._settings(sampling)
        if sampling.get("temperature") is None:
            settings = replace(settings, temperature=settings.caption_temperature)
        sequences = self._generate(image_prefix(self.vocab, codes), settings, self._generator(seed))
        words, _ = split_sequences(self.vocab, sequences)
        return [self.tokenizer.decode(row) for row in words.cpu()]

    def sample(self, n: int, seed: int | None = None, **sampling) -> tuple[np.ndarray, list[str]]:
        """Unconditional: n (image, caption) pairs, each drawn in whichever order the model picks."""
        settings = self._settings({**sampling, "guidance": 1.0})
        prefix = torch.full((n, 1), self.vocab.bos, dtype=torch.long)
        sequences = self._generate(prefix, settings, self._generator(seed))
        words, codes = split_sequences(self.vocab, sequences)
        images = self.vqvae.decode(codes).cpu().numpy()
        return images, [self.tokenizer.decode(row) for row in words.cpu()]
