#!/bin/sh
# One stage-2 (DiT) training step, Remixer's cpu backend against the PyTorch twin, same threads,
# same weights and inputs, one command:
#
#   bench/diffusion/run_dit_bench.sh BUILD_DIR [THREADS] [STEPS] [REPEATS]
#
# 1. bench_dit_step --write makes the case (randomised weights, inputs, Remixer's step-0 loss and
#    output) in a temporary file; 2. torch_dit_step.py --check loads it into the twin and stops
#    the benchmark unless the two step-0 losses agree to 1e-5 relative (it also prints the output's
#    and the gradient norm's differences, and both sides against float64); 3. REPEATS runs of each
#    program, alternating, each loading the case, checking its step-0 loss again and timing STEPS
#    steps after 1 warm-up; 4. the table: medians, ratio, GFLOP/s (rmx_dit_flops_per_sample x
#    batch x 3), the share of the sgemm peak measured by the Remixer runs (OpenBLAS 2048^3 on the
#    same threads, as bench/train), peak RSS of each process.
#
# THREADS defaults to every core, STEPS to 5, REPEATS to 3. On 2 cores any other process slows
# every parallel region down to its delayed thread, so before each run the script waits (up to
# RMX_BENCH_IDLE_WAIT seconds, default 120) for the machine to be idle, and the table gives the
# median over the runs where other processes stayed below 10 % of the machine (over all runs,
# with a warning, when none did). Needs a build with the bench_dit_step target and
# /usr/bin/python3 with torch (Debian's python3-torch; $PYTHON overrides).
#
# OpenBLAS: Debian's PyTorch runs its Linear layers through OpenBLAS, which picks its kernels by
# CPU model and falls back to old ones on models it does not know (SSE3 on this project's Xeon,
# AVX2 on Zen 5): PyTorch's GEMMs would run at a quarter of the machine's rate. Where the CPU has
# AVX-512F and OPENBLAS_CORETYPE is not set, the script sets OPENBLAS_CORETYPE=SkylakeX for both
# programs (PyTorch's GEMMs, and the sgemm peak; Remixer's ops use their own AVX-512 GEMM), so
# PyTorch is measured at its best; set OPENBLAS_CORETYPE yourself to override. Likewise
# ATEN_CPU_CAPABILITY=avx512 for the PyTorch runs (its element-wise kernels; AVX2 by default);
# TORCH_ENV, a list of assignments (empty: none), replaces that.
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [THREADS] [STEPS] [REPEATS]" >&2
    exit 2
fi
build=$1
threads=${2:-$(nproc)}
steps=${3:-5}
repeats=${4:-3}
here=$(cd "$(dirname "$0")" && pwd)
bench=$build/bench/diffusion/bench_dit_step
python=${PYTHON:-/usr/bin/python3}
[ -x "$bench" ] || { echo "$0: $bench not found; build the bench_dit_step target" >&2; exit 1; }
have_torch=1
"$python" -c 'import torch' 2>/dev/null || have_torch=0

if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo; then
    OPENBLAS_CORETYPE=SkylakeX
    export OPENBLAS_CORETYPE
    coretype_note="set by the script (the CPU has AVX-512F)"
else
    coretype_note="from the environment"
fi
# PyTorch 1.13 dispatches its element-wise kernels for AVX2 unless told otherwise; AVX-512 was
# 10-20 % faster for this step here under load (about 1 % idle), so it gets that too (TORCH_ENV,
# even empty, overrides).
if [ -z "${TORCH_ENV+set}" ] && grep -qw avx512f /proc/cpuinfo; then
    torch_env="ATEN_CPU_CAPABILITY=avx512"
else
    torch_env=${TORCH_ENV:-}
fi

idle_wait=${RMX_BENCH_IDLE_WAIT:-120}

# Busy share (%) of the whole machine over the next 3 seconds, from /proc/stat.
busy_pct() {
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    sleep 3
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    echo "$a $b" | awk '{ printf "%d\n", ($4 > $2) ? 100 * ($3 - $1) / ($4 - $2) : 0 }'
}

wait_idle() {
    end=$(($(date +%s) + idle_wait))
    while [ "$(busy_pct)" -ge 10 ]; do
        if [ "$(date +%s)" -ge "$end" ]; then
            echo "    (the machine did not become idle within ${idle_wait} s; running anyway)"
            return
        fi
    done
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
case_file=$logs/case.bin
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)} ($coretype_note)${torch_env:+; PyTorch runs with $torch_env}"
echo "load before: $(uptime | sed 's/.*load average: //')"

echo "case: Remixer writes the weights and inputs, PyTorch checks the step-0 loss on them"
"$bench" --threads "$threads" --write "$case_file" | sed 's/^/    /'
if [ "$have_torch" = 1 ]; then
    # shellcheck disable=SC2086 # TORCH_ENV is a list of assignments
    if ! OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads env $torch_env "$python" \
            "$here/torch_dit_step.py" --case "$case_file" --threads "$threads" --check \
            > "$logs/check" 2>&1; then
        sed 's/^/    /' "$logs/check"
        echo "$0: the twin's loss differs from Remixer's: the two would not do the same work" >&2
        exit 1
    fi
    sed 's/^/    /' "$logs/check"
fi

