"""Metrics over samples: judged attribute accuracy, caption exactness, diversity, Frechet distance."""

from __future__ import annotations

import numpy as np

from ..data.colored import parse_caption
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
