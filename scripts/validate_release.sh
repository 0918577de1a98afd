#!/bin/bash
# How a candidate for the shipped `best` checkpoint is validated (validation split only; the test split is read once,
# by `tinychameleon evaluate`, after the choice). Releases 14 to 16 were chosen on these figures.
#
#     bash scripts/validate_release.sh RUN        # RUN: a `train --preset best` output directory
#
# Writes RUN-table200.log (every family at 200 documents), RUN-table600.log (seven families at 600, seed 1),
# RUN-evalval/ (pairs at 1000 and 16 documents per family) and RUN-colors600.log (the color questions at 600).
# The run gets the shipped sampler settings (tinychameleon/pretrained/sampling.json), so arms are compared as shipped.
# About 12 minutes on a 2-core CPU; run it alone (two at once triple each other's time).
set -euo pipefail
RUN=${1:?usage: bash scripts/validate_release.sh RUN}
[ -f "$RUN/model.safetensors" ] || { echo "validate_release: $RUN has no model.safetensors" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$ROOT/.venv/bin/activate" ]; then source "$ROOT/.venv/bin/activate"; fi  # make install's
SETTINGS="guidance 2, greedy above 0.7"
cp "$ROOT/tinychameleon/pretrained/sampling.json" "$RUN/"
python "$ROOT/scripts/document_table.py" --checkpoint "$RUN" --samples 200 --settings "$SETTINGS" > "$RUN-table200.log"
python "$ROOT/scripts/document_table.py" --checkpoint "$RUN" --samples 600 --seed 1 --families addition counting \
    "what comes next" swap "background color" "digit color" "change digit" --settings "$SETTINGS" > "$RUN-table600.log"
tinychameleon evaluate --checkpoint "$RUN" --split validation --samples 1000 --document-samples 16 --out "$RUN-evalval" \
    > "$RUN-evalval.log"
python "$ROOT/scripts/color_question_errors.py" --checkpoint "$RUN" --samples 600 > "$RUN-colors600.log"
head -n 1 "$RUN-table200.log" "$RUN-table600.log"
tail -n 2 "$RUN-colors600.log"
