"""Each task family measured on held-out digits: prompts as a user would write them, real pictures for
their <image> placeholders, the model's continuations read by the judge.

A continuation is right when its words are the expected ones (questions, addition, the digit of "what
comes next"), it drew as many images as asked, and each image shows what was asked (the judge's digit,
digit color and background); edits of color must also keep the digit's shape: the IoU of its pixels
before and after at least SHAPE_IOU. Beside each family, the ceiling measured the same way: the judge
on real pictures of the expected answer, and for the edits an exact copy of the prompt's tokens.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..data.colored import ColoredMNIST, digit_pixels, recolor
from ..documents.document import split_words
from ..documents.families import FAMILIES, DigitBank, Example, Picture, examples

SHAPE_IOU = 0.95


def render(pictures: list[Picture], split: ColoredMNIST) -> np.ndarray:
    """(M, 28, 28, 3) levels: each picture's real digit shape in its two colors."""
    if not pictures:
        return np.zeros((0, 28, 28, 3), dtype=np.uint8)
    return recolor(split.images[[picture.shape for picture in pictures]], np.array([p.foreground for p in pictures]),
                   np.array([p.background for p in pictures]))


def shape_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the digit pixels of two stacks of images (N,)."""
    a, b = digit_pixels(a), digit_pixels(b)
    union = (a | b).sum(axis=(1, 2))
    return np.where(union > 0, (a & b).sum(axis=(1, 2)) / np.maximum(union, 1), 1.0)


def judged_right(judge, images: np.ndarray, pictures: list[Picture]) -> np.ndarray:
    if not pictures:
        return np.zeros(0, dtype=bool)
    judged = judge.predict(images)
    return ((judged["digit"] == [p.digit for p in pictures]) & (judged["foreground"] == [p.foreground for p in pictures])
            & (judged["background"] == [p.background for p in pictures]))


def score(example: Example, text: str, images: np.ndarray, prompt_images: np.ndarray, judge) -> dict:
    """Whether one continuation is right, and its parts."""
    expected = split_words(example.answer)
    words_right = split_words(text) == expected
    count_right = len(images) == len(example.answer_images)
    attributes = count_right and bool(judged_right(judge, images, example.answer_images).all())
    kept = [(k, picture) for k, picture in enumerate(example.answer_images) if picture.same_shape]
    iou = [float(shape_iou(images[k:k + 1], prompt_images[:1])[0]) for k, _ in kept] if count_right else [0.0] * len(kept)
    shape_kept = all(value >= SHAPE_IOU for value in iou)
    return {"right": bool(words_right and attributes and shape_kept), "words": bool(words_right),
            "images": bool(attributes), "shape_kept": bool(shape_kept), "iou": iou}


def evaluate_documents(pipeline, judge, split: ColoredMNIST, per_family: int, seed: int = 0, sampling: dict | None = None,
                       families: list[str] | None = None, looks=None) -> tuple[dict, list]:
    """Per family: accuracy (all parts right), words, images, shape kept (edits) and the real-data ceiling;
    returns (metrics, a few (prompt images, continuation) for a figure).

    `looks(images, digits, foreground, background) -> dict`, when given, also measures the family's fresh drawings
    (answers any shape of the digit will do, from documents that drew as many images as asked) beside real pictures
    of the same answers: accuracy alone cannot tell a varied sampler from one that draws every digit alike."""
    bank = DigitBank(split.digits, split.foreground, split.background)
    results, shown = {}, []
    for number, family in enumerate(families or list(FAMILIES)):
        chosen = examples(bank, per_family, [seed, number, 23], families=[family])
        prompt_images = [render(example.prompt_images, split) for example in chosen]
        started = time.time()
        continuations = pipeline.continue_documents([example.prompt for example in chosen],
                                                    [list(images) for images in prompt_images], n=1, seed=seed,
                                                    **(sampling or {}))
        seconds = time.time() - started
        scores = [score(example, found[0].text, found[0].images, images, judge)
                  for example, found, images in zip(chosen, continuations, prompt_images)]
        answers = [picture for example in chosen for picture in example.answer_images]
        ceiling = judged_right(judge, render(answers, split), answers).mean() if answers else 1.0
        copied = exact_copy_ceiling(pipeline, judge, chosen, prompt_images)
        results[family] = {"examples": len(chosen), "accuracy": float(np.mean([s["right"] for s in scores])),
                           "words": float(np.mean([s["words"] for s in scores])),
                           "images": float(np.mean([s["images"] for s in scores])),
                           "shape_kept": float(np.mean([s["shape_kept"] for s in scores])),
                           "judge_on_real_answers": float(ceiling), **copied,
                           "ms_per_document": 1000 * seconds / len(chosen),
                           "example": {"prompt": chosen[0].prompt, "continuation": continuations[0][0].text}}
        if looks is not None:
            results[family].update(fresh_drawings_looks(looks, chosen, continuations, split))
        shown.append((chosen[0].prompt, prompt_images[0], continuations[0][0]))
    return results, shown


def exact_copy_ceiling(pipeline, judge, chosen: list[Example], prompt_images: list[np.ndarray]) -> dict:
    """{"exact_copy_ceiling": share} for a family whose answer is one image that keeps the prompt's shape (the
    edits): the share a model that copied every shape token exactly would get right, its answer being the
    prompt's own tokens recolored as asked, decoded, and scored as the model's answers are: what this image
    tokenizer lets a model reach (its round trip costs ~1 % of shapes their IoU). {} for the other families."""
    if not all(len(example.answer_images) == 1 and example.answer_images[0].same_shape for example in chosen):
        return {}
    answers = [example.answer_images[0] for example in chosen]
    tokenizer = pipeline.image_tokenizer
    shown = np.concatenate([images[:1] for images in prompt_images])                    # (N, 28, 28, 3)
    ids = tokenizer.encode(torch.from_numpy(shown).to(pipeline.device))
    recolored = tokenizer.recolor(ids, torch.tensor([p.foreground for p in answers]),
                                  torch.tensor([p.background for p in answers]))
    drawn = tokenizer.decode(recolored).cpu().numpy()
    right = [score(example, example.answer, drawn[k:k + 1], images, judge)["right"]
             for k, (example, images) in enumerate(zip(chosen, prompt_images))]
    return {"exact_copy_ceiling": float(np.mean(right))}


def fresh_drawings_looks(looks, chosen: list[Example], continuations: list, split: ColoredMNIST) -> dict:
    """{"looks": ..., "real_looks": ...} of the fresh drawings (not same_shape answers) and of real pictures of the
    same answers; {} for a family that draws none (edits keep shapes; questions draw nothing)."""
    drawn, asked = [], []
    for example, found in zip(chosen, continuations):
        images = found[0].images
        if len(images) != len(example.answer_images):
            continue
        for k, picture in enumerate(example.answer_images):
            if not picture.same_shape:
                drawn.append(images[k])
                asked.append(picture)
    if not asked:
        return {}
    attributes = [np.array([getattr(p, name) for p in asked]) for name in ("digit", "foreground", "background")]
    return {"looks": looks(np.stack(drawn), *attributes), "real_looks": looks(render(asked, split), *attributes)}


def documents_figure(shown: list, scale: int = 3):
    """One row per document: its prompt and continuation as text, then the prompt's images, an arrow, and the
    images the model drew."""
    from PIL import Image, ImageDraw, ImageFont

    from ..imaging import levels_to_pil

    font, cell, line = ImageFont.load_default(), 28 * scale, 14
    width = 20 + 6 * (cell + 8) + 30
    height = 10 + len(shown) * (line + cell + 14)
    sheet = Image.new("RGB", (max(width, 520), height), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (prompt, prompt_images, continuation) in enumerate(shown):
        y = 10 + row * (line + cell + 14)
        draw.text((10, y), f"{prompt}  ->  {continuation.text}", fill="black", font=font)
        x = 10
        for index, image in enumerate(list(prompt_images) + ["->"] + list(continuation.images)):
            if isinstance(image, str):
                draw.text((x + 4, y + line + cell // 2 - 6), "->", fill="black", font=font)
                x += 30
                continue
            sheet.paste(levels_to_pil(image, scale), (x, y + line))
            x += cell + 8
    return sheet
