#!/usr/bin/env bash
# Builds with warnings as errors and runs the whole test suite (CPU; GPU tests report skipped
# when no GPU is visible). Extra arguments go to ctest, e.g. scripts/test.sh -R data
#   RMX_SANITIZE=address,undefined scripts/test.sh   the same suite under sanitizers (build-asan/)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake_args=(-DREMIXER_WERROR=ON)
if [[ -n "${RMX_SANITIZE:-}" ]]; then
  export RMX_BUILD_DIR=${RMX_BUILD_DIR:-build-asan}
  cmake_args+=(-DREMIXER_SANITIZE="$RMX_SANITIZE" -DCMAKE_BUILD_TYPE=RelWithDebInfo)
  # Open MPI and hwloc keep allocations until exit; leaks are checked by the unit tests' own runs.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
  # A UBSan report fails the test that made it (by default UBSan prints and goes on).
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
fi
export RMX_BUILD_DIR=${RMX_BUILD_DIR:-build}
scripts/build.sh "${cmake_args[@]}"
# Passive OpenMP waiting: tests run side by side on few cores, where libgomp's spinning idle
# threads steal the cores other tests need (results do not depend on it).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} RMX_NO_PROGRESS=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir "$RMX_BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
