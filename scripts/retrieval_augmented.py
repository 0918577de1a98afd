"""Retrieval-augmented vs plain: drawing and reading with and without retrieved neighbours, and style from memory.

For each checkpoint: text -> image judged right (plain, and after `--retrieve K` neighbours from the training
digits), image -> text exact (the same two ways), and "style from memory": a memory folder of held-out digits
drawn with strokes one pixel wider all round (built here from the split's digits, captioned), from which
`draw_from_memory` retrieves; the drawn stroke area is compared with the plain drawing's and the memory's, and
the asked digit judged right is set beside the judge's reading of the memory's own digits (the ceiling), by the
judge and by the stroke judge (trained on the training digits as written and in every stroke style, so that a
thick digit is read as well as a thin one: the plain judge misreads one real thick digit in twelve).

    python scripts/retrieval_augmented.py --checkpoints runs/ft-plain runs/ft-retrieval --split validation \\
        --samples 300 --retrieve 2 --json runs/retrieval_augmented_validation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tinychameleon.data.colored import DIGIT_WORDS, digit_pixels, load_splits, thickened
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.evaluation.judge import attribute_accuracy, load_or_train_judge
from tinychameleon.imaging import caption_grid, save_png
from tinychameleon.pipeline import Pipeline


def write_memory(folder: Path, split, count: int) -> np.ndarray:
    """The first `count` digits of the split, thickened, as a memory folder; returns their images."""
    folder.mkdir(parents=True, exist_ok=True)
    part = split.subset(slice(0, count))
    images = thickened(part, "bolder").images
    rows = []
    for row, (image, caption) in enumerate(zip(images, part.captions())):
        save_png(image, folder / f"{row:05d}.png")
        rows.append({"file": f"{row:05d}.png", "caption": caption})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return images


def digit_right(judge, images: np.ndarray, digits: np.ndarray) -> float:
    """Share of images whose digit the judge reads as `digits`."""
    return float((judge.predict(images)["digit"] == digits).mean())


def ink(images: np.ndarray) -> np.ndarray:
    return digit_pixels(images).sum(axis=(1, 2)).astype(float)


def style_figure(path: str, prompts: list[str], plain: np.ndarray, styled: np.ndarray, memory: np.ndarray,
                 memory_digits: np.ndarray, digits: np.ndarray) -> None:
    """Three rows of len(prompts): drawn plain, drawn after retrieving from the thick memory, a memory digit alike."""
    alike = memory[[int(np.flatnonzero(memory_digits == digit)[0]) for digit in digits]]
    captions = list(prompts) + ["after the thick memory"] * len(prompts) + \
               [f"a thick {DIGIT_WORDS[d]} of the memory" for d in digits]
    caption_grid(np.concatenate([plain, styled, alike]), captions, columns=len(prompts), scale=4).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", required=True)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--retrieve", type=int, default=2)
    parser.add_argument("--memory-size", type=int, default=2000)
    parser.add_argument("--memory", default="runs/style-memory", help="folder for the thick-stroke memory")
    parser.add_argument("--memory-settings", default="{}",
                        help="JSON sampler overrides for drawing after retrieval, e.g. '{\"guidance\": 1.5}'")
    parser.add_argument("--json")
    parser.add_argument("--figure", help="PNG: the last checkpoint's first 8 prompts drawn plain, drawn from the thick "
                                         "memory, and a memory digit of the same kind")
    args = parser.parse_args()
    memory_settings = json.loads(args.memory_settings)
    splits = load_splits()
    judge = load_or_train_judge(splits.train, default_cache_dir(), 0, progress=False)
    stroke_judge = load_or_train_judge(splits.train, default_cache_dir(), 0, progress=False, strokes=True)
    split = splits[args.split]
    memory_images = write_memory(Path(args.memory) / args.split, split, args.memory_size)
    # Queries: other digits of the same split (never in the memory), their captions as new prompts.
    queries = split.subset(slice(args.memory_size, args.memory_size + args.samples))
    prompts = queries.captions()
    train_ink = ink(splits.train.images)
    results = {"split": args.split, "samples": args.samples, "retrieve": args.retrieve, "memory_settings": memory_settings,
               "memory_ink": float(ink(memory_images).mean()), "train_ink": float(train_ink.mean()),
               "train_share_with_memory_ink": float((train_ink >= ink(memory_images).mean()).mean()),
               "real_ink": float(ink(queries.images).mean()),
               # The ceiling of "digit right" in the style test: the judge reading the memory's own thick digits.
               "memory_digit_right": digit_right(judge, memory_images, split.digits[:args.memory_size]),
               "memory_digit_right_stroke_judge": digit_right(stroke_judge, memory_images,
                                                              split.digits[:args.memory_size]),
               "real_digit_right": digit_right(judge, queries.images, queries.digits),
               "real_digit_right_stroke_judge": digit_right(stroke_judge, queries.images, queries.digits),
               "models": {}}
    for checkpoint in args.checkpoints:
        pipe = Pipeline.from_pretrained(checkpoint)
        row, started = {}, time.perf_counter()
        plain, _ = pipe.draw(prompts, seed=0)
        row["text_to_image"] = attribute_accuracy(judge.predict(plain), queries.digits, queries.foreground,
                                                  queries.background)["all"]
        row["plain_ink"] = float(ink(plain).mean())
        row["image_to_text"] = float(np.mean([a == b for a, b in zip(pipe.caption(queries.images), prompts)]))
        if pipe.vocab.documents:
            drawn, _ = pipe.draw_from_memory(prompts, seed=0, retrieve=args.retrieve, **memory_settings)
            row["text_to_image_retrieved"] = attribute_accuracy(judge.predict(drawn), queries.digits,
                                                                queries.foreground, queries.background)["all"]
            read = pipe.caption_from_memory(queries.images, retrieve=args.retrieve)
            row["image_to_text_retrieved"] = float(np.mean([a == b for a, b in zip(read, prompts)]))
            styled, _ = pipe.draw_from_memory(prompts, seed=0, retrieve=args.retrieve,
                                              memory=Path(args.memory) / args.split, **memory_settings)
            judged = judge.predict(styled)
            row["style_ink"] = float(ink(styled).mean())
            row["style_digit_right"] = float((judged["digit"] == queries.digits).mean())
            row["style_digit_right_stroke_judge"] = digit_right(stroke_judge, styled, queries.digits)
            row["style_all_right"] = attribute_accuracy(judged, queries.digits, queries.foreground,
                                                        queries.background)["all"]
            row["style_shift"] = (row["style_ink"] - row["plain_ink"]) / (results["memory_ink"] - row["plain_ink"])
            if args.figure and checkpoint == args.checkpoints[-1]:
                style_figure(args.figure, prompts[:8], plain[:8], styled[:8], memory_images,
                             split.subset(slice(0, args.memory_size)).digits, queries.digits[:8])
        row["seconds"] = round(time.perf_counter() - started, 1)
        results["models"][checkpoint] = row
        print(checkpoint, json.dumps(row), flush=True)
    print(json.dumps({key: value for key, value in results.items() if key != "models"}))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
