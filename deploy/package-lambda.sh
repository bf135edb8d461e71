#!/usr/bin/env bash
# Builds remixer-lambda and packages it for AWS Lambda (deploy/README.md):
#
#   deploy/package-lambda.sh BUILD_DIR CHECKPOINT OUT.zip    the zip for runtime provided.al2023
#   deploy/package-lambda.sh BUILD_DIR CHECKPOINT OUT_DIR    the same files in a folder (the
#                                                           Dockerfile's container image copies it)
#
# BUILD_DIR must be a CPU build (Lambda has no GPU, and the CUDA libraries alone are far over
# Lambda's 250 MB): a folder that is not configured yet is configured here with -DREMIXER_CUDA=OFF.
# remixer-lambda is built there (cmake --build, so an up-to-date build costs nothing), then
#   bootstrap           what Lambda runs: remixer-lambda through the package's own loader
#   bin/remixer-lambda
#   lib/                every shared library it needs (as ldd finds them), glibc and its loader
#                       included: Debian 12's glibc is 2.36 and its libraries need symbols newer
#                       than the 2.34 of Amazon Linux 2023, so the program cannot use the host's
#   model.h5            the checkpoint (REMIXER_CHECKPOINT in the function's environment points
#                       elsewhere, e.g. at an EFS mount, for one that does not fit)
# Environment: RMX_JOBS (build jobs, default: all cores).
# Exit codes: 0 done, 1 build or packaging failure, 2 bad arguments (missing checkpoint, a CUDA
# build, an OUT folder that is not empty, a zip over Lambda's unzipped limit).
set -euo pipefail

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
}
die() { echo "package-lambda: error: $2" >&2; exit "$1"; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi
[[ $# -eq 3 ]] || { usage >&2; exit 2; }
build_dir=$1
checkpoint=$2
out=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
# Lambda's quota on a function's unzipped code (zip) and on a zip uploaded directly (not via S3).
unzipped_limit=$((250 * 1024 * 1024))
direct_upload_limit=$((50 * 1024 * 1024))

[[ -f "$checkpoint" && -r "$checkpoint" ]] || die 2 "$checkpoint: no such checkpoint (a readable file)"
if [[ "$out" == *.zip ]]; then
  command -v zip >/dev/null || die 2 "zip is not installed (scripts/setup-deps.sh installs it)"
  [[ -d "$(dirname "$out")" ]] || die 2 "$out: the folder $(dirname "$out") does not exist"
elif [[ -e "$out" && -n "$(ls -A "$out" 2>/dev/null)" ]]; then
  die 2 "$out: exists and is not empty (give a new folder, or a path ending in .zip)"
fi

# ---- build ----
cuda_refusal="$build_dir is a CUDA build: Lambda has no GPU and the CUDA libraries exceed its 250 MB; give a new folder (it is configured CPU-only) or configure one with -DREMIXER_CUDA=OFF"
cache="$build_dir/CMakeCache.txt"
if [[ ! -f "$cache" ]]; then
  echo "package-lambda: configuring a CPU-only build in $build_dir"
  cmake -S "$repo" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DREMIXER_CUDA=OFF >/dev/null
elif grep -q '^REMIXER_CUDA:BOOL=ON$' "$cache" && grep -q '^REMIXER_SANITIZE:STRING=$' "$cache" \
     && grep -Eq '^CMAKE_CUDA_COMPILER:[A-Z]+=/' "$cache"; then
  die 2 "$cuda_refusal" # (found by the top-level CMakeLists.txt's rule; the ldd check below is the last word)
fi
cmake --build "$build_dir" --target remixer-lambda -j "${RMX_JOBS:-$(nproc)}" >/dev/null \
  || die 1 "building remixer-lambda in $build_dir failed (run: cmake --build $build_dir --target remixer-lambda)"
program="$build_dir/lambda/remixer-lambda"
[[ -x "$program" ]] || die 1 "$program: not built"

# ---- the libraries, as the dynamic loader resolves them here ----
deps=$(ldd "$program") || die 1 "ldd $program failed"
if grep -q "not found" <<<"$deps"; then
  die 1 "$program: libraries not found: $(grep "not found" <<<"$deps" | awk '{print $1}' | xargs)"
fi
if grep -Eq "libcuda|libcudart|libcublas|libnccl" <<<"$deps"; then
  die 2 "$cuda_refusal"
fi
# "name => /path (addr)" lines, and the loader's own "/path (addr)" line
libs=$(awk '$2 == "=>" && $3 ~ /^\// {print $1 " " $3} $1 ~ /^\// {print $1}' <<<"$deps")
loader=$(awk '$1 ~ /^\// {print $1}' <<<"$deps")
[[ -n "$loader" ]] || die 1 "$program: ldd names no dynamic loader (a static binary is not what this script packages)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/remixer-lambda.XXXXXX")
trap 'rm -rf "$stage" "$stage.zip"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
install -m 0755 "$program" "$stage/bin/remixer-lambda"
while read -r name path; do
  if [[ -z "$path" ]]; then path=$name; fi
  install -m 0644 "$path" "$stage/lib/$(basename "$name")" # install follows links: the files themselves
done <<<"$libs"
loader_name=$(basename "$loader")
chmod 0755 "$stage/lib/$loader_name" # run as a program by bootstrap
install -m 0644 "$checkpoint" "$stage/model.h5"

cat >"$stage/bootstrap" <<EOF
#!/bin/sh
# The Lambda custom runtime's entry point (deploy/package-lambda.sh wrote it): remixer-lambda with
# the package's loader and libraries, glibc included, so the host's libraries are never mixed in.
# The package lies in LAMBDA_TASK_ROOT (the zip's folder, or /var/task in the container image,
# where this file is also /var/runtime/bootstrap); run by hand, beside this file.
root=\${LAMBDA_TASK_ROOT:-\$(dirname "\$0")}
# The checkpoint is only read, from a read-only file system: HDF5 need not lock it.
HDF5_USE_FILE_LOCKING=\${HDF5_USE_FILE_LOCKING:-FALSE}
export HDF5_USE_FILE_LOCKING
exec "\$root/lib/$loader_name" --library-path "\$root/lib" "\$root/bin/remixer-lambda" "\$@"
EOF
chmod 0755 "$stage/bootstrap"

# ---- the package ----
unzipped=$(du -sb "$stage" | awk '{print $1}')
if [[ "$out" == *.zip ]]; then
  if ((unzipped > unzipped_limit)); then
    die 2 "the package unpacks to $unzipped bytes, over Lambda's $unzipped_limit for a zip; use the container image (deploy/README.md) or keep the checkpoint outside (REMIXER_CHECKPOINT)"
  fi
  tmp_zip="$stage.zip"
  (cd "$stage" && zip -q -r -X "$tmp_zip" bootstrap bin lib model.h5) || die 1 "zip failed"
  out_dir=$(cd "$(dirname "$out")" && pwd)
  mv "$tmp_zip" "$out_dir/$(basename "$out")"
  size=$(stat -c %s "$out")
  echo "package-lambda: $out: $size bytes ($unzipped unzipped), $(wc -l <<<"$libs") libraries"
  if ((size > direct_upload_limit)); then
    echo "package-lambda: note: over 50 MB: upload it to S3 and create the function from there (deploy/README.md)"
  fi
else
  mkdir -p "$out"
  cp -a "$stage/." "$out/"
  echo "package-lambda: $out: $unzipped bytes, $(wc -l <<<"$libs") libraries"
fi
