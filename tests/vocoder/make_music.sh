#!/bin/sh
# make_music.sh OUT.ogg [BARS]: a short piece of music synthesised with SoX (the Debian package
# `sox`, installed by scripts/setup-deps.sh) and encoded to OGG Vorbis, the "real-format
# recording" of the vocoder tests and benchmark: plucked-string bass and arpeggios over the chords
# Am F C G (Karplus-Strong, sox's `pluck`), kick (sine sweep), snare (band-passed noise), hi-hat
# (high-passed noise), a room reverb, stereo at 44.1 kHz (decoding, downmixing and resampling are
# part of the round trip). BARS of 1.5 s each (default 4: about 6 s). sox runs in repeatable mode
# (-R: fixed seeds), so the same sox version makes the same file; every comparison made on it
# runs both vocoders on the same decoded audio.
set -eu
out=$1
bars=${2:-4}
command -v sox >/dev/null || { echo "make_music.sh: sox is missing (scripts/setup-deps.sh installs it)" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/make-music.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
i=0
add() { # add START SOX-SYNTH-AND-EFFECTS...: one event placed at START seconds
    i=$((i + 1))
    start=$1
    shift
    sox -R -V1 -n -r 44100 -c 1 "$tmp/e$(printf %05d $i).wav" "$@" pad "$start"
}
at() { echo "$1" | awk '{ printf "%.4f", $1 }'; }
bar=0
while [ "$bar" -lt "$bars" ]; do
    case $((bar % 4)) in
    0) set -- A2 A3 C4 E4 ;;
    1) set -- F2 F3 A3 C4 ;;
    2) set -- C3 G3 C4 E4 ;;
    *) set -- G2 G3 B3 D4 ;;
    esac
    t0=$(awk "BEGIN { print $bar * 1.5 }")
    add "$t0" synth 1.5 pluck "$1" fade 0 1.5 0.9 vol 0.5
    k=0
    for p in "$2" "$3" "$4" "$3" "$4" "$3"; do
        add "$(awk "BEGIN { print $t0 + $k * 0.25 }")" synth 0.5 pluck "$p" fade 0 0.5 0.3 vol 0.35
        k=$((k + 1))
    done
    for b in 0 0.75; do
        add "$(awk "BEGIN { print $t0 + $b }")" synth 0.25 sine 110:40 fade 0 0.25 0.2 vol 0.9
    done
    for b in 0.375 1.125; do
        add "$(awk "BEGIN { print $t0 + $b }")" synth 0.18 noise vol 0.6 bandpass 1800 1.2 fade 0 0.18 0.16
    done
    for h in 0 1 2 3 4 5; do
        add "$(awk "BEGIN { print $t0 + $h * 0.25 + 0.125 }")" synth 0.05 noise vol 0.25 highpass 7000 fade 0 0.05 0.045
    done
    bar=$((bar + 1))
done
sox -R -V1 -m "$tmp"/e*.wav "$tmp/mix.wav"
sox -R -V1 "$tmp/mix.wav" -c 2 "$tmp/room.wav" reverb 40 50 80 100 10 norm -1
sox -R -V1 "$tmp/room.wav" -C 5 "$out"
