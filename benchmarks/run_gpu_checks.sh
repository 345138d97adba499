#!/usr/bin/env bash
# The GPU session's checks in one script (benchmarks/README.md, "To run on a GPU"): CUDA vs CPU parity
# tests, then the CUDA benchmarks; every output goes to $OUT (default gpu_results/), the script goes on
# after a failing step and exits non-zero if any step failed.
#   OUT=gpu_results WEIGHTS=.bench/model_final_faster.pkl bash benchmarks/run_gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
PY=${PYTHON:-.venv/bin/python}
WEIGHTS=${WEIGHTS:-.bench/model_final_faster.pkl}
mkdir -p "$OUT"
failed=0
step() {  # step NAME COMMAND...: run, keep its output in $OUT/NAME.txt, remember a failure
    local name=$1; shift
    echo "== $name: $*" | tee "$OUT/$name.txt"
    "$@" >>"$OUT/$name.txt" 2>&1 || { echo "== $name FAILED" | tee -a "$OUT/$name.txt"; failed=1; }
}
step gpu nvidia-smi -L
weights=()
[ -f "$WEIGHTS" ] && weights=(--weights "$WEIGHTS")
step pytest_gpu "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider
step seed_loop_cuda "$PY" benchmarks/bench_seed_loop.py "${weights[@]}" --device cuda --images 64 --batch-size 16 --repeats 3
step pipeline_cuda "$PY" benchmarks/bench_pipeline.py --device cuda --precisions fp32,fp16,bf16 --images 512 --batch-size 64 --repeats 3
step decode_compile_cuda "$PY" benchmarks/bench_pipeline.py --device cuda --precisions bf16 --decodes cpu,device \
    --compile reduce-overhead --images 512 --batch-size 64 --repeats 5
exit $failed
