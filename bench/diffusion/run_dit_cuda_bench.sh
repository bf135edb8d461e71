#!/bin/sh
# The stage-2 (DiT) training step on a GPU: Remixer's cuda backend against the PyTorch twin on
# CUDA, same weights and inputs, fp32 GEMMs and then TF32, with TFLOP/s and a table.
#
#   bench/diffusion/run_dit_cuda_bench.sh [BUILD_DIR] [--batch B] [--steps N] [--warmup N]
#                                         [--device D] [--peak-fp32 T] [--peak-tf32 T]
#
# BUILD_DIR (default ./build) must be configured with the CUDA backend; the bench_dit_step target
# is built there. Without a GPU it prints "skipped: no GPU" and exits 0 (scripts/device-setup.sh
# runs it on every device machine). The step is bench_dit_step's (see bench_dit_step.c): zero
# grads, noise, forward, eps-MSE, backward, gradient norm to the host, AdamW, EMA; batch 64 by
# default. The case (weights, inputs, the step-0 loss and output) is written by the cuda backend
# in fp32; the twin checks its step-0 loss against it to 1e-5 relative before anything is timed
# (TF32 runs: 1e-2, since TF32 rounds the GEMM inputs to 10 bits). TFLOP/s from
# rmx_dit_flops_per_sample x batch x 3; peaks default to the H100 SXM's / H200's dense 67 fp32 and
# 495 TF32. PYTHON picks the interpreter for the twin (default python3). RMX_DIT_BENCH_BACKEND=cpu
# runs the same script on the cpu backend and the twin on the CPU (a dry run of its plumbing on a
# machine without a GPU, e.g. with --batch 1 --steps 1 --warmup 0).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
py=${PYTHON:-python3}
batch=64
pass=""
while [ $# -gt 0 ]; do
    case $1 in
    --batch) batch=$2; shift 2 ;;
    --steps | --warmup | --peak-fp32 | --peak-tf32) pass="$pass $1 $2"; shift 2 ;;
    --device) pass="$pass --device $2"; dev=$2; shift 2 ;;
    *) echo "usage: $0 [BUILD_DIR] [--batch B] [--steps N] [--warmup N] [--device D] [--peak-fp32 T] [--peak-tf32 T]" >&2
       exit 2 ;;
    esac
done
dev=${dev:-0}
backend=${RMX_DIT_BENCH_BACKEND:-cuda}
if [ "$backend" = cuda ]; then tdev=cuda:$dev; else tdev=cpu; fi

cmake --build "$build" --target bench_dit_step >/dev/null
bench=$build/bench/diffusion/bench_dit_step
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
case_file=$logs/case.bin

echo "== DiT step on the GPU: hidden 384, depth 12, heads 6, patch 2, 8x32x64 latents, batch $batch"
rc=0
# shellcheck disable=SC2086
RMX_CUDA_TF32=0 "$bench" --backend "$backend" --batch "$batch" --device "$dev" --write "$case_file" \
    > "$logs/write" 2>&1 || rc=$?
if [ "$rc" = 77 ]; then
    sed -n 's/^bench_dit_step: //p' "$logs/write"
    exit 0
elif [ "$rc" != 0 ]; then
    cat "$logs/write"
    exit "$rc"
fi
sed 's/^/    /' "$logs/write"

have_torch=0
if "$py" -c 'import torch, sys; sys.exit(0 if sys.argv[1] == "cpu" or torch.cuda.is_available() else 1)' \
        "$backend" 2>/dev/null; then
    have_torch=1
    if ! "$py" "$here/torch_dit_step.py" --case "$case_file" --device "$tdev" --check \
            > "$logs/check" 2>&1; then
        sed 's/^/    /' "$logs/check"
        echo "$0: the twin's loss differs from Remixer's: the two would not do the same work" >&2
        exit 1
    fi
    sed 's/^/    /' "$logs/check"
else
    echo "== PyTorch twin: skipped ($py cannot import torch with a CUDA device)"
fi

for tf32 in 0 1; do
    tol=1e-5
    [ "$tf32" = 1 ] && tol=1e-2
    echo "== Remixer $backend backend, RMX_CUDA_TF32=$tf32"
    # shellcheck disable=SC2086
    RMX_CUDA_TF32=$tf32 "$bench" --backend "$backend" --batch "$batch" --case "$case_file" --tol "$tol" \
        $pass > "$logs/remixer.$tf32" 2>&1 || { cat "$logs/remixer.$tf32"; exit 1; }
    grep -vE '^  step [0-9]' "$logs/remixer.$tf32"
    cat "$logs/remixer.$tf32" >> "$logs/all"
    if [ "$have_torch" = 1 ]; then
        echo "== PyTorch twin, TF32 $tf32"
        # shellcheck disable=SC2046,SC2086
        "$py" "$here/torch_dit_step.py" --case "$case_file" --device "$tdev" --tf32 "$tf32" \
            --tol "$tol" $(echo "$pass" | sed 's/--device [0-9]*//') > "$logs/torch.$tf32" 2>&1 ||
            { cat "$logs/torch.$tf32"; exit 1; }
        grep -vE '^  step [0-9]' "$logs/torch.$tf32"
        cat "$logs/torch.$tf32" >> "$logs/all"
    fi
done

echo
echo "== summary (median step; TFLOP/s from rmx_dit_flops_per_sample x batch x 3)"
[ "$have_torch" = 1 ] && echo "check: $(sed -n 's/^CHECK //p' "$logs/check")"
printf '%-8s %-5s %6s %10s %10s %8s %7s %7s %10s\n' side tf32 batch step_ms samples/s TFLOP/s %fp32 %tf32 device_MiB
grep '^RESULT' "$logs/all" | while read -r line; do
    get() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    printf '%-8s %-5s %6s %10s %10s %8s %7s %7s %10s\n' "$(get side)" "$(get tf32)" "$(get batch)" \
        "$(get step_median_ms)" "$(get samples_s)" "$(get tflops)" "$(get pct_fp32)" \
        "$(get pct_tf32)" "$(get device_mib)"
done
if [ "$have_torch" = 1 ]; then
    for tf32 in 0 1; do
        r=$(grep '^RESULT side=remixer' "$logs/all" | grep " tf32=$tf32 " | tr ' ' '\n' | sed -n 's/^step_median_ms=//p')
        t=$(grep '^RESULT side=torch' "$logs/all" | grep " tf32=$tf32 " | tr ' ' '\n' | sed -n 's/^step_median_ms=//p')
        [ -n "$r" ] && [ -n "$t" ] &&
            echo "ratio PyTorch / Remixer, TF32 $tf32: $(awk -v t="$t" -v r="$r" 'BEGIN { printf "%.2f", t / r }') (>1: Remixer faster)"
    done
fi
echo "(device_MiB: Remixer, the device's memory in use (cudaMemGetInfo, context included);"
echo " PyTorch, its caching allocator's peak reserved memory)"
