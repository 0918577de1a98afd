"""Image -> text sampler settings side by side on the validation split (where the default is chosen).

    python scripts/caption_table.py --samples 500 --out runs/caption_table.json
    python scripts/caption_table.py --checkpoint var --samples 1000 --only greedy x20 x100 --out runs/caption_table_var.json
    python scripts/caption_table.py --checkpoint var --samples 1000 --only "top 2 digits, CLIP x100" \
        --out runs/caption_table_var_views.json

One row per setting: exact-caption accuracy, digit accuracy and milliseconds per caption (a setting the
checkpoint refuses, such as guidance on a next-scale model's captions, is skipped with its reason). The
shipped default is the cheapest row whose exact accuracy is within one standard error of the best.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from tinychameleon.data.colored import load_splits
from tinychameleon.errors import ConfigError
from tinychameleon.evaluation.metrics import caption_accuracy
from tinychameleon.io_utils import write_json
from tinychameleon.pipeline import Pipeline

SETTINGS = {
    "greedy": {"guidance": 1.0, "rerank_captions": False, "caption_views": 1},
    "greedy, guidance 2": {"guidance": 2.0, "rerank_captions": False, "caption_views": 1},   # raster only
    "rerank, 1 view": {"guidance": 1.0, "rerank_captions": True, "caption_views": 1, "caption_hypotheses": 10},
    "rerank, 1 view, top 2 digits": {"guidance": 1.0, "rerank_captions": True, "caption_views": 1,
                                     "caption_hypotheses": 2},
    "rerank, 1 view, top 3 digits": {"guidance": 1.0, "rerank_captions": True, "caption_views": 1,
                                     "caption_hypotheses": 3},
    "rerank, 2 views, top 2 digits": {"guidance": 1.0, "rerank_captions": True, "caption_views": 2,
                                      "caption_hypotheses": 2},
    "rerank, 4 views, top 3 digits": {"guidance": 1.0, "rerank_captions": True, "caption_views": 4,
                                      "caption_hypotheses": 3},
    "rerank, 4 views, top 2 digits": {"guidance": 1.0, "rerank_captions": True, "caption_views": 4,
                                      "caption_hypotheses": 2},
    "rerank, 8 views, top 2 digits": {"guidance": 1.0, "rerank_captions": True, "caption_views": 8,
                                      "caption_hypotheses": 2},
    "rerank, 8 views, top 3 digits": {"guidance": 1.0, "rerank_captions": True, "caption_views": 8,
                                      "caption_hypotheses": 3},
    "rerank, 8 views, top 2 digits, guidance 2": {"guidance": 2.0, "rerank_captions": True, "caption_views": 8,
                                                  "caption_hypotheses": 2},
    "rerank, 8 views, all digits (previous default)": {"guidance": 2.0, "rerank_captions": True,
                                                       "caption_views": 8, "caption_hypotheses": 10},
    # CLIP as a second reader (caption_clip_weight: its cosine, times the weight, added to each digit's score).
    **{f"rerank, 1 view, top {m} digits, CLIP x{weight}": {"guidance": 1.0, "rerank_captions": True,
                                                          "caption_views": 1, "caption_hypotheses": m,
                                                          "caption_clip_weight": float(weight)}
       for m in (2, 3, 10) for weight in (5, 10, 20, 40, 100, 300, 1000)},
    # ... and on the views too (each view's captions in its own colors), beside the model.
    **{f"rerank, {views} views, top {m} digits, CLIP x{weight}": {"guidance": 1.0, "rerank_captions": True,
                                                                  "caption_views": views, "caption_hypotheses": m,
                                                                  "caption_clip_weight": float(weight)}
       for views in (2, 3, 4) for m, weight in ((2, 100), (3, 20))},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--out", default="runs/caption_table.json")
    parser.add_argument("--only", nargs="*", help="run only the settings whose name contains one of these")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint)
    split = load_splits(0)[args.split].subset(slice(args.offset, args.offset + args.samples))
    rows = []
    for name, settings in SETTINGS.items():
        if args.only and not any(part in name for part in args.only):
            continue
        started = time.perf_counter()
        try:
            captions = pipe.caption(split.images, seed=0, **settings)
        except ConfigError as error:
            print(json.dumps({"setting": name, "refused": str(error)}), flush=True)
            continue
        ms = 1000 * (time.perf_counter() - started) / len(split)
        accuracy = caption_accuracy(captions, split.digits, split.foreground, split.background)
        error = math.sqrt(accuracy["exact"] * (1 - accuracy["exact"]) / len(split))
        rows.append({"setting": name, "settings": settings, "exact": accuracy["exact"], "digit": accuracy["digit"],
                     "standard_error": error, "ms_per_caption": ms})
        print(json.dumps(rows[-1]), flush=True)
    write_json(args.out, {"split": args.split, "offset": args.offset, "samples": len(split), "rows": rows})


if __name__ == "__main__":
    main()
