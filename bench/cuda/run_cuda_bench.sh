#!/bin/sh
# The bench-size autoencoder's training step on the GPU: the cuda backend with fp32 GEMMs and with
# TF32, then the PyTorch twin (bench/train/ae_twin.py) likewise where torch sees a GPU, and a table.
#   bench/cuda/run_cuda_bench.sh [BUILD_DIR] [options passed to both: --batch B --micro M
#                                 --steps N --warmup N --device D --peak-fp32 T --peak-tf32 T]
# BUILD_DIR defaults to ./build (configured with the CUDA backend); the benchmark is built there.
# PYTHON picks the interpreter for the twin (default python3).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
py=${PYTHON:-python3}
cmake --build "$build" --target bench_cuda_step >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for tf32 in 0 1; do
  echo "== cuda backend, RMX_CUDA_TF32=$tf32"
  RMX_CUDA_TF32=$tf32 "$build/bench/cuda/bench_cuda_step" "$@" | tee -a "$log"
  echo
done
if "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  for tf32 in 0 1; do
    echo "== PyTorch twin, TF32 $tf32"
    "$py" "$here/torch_cuda_step.py" --tf32 "$tf32" "$@" | tee -a "$log"
    echo
  done
else
  echo "== PyTorch twin: skipped ($py cannot import torch with a CUDA device)"
fi

echo "== summary (median step; TFLOP/s from the brief's 381 GFLOP per 8 samples)"
printf '%-6s %-5s %6s %10s %10s %8s %8s %8s\n' backend tf32 batch step_ms samples/s TFLOP/s %fp32 %tf32
grep '^RESULT' "$log" | while read -r line; do
  get() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  printf '%-6s %-5s %6s %10s %10s %8s %8s %8s\n' "$(get backend)" "$(get tf32)" "$(get batch)" \
    "$(get step_ms)" "$(get samples_s)" "$(get tflops)" "$(get pct_fp32)" "$(get pct_tf32)"
done
