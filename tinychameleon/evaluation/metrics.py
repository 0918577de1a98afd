"""Metrics over samples: judged attribute accuracy, caption exactness, diversity, Frechet distance,
and the three that see what a person sees: stray pixels (off-palette speckle), specks (in-palette dots apart
from the strokes) and shape realism."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.colored import COLOR_RGB, color_counts, color_keys, digit_pixels, parse_caption
from ..tokenizers.text import WordTokenizer


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), via the eigenvalues of S_a^(1/2) S_b S_a^(1/2)."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def caption_accuracy(captions: list[str], digits, foreground, background) -> dict[str, float]:
    """Share of generated captions whose digit / fg / bg / whole caption is exactly right."""
    parsed = [parse_caption(caption) or (-1, -1, -1) for caption in captions]
    got = np.array(parsed).reshape(-1, 3)
    digit_ok, fg_ok, bg_ok = (got[:, 0] == digits), (got[:, 1] == foreground), (got[:, 2] == background)
    return {"digit": float(digit_ok.mean()), "foreground": float(fg_ok.mean()),
            "background": float(bg_ok.mean()), "exact": float((digit_ok & fg_ok & bg_ok).mean())}


def unconditional_metrics(judged: dict, captions: list[str]) -> dict[str, float]:
    """Agreement of each sample's image with its own caption, well-formedness and variety.

    fits_template: six words in the caption template; well_formed: also two palette colors.
    """
    parsed = [parse_caption(caption) for caption in captions]
    well_formed = np.array([p is not None for p in parsed])
    attributes = np.array([p if p is not None else (-1, -1, -1) for p in parsed]).reshape(-1, 3)
    agree = ((judged["digit"] == attributes[:, 0]) & (judged["foreground"] == attributes[:, 1])
             & (judged["background"] == attributes[:, 2]))
    fits_template = [WordTokenizer().fits_template(caption) for caption in captions]
    return {"agreement": float(agree.mean()), "well_formed": float(well_formed.mean()),
            "fits_template": float(np.mean(fits_template)),
            "distinct_captions": float(len(set(captions)) / max(1, len(captions))),
            "digits_covered": int(len(set(attributes[well_formed, 0]))),
            "foreground_colors_covered": int(len(set(attributes[well_formed, 1]))),
            "background_colors_covered": int(len(set(attributes[well_formed, 2])))}


def stray_pixels(images: np.ndarray, foreground=None, background=None) -> dict[str, float]:
    """Pixels that are neither the image's foreground nor its background color (real data has none).

    With color ids given (a prompt's, or the source image's), those two colors are the expected
    ones; without, each image's own two most common colors are.
    """
    images = np.asarray(images)
    if len(images) == 0:
        return {"stray_per_image": 0.0, "clean": 1.0, "stray_p90": 0.0}
    keys = color_keys(images)                                                      # (N, 784)
    if foreground is None:
        expected = np.argsort(-color_counts(images), axis=1)[:, :2]               # (N, 2) color keys
    else:
        expected = np.concatenate([color_keys(COLOR_RGB[np.asarray(foreground)][:, None]),             # (N, 1)
                                   color_keys(COLOR_RGB[np.asarray(background)][:, None])], axis=1)
    stray = ((keys != expected[:, :1]) & (keys != expected[:, 1:])).sum(1)
    return {"stray_per_image": float(stray.mean()), "clean": float((stray == 0).mean()),
            "stray_p90": float(np.percentile(stray, 90))}


def component_labels(masks: np.ndarray) -> torch.Tensor:
    """(N, H, W) bool -> (N, H, W) long: each 8-connected component of True pixels labelled by its largest
    pixel index + 1 (0 off the mask). Labels spread by 3x3 max-pooling inside the mask until nothing changes."""
    mask = torch.from_numpy(np.asarray(masks, dtype=bool))
    N, H, W = mask.shape
    labels = torch.where(mask, torch.arange(1, H * W + 1).view(1, H, W).expand(N, H, W), 0).float()
    while True:
        spread = torch.where(mask, F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0], 0.0)
        if torch.equal(spread, labels):
            return labels.long()
        labels = spread


def specks(images: np.ndarray, largest: int = 4) -> dict[str, float]:
    """Dots of the digit's own color apart from its strokes: 8-connected pieces of the digit of at most `largest`
    pixels, beside a bigger piece. `stray_pixels` cannot see them (they are in the palette); a person does."""
    labels = component_labels(digit_pixels(np.asarray(images))).flatten(1)              # (N, 784)
    sizes = torch.zeros(len(labels), labels.shape[1] + 1).scatter_add_(1, labels, torch.ones_like(labels,
                                                                                        dtype=torch.float))
    sizes[:, 0] = 0                                                                   # the background
    dots = ((sizes > 0) & (sizes <= largest)).sum(1)
    has_strokes = (sizes > largest).any(1)
    speckled = (dots > 0) & has_strokes
    return {"specks_per_image": float(torch.where(has_strokes, dots, 0).float().mean()),
            "speck_free": float(1 - speckled.float().mean())}


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.sqrt(np.clip(squared, 0, None))


def manifold_coverage(reference: np.ndarray, queries: np.ndarray, k: int = 3) -> np.ndarray:
    """Improved precision's test (Kynkaanniemi et al. 2019): is each query inside some reference
    point's ball of radius = distance to that point's k-th nearest reference neighbour?"""
    radii = np.sort(_pairwise(reference, reference), axis=1)[:, k]                # column 0 is the point itself
    return (_pairwise(queries, reference) <= radii[None, :]).any(axis=1)


def shape_realism(reference_features: np.ndarray, reference_digits, features: np.ndarray, digits,
                  k: int = 3) -> dict[str, float]:
    """Improved precision and recall of digit shapes, per digit, averaged over samples.

    precision: share of samples whose shape falls on the manifold of real shapes of the digit they
    stand for; recall: share of real shapes (as many per digit as samples) on the samples' manifold.
    Features are shape embeddings (see evaluation.judge.Judge.shape_features).
    """
    reference_digits, digits = np.asarray(reference_digits), np.asarray(digits)
    inside, covered = np.zeros(len(digits), dtype=bool), []
    for digit in np.unique(digits):
        rows, real = np.flatnonzero(digits == digit), reference_features[reference_digits == digit]
        if len(real) <= k:
            continue
        inside[rows] = manifold_coverage(real, features[rows], k)
        if len(rows) > k:
            covered.append(manifold_coverage(features[rows], real[:len(rows)], k))
    return {"precision": float(inside.mean()) if len(digits) else 0.0,
            "recall": float(np.concatenate(covered).mean()) if covered else 0.0, "k": k}
