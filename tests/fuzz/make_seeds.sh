#!/usr/bin/env bash
# Regenerates the generated seeds (shards, checkpoint, sounds) of tests/fuzz/corpus with make_seeds
# (make_seeds.c), built by the clang fuzz project. The config seeds are copies of configs/*.yaml
# plus corpus/config/with-sets (YAML, then a "---SET---" line and one --set string per line).
#   tests/fuzz/make_seeds.sh [BUILD]      (default <repo>/build-fuzz)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build-fuzz}
bash "$here/fuzz_test.sh" build "$build" >/dev/null
"$build/make_seeds" "$here/corpus"
for f in "$here"/../../configs/*.yaml; do cp "$f" "$here/corpus/config/$(basename "$f" .yaml)"; done
ls -l "$here"/corpus/*
