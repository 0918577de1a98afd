"""The judge: two small CNNs that read an image's digit (from its shape alone) and its foreground and background
colors (from the colored levels).

It is trained on the real colored train split, used only to score samples (never to train
the generator), and cached on disk by data seed. Its accuracy on the real test split is
the ceiling for every judged number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..batching import batch_slices
from ..data.colored import STROKES, ColoredMNIST, in_random_strokes, shape_mask
from ..checkpoint import load_weights, save_weights

JUDGE_VERSION = 3   # 3: the digit read from the shape alone, shifted training digits (real test digits 97.4 -> 99.4 %)


def shifted(images: torch.Tensor, most: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 28, 28, 3) levels, each moved by its own random whole-pixel offset of at most `most` per axis. Rows and
    columns wrap round, which only moves background: MNIST centres its digits in the middle 20 x 20."""
    B = images.shape[0]
    offsets = torch.randint(-most, most + 1, (2, B, 1), generator=generator)
    rows = (torch.arange(28)[None] - offsets[0]) % 28                                        # (B, 28)
    columns = (torch.arange(28)[None] - offsets[1]) % 28
    return images[torch.arange(B)[:, None, None], rows[:, :, None], columns[:, None, :]]


def convolutions(planes: int, width: int, depth: int) -> nn.Sequential:
    """`depth` 3x3 convolutions per 28 -> 14 -> 7 stage, width then 2 * width, into (B, 128) features."""
    layers, channels = [], planes
    for stage_width in (width, 2 * width):
        for _ in range(depth):
            layers += [nn.Conv2d(channels, stage_width, 3, padding=1), nn.BatchNorm2d(stage_width), nn.ReLU()]
            channels = stage_width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.3), nn.Linear(2 * width * 49, 128), nn.ReLU())


class Judge(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        # The digit is read from the shape alone, which looks the same under every color pair (v2 read it from the
        # colored image and misread 2.6 % of real test digits); the colors from one-hot levels (12 channels), which
        # make "same color as the background" easy to see for any palette.
        self.shapes = convolutions(1, width, depth=2)
        self.colors = convolutions(12, width // 2, depth=1)
        self.digit = nn.Linear(128, 10)
        self.foreground = nn.Linear(128, 31)
        self.background = nn.Linear(128, 31)

    def parts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 28, 28, 3) levels -> (B, 128) shape features and (B, 128) color features."""
        B = images.shape[0]
        one_hot = F.one_hot(images.long(), 4).float().view(B, 28, 28, 12).permute(0, 3, 1, 2)   # (B, 12, 28, 28)
        return self.shapes(shape_mask(images)), self.colors(one_hot)

    def forward(self, images: torch.Tensor):
        shape, colors = self.parts(images)
        return self.digit(shape), self.foreground(colors), self.background(colors)

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 2000) -> dict[str, np.ndarray]:
        """Predicted digit / foreground / background ids and (N, 256) features (shape then colors: the Frechet
        distance's space) for (N, 28, 28, 3) levels, and (N, 128) "shape_features": the shape part alone, the same
        for the same strokes under any two colors."""
        self.eval()
        outputs = {"digit": [], "foreground": [], "background": [], "features": [], "shape_features": []}
        for rows in batch_slices(len(images), batch_size):
            shape, colors = self.parts(torch.from_numpy(np.asarray(images[rows])))
            outputs["features"].append(torch.cat([shape, colors], dim=1).numpy())
            outputs["shape_features"].append(shape.numpy())
            for name, head, part in (("digit", self.digit, shape), ("foreground", self.foreground, colors),
                                     ("background", self.background, colors)):
                outputs[name].append(head(part).argmax(-1).numpy())
        return {key: np.concatenate(value) if value else np.zeros(0) for key, value in outputs.items()}

    def shape_features(self, images: np.ndarray) -> np.ndarray:
        """(N, 128) features of the digit's shape alone: two images with the same strokes in different colors
        embed the same."""
        return self.predict(images)["shape_features"]


def train_judge(train: ColoredMNIST, epochs: int = 4, batch_size: int = 128, seed: int = 0, shift: int = 2,
                progress: bool = True) -> Judge:
    """Fit the judge's three heads on the training digits, each batch moved by up to `shift` pixels (a reader of
    handwriting should not care where on the canvas the digit sits)."""
    torch.manual_seed(seed)
    judge = Judge()
    optimizer = torch.optim.Adam(judge.parameters(), lr=2e-3)
    images = torch.from_numpy(train.images)
    targets = [torch.from_numpy(t) for t in (train.digits, train.foreground, train.background)]
    steps = len(images) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=epochs * steps)
    moves = torch.Generator().manual_seed(seed + 1000)
    for epoch in range(epochs):
        judge.train()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + epoch))
        for index in tqdm(range(steps), desc=f"judge epoch {epoch + 1}/{epochs}", disable=not progress, leave=False):
            rows = order[index * batch_size:(index + 1) * batch_size]
            logits = judge(shifted(images[rows], shift, moves))
            loss = sum(F.cross_entropy(head, target[rows]) for head, target in zip(logits, targets))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return judge.eval()


def load_or_train_judge(train: ColoredMNIST, cache_dir: Path, data_seed: int, progress: bool = True,
                        strokes: bool = False) -> Judge:
    """The judge of this data seed, trained once and cached. strokes=True: the stroke judge, trained on the same
    digits each drawn as written or in one of the stroke styles (data.colored.STROKES), so that it reads digits
    drawn thicker than MNIST's (style from memory) as well as it reads MNIST's own (v3: thick test digits 98.8 %,
    as written 99.2 %; the judge: 95.8 / 99.4 %, so it reads the style test only); no generator trains on it."""
    name = "judge-strokes" if strokes else "judge"
    path = Path(cache_dir) / f"{name}-v{JUDGE_VERSION}-seed{data_seed}.safetensors"
    judge = Judge()
    if path.exists():
        load_weights(judge, path)
        return judge.eval()
    if strokes:
        train = in_random_strokes(train, tuple(STROKES), seed=data_seed)
    judge = train_judge(train, seed=data_seed, progress=progress)
    save_weights(judge, path)
    return judge


def attribute_accuracy(judge_output: dict, digits, foreground, background) -> dict[str, float]:
    """Share of images whose judged digit / fg / bg / all three equal the given attributes."""
    digit_ok = judge_output["digit"] == np.asarray(digits)
    fg_ok = judge_output["foreground"] == np.asarray(foreground)
    bg_ok = judge_output["background"] == np.asarray(background)
    return {"digit": float(digit_ok.mean()), "foreground": float(fg_ok.mean()),
            "background": float(bg_ok.mean()), "all": float((digit_ok & fg_ok & bg_ok).mean())}
