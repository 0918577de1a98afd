"""Train the retriever's CLIP on the training split: captions (whole or partial) against their images.

Each epoch reads the 55k training digits under a fresh color draw (epoch e uses draw e), so every
shape is seen in several colorings. 30 % of the texts are partial captions ("eight", "normal red
eight", "eight on dark blue"): a search box is typed into with fewer than six words, and the loss
counts every image such a text is true of as a right answer. A share `shifted_share` of each batch's
images are copies moved by up to two pixels each way (data.colored.shifted, a fresh draw per epoch), so
the image encoder reads a digit's shape rather than its place. Validation digits are scored every epoch
(zero-shot reading); test digits are never read here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.colored import COLOR_NAMES, DIGIT_WORDS, load_splits, recolored_train, shifted
from ..errors import TinyChameleonError
from ..io_utils import write_json
from ..retrieval.clip import Clip, ClipConfig, contrastive_loss, padded
from ..retrieval.retriever import Retriever, reading_accuracy, save_retriever
from .state import load_state, save_state

STATE_FILE, METRICS_FILE = "retriever_state.pt", "retriever_metrics.json"
# (share, which attributes the text names): whole captions, the digit alone, color + digit, digit + background.
TEXT_FORMS = [(0.7, (True, True, True)), (0.1, (True, False, False)), (0.1, (True, True, False)),
              (0.1, (True, False, True))]


def text_of(digit: int, foreground: int, background: int) -> str:
    """A caption or part of one; -1 leaves an attribute out."""
    words = ([COLOR_NAMES[foreground]] if foreground >= 0 else []) + [DIGIT_WORDS[digit]]
    return " ".join(words + ([f"on {COLOR_NAMES[background]}"] if background >= 0 else []))


def draw_texts(digits: np.ndarray, foreground: np.ndarray, background: np.ndarray, rng: np.random.Generator
               ) -> tuple[list[str], np.ndarray]:
    """One text per image and the attributes it names, (N, 3) with -1 where left out."""
    shares = np.array([share for share, _ in TEXT_FORMS])
    forms = np.array([named for _, named in TEXT_FORMS])[rng.choice(len(TEXT_FORMS), len(digits), p=shares)]
    named = np.where(forms, np.stack([digits, foreground, background], 1), -1)          # (N, 3)
    return [text_of(*row) for row in named], named


def positives_of(named: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(B, 3) named attributes (-1 = any) x (B, 3) true attributes -> (B texts, B images) bool: text fits image."""
    fits = (named[:, None, :] == truth[None, :, :]) | (named[:, None, :] < 0)             # (B, B, 3)
    return fits.all(-1)


def train_retriever(out: Path, epochs: int = 30, batch_size: int = 512, lr: float = 2e-3, seed: int = 0,
                    shifted_share: float = 0.9, cache_dir: str | None = None, resume: bool = False,
                    max_examples: int | None = None, log=print) -> Retriever:
    """Train (or resume) a retriever into `out`: clip.json, clip.safetensors, retriever_metrics.json.
    `max_examples` trains on the first N training digits and validates on N validation digits (quick trials)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    clip = Clip(ClipConfig())
    optimizer = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=0.05)
    splits = load_splits(cache_dir=cache_dir)
    validation = splits.validation.subset(slice(0, max_examples))
    size = min(len(splits.train), max_examples or len(splits.train))
    steps_per_epoch = max(1, size // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    state = load_state(out / STATE_FILE) if resume else None
    if state is None and (out / STATE_FILE).exists():
        raise TinyChameleonError(f"{out} already holds a retriever run; pass --resume to continue it")
    history = []
    if state is not None:
        if state["epochs_total"] != epochs or state.get("shifted", 0.0) != shifted_share:
            raise TinyChameleonError(f"{out} was started with --epochs {state['epochs_total']} --shifted "
                                     f"{state.get('shifted', 0.0)}; resume with those")
        clip.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history = state["history"]
    word_ids = {word: index + 1 for index, word in enumerate(clip.config.words)}  # training texts are known-good
    for epoch in range(len(history), epochs):
        started = time.perf_counter()
        train = recolored_train(epoch, cache_dir=cache_dir).subset(slice(0, size))
        moved = shifted(train, [seed, epoch]).images if shifted_share > 0 else train.images
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(train))
        clip.train()
        losses = []
        for step in range(steps_per_epoch):
            rows = order[step * batch_size:(step + 1) * batch_size]
            truth = np.stack([train.digits[rows], train.foreground[rows], train.background[rows]], 1)
            texts, named = draw_texts(*truth.T, rng)
            images = train.images[rows]
            if shifted_share > 0:    # (drawn only then: runs without shifts keep their exact order of draws)
                move = rng.random(len(rows)) < shifted_share                                # (B,) rows moved
                images = np.where(move[:, None, None, None], moved[rows], images)           # (B, 28, 28, 3)
            ids = padded([[word_ids[word] for word in text.split()] for text in texts])
            loss = contrastive_loss(clip.text(ids), clip.image(torch.from_numpy(images)),
                                    clip.scale(), positives_of(torch.from_numpy(named), torch.from_numpy(truth)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        clip.eval()
        accuracy = reading_accuracy(Retriever(clip), validation)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "scale": clip.scale().detach().item(),
                        **{f"validation_{key}": value for key, value in accuracy.items()},
                        "seconds": round(time.perf_counter() - started, 1)})
        # Progress is recorded in one atomic write: a kill before it redoes the epoch, after it skips it.
        save_state(out / STATE_FILE, {"model": clip.state_dict(), "optimizer": optimizer.state_dict(),
                                      "schedule": schedule.state_dict(), "history": history, "epochs_total": epochs,
                                      "shifted": shifted_share})
        log(" ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in history[-1].items()))
    save_retriever(clip, out)
    write_json(out / METRICS_FILE, {"epochs": history, "batch_size": batch_size, "lr": lr, "seed": seed,
                                    "shifted": shifted_share})
    return Retriever(clip)

