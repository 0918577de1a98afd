"""A small CLIP: a text encoder and an image encoder trained to agree, as in CM3Leon's dense retriever.

Both encoders end in unit vectors of `embed_dim`; a text and an image agree as much as their dot
product. The loss is the symmetric contrastive (InfoNCE) loss with a learned temperature. Because a
partial caption ("eight", "plain red eight") is true of many images, the loss takes a matrix of
positives: every image a text is true of counts as a right answer for it, and the other way round.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.colored import ADJECTIVES, DIGIT_WORDS, HUES, shape_mask
from ..tokenizers.vocab import DOCUMENT_WORDS

# The words the text encoder reads: caption words, then the document words (for document text).
CLIP_WORDS = ADJECTIVES + HUES + DIGIT_WORDS + ["on"] + [word for word in DOCUMENT_WORDS
                                                          if word not in ADJECTIVES + HUES + DIGIT_WORDS + ["on"]]
PAD = 0  # id 0 pads; word i has id i + 1


@dataclass
class ClipConfig:
    embed_dim: int = 64      # length of the unit vectors both encoders produce
    width: int = 64          # text encoder width; the image encoder's first conv width is width // 2
    layers: int = 2          # text encoder layers
    heads: int = 4
    max_words: int = 32
    words: list[str] = field(default_factory=lambda: list(CLIP_WORDS))
    # The image encoder also sees the digit's shape as one plane (the pixels unlike the image's most common
    # color), the same strokes alike under every color pair, as the judge reads its digit. Configs written
    # before it existed load with False.
    shape_plane: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def padded(rows: list[list[int]]) -> torch.Tensor:
    """Word-id lists -> (N, T) ids, right-padded with PAD."""
    ids = torch.full((len(rows), max(map(len, rows), default=1)), PAD, dtype=torch.long)
    for row, words in enumerate(rows):
        ids[row, :len(words)] = torch.tensor(words, dtype=torch.long)
    return ids


class TextEncoder(nn.Module):
    """Word ids (B, T), 0 = padding -> (B, embed_dim) unit vectors: a small transformer, mean-pooled."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        self.words = nn.Embedding(len(config.words) + 1, config.width, padding_idx=PAD)
        self.positions = nn.Embedding(config.max_words, config.width)
        layer = nn.TransformerEncoderLayer(config.width, config.heads, 2 * config.width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.project = nn.Linear(config.width, config.embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        padding = ids == PAD                                                          # (B, T)
        hidden = self.words(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        hidden = self.blocks(hidden, src_key_padding_mask=padding)                    # (B, T, C)
        keep = (~padding).unsqueeze(-1).float()
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)                    # (B, C)
        return F.normalize(self.project(pooled), dim=-1)


class ImageEncoder(nn.Module):
    """(B, 28, 28, 3) color levels 0..3 -> (B, embed_dim) unit vectors: a small CNN over one-hot levels
    (and the shape plane, where the config asks for it)."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        width = config.width // 2
        self.shape_plane = config.shape_plane
        # One-hot levels (12 channels) make "same color as the background" easy to see, as in the judge.
        self.features = nn.Sequential(
            nn.Conv2d(12 + self.shape_plane, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),              # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),          # (B, 2w, 7, 7)
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * 49, 2 * config.width), nn.ReLU(),
            nn.Linear(2 * config.width, config.embed_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(images.long(), 4).float()                                 # (B, 28, 28, 3, 4)
        B, H, W = one_hot.shape[:3]
        planes = one_hot.view(B, H, W, 12).permute(0, 3, 1, 2)                        # (B, 12, 28, 28)
        if self.shape_plane:
            planes = torch.cat([planes, shape_mask(images)], dim=1)                   # (B, 13, 28, 28)
        return F.normalize(self.features(planes), dim=-1)


class Clip(nn.Module):
    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        self.config = config
        self.text = TextEncoder(config)
        self.image = ImageEncoder(config)
        # CLIP's initial temperature 0.07, learned as a log scale and capped at 100 (as in CLIP).
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100)).exp()


def contrastive_loss(text: torch.Tensor, image: torch.Tensor, scale: torch.Tensor,
                     positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of B texts (B, D) and B images (B, D), unit vectors.

    positives (B, B) bool, [i, j] = text i is true of image j (default: the diagonal). Each row's
    target spreads evenly over its positives, so a caption that fits two images of the batch does
    not push either away.
    """
    logits = scale * text @ image.T                                                   # (B texts, B images)
    if positives is None:
        positives = torch.eye(len(text), dtype=torch.bool, device=text.device)
    targets = positives.float()
    text_to_image = F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
    image_to_text = F.cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdim=True))
    return (text_to_image + image_to_text) / 2
