#!/bin/sh
# The vocoder against the numpy reference (librosa's algorithm) on the same input: median wall time
# of REPEATS runs each, the ratio, and the spectral convergence side by side. Not a test.
# usage: run_vocoder_bench.sh VOCODER_TOOL [BARS] [REPEATS] [PYTHON]
#   The input is tests/vocoder/make_music.sh's recording, BARS bars of 1.5 s (default 20: 30 s),
#   through the prep's path (decode, downmix, resample, log-mel). Ours: the defaults (NNLS 200 +
#   fast Griffin-Lim 32), all cores and one, and without the NNLS (like for like); numpy: clipped
#   pseudo-inverse + fast Griffin-Lim 32 (numpy's FFT runs on one core). All are scored by the
#   same numpy code. Wall and CPU seconds are both shown: on a busy machine CPU time is steadier.
#   Or: cmake --build build --target bench-vocoder
set -eu
TOOL=$1
BARS=${2:-20}
REPEATS=${3:-5}
PY=${4:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
T=$HERE/../../tests/vocoder
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-vocoder.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

sh "$T/make_music.sh" "$WORK/music.ogg" "$BARS"
"$TOOL" mel "$WORK/music.ogg" "$WORK"
field() { sed -n "s/.* *\<$1=\([^ ]*\).*/\1/p"; }
threads=$(nproc)
ours=$("$TOOL" vocode "$WORK" default default 0 "$WORK/ours.f32" "$REPEATS")
ours1=$("$TOOL" vocode "$WORK" default default 0 "$WORK/ours1.f32" "$REPEATS" 1)
pinv1=$("$TOOL" vocode "$WORK" default 0 0 "$WORK/pinv1.f32" "$REPEATS" 1)
theirs=$("$PY" "$T/numpy_vocoder.py" vocode "$WORK" 32 0 "$WORK/numpy.f32" "$REPEATS")
cmp -s "$WORK/ours.f32" "$WORK/ours1.f32" || { echo "our output depends on the thread count" >&2; exit 1; }
sc_ours=$("$PY" "$T/numpy_vocoder.py" sc "$WORK/audio.f32" "$WORK/ours.f32" | field sc)
sc_numpy=$("$PY" "$T/numpy_vocoder.py" sc "$WORK/audio.f32" "$WORK/numpy.f32" | field sc)
sc_pinv=$("$PY" "$T/numpy_vocoder.py" sc "$WORK/audio.f32" "$WORK/pinv1.f32" | field sc)
t_ours=$(echo "$ours" | field seconds)
t_ours1=$(echo "$ours1" | field seconds)
t_numpy=$(echo "$theirs" | field seconds)
c_ours=$(echo "$ours" | field cpu_seconds)
c_ours1=$(echo "$ours1" | field cpu_seconds)
c_numpy=$(echo "$theirs" | field cpu_seconds)
t_pinv1=$(echo "$pinv1" | field seconds)
c_pinv1=$(echo "$pinv1" | field cpu_seconds)
audio_s=$(awk -F= '$1 == "n" { n = $2 } $1 == "sample_rate" { r = $2 } END { printf "%.1f", n / r }' "$WORK/info.txt")
echo
echo "vocoder benchmark: $audio_s s of music (OGG Vorbis, stereo 44.1 kHz -> mono 22,050 Hz), median of $REPEATS runs"
printf '  %-48s %8s %8s %8s %8s %8s\n' "" "wall s" "x numpy" "CPU s" "x numpy" "SC"
row() { # row LABEL WALL CPU SC
    printf '  %-48s %8.3f %8.2f %8.3f %8.2f %8.4f\n' "$1" "$2" "$(echo "$t_numpy / $2" | bc -l)" "$3" \
        "$(echo "$c_numpy / $3" | bc -l)" "$4"
}
row "ours, NNLS 200 + fast GL 32, $threads threads" "$t_ours" "$c_ours" "$sc_ours"
row "ours, NNLS 200 + fast GL 32, 1 thread" "$t_ours1" "$c_ours1" "$sc_ours"
row "ours without NNLS (pinv + fast GL 32), 1 thread" "$t_pinv1" "$c_pinv1" "$sc_pinv"
row "numpy, pinv + fast GL 32 (librosa's algorithm)" "$t_numpy" "$c_numpy" "$sc_numpy"
echo "  (x numpy: numpy's median / ours; SC: spectral convergence against the original STFT magnitude)"
echo "  ours, all threads: $ours"
