#!/bin/sh
# Generation speed on a GPU: remixer-generate's computation on the cuda backend (RMX_CUDA_TF32=0)
# against the PyTorch twins on CUDA (TF32 off), the same parity check first (Remixer's cuda dump
# against the twin on the CPU, float32 and float64), then run_generate_bench.sh's rounds and table.
#
#   bench/generate/run_generate_cuda_bench.sh [BUILD_DIR] [CHECKPOINT|-] [COUNT] [ROUNDS]
#
# BUILD_DIR (default ./build) must be configured with the CUDA backend (bench_generate is built
# there). COUNT defaults to 8 (remixer-generate's largest batch: 16 with guidance), ROUNDS to 3.
# Without a GPU (or a torch with CUDA) it prints "skipped: no GPU" and exits 0;
# scripts/device-setup.sh bench runs it. PYTHON picks the interpreter (default python3).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
ckpt=${2:--}
count=${3:-8}
rounds=${4:-3}
py=${PYTHON:-python3}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1 ||
   ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "skipped: no GPU"
    exit 0
fi
cmake --build "$build" --target bench_generate remixer-prep remixer-train >/dev/null
echo "== generation on the GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
RMX_CUDA_TF32=0 RMX_GENERATE_DEVICE=cuda PYTHON=$py TORCH_ENV="" \
    "$here/run_generate_bench.sh" "$build" "$ckpt" "$(nproc)" "$count" "$rounds"
