"""The image tokenizer comparison: one markdown row per run directory, from files the runs wrote.

    python scripts/tokenizer_table.py runs/best=runs/best-eval runs/patches4=runs/patches4-eval

Each argument is a run directory (its training logs) and, after "=", the folder an evaluation of it
wrote (`tinychameleon evaluate --checkpoint RUN --out EVAL`, metrics.json). Nothing is measured
here, so every number traces to a command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("run", "tokenizer", "tokens / image", "reconstruction pixels exact", "clean reconstructions",
           "attributes kept (vs labels)", "NLL nats / pair", "NLL nats / image", "text → image", "image → text", "unconditional",
           "generated with no stray pixel", "shape precision (real)", "training s / epoch", "ms / image")


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def kept(vq: dict) -> str:
    """Attributes the judge reads alike on reconstruction and original (older evaluations: only against labels)."""
    labels = percent(vq["judge_on_reconstructions"]["all"])
    return f"{percent(vq['attributes_kept']['all'])} ({labels})" if "attributes_kept" in vq else f"— ({labels})"


def row(argument: str) -> list[str]:
    run, evaluation = (Path(part) for part in argument.split("=", 1))
    metrics = json.loads((evaluation / "metrics.json").read_text())
    split = metrics.get("split", "test")
    epochs = json.loads((run / "transformer_metrics.json").read_text())["epochs"]
    trained = [e for e in epochs if e["epoch"] > 0]
    seconds_per_epoch = trained[-1]["elapsed_s"] / len(trained)
    tokenizer = metrics.get("tokenizer", {"kind": "vq", "tokens_per_image": 49})
    nll = metrics["nll"]
    pair = nll.get(f"{split}_nats_per_pair")
    if pair is None:  # older evaluations: text-first mean x predicted tokens of a text-first sequence
        pair = nll[f"{split}_text_first_nll"] * (tokenizer["tokens_per_image"] + 8)
    image = nll.get(f"{split}_nats_per_image")   # -log p(image | caption); older evaluations lack it
    vq, t2i = metrics["vqvae"], metrics["text_to_image"]
    return [run.name, tokenizer["kind"], str(tokenizer["tokens_per_image"]), f"{100 * vq['pixel_exact']:.2f} %",
            percent(vq["looks"]["stray"]["clean"]), kept(vq), f"{pair:.1f}",
            "—" if image is None else f"{image:.1f}",
            percent(t2i["all"]), percent(metrics["image_to_text"]["exact"]),
            percent(metrics["unconditional"]["agreement"]), percent(t2i["looks"]["stray"]["clean"]),
            f"{t2i['looks']['shape']['precision']:.3f} ({metrics['real_test_looks']['shape']['precision']:.3f})",
            f"{seconds_per_epoch:.0f}", f"{t2i.get('ms_per_image', float('nan')):.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_DIR=EVALUATION_DIR")
    args = parser.parse_args()
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(argument)) + " |" for argument in args.runs]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
