#!/usr/bin/env bash
# Runs the libFuzzer harnesses for long: builds them with clang (tests/fuzz as its own project)
# and fuzzes each harness for SECONDS, one after another, keeping a growing corpus.
#
#   tests/fuzz/run_long.sh SECONDS [HARNESS...]      (harnesses: config shard checkpoint audio)
#
# Environment: RMX_FUZZ_BUILD (build folder, default <repo>/build-fuzz), RMX_FUZZ_CC (clang),
# RMX_FUZZ_JOBS (libFuzzer -jobs/-workers per harness, default 1), RMX_FUZZ_RUNS (stop a harness
# after this many executions, e.g. 10000000), RMX_FUZZ_ARGS (more libFuzzer flags, e.g.
# "-max_len=65536").
# LeakSanitizer is off while fuzzing: libhdf5 and the codecs keep memory between inputs, so
# libFuzzer's leak check would scan the heap after nearly every input (9 in 10 of the shard
# harness's time). The harnesses still check our HDF5 objects and file descriptors after every
# input, and at the end the whole corpus is replayed once with leak detection on.
# Per harness, under $RMX_FUZZ_BUILD/long/<harness>/: corpus/ (grows across runs; the committed
# seeds in tests/fuzz/corpus/<harness> are read, never written), artifacts/ (crash-*, leak-*,
# timeout-*, oom-*: the reproducing inputs) and log. Replay one: $RMX_FUZZ_BUILD/fuzz_<h> FILE.
# Exit status: 0 when no harness found anything, 1 otherwise (the summary names the artifacts).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:?usage: run_long.sh SECONDS [HARNESS...]}
shift
harnesses=${*:-config shard checkpoint audio}
build=${RMX_FUZZ_BUILD:-$root/build-fuzz}
jobs=${RMX_FUZZ_JOBS:-1}

bash "$here/fuzz_test.sh" build "$build" ${RMX_FUZZ_CC:-} >"$build.build.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  tail -n 30 "$build.build.log"
  [ $rc -eq 77 ] && echo "run_long.sh: libFuzzer is not available here" || echo "run_long.sh: build failed"
  exit $rc
fi

status=0
for h in $harnesses; do
  d=$build/long/$h
  mkdir -p "$d/corpus" "$d/artifacts"
  par=()
  [ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
  [ -n "${RMX_FUZZ_RUNS:-}" ] && par+=(-runs="$RMX_FUZZ_RUNS")
  echo "== fuzz_$h for ${secs}s"
  # -jobs runs write fuzz-<n>.log files in the current folder: run from $d.
  common=(-timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=2048 -error_exitcode=1 -timeout_exitcode=1
          -artifact_prefix="$d/artifacts/")
  (cd "$d" && "$build/fuzz_$h" -max_total_time="$secs" -detect_leaks=0 -print_final_stats=1 "${common[@]}" \
     ${par[@]+"${par[@]}"} ${RMX_FUZZ_ARGS:-} "$d/corpus" "$here/corpus/$h" >"$d/log" 2>&1)
  r=$?
  if [ $r -eq 0 ]; then
    echo "replaying the corpus with leak detection"
    (cd "$d" && "$build/fuzz_$h" -runs=0 -detect_leaks=1 "${common[@]}" "$d/corpus" "$here/corpus/$h" \
       >"$d/leaks.log" 2>&1)
    r=$?
  fi
  grep -hE '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$d/log" "$d"/fuzz-*.log 2>/dev/null
  echo "corpus: $(ls "$d/corpus" | wc -l) inputs"
  if [ $r -ne 0 ] || ls "$d/artifacts/"* >/dev/null 2>&1; then
    status=1
    grep -hE 'ERROR: |runtime error|SUMMARY' "$d/log" "$d/leaks.log" "$d"/fuzz-*.log 2>/dev/null | sort | uniq -c | head
    echo "findings (exit $r):"; ls -1 "$d/artifacts/" | sed "s|^|  $d/artifacts/|"
  else
    echo "no findings"
  fi
done
exit $status
