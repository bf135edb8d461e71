#!/usr/bin/env bash
# Configures and builds Remixer into build/ (or $RMX_BUILD_DIR). Extra arguments go to cmake.
# The CUDA backend is built when nvcc is found (PATH or /usr/local/cuda), skipped otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${RMX_BUILD_DIR:-build}
cuda_args=()
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  cuda_args=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" "$@" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