i=1
while [ "$i" -le "$repeats" ]; do
    wait_idle
    echo "run $i/$repeats: Remixer"
    "$bench" --threads "$threads" --steps "$steps" --case "$case_file" > "$logs/remixer.$i" ||
        { cat "$logs/remixer.$i"; exit 1; }
    grep -E '^(step time|achieved|OpenBLAS|rmx_cpu_sgemm|peak memory)' "$logs/remixer.$i" | sed 's/^/    /'
    sed -n 's/^RESULT //p' "$logs/remixer.$i" >> "$logs/remixer.res"
    if [ "$have_torch" = 1 ]; then
        wait_idle
        echo "run $i/$repeats: PyTorch"
        # shellcheck disable=SC2086
        OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads env $torch_env "$python" \
            "$here/torch_dit_step.py" --case "$case_file" --threads "$threads" --steps "$steps" \
            > "$logs/torch.$i" 2>&1 || { cat "$logs/torch.$i"; exit 1; }
        grep -E '^(step time|achieved|peak memory)' "$logs/torch.$i" | sed 's/^/    /'
        sed -n 's/^RESULT //p' "$logs/torch.$i" >> "$logs/torch.res"
    fi
    i=$((i + 1))
done
echo "load after: $(uptime | sed 's/.*load average: //')"

# Keeps the RESULT lines of $1 whose runs (steps, and sgemm) saw other processes below 10 % of
# the machine; all of them if none did.
clean() {
    awk '{ ok = 1; for (i = 1; i <= NF; i++) if ($i ~ /foreign_cpu_pct=/) { split($i, kv, "=");
             if (kv[2] + 0 >= 10) ok = 0 } } ok' "$logs/$1.res" > "$logs/$1.clean"
    if [ -s "$logs/$1.clean" ]; then
        echo "$1: $(wc -l < "$logs/$1.clean") of $repeats runs below 10 % load from other processes"
    else
        cp "$logs/$1.res" "$logs/$1.clean"
        echo "$1: WARNING: every run shared the CPU with other processes; figures are pessimistic"
    fi
}

# The median over the kept runs of key $2 in $1's RESULT lines.
median() {
    tr ' ' '\n' < "$logs/$1.clean" | sed -n "s/^$2=//p" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "nan";
                                  else if (NR % 2) print v[(NR + 1) / 2];
                                  else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
best() { tr ' ' '\n' < "$logs/$1.res" | sed -n 's/^step_min_ms=//p' | sort -g | head -n 1; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 100 * a / b }'; }

echo
clean remixer
[ "$have_torch" = 1 ] && clean torch

gflop=$(median remixer gflop_step)
r_step=$(median remixer step_median_ms)
r_peak=$(median remixer sgemm_peak_gflops)
r_rmxpeak=$(median remixer rmx_sgemm_peak_gflops)
r_rss=$(median remixer maxrss_mib)
r_core=$(tr ' ' '\n' < "$logs/remixer.clean" | sed -n 's/^openblas_core=//p' | head -n 1)
r_gf=$(awk -v g="$gflop" -v t="$r_step" 'BEGIN { printf "%.1f", g / (t / 1e3) }')
echo
echo "summary: DiT hidden 384, depth 12, heads 6, patch 2 on 8x32x64 latents (512 tokens), 4 genres,"
echo "batch 8, $threads threads: forward + backward (eps MSE) + grad norm + AdamW + EMA; $gflop GFLOP/step;"
echo "median over the kept runs of each run's median of $steps steps"
[ "$have_torch" = 1 ] && echo "check: $(sed -n 's/^CHECK //p' "$logs/check")"
printf '  %-40s %14s %14s\n' "" "Remixer" "PyTorch"
if [ "$have_torch" = 1 ]; then
    t_step=$(median torch step_median_ms)
    t_rss=$(median torch maxrss_mib)
    t_gf=$(awk -v g="$gflop" -v t="$t_step" 'BEGIN { printf "%.1f", g / (t / 1e3) }')
    t_share="$(pct "$t_gf" "$r_peak") %"
    t_share_rmx="$(pct "$t_gf" "$r_rmxpeak") %"
    t_best="$(best torch) ms"
else
    t_step=-; t_rss=-; t_gf=-; t_share=-; t_share_rmx=-; t_best=-
fi
printf '  %-40s %11s ms %11s ms\n' "step (median)" "$r_step" "$t_step"
printf '  %-40s %11s ms %14s\n' "best step (all runs)" "$(best remixer)" "$t_best"
printf '  %-40s %14s %14s\n' "GFLOP/s" "$r_gf" "$t_gf"
printf '  %-40s %12s %% %14s\n' "share of OpenBLAS sgemm ($r_peak GFLOP/s)" "$(pct "$r_gf" "$r_peak")" \
    "$t_share"
if [ "$r_rmxpeak" != nan ]; then
    printf '  %-40s %12s %% %14s\n' "share of rmx_cpu_sgemm ($r_rmxpeak GFLOP/s)" \
        "$(pct "$r_gf" "$r_rmxpeak")" "$t_share_rmx"
fi
printf '  %-40s %10s MiB %10s MiB\n' "peak memory (ru_maxrss)" "$r_rss" "$t_rss"
if [ "$have_torch" = 1 ]; then
    printf '  %-40s %14s\n' "ratio PyTorch / Remixer (>1: faster)" \
        "$(awk -v t="$t_step" -v r="$r_step" 'BEGIN { printf "%.2f", t / r }')"
else
    echo "  (PyTorch: $python cannot import torch; only Remixer was run)"
fi
echo "  (OpenBLAS kernels: $r_core; sgemm 2048^3 on $threads threads, median of the Remixer runs' medians)"
