#!/usr/bin/env bash
# The repository carries what its tests need: a copy of the checkout's files (tracked and new,
# uncommitted edits included; what git ignores left out) in an empty temporary folder, with
# nothing beside it, configures and passes the k8s manifest tests, which read the MPIJob CRD.
# A test, script or build file that reads outside the repository (a sibling folder such as
# shared/, an absolute path into the checkout's parent folder) fails here, while it passes in the checkout.
#
#   test_self_contained.sh SOURCE_DIR CMAKE CTEST
set -euo pipefail
src=$(cd "$1" && pwd -P)
cmake=$2
ctest=$3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rmx-self-contained.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
copy=$tmp/repo

# The files a fresh clone (with this working tree's edits) would hold.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mkdir "$copy"
  (cd "$src" && git ls-files -co --exclude-standard -z |
     while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
     xargs -0 -r cp -P --parents -t "$copy")
else
  echo "note: $src is not a git checkout; copying it without build folders"
  mkdir "$copy"
  (cd "$src" && tar --exclude='./build*' --exclude=./runs --exclude=./demo-data -cf - .) |
    (cd "$copy" && tar -xf -)
fi
[[ ! -e $tmp/shared ]] || { echo "FAIL: $tmp/shared exists"; exit 1; }

"$cmake" -S "$copy" -B "$tmp/build" -DREMIXER_CUDA=OFF >"$tmp/configure.log" 2>&1 || {
  cat "$tmp/configure.log"; echo "FAIL: cmake configure of the copy"; exit 1; }

# No registered test names a path under the checkout's parent folder (where shared/ lives).
parent=$(dirname "$src")
if [[ $parent != / ]]; then
  # (paths into the copy itself are fine, even when TMPDIR lies under that parent; a path counts
  # where it starts, so a folder of the copy's build merely named like the parent does not)
  hits=$(find "$tmp/build" -name CTestTestfile.cmake -exec cat {} + |
         awk -v t="$tmp/" '{ gsub(t, "") } 1' | grep -P "(^|[\\s\"'=;(])\\Q$parent/\\E" || true)
  if [[ -n $hits ]]; then
    printf '%s\n' "$hits" | head -20
    echo "FAIL: tests of the copy name paths under $parent/ (outside the repository)"
    exit 1
  fi
fi

# The tests that read the CRD: every manifest, the curated lists, the broken fixtures, the
# hand-offs between the stages (1 -> 2 -> 3).
regex='^k8s_(manifests_|repo_references|validator_|stage_handoff_)'
n=$("$ctest" --test-dir "$tmp/build" -N -R "$regex" | sed -n 's/^Total Tests: //p')
if [[ ${n:-0} -lt 12 ]]; then
  echo "FAIL: expected at least 12 k8s manifest tests in the copy, found ${n:-0}"
  exit 1
fi
if ! "$ctest" --test-dir "$tmp/build" -R "$regex" --output-on-failure >"$tmp/ctest.log" 2>&1; then
  cat "$tmp/ctest.log"
  echo "FAIL: the k8s tests fail in a copy of the repository with nothing beside it"
  exit 1
fi
tail -n 3 "$tmp/ctest.log"
echo "ok: $n k8s tests pass in a self-contained copy ($(wc -l <"$tmp/configure.log") configure lines)"
