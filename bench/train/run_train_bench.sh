#!/bin/sh
# One training step, Remixer (cpu backend) against the PyTorch twin, same thread count.
#
#   bench/train/run_train_bench.sh BUILD_DIR [THREADS] [STEPS] [REPEATS]
#
# THREADS defaults to every core, STEPS (timed steps per run, after 1 warm-up) to 5, REPEATS (runs
# of each program, alternating, so that a burst of load hits both) to 3. Each run reports the
# median of its steps and how much CPU other processes took meanwhile. On 2 cores any other
# process slows every parallel region down to its delayed thread, so before each run the script
# waits (up to RMX_BENCH_IDLE_WAIT seconds, default 120) for the machine to be idle, and the table
# gives the median over the runs where other processes stayed below 10 % of the machine (over
# all runs, with a warning, when none did), and the best step of all runs. Needs a build with the
# bench_train_step target and /usr/bin/python3 with torch (Debian's python3-torch).
# OpenBLAS picks its kernels at load time; OPENBLAS_CORETYPE (e.g. SkylakeX) in the environment
# overrides that for the Remixer runs (see README.md).
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
bench=$build/bench/train/bench_train_step
python=${PYTHON:-/usr/bin/python3}
[ -x "$bench" ] || { echo "$0: $bench not found; build the bench_train_step target" >&2; exit 1; }
have_torch=1
"$python" -c 'import torch' 2>/dev/null || have_torch=0

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
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "load before: $(uptime | sed 's/.*load average: //')"
i=1
while [ "$i" -le "$repeats" ]; do
    wait_idle
    echo "run $i/$repeats: Remixer"
    "$bench" --threads "$threads" --steps "$steps" > "$logs/remixer.$i"
    grep -E '^(step time|achieved|OpenBLAS|peak memory)' "$logs/remixer.$i" | sed 's/^/    /'
    sed -n 's/^RESULT //p' "$logs/remixer.$i" >> "$logs/remixer.res"
    if [ "$have_torch" = 1 ]; then
        wait_idle
        echo "run $i/$repeats: PyTorch"
        "$python" "$here/torch_train_step.py" --threads "$threads" --steps "$steps" > "$logs/torch.$i"
        grep -E '^(step time|peak memory)' "$logs/torch.$i" | sed 's/^/    /'
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

echo
clean remixer
[ "$have_torch" = 1 ] && clean torch

r_step=$(median remixer step_median_ms)
r_gflops=$(median remixer gflops_brief)
r_peak=$(median remixer sgemm_peak_gflops)
r_share=$(median remixer peak_share_pct)
r_rss=$(median remixer maxrss_mib)
r_core=$(tr ' ' '\n' < "$logs/remixer.clean" | sed -n 's/^openblas_core=//p' | head -n 1)
echo
echo "summary: batch 8, 1x128x256, $threads threads, median over the kept runs of the median of $steps steps"
echo "(OpenBLAS kernels: $r_core)"
printf '  %-34s %12s\n' "Remixer step" "$r_step ms"
if [ "$have_torch" = 1 ]; then
    t_step=$(median torch step_median_ms)
    t_rss=$(median torch maxrss_mib)
    printf '  %-34s %12s\n' "PyTorch step" "$t_step ms"
    printf '  %-34s %12s\n' "ratio PyTorch / Remixer (>1: faster)" \
        "$(awk -v t="$t_step" -v r="$r_step" 'BEGIN { printf "%.2f", t / r }')"
fi
r_best=$(tr ' ' '\n' < "$logs/remixer.res" | sed -n 's/^step_min_ms=//p' | sort -g | head -n 1)
printf '  %-34s %12s\n' "Remixer best step (all runs)" "$r_best ms"
if [ "$have_torch" = 1 ]; then
    t_best=$(tr ' ' '\n' < "$logs/torch.res" | sed -n 's/^step_min_ms=//p' | sort -g | head -n 1)
    printf '  %-34s %12s\n' "PyTorch best step (all runs)" "$t_best ms"
    printf '  %-34s %12s\n' "ratio of the best steps" \
        "$(awk -v t="$t_best" -v r="$r_best" 'BEGIN { printf "%.2f", t / r }')"
fi
printf '  %-34s %12s\n' "Remixer GFLOP/s (381 GFLOP/step)" "$r_gflops"
printf '  %-34s %12s\n' "OpenBLAS sgemm 2048^3 GFLOP/s" "$r_peak"
printf '  %-34s %12s\n' "Remixer share of sgemm peak" "$r_share %"
if [ "$have_torch" = 1 ]; then
    printf '  %-34s %12s\n' "PyTorch GFLOP/s, share of peak" \
        "$(awk -v t="$t_step" -v p="$r_peak" 'BEGIN { g = 381 / (t / 1e3); printf "%.1f, %.1f %%", g, 100 * g / p }')"
fi
printf '  %-34s %12s\n' "Remixer peak memory (ru_maxrss)" "$r_rss MiB"
[ "$have_torch" = 1 ] && printf '  %-34s %12s\n' "PyTorch peak memory (ru_maxrss)" "$t_rss MiB"
[ "$have_torch" = 1 ] || echo "  (PyTorch: $python cannot import torch; only Remixer was run)"
