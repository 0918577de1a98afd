"""The retriever: a trained CLIP loaded from disk, turning texts, images and documents into unit vectors.

A retriever directory holds `clip.json` (ClipConfig) and `clip.safetensors`; the one shipped with the
package lies in `tinychameleon/pretrained/retriever`. A document (an image with its caption) embeds as
the normalised mean of its text and image vectors, as CM3Leon's retriever averages its two encoders.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import batch_slices
from ..checkpoint import load_weights, module_hash, save_weights
from ..data.colored import VALID_PAIRS, caption_of
from ..documents.document import split_words
from ..errors import CheckpointError, PromptError
from ..io_utils import write_json
from ..tokenizers.text import quoted, warn_off_palette
from .clip import Clip, ClipConfig, padded

CONFIG_FILE, WEIGHTS_FILE = "clip.json", "clip.safetensors"
SHIPPED = Path(__file__).resolve().parent.parent / "pretrained" / "retriever"
MAX_QUERY_CHARACTERS = 400


def save_retriever(clip: Clip, directory: Path) -> None:
    write_json(directory / CONFIG_FILE, clip.config.to_dict())
    save_weights(clip, directory / WEIGHTS_FILE)


def all_captions() -> list[str]:
    """Every caption the data can hold: 10 digits x 730 valid color pairs, digit-major."""
    return [caption_of(digit, foreground, background) for digit in range(10) for foreground, background in VALID_PAIRS]


class Retriever:
    def __init__(self, clip: Clip) -> None:
        self.clip = clip.eval()
        self.config = clip.config
        self.word_to_id = {word: index + 1 for index, word in enumerate(self.config.words)}
        self.version = module_hash(clip)  # names caches of embeddings made with these weights
        self._captions = None

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> "Retriever":
        directory = Path(path) if path is not None else SHIPPED
        try:
            config = ClipConfig(**{"shape_plane": False, **json.loads((directory / CONFIG_FILE).read_text())})
        except FileNotFoundError:
            raise CheckpointError(f"{directory} holds no retriever ({CONFIG_FILE}); train one with "
                                  "tinychameleon train-retriever --out DIR") from None
        except (OSError, ValueError, TypeError) as error:
            raise CheckpointError(f"{directory / CONFIG_FILE} is not a retriever config: {error}") from None
        clip = Clip(config)
        load_weights(clip, directory / WEIGHTS_FILE)
        return cls(clip)

    # --- words -------------------------------------------------------------------------------------
    def words_of(self, text: str) -> list[str]:
        """The query's words, checked: unknown words name the closest known ones (PromptError)."""
        if not isinstance(text, str):
            raise PromptError(f"a text query must be text, got {type(text).__name__}")
        if len(text) > MAX_QUERY_CHARACTERS:
            raise PromptError(f"a text query of {len(text)} characters is too long: at most {MAX_QUERY_CHARACTERS}")
        words = split_words(text)
        if not words:
            raise PromptError("a text query needs at least one word, e.g. 'dark green eight on bright cyan'")
        unknown = [word for word in words if word not in self.word_to_id]
        if unknown:
            hints = "; ".join(f"{quoted(word, 30)}: did you mean "
                              f"{', '.join(difflib.get_close_matches(word, self.config.words, 3, 0.5)) or 'nothing close'}?"
                              for word in unknown[:3])
            raise PromptError(f"unknown word{'s' if len(unknown) > 1 else ''} in {quoted(text)} ({hints})")
        warn_off_palette(words)
        if len(words) > self.config.max_words:
            raise PromptError(f"{quoted(text)} has {len(words)} words; the retriever reads at most "
                              f"{self.config.max_words}")
        return words

    def encode_words(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (N, T) word ids, right-padded with PAD."""
        return padded([[self.word_to_id[word] for word in self.words_of(text)] for text in texts])

    # --- embeddings --------------------------------------------------------------------------------
    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 4096) -> np.ndarray:
        """(N,) texts -> (N, D) float32 unit vectors. Every text is checked before any work."""
        ids = self.encode_words(list(texts))
        return np.concatenate([self.clip.text(ids[rows]).numpy() for rows in batch_slices(len(ids), batch_size)]
                              or [np.zeros((0, self.config.embed_dim), np.float32)])

    @torch.no_grad()
    def embed_images(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """(N, 28, 28, 3) levels 0..3 -> (N, D) float32 unit vectors."""
        return np.concatenate([self.clip.image(torch.from_numpy(np.asarray(images[rows]))).numpy()
                               for rows in batch_slices(len(images), batch_size)]
                              or [np.zeros((0, self.config.embed_dim), np.float32)])

    def embed_documents(self, captions: list[str], images: np.ndarray) -> np.ndarray:
        """Image + caption documents -> (N, D): the normalised mean of the text and the image vector."""
        mean = torch.from_numpy(self.embed_texts(captions) + self.embed_images(images))
        return F.normalize(mean, dim=-1).numpy()

    def similarity(self, captions: list[str], images: np.ndarray) -> np.ndarray:
        """CLIP score: cosine similarity of each caption with its image, (N,)."""
        return (self.embed_texts(captions) * self.embed_images(images)).sum(-1)

    def read(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Zero-shot reading: the caption of highest similarity among all 7300 -> digit, fg, bg ids (N,) each."""
        text = self.caption_embeddings()
        best = np.concatenate([(self.embed_images(images[rows]) @ text.T).argmax(1)
                               for rows in batch_slices(len(images), 1024)] or [np.zeros(0, np.int64)])
        pairs = VALID_PAIRS[best % len(VALID_PAIRS)]
        return {"digit": best // len(VALID_PAIRS), "foreground": pairs[:, 0], "background": pairs[:, 1]}

    def caption_embeddings(self) -> np.ndarray:
        """(7300, D) vectors of all_captions(), computed once per retriever."""
        if self._captions is None:
            self._captions = self.embed_texts(all_captions())
        return self._captions


def reading_accuracy(retriever: Retriever, split) -> dict[str, float]:
    """Zero-shot reading of a split's images against their true digit and colors: shares right."""
    read = retriever.read(split.images)
    digit = read["digit"] == split.digits
    colors = (read["foreground"] == split.foreground) & (read["background"] == split.background)
    return {"digit": float(digit.mean()), "colors": float(colors.mean()), "all": float((digit & colors).mean())}
