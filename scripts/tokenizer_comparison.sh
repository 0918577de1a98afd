#!/usr/bin/env bash
# The image tokenizers at one matched budget, measured on the validation split (where choices are made).
#
#     bash scripts/tokenizer_comparison.sh [RUNS_DIR]        (about 70 minutes on a 2-core CPU)
#
# Each kind trains its tokenizer and the `best` preset's transformer (6 layers, d192) for one epoch on the
# first 15 000 training digits under one color draw; `pixels` (784 tokens per image) uses its own small
# preset, since the same model would take ~16x longer. Every run is evaluated with the shipped sampler
# (tinychameleon/pretrained/sampling.json) on 200 validation examples per direction, and
# scripts/tokenizer_table.py prints the markdown table from what the runs wrote.
set -euo pipefail
runs=${1:-runs/tokenizers}
sampler=$(python -c "import tinychameleon, pathlib; print(pathlib.Path(tinychameleon.__file__).parent / 'pretrained' / 'sampling.json')")
matched=(--preset base --epochs 1 --colorings 1 --max-train-examples 15000 --warmup-steps 50 --vq-epochs 2 --no-progress)
declare -A kinds=([vq]="--tokenizer vq --codebook-size 256" [rvq]="--tokenizer rvq --codebook-size 256"
                  [fsq]="--tokenizer fsq --codebook-size 1024" [patches]="--tokenizer patches --codebook-size 2048")
rows=()
for kind in vq rvq fsq patches pixels; do
    run="$runs/$kind"
    if [[ ! -f "$run/run_info.json" ]]; then
        if [[ $kind == pixels ]]; then
            tinychameleon train --preset pixels --no-progress --out "$run" $([[ -f "$run/config.json" ]] && echo --resume)
        else
            # shellcheck disable=SC2086
            tinychameleon train "${matched[@]}" ${kinds[$kind]} --out "$run" $([[ -f "$run/config.json" ]] && echo --resume)
        fi
    fi
    cp "$sampler" "$run/sampling.json"
    [[ -f "$run-eval/metrics.json" ]] || tinychameleon evaluate --checkpoint "$run" --split validation --samples 200 --out "$run-eval"
    rows+=("$run=$run-eval")
done
python "$(dirname "$0")/tokenizer_table.py" "${rows[@]}"
