"""Could a document's copied tokens be told from its freshly drawn ones, token by token? Runs
scripts/document_table.py with the document decoder's keep_sure widened by one scratch rule (patched in here, not
part of the library): beside the shipped rule (the conditional stream gives its likeliest token more than
greedy_above), an image token is also taken greedily where

  --rule agree: the conditional and the unconditional (guidance) streams' likeliest tokens agree and the
                conditional gives it more than --low;
  --rule gate:  the pointer's gate (sigmoid; the share the copy head copies) exceeds --gate and the conditional
                gives its likeliest more than --low.

Prints the table's lines and how many tokens the rule took beside the shipped one.

    python scripts/greedy_rule_probe.py --rule agree --low 0.3 -- --samples 200 --settings "guidance 2, greedy above 0.7"
    python scripts/greedy_rule_probe.py --rule gate --gate 0.5 -- --samples 200 --settings "guidance 2, greedy above 0.7"
"""

from __future__ import annotations

import argparse
import sys

import torch

import document_table
import tinychameleon.documents.engine as engine
import tinychameleon.model as model
from tinychameleon.sampling import certainty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", choices=("agree", "gate"), required=True)
    parser.add_argument("--low", type=float, default=0.0, help="the least probability a widened token needs")
    parser.add_argument("--gate", type=float, default=0.5, help="--rule gate: the gate above which it is taken")
    parser.add_argument("table_args", nargs=argparse.REMAINDER, help="after --: scripts/document_table.py's arguments")
    args = parser.parse_args()
    seen, counts = {}, {"widened": 0, "tokens": 0}

    guided_logits, look = engine.guided_logits, model.CopyHead.look

    def guided_and_kept(conditional, unconditional, guidance):
        seen["unconditional"] = unconditional
        return guided_logits(conditional, unconditional, guidance)

    def look_and_keep(self, hidden, keys, mask, *slots):
        weights, gate = look(self, hidden, keys, mask, *slots)
        seen["gate"] = torch.sigmoid(gate[:, -1, 0])                        # (rows,) the newest position's gate
        return weights, gate

    def keep_sure(token, conditional, allowed, greedy_above):
        sure, likeliest = certainty(conditional, allowed)
        shipped = sure > greedy_above
        if args.rule == "agree":
            unconditional = seen.pop("unconditional", None)
            if unconditional is None:
                return torch.where(shipped, likeliest, token)
            widened = likeliest == certainty(unconditional, allowed)[1]
        else:
            widened = seen["gate"][:len(token)] > args.gate                  # the conditional rows come first
        widened &= (sure > args.low) & ~shipped
        counts["widened"] += int(widened.sum())
        counts["tokens"] += len(token)
        return torch.where(shipped | widened, likeliest, token)

    engine.guided_logits, engine.keep_sure, model.CopyHead.look = guided_and_kept, keep_sure, look_and_keep
    sys.argv = ["document_table.py", *[a for a in args.table_args if a != "--"]]
    document_table.main()
    print(f"tokens taken by the rule beside the shipped one: {counts['widened']} of {counts['tokens']} decisions")


if __name__ == "__main__":
    main()
