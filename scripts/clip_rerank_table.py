"""Best-of-n by the model's own caption likelihood vs by the retriever (CLIP), on the validation split.

For each reranker: text -> image judged right (all three attributes), the CLIP score of the kept images,
shape precision / recall against real shapes (the real validation digits measured the same way beside),
and ms per image, at the checkpoint's sampling.json with `--candidates N`.

    python scripts/clip_rerank_table.py --samples 300 --candidates 4
"""

from __future__ import annotations

import argparse
import json
import time

from tinychameleon.data.colored import load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.evaluation.judge import attribute_accuracy, load_or_train_judge
from tinychameleon.evaluation.metrics import shape_realism
from tinychameleon.pipeline import Pipeline
from tinychameleon.retrieval.retriever import Retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--checkpoint")
    args = parser.parse_args()
    splits = load_splits()
    judge = load_or_train_judge(splits.train, default_cache_dir(), 0, progress=False)
    split = splits.validation.subset(slice(0, args.samples))
    prompts = split.captions()
    pipe, retriever = Pipeline.from_pretrained(args.checkpoint), Retriever.from_pretrained()
    reference = judge.shape_features(splits.train.images[:5000]), splits.train.digits[:5000]
    rows = {"real validation digits": (split.images, None)}
    for name, clip in (("self (model's p(caption | image))", False), ("CLIP", True)):
        started = time.perf_counter()
        images = pipe.generate_images(prompts, seed=0, image_candidates=args.candidates, clip_rerank=clip)
        rows[name] = (images, 1000 * (time.perf_counter() - started) / len(prompts))
    for name, (images, ms) in rows.items():
        judged = attribute_accuracy(judge.predict(images), split.digits, split.foreground, split.background)["all"]
        shape = shape_realism(*reference, judge.shape_features(images), split.digits)
        row = {"reranker": name, "text_to_image": round(judged, 4),
               "clip_score": round(float(retriever.similarity(prompts, images).mean()), 4),
               "precision": round(shape["precision"], 3), "recall": round(shape["recall"], 3),
               "ms_per_image": None if ms is None else round(ms, 1)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
