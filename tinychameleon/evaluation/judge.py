"""The judge: a small CNN that reads digit, foreground and background color off an image.

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
from ..data.colored import COLOR_ID, STROKES, ColoredMNIST, colorize, digit_pixels, in_random_strokes
from ..checkpoint import load_weights, save_weights

JUDGE_VERSION = 2


class Judge(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        # One-hot levels (12 channels) make "same color as the background" easy to see for any palette.
        self.features = nn.Sequential(
            nn.Conv2d(12, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),  # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),                                                                       # (B, 2w, 7, 7)
            nn.Flatten(), nn.Linear(2 * width * 49, 128), nn.ReLU())
        self.digit = nn.Linear(128, 10)
        self.foreground = nn.Linear(128, 31)
        self.background = nn.Linear(128, 31)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 28, 28, 3) levels -> (B, 128) features (also used for the Frechet distance)."""
        one_hot = F.one_hot(images.long(), 4).float()  # (B, 28, 28, 3, 4)
        B = one_hot.shape[0]
        return self.features(one_hot.view(B, 28, 28, 12).permute(0, 3, 1, 2))

    def forward(self, images: torch.Tensor):
        features = self.embed(images)
        return self.digit(features), self.foreground(features), self.background(features)

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 2000) -> dict[str, np.ndarray]:
        """Predicted digit / foreground / background ids and features for (N, 28, 28, 3) levels."""
        self.eval()
        outputs = {"digit": [], "foreground": [], "background": [], "features": []}
        for rows in batch_slices(len(images), batch_size):
            batch = torch.from_numpy(np.asarray(images[rows]))
            features = self.embed(batch)
            outputs["features"].append(features.numpy())
            for name, head in (("digit", self.digit), ("foreground", self.foreground),
                               ("background", self.background)):
                outputs[name].append(head(features).argmax(-1).numpy())
        return {key: np.concatenate(value) if value else np.zeros(0) for key, value in outputs.items()}

    def shape_features(self, images: np.ndarray) -> np.ndarray:
        """Features of the digit's shape alone: the image's digit pixels redrawn plain white on plain black,
        so two images with the same strokes in different colors embed the same."""
        shapes = digit_pixels(np.asarray(images)).astype(np.uint8) * 255
        ids = np.full(len(shapes), COLOR_ID["plain white"]), np.full(len(shapes), COLOR_ID["plain black"])
        return self.predict(colorize(shapes, *ids).astype(np.uint8))["features"]


def train_judge(train: ColoredMNIST, epochs: int = 3, batch_size: int = 128, seed: int = 0,
                progress: bool = True) -> Judge:
    torch.manual_seed(seed)
    judge = Judge()
    optimizer = torch.optim.Adam(judge.parameters(), lr=2e-3)
    images = torch.from_numpy(train.images)
    targets = [torch.from_numpy(t) for t in (train.digits, train.foreground, train.background)]
    steps = len(images) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=epochs * steps)
    for epoch in range(epochs):
        judge.train()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + epoch))
        for index in tqdm(range(steps), desc=f"judge epoch {epoch + 1}/{epochs}", disable=not progress, leave=False):
            rows = order[index * batch_size:(index + 1) * batch_size]
            logits = judge(images[rows])
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
    drawn thicker than MNIST's (style from memory) as well as it reads MNIST's own (thick test digits 96.0 %, thin
    95.9 %; the judge: 92.1 / 96.9 %, so it reads the style test only); no generator trains on it."""
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
