#!/usr/bin/env bash
# Everything measured on a lent GPU, in one run (BENCHMARKS.md, "On a GPU"): the CUDA-graph decode tests, the
# benchmark (the checkpoint's decode step and requests eager vs replayed as CUDA graphs), next-scale requests,
# `train --preset best` from nothing, and its document table. From the repo root on a CUDA machine:
#     OUT=runs/device bash scripts/device_check.sh [STAGE ...]
# (On a machine without internet, copy the data cache - mnist-uint8.npz and the judge's weights - into a folder
# and name it in TINYCHAMELEON_CACHE.)
# STAGEs: tests, bench, requests, train (default: all). Each has its own time limit so that a slow one cannot eat
# the next's.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
STAGES=${*:-tests bench requests train}
stage() { echo "== $1 ($(date +%T))"; }
wanted() { [[ " $STAGES " == *" $1 "* ]]; }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

if wanted tests; then
stage "CUDA-graph decode tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_decode_graph.py tests/test_sampling.py \
    tests/test_nextscale.py::test_replayed_passes_draw_what_eager_passes_draw \
    tests/test_documents.py::test_replayed_document_steps_write_what_the_row_cache_writes 2>&1 | tail -4
fi

if wanted bench; then
stage "bench: raster checkpoint, eager vs CUDA graph"
timeout 200 python3 -m tinychameleon bench --device cuda --batches 1,64,1024 --repeats 5 --json "$OUT/bench.json"
fi

if wanted requests; then
stage "requests of both generators, eager vs CUDA graph; ms per image at batch 1 and 1024"
timeout 200 python3 - "$OUT/requests.json" <<'PY'
import json, sys, time
import torch
from tinychameleon.bench import pipeline_cases, synchronize
from tinychameleon.pipeline import Pipeline

device, rows = torch.device("cuda"), {}
plain = {"guidance": 1.0, "image_candidates": 1, "rerank_captions": False, "caption_views": 1}
for name in (None, "var"):
    rows[f"{name or 'raster'}_requests"] = pipeline_cases(device, name, 7)
    pipeline = Pipeline.from_pretrained(name, device="cuda")
    for n in (1, 1024):
        call = lambda: pipeline.generate_images("dark green eight on bright cyan", n=n, seed=0, **plain)
        call()
        times = []
        for _ in range(5):
            synchronize(device); started = time.perf_counter(); call(); synchronize(device)
            times.append(time.perf_counter() - started)
        rows[f"{name or 'raster'}_plain_batch{n}_ms_per_image"] = sorted(times)[2] * 1000 / n
# Documents (`continue`): one swap edit, and 256 at once, replayed steps vs eager ones.
from contextlib import nullcontext
from tinychameleon.decode_graph import eager_steps
raster = Pipeline.from_pretrained(None, device="cuda")
image = raster.generate_images("dark green eight on bright cyan", seed=0)[0]
for n in (1, 256):
    call = lambda: raster.continue_documents(["<image> swap the colors ."] * n, [[image]] * n, seed=0)
    for name, context in (("graph", nullcontext), ("eager", eager_steps)):
        with context():
            call()
            times = []
            for _ in range(3):
                synchronize(device); started = time.perf_counter(); call(); synchronize(device)
                times.append(time.perf_counter() - started)
        rows[f"documents_swap_{n}_{name}_ms"] = sorted(times)[1] * 1000
print(json.dumps(rows, indent=1))
json.dump(rows, open(sys.argv[1], "w"), indent=1)
PY
fi

if wanted train; then
stage "train --preset best from nothing"
BEST=${BEST:-/tmp/tinychameleon-best}      # outside $OUT: only the files below come back
rm -rf "$BEST"
started=$(date +%s)
timeout 300 python3 -m tinychameleon train --preset best --device cuda --out "$BEST" --no-progress 2>&1 | tail -25
echo "train wall: $(( $(date +%s) - started )) s"
cp "$BEST/run_info.json" "$OUT/train_run_info.json" 2>/dev/null
cp "$BEST/base/run_info.json" "$OUT/train_base_run_info.json" 2>/dev/null

stage "document table of that model (CPU threads of this machine)"
if [ -f "$BEST/model.safetensors" ]; then
    cp tinychameleon/pretrained/sampling.json "$BEST/"
    tar -czf "$OUT/best.tar.gz" --exclude=base -C "$(dirname "$BEST")" "$(basename "$BEST")"
    timeout 120 python3 scripts/document_table.py --checkpoint "$BEST" --samples 200 \
        --settings "guidance 2, greedy above 0.7" --out "$OUT/table.json" 2>/dev/null | tail -3
fi
fi
stage "done"
