#!/usr/bin/env bash
# Fuzz the config, shard, checkpoint and audio readers with libFuzzer (clang) for SECONDS each:
#   scripts/fuzz.sh [SECONDS] [HARNESS...]      (default 600 s each; see tests/fuzz/run_long.sh)
# The ordinary suite runs each for a few seconds: scripts/test.sh -L fuzz
secs=${1:-600}
shift || true
exec "$(dirname "$0")/../tests/fuzz/run_long.sh" "$secs" "$@"
