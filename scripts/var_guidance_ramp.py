"""Guidance per scale for the next-scale model, as the VAR paper samples (its guidance grows linearly from the
coarsest scale to the finest): fidelity and variety on validation, measured as scripts/fidelity_table.py does.
A study, not a setting: it wraps the sampler's guidance function so that block k of each image is guided at
1 + (guidance - 1) * ramp[k], leaving every other part of the shipped sampler as it is.

    python scripts/var_guidance_ramp.py --samples 1000
"""

from __future__ import annotations

import argparse
import json

import tinychameleon.nextscale.sampler as sampler
from tinychameleon.data.colored import load_colored_mnist, load_splits
from tinychameleon.data.mnist import default_cache_dir
from tinychameleon.evaluation.judge import attribute_accuracy, load_or_train_judge
from tinychameleon.evaluation.metrics import shape_realism, specks
from tinychameleon.pipeline import Pipeline

RAMPS = {"flat": [1, 1, 1, 1, 1, 1], "var (0 at 1x1)": [0, .2, .4, .6, .8, 1], "half up": [.5, .6, .7, .8, .9, 1],
         "finer up": [1, 1, 1, 1.25, 1.5, 1.75]}
RUNS = [("flat", 1.5), ("flat", 2.0), ("var (0 at 1x1)", 2.0), ("var (0 at 1x1)", 3.0), ("half up", 2.0),
        ("half up", 2.5), ("finer up", 1.5), ("finer up", 1.75)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="var")
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    guided, state = sampler.guided_logits, {"ramp": RAMPS["flat"], "call": 0}

    def ramped(conditional, unconditional, guidance):   # draw() calls it once per block, coarsest first
        block = state["call"] % len(state["ramp"])
        state["call"] += 1
        return guided(conditional, unconditional, 1 + (guidance - 1) * state["ramp"][block])

    sampler.guided_logits = ramped
    pipe = Pipeline.from_pretrained(args.checkpoint)
    judge = load_or_train_judge(load_colored_mnist(0)[0], default_cache_dir(), 0)
    splits = load_splits(0)
    reference = judge.shape_features(splits.train.images[:5000]), splits.train.digits[:5000]
    split = splits.validation.subset(slice(0, args.samples))
    real = shape_realism(*reference, judge.shape_features(split.images), split.digits)
    for name, guidance in RUNS:
        state["ramp"], state["call"] = RAMPS[name], 0
        images = pipe.generate_images(split.captions(), seed=0, guidance=guidance)
        shape = shape_realism(*reference, judge.shape_features(images), split.digits)
        print(json.dumps({"ramp": name, "guidance": guidance,
                          "all_three": attribute_accuracy(judge.predict(images), split.digits, split.foreground,
                                                          split.background)["all"],
                          "precision_vs_real": round(shape["precision"] / real["precision"], 3),
                          "recall_vs_real": round(shape["recall"] / real["recall"], 3),
                          "speck_free": round(float(specks(images)["speck_free"]), 3)}), flush=True)


if __name__ == "__main__":
    main()
