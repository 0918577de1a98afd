#!/usr/bin/env bash
# Is the shipped recipe's tune stage short of data, of steps or of the right mixture? Several arms of
# `train --preset best --init-from BASE` side by side on one device, then each one's document table on validation
# (BENCHMARKS.md, "More data for the tune stage"). Built for a lent GPU, where an arm takes a minute or two and the
# arms overlap (each step is bound by kernel launches, not by the GPU's arithmetic):
#     OUT=runs/sweep BASE=runs/release9 bash scripts/tune_sweep.sh
#     OUT=runs/seeds BASE= ARMS="seed2 seed3 seed4" bash scripts/tune_sweep.sh    # both stages from nothing
# ARMS picks arms by name (default: all); EXTRA adds flags to every arm (a dry run on the CPU: DEVICE=cpu EXTRA="
# --max-train-examples 512 --documents 1024" SAMPLES=2). Each arm's log and table land in $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
OUT=${OUT:-runs/sweep}
BASE=${BASE-runs/release9}         # "": both stages from nothing
DEVICE=${DEVICE:-cuda}
TRAIN_LIMIT=${TRAIN_LIMIT:-330}     # seconds per arm; an arm cut short keeps its best finished epoch
TABLE_LIMIT=${TABLE_LIMIT:-170}
SAMPLES=${SAMPLES:-200}
RUNS=${RUNS:-/tmp/tinychameleon-sweep}   # outside $OUT: only logs and tables come back
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$RUNS"

# The shipped tune stage's shares (config.PRESETS["best"]), with addition and counting raised.
MIXTURE=(--family-shares "addition=6" "counting=8" "background name=2" "digit color name=2" "digit color=1.5"
         "background color=1.5" "swap=1.5")
declare -A ARM=(
    [shipped]=""                                                   # release 12's recipe: 757 steps of 128
    [data4x]="--batch-size 512 --epochs 4 --set train.patience=0"  # 4x the examples in the same 756 steps
    [data8x]="--batch-size 512 --epochs 8 --set train.patience=0"  # 8x the examples in 2x the steps
    [mixture]="MIXTURE"                                            # the same steps, addition 6 and counting 8
    [seed2]="--train-seed 2" [seed3]="--train-seed 3" [seed4]="--train-seed 4"   # with BASE="": the recipe's spread
)
ARMS=${ARMS:-shipped data4x data8x mixture}

for name in $ARMS; do
    flags=${ARM[$name]}
    extra=()
    [ "$flags" = MIXTURE ] && { extra=("${MIXTURE[@]}"); flags=""; }
    rm -rf "$RUNS/$name"
    # shellcheck disable=SC2086 # flags are words on purpose
    ( started=$(date +%s)
      timeout "$TRAIN_LIMIT" python3 -m tinychameleon train --preset best ${BASE:+--init-from "$BASE"} --device "$DEVICE" \
          --out "$RUNS/$name" --no-progress $flags "${extra[@]}" $EXTRA > "$OUT/$name.log" 2>&1
      echo "exit $? after $(( $(date +%s) - started )) s" >> "$OUT/$name.log" ) &
done
wait
echo "== trained ($(date +%T))"; tail -n 3 "$OUT"/*.log

for name in $ARMS; do
    run="$RUNS/$name"
    [ -f "$run/model.safetensors" ] || { echo "$name: no weights"; continue; }
    cp tinychameleon/pretrained/sampling.json "$run/"
    cp "$run/run_info.json" "$OUT/$name.run_info.json" 2>/dev/null
    cp "$run/transformer_metrics.json" "$OUT/$name.transformer_metrics.json" 2>/dev/null
    timeout "$TABLE_LIMIT" python3 scripts/document_table.py --checkpoint "$run" --samples "$SAMPLES" \
        --settings "guidance 2, greedy above 0.7" --out "$OUT/$name.table.json" > "$OUT/$name.table.txt" 2>&1 &
done
wait
for name in $ARMS; do echo "$name: $(tail -n 1 "$OUT/$name.table.txt" 2>/dev/null)"; done
