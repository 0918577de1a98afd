"""Where does an addition document's model know its addends? Linear probes on each block's output.

`<image> plus <image> is` must name the sum, so somewhere the two digits must be known, and then added. This
reads real validation documents (teacher-forced up to the prompt's end) and fits, per block, a linear probe
(softmax regression on standardised states; fitted on the first documents, scored on the rest) for the first
addend, the second and the sum, at two places: the answer's position (the states of `is` and `<eop>`, side by
side) and the two images' `<eoi>`. A digit a probe reads only after the last block arrives too late for any
block to add it (BENCHMARKS.md, "Where the addends are known").

    python scripts/addend_probes.py --checkpoint tinychameleon/pretrained --documents 3000
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

import torch
import torch.nn.functional as F

from tinychameleon.data.colored import load_splits
from tinychameleon.documents.batches import example_documents
from tinychameleon.documents.families import DigitBank, examples
from tinychameleon.io_utils import write_json
from tinychameleon.model import hidden_states
from tinychameleon.pipeline import Pipeline

HELD_OUT = 0.25   # share of the documents a probe is scored on


def probe_accuracy(states: torch.Tensor, labels: torch.Tensor, steps: int = 400) -> float:
    """(N, C) states, (N,) labels -> accuracy on the last HELD_OUT of them of a softmax regression fitted on the rest."""
    split = int(len(states) * (1 - HELD_OUT))
    mean, spread = states[:split].mean(0), states[:split].std(0) + 1e-5
    states = (states - mean) / spread
    torch.manual_seed(0)
    probe = torch.nn.Linear(states.shape[1], int(labels.max()) + 1)
    optimizer = torch.optim.Adam(probe.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(probe(states[:split]), labels[:split]).backward()
        optimizer.step()
    with torch.no_grad():
        return float((probe(states[split:]).argmax(1) == labels[split:]).float().mean())


def block_states(pipe: Pipeline, documents: list[list[int]]) -> dict[str, list[torch.Tensor]]:
    """Per place ("answer", "eoi"), per block: (N, 2C) states of each document (two positions side by side)."""
    vocab, blocks = pipe.vocab, range(1, len(pipe.model.blocks) + 1)
    places = {"answer": [[] for _ in blocks], "eoi": [[] for _ in blocks]}
    with ExitStack() as stack, torch.no_grad():
        seen = [stack.enter_context(hidden_states(pipe.model, after_block=k)) for k in blocks]
        for ids in documents:
            end = ids.index(vocab.end_prompt)                          # <eop>: the answer is predicted here
            ends = [i for i in range(end) if ids[i] == vocab.end_image]
            pipe.model(torch.tensor([ids[:end + 1]], device=pipe.device))
            for k, states in enumerate(seen):
                row = states["hidden"][0]                                                         # (T, C)
                places["answer"][k].append(torch.cat([row[end - 1], row[end]]).float().cpu())
                places["eoi"][k].append(torch.cat([row[ends[0]], row[ends[-1]]]).float().cpu())
    return {place: [torch.stack(rows) for rows in per_block] for place, per_block in places.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="raster")
    parser.add_argument("--documents", type=int, default=3000)
    parser.add_argument("--out", default="runs/addend_probes.json")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint)
    split = load_splits(pipe.config.data_seed).validation
    bank = DigitBank(split.digits, split.foreground, split.background)
    chosen = examples(bank, args.documents, [0, 8, 31], families=["addition"])
    codes = pipe.image_tokenizer.encode(torch.as_tensor(split.images))
    documents = example_documents(chosen, codes, pipe.image_tokenizer.recolor, pipe.documents.tokenizer)
    first, second = (torch.tensor([example.prompt_images[i].digit for example in chosen]) for i in (0, 1))
    labels = {"first": first, "second": second, "sum": first + second}
    results = {"checkpoint": args.checkpoint, "documents": args.documents}
    for place, per_block in block_states(pipe, documents).items():
        results[place] = []
        for k, states in enumerate(per_block):
            row = {name: probe_accuracy(states, label) for name, label in labels.items()}
            results[place].append(row)
            print(f"{place:6s} after block {k + 1}: " + " | ".join(f"{name} {value:.1%}" for name, value in row.items()),
                  flush=True)
    write_json(args.out, results)


if __name__ == "__main__":
    main()
