#!/bin/sh
# Loader throughput, page cache warm and then dropped before each run.
#   bench/data/run_loader_bench.sh [BUILD_DIR] [bench_loader options...]
# BUILD_DIR defaults to ./build; the benchmark is built there if needed.
set -eu
build=${1:-build}
[ $# -gt 0 ] && shift
cmake --build "$build" --target bench_loader >/dev/null
"$build/bench/data/bench_loader" "$@"
echo
"$build/bench/data/bench_loader" --cold "$@"
