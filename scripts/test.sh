#!/usr/bin/env bash
# Builds with warnings as errors and runs the whole test suite (CPU; GPU tests report skipped
# when no GPU is visible). Extra arguments go to ctest, e.g. scripts/test.sh -R data
set -euo pipefail
cd "$(dirname "$0")/.."
export RMX_BUILD_DIR=${RMX_BUILD_DIR:-build}
scripts/build.sh -DREMIXER_WERROR=ON
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} RMX_NO_PROGRESS=1
ctest --test-dir "$RMX_BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
