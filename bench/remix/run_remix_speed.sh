#!/usr/bin/env bash
# Remix speed: seconds of audio remixed per second of wall time by the real program, remixer-remix,
# at its default options (strength 0.6, style scale 2, 50 DDIM steps over the schedule, 32
# Griffin-Lim iterations), the whole run timed (process start, checkpoint, both songs' mels,
# segments, sampling, decoding, crossfade, vocoder, WAV):
#
#   bench/remix/run_remix_speed.sh BUILD_DIR CHECKPOINT STYLE ORIGINAL... [-- REPEATS]
#
# CHECKPOINT is a stage-3 (remix) checkpoint (train one with configs/demo-remix.yaml; see
# README.md), STYLE the style song, each ORIGINAL a song to remix (any length). REPEATS (default
# 3) rounds, each running every original once in turn; per original the median wall time (GNU
# time, /usr/bin/time), the audio seconds (the output WAV's length), their ratio and the other
# processes' share of the CPU during its runs (/proc/stat minus the run's own CPU time). THREADS (default: all cores) goes to --threads.
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 BUILD_DIR CHECKPOINT STYLE ORIGINAL... [-- REPEATS]" >&2
    exit 2
fi
build=$1 ckpt=$2 style=$3
shift 3
originals=()
repeats=3
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then repeats=${2:?REPEATS after --}; break; fi
    originals+=("$1")
    shift
done
threads=${THREADS:-$(nproc)}
remix=$build/infer/remixer-remix
python=${PYTHON:-/usr/bin/python3}
[ -x "$remix" ] || { echo "$0: $remix not found; build the remixer-remix target" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

machine_busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }
wav_seconds() { "$python" -c 'import sys, wave; w = wave.open(sys.argv[1]); print(w.getnframes() / w.getframerate())' "$1"; }

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "remixer-remix $ckpt, style $style, --threads $threads, default options; $repeats rounds"
echo "load average before: $(uptime | sed 's/.*load average: //')"
for r in $(seq 1 "$repeats"); do
    for k in "${!originals[@]}"; do
        o=${originals[$k]}
        b0=$(machine_busy)
        /usr/bin/time -f '%e %U %S' -o "$out/time" "$remix" "$ckpt" --original "$o" --style "$style" \
            -o "$out/$k.wav" --threads "$threads" > "$out/log" 2>&1 || { cat "$out/log"; exit 1; }
        b1=$(machine_busy)
        secs=$(wav_seconds "$out/$k.wav")
        line=$(awk -v b0="$b0" -v b1="$b1" -v s="$secs" -v n="$(nproc)" '{ w = $1; c = $2 + $3; f = (b1 - b0) - c;
                   printf "wall=%.2f audio=%.2f speed=%.3f foreign_cpu_pct=%.1f own_cpu=%.2f\n",
                          w, s, s / w, 100 * (f > 0 ? f : 0) / (w * n), c }' "$out/time")
        echo "round $r: $(basename "$o"): $line"
        echo "$line" >> "$out/res.$k"
    done
done
echo "load average after: $(uptime | sed 's/.*load average: //')"

median() {
    tr ' ' '\n' < "$1" | sed -n "s/^$2=//p" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo
printf '  %-28s %10s %12s %16s %18s\n' "original" "audio s" "wall s (med)" "audio s / s (med)" "others' CPU % (med)"
for k in "${!originals[@]}"; do
    printf '  %-28s %10s %12s %16s %18s\n' "$(basename "${originals[$k]}")" "$(median "$out/res.$k" audio)" \
        "$(median "$out/res.$k" wall)" "$(median "$out/res.$k" speed)" "$(median "$out/res.$k" foreign_cpu_pct)"
done
