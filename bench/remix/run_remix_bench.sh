#!/usr/bin/env bash
# One stage-3 (remix) training step, Remixer's cpu backend against the PyTorch twins, same threads,
# same weights and inputs, one command:
#
#   bench/remix/run_remix_bench.sh BUILD_DIR [THREADS] [STEPS] [REPEATS]
#
# 1. bench_remix_step --write makes the case (weights, inputs, Remixer's step-0 loss terms and
#    gradient norm) in a temporary file; 2. torch_remix_step.py --check loads it into the twins and
#    stops the benchmark unless the step-0 total loss agrees to 1e-5 relative, every term to 1e-4
#    and the gradient norm to 1e-3 (it prints each, and both sides against float64); 3. REPEATS
#    runs of each program, alternating, each checking its own step 0 against the case again and
#    timing STEPS steps after 1 warm-up; 4. the table: median over the runs of each run's median
#    step, the ratio PyTorch / Remixer (> 1: Remixer faster), the same for the process CPU time per
#    step (less sensitive to other processes' load, though spinning OpenMP threads count too), peak
#    RSS, and how much of the machine other processes took during each program's runs.
#
# THREADS defaults to every core, STEPS to 3, REPEATS to 3. RMX_REMIX_SIZE picks the size
# (bench: the brief's bench sizes, the default; demo: configs/demo-*.yaml's), RMX_REMIX_BATCH the
# batch (8). Needs a build with the bench_remix_step target and /usr/bin/python3 with torch
# ($PYTHON overrides).
#
# As bench/diffusion/run_dit_bench.sh (see bench/diffusion/README.md): where the CPU has AVX-512F,
# OPENBLAS_CORETYPE=SkylakeX for both programs unless set (Debian's OpenBLAS otherwise runs old
# kernels for PyTorch's GEMMs on this CPU) and ATEN_CPU_CAPABILITY=avx512 for PyTorch (TORCH_ENV,
# a list of assignments, even empty, replaces it), OMP_NUM_THREADS and OPENBLAS_NUM_THREADS =
# THREADS for PyTorch.
#
# Other processes: on 2 cores any other runnable process delays every parallel region. Each run's
# line gives the share of the machine's CPU time that other processes took during it (/proc/stat
# minus the run's own CPU time, from GNU time, /usr/bin/time), and the table the median of those
# shares per program.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [THREADS] [STEPS] [REPEATS]" >&2
    exit 2
fi
build=$1
threads=${2:-$(nproc)}
steps=${3:-3}
repeats=${4:-3}
size=${RMX_REMIX_SIZE:-bench}
batch=${RMX_REMIX_BATCH:-8}
here=$(cd "$(dirname "$0")" && pwd)
bench=$build/bench/remix/bench_remix_step
python=${PYTHON:-/usr/bin/python3}
[ -x "$bench" ] || { echo "$0: $bench not found; build the bench_remix_step target" >&2; exit 1; }
"$python" -c 'import torch' 2>/dev/null || { echo "$0: $python cannot import torch" >&2; exit 1; }

if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo; then
    export OPENBLAS_CORETYPE=SkylakeX
fi
if [ -z "${TORCH_ENV+set}" ] && grep -qw avx512f /proc/cpuinfo; then
    torch_env="ATEN_CPU_CAPABILITY=avx512"
else
    torch_env=${TORCH_ENV:-}
fi

# CPU seconds the whole machine spent busy since boot.
machine_busy() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}

# run_measured LOG CMD...: runs CMD into LOG (under GNU time for its own CPU time), then appends
# foreign_cpu_pct=... (the other processes' share of all cores during the run) to LOG's RESULT line.
run_measured() {
    local log=$1
    shift
    local b0 b1 pct
    b0=$(machine_busy)
    /usr/bin/time -f '%e %U %S' -o "$log.time" "$@" > "$log" 2>&1 ||
        { cat "$log"; echo "$0: failed: $*" >&2; exit 1; }
    b1=$(machine_busy)
    pct=$(awk -v b0="$b0" -v b1="$b1" -v n="$(nproc)" '{ f = (b1 - b0) - ($2 + $3);
                                                        printf "%.1f", 100 * (f > 0 ? f : 0) / ($1 * n) }' "$log.time")
    sed -i "s/^RESULT .*/& foreign_cpu_pct=$pct/" "$log"
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
case_file=$logs/case.bin
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "size $size, batch $batch, $threads threads, $steps timed steps after 1 warm-up, $repeats runs each"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}${torch_env:+; PyTorch runs with $torch_env}"
echo "load average before: $(uptime | sed 's/.*load average: //')"

