#!/bin/sh
# Throughput of remixer-prep: seconds of audio prepared per second of wall time, median of RUNS.
# usage: bench_prep.sh PREP [RUNS] [COPIES] [MPIRUN...]
#   The input is the demo audio (40 files x 12 s, 22,050 Hz mono) linked COPIES times (default 5,
#   i.e. 200 files, 40 min). Each configuration runs RUNS times (default 5); the script prints the
#   median wall time of the whole command (process start and MPI_Init included) and of the pipeline
#   alone (its "time:" line), and audio seconds per second for both.
set -eu
PREP=$1
RUNS=${2:-5}
COPIES=${3:-5}
shift $(($# < 3 ? $# : 3))
export RMX_NO_PROGRESS=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-prep.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

start=$(now)
"$PREP" --demo "$WORK/demo" >/dev/null
echo "demo dataset (synthesis + prep, default threads): $(echo "$(now) - $start" | bc) s"

for dir in "$WORK"/demo/audio/*/; do
    g=$(basename "$dir")
    mkdir -p "$WORK/in/$g"
    for f in "$dir"*.wav; do
        for k in $(seq 1 "$COPIES"); do ln -s "$f" "$WORK/in/$g/$(basename "$f" .wav)-copy$k.wav"; done
    done
done

# bench NAME CMD...: runs CMD RUNS times into a fresh OUTDIR (appended by this function)
bench() {
    name=$1
    shift
    : >"$WORK/wall" && : >"$WORK/pipe"
    for i in $(seq 1 "$RUNS"); do
        rm -rf "$WORK/out"
        t0=$(now)
        "$@" "$WORK/in" "$WORK/out" >"$WORK/summary"
        echo "$(now) - $t0" | bc >>"$WORK/wall"
        sed -n 's/^  time: \([0-9.]*\) s$/\1/p' "$WORK/summary" >>"$WORK/pipe"
    done
    audio=$(sed -n 's/^  audio: .* read (\([0-9.]*\) s).*/\1/p' "$WORK/summary")
    wall=$(median <"$WORK/wall")
    pipe=$(median <"$WORK/pipe")
    printf '%-34s %7.1f s audio  wall %6.3f s (%6.0f s/s)  pipeline %6.3f s (%6.0f s/s)\n' "$name" "$audio" \
        "$wall" "$(echo "$audio / $wall" | bc -l)" "$pipe" "$(echo "$audio / $pipe" | bc -l)"
}

cpus=$(nproc)
echo "remixer-prep on $(basename "$PREP"), $cpus CPUs, median of $RUNS runs:"
bench "1 thread" "$PREP" --threads 1
bench "$cpus threads" "$PREP" --threads "$cpus"
bench "$cpus threads, resample to 16 kHz" "$PREP" --threads "$cpus" --sample-rate 16000
if [ $# -gt 0 ]; then
    bench "mpirun -np 2, $((cpus / 2 > 0 ? cpus / 2 : 1)) thread(s) each" "$@" -np 2 "$PREP" --threads $((cpus / 2 > 0 ? cpus / 2 : 1))
fi
