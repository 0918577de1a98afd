"""Write N edit documents of test digits as a `continue` prompts file (real PNGs beside it), for timing
`tinychameleon continue` as a user would run it:

    python scripts/edit_prompts.py --count 256 --out runs/edits
    time tinychameleon continue --prompts-file runs/edits/prompts.jsonl --out runs/edits/out
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinychameleon.data.colored import load_splits
from tinychameleon.documents.families import DigitBank, examples
from tinychameleon.evaluation.documents import render
from tinychameleon.imaging import save_png

EDITS = ["digit color", "background color", "swap", "change digit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = load_splits(0).test
    rows = []
    for index, example in enumerate(examples(DigitBank(test.digits, test.foreground, test.background), args.count,
                                             [args.seed, 24], families=EDITS)):
        name = f"digit{index:04d}.png"
        save_png(render(example.prompt_images, test)[0], out / name)
        rows.append({"prompt": example.prompt, "images": [name]})
    (out / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} edit prompts to {out / 'prompts.jsonl'}")


if __name__ == "__main__":
    main()