common=(--size "$size" --batch "$batch" --threads "$threads")
# shellcheck disable=SC2206 # TORCH_ENV is a list of assignments
torch_cmd=(env OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" $torch_env "$python"
           "$here/torch_remix_step.py" --case "$case_file" --threads "$threads")
echo "case: Remixer writes the weights and inputs, PyTorch checks step 0 on them"
"$bench" "${common[@]}" --write "$case_file" | sed 's/^/    /'
if ! "${torch_cmd[@]}" --check > "$logs/check" 2>&1; then
    sed 's/^/    /' "$logs/check"
    echo "$0: the twins' step 0 differs from Remixer's: the two would not do the same work" >&2
    exit 1
fi
sed 's/^/    /' "$logs/check"

for i in $(seq 1 "$repeats"); do
    run_measured "$logs/remixer.$i" "$bench" "${common[@]}" --steps "$steps" --case "$case_file"
    echo "run $i/$repeats Remixer: $(sed -n 's/^RESULT //p' "$logs/remixer.$i")"
    sed -n 's/^RESULT //p' "$logs/remixer.$i" >> "$logs/remixer.res"
    [ "$i" = 1 ] && sed -n '/^phases/,/^step time/p' "$logs/remixer.$i" | sed 's/^/    /'
    run_measured "$logs/torch.$i" "${torch_cmd[@]}" --steps "$steps"
    echo "run $i/$repeats PyTorch: $(sed -n 's/^RESULT //p' "$logs/torch.$i")"
    sed -n 's/^RESULT //p' "$logs/torch.$i" >> "$logs/torch.res"
done
echo "load average after: $(uptime | sed 's/.*load average: //')"

# The median over the runs of key $2 in $1's RESULT lines.
median() {
    tr ' ' '\n' < "$logs/$1.res" | sed -n "s/^$2=//p" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2];
                                  else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() { tr ' ' '\n' < "$logs/$1.res" | sed -n "s/^step_median_ms=//p" | sort -g | sed -n '1p;$p' | paste -sd- -; }

r_step=$(median remixer step_median_ms)
t_step=$(median torch step_median_ms)
echo
echo "summary: remix training step ($size size, batch $batch, $threads threads): targets, DiT with style"
echo "tokens, x0_hat, frozen decoder, encoder taps, content + style + tv + mse, backward, norm, AdamW, EMA;"
echo "median over $repeats runs of each run's median of $steps steps"
echo "check: $(sed -n 's/^CHECK //p' "$logs/check")"
printf '  %-44s %14s %14s\n' "" "Remixer" "PyTorch 1.13"
printf '  %-44s %11s ms %11s ms\n' "step (median of the run medians)" "$r_step" "$t_step"
printf '  %-44s %14s %14s\n' "range of the run medians (ms)" "$(range remixer)" "$(range torch)"
printf '  %-44s %11s ms %11s ms\n' "process CPU time per step (median)" "$(median remixer step_cpu_ms)" \
    "$(median torch step_cpu_ms)"
printf '  %-44s %10s MiB %10s MiB\n' "peak memory (ru_maxrss)" "$(median remixer maxrss_mib)" "$(median torch maxrss_mib)"
printf '  %-44s %12s %% %12s %%\n' "other processes' share of the CPU (median)" "$(median remixer foreign_cpu_pct)" \
    "$(median torch foreign_cpu_pct)"
printf '  %-44s %14s\n' "ratio PyTorch / Remixer (> 1: Remixer faster)" \
    "$(awk -v t="$t_step" -v r="$r_step" 'BEGIN { printf "%.2f", t / r }')"
printf '  %-44s %14s\n' "the same ratio of CPU time per step" \
    "$(awk -v t="$(median torch step_cpu_ms)" -v r="$(median remixer step_cpu_ms)" 'BEGIN { printf "%.2f", t / r }')"
