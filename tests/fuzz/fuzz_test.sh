#!/usr/bin/env bash
# The ctest side of the libFuzzer harnesses (tests/fuzz/CMakeLists.txt).
#   fuzz_test.sh build BINDIR [CC]        configure and build the clang project into BINDIR
#   fuzz_test.sh run BINDIR HARNESS SECS  fuzz HARNESS for SECS seconds from its seed corpus
# Exit 77 (ctest: skipped) when clang or libFuzzer is not available, with the reason; any finding
# (crash, leak, UB report, timeout, out of memory) fails with the reproducing input's path.
set -u
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:?mode}; bindir=${2:?bindir}
skip() { echo "SKIPPED: $*"; mkdir -p "$bindir"; echo "$*" >"$bindir/UNAVAILABLE"; exit 77; }

case $mode in
build)
  cc=${3:-${RMX_FUZZ_CC:-}}
  if [ -z "$cc" ]; then
    for c in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
      if command -v "$c" >/dev/null 2>&1; then cc=$(command -v "$c"); break; fi
    done
  fi
  [ -n "$cc" ] || skip "no clang on PATH (libFuzzer needs clang; set RMX_FUZZ_CC)"
  probe=$(mktemp -d)
  trap 'rm -rf "$probe"' EXIT
  printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
  if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >"$probe/log" 2>&1; then
    cat "$probe/log"
    skip "$cc cannot link -fsanitize=fuzzer,address,undefined (libFuzzer runtime missing?)"
  fi
  rm -f "$bindir/UNAVAILABLE"
  cmake -S "$here" -B "$bindir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$bindir.configure.log" 2>&1 ||
    { cat "$bindir.configure.log"; echo "FAILED: configuring the fuzz project"; exit 1; }
  cmake --build "$bindir" -j "${RMX_FUZZ_JOBS:-1}" || { echo "FAILED: building the fuzz harnesses"; exit 1; }
  echo "built: $(cd "$bindir" && ls fuzz_*[a-z] | tr '\n' ' ')with $cc"
  ;;
run)
  h=${3:?harness}; secs=${4:-5}
  bin=$bindir/fuzz_$h
  if [ ! -x "$bin" ]; then
    [ -f "$bindir/UNAVAILABLE" ] && skip "$(cat "$bindir/UNAVAILABLE")"
    echo "FAILED: $bin is not built (see the test fuzz_build)"; exit 1
  fi
  work=$bindir/run/$h
  rm -rf "$work"; mkdir -p "$work/corpus" "$work/artifacts"
  # New inputs go to the scratch corpus; the committed seeds are only read.
  "$bin" -seed="${RMX_FUZZ_SEED:-1}" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=2048 -error_exitcode=1 \
    -timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
    "$work/corpus" "$here/corpus/$h" >"$work/log" 2>&1
  rc=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|Done )' "$work/log"
  if [ $rc -ne 0 ] || ls "$work/artifacts/"* >/dev/null 2>&1; then
    tail -n 60 "$work/log"
    echo "FAILED: fuzz_$h found a problem (exit $rc); reproducer(s):"
    ls -1 "$work/artifacts/"* 2>/dev/null
    echo "replay: $bin <file>"
    exit 1
  fi
  echo "fuzz_$h: no findings in ${secs}s"
  ;;
*) echo "usage: fuzz_test.sh build BINDIR [CC] | run BINDIR HARNESS SECONDS"; exit 2 ;;
esac
