#!/bin/sh
# End-to-end tests of remixer-prep, one CASE per ctest test; messages are compared whole.
# usage: test_prep.sh CASE WORKDIR PREP FIXTURE PYTHON CHECK_SHARDS MPIRUN...
#   FIXTURE writes test audio (test_prep_fixture), PYTHON has h5py, CHECK_SHARDS is check_shards.py,
#   MPIRUN... is the mpirun command line (it stays in "$@").
set -u
CASE=$1 WORK=$2 PREP=$3 FIXTURE=$4 PY=$5 CHECK=$6
shift 6
export RMX_NO_PROGRESS=1
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1

fail() {
    echo "FAIL ($CASE): $*" >&2
    exit 1
}

# run RC CMD...: runs CMD with stdout in out.txt and stderr in err.txt; its exit status must be RC.
run() {
    want=$1
    shift
    "$@" >out.txt 2>err.txt
    rc=$?
    if [ "$rc" != "$want" ]; then
        cat out.txt err.txt >&2
        fail "exit status $rc, expected $want: $*"
    fi
}

has_line() {
    if ! grep -qxF -- "$2" "$1"; then
        echo "--- $1:" >&2
        cat "$1" >&2
        fail "$1 lacks the line: $2"
    fi
}

lacks() {
    if grep -qF -- "$2" "$1"; then fail "$1 mentions: $2"; fi
}

# Every .h5 below $1 and $2: the same names, byte for byte the same contents.
same_shards() {
    (cd "$1" && find . -name '*.h5' | sort) >list-a.txt
    (cd "$2" && find . -name '*.h5' | sort) >list-b.txt
    [ -s list-a.txt ] || fail "no shards under $1"
    cmp -s list-a.txt list-b.txt || fail "different shard files under $1 and $2"
    while read -r f; do
        cmp "$1/$f" "$2/$f" >&2 || fail "$1/$f and $2/$f differ"
    done <list-a.txt
}

no_leftovers() {
    [ -z "$(find "$1" -name '*.h5' 2>/dev/null)" ] || fail "shard files left under $1"
    [ -z "$(find "$1" -name '.prep-*' 2>/dev/null)" ] || fail "a staging folder was left under $1"
    [ -z "$(find "$1" -name '.shard-*' 2>/dev/null)" ] || fail "a temporary shard was left under $1"
}

tone() { "$FIXTURE" "$@" || fail "could not write fixture $1"; }

# The bad files of the brief, one of each kind, in folder $1; all but cut.flac fail on their header.
make_bad_files() {
    mkdir -p "$1"
    tone full.wav 22050 1 5 440
    head -c 100000 full.wav >"$1/truncated.wav"  # data chunk says 220500 bytes, 99956 are there
    head -c 30 full.wav >"$1/header.wav"         # cut inside the header
    tone full.flac 22050 1 5 440
    head -c 20000 full.flac >"$1/cut.flac"       # the header is whole; decoding stops seconds short
    : >"$1/empty.wav"
    tone "$1/zero.wav" 22050 1 0 440              # a valid WAV with no frames
    echo "this is not audio" >"$1/notes.WAV"
    mkdir "$1/folder.wav"
    ln -s does-not-exist.wav "$1/dangling.wav"
    tone "$1/short.flac" 22050 1 1 440
    echo "not listed: no audio extension" >"$1/readme.txt"
}

W="remixer-prep: warning: skipping"

case_usage() {
    run 0 "$PREP" --help
    has_line out.txt "usage: remixer-prep [options] INPUT OUTDIR"
    has_line out.txt "       remixer-prep [options] --demo OUTDIR"
    mkdir in
    run 2 "$PREP"
    has_line err.txt "remixer-prep: error: expected INPUT and OUTDIR (see --help)"
    run 2 "$PREP" in
    has_line err.txt "remixer-prep: error: expected INPUT and OUTDIR (see --help)"
    run 2 "$PREP" --demo
    has_line err.txt "remixer-prep: error: --demo takes one argument, OUTDIR (see --help)"
    run 2 "$PREP" --bogus in out
    has_line err.txt "remixer-prep: error: unknown option '--bogus' (see --help)"
    run 2 "$PREP" in out --shards
    has_line err.txt "remixer-prep: error: option '--shards' needs a value"
    run 2 "$PREP" --hop abc in out
    has_line err.txt "remixer-prep: error: --hop: expected an integer, got 'abc'"
    run 2 "$PREP" --n-fft 1000.5 in out
    has_line err.txt "remixer-prep: error: --n-fft: expected an integer, got '1000.5'"
    run 2 "$PREP" --fmin x in out
    has_line err.txt "remixer-prep: error: --fmin: expected a number, got 'x'"
    run 2 "$PREP" --seed -1 in out
    has_line err.txt "remixer-prep: error: --seed: expected a non-negative integer, got '-1'"
    run 2 "$PREP" --sample-rate 100 in out
    has_line err.txt "remixer-prep: error: --sample-rate must be between 1000 and 384000 Hz, got 100"
    run 2 "$PREP" --n-fft 255 in out
    has_line err.txt "remixer-prep: error: --n-fft must be even and between 16 and 65536, got 255"
    run 2 "$PREP" --hop 0 in out
    has_line err.txt "remixer-prep: error: --hop must be between 1 and --n-fft (2048), got 0"
    run 2 "$PREP" --mels 0 in out
    has_line err.txt "remixer-prep: error: --mels must be between 1 and 1024, got 0"
    run 2 "$PREP" --fmax 20000 in out
    has_line err.txt "remixer-prep: error: --fmax must be at most half the sample rate (11025 Hz), got 20000"
    run 2 "$PREP" --sample-rate 16000 --fmax 8001 in out
    has_line err.txt "remixer-prep: error: --fmax must be at most half the sample rate (8000 Hz), got 8001"
    run 2 "$PREP" --fmin 500 --fmax 400 in out
    has_line err.txt "remixer-prep: error: --fmin (500 Hz) must be below --fmax (400 Hz)"
    run 2 "$PREP" --log-floor 0 in out
    has_line err.txt "remixer-prep: error: --log-floor must be positive, got 0"
    run 2 "$PREP" --segment 0 in out
    has_line err.txt "remixer-prep: error: --segment must be between 1 and 65536 frames, got 0"
    run 2 "$PREP" --val-fraction 1 in out
    has_line err.txt "remixer-prep: error: --val-fraction must be in [0, 1), got 1"
    run 2 "$PREP" --shards 0 in out
    has_line err.txt "remixer-prep: error: --shards must be between 1 and 99999, got 0"
    run 2 "$PREP" --val-shards 0 in out
    has_line err.txt "remixer-prep: error: --val-shards must be between 1 and 99999, got 0"
    run 2 "$PREP" --threads 0 in out
    has_line err.txt "remixer-prep: error: --threads must be between 1 and 1024, got 0"
    run 2 "$PREP" --n-fft 256 in out
    has_line err.txt "remixer-prep: error: 20 of the 128 mel bands fall between FFT bins and would be empty: use fewer mels, a larger n_fft or a wider fmin..fmax"
    run 2 "$PREP" missing-input out
    has_line err.txt "remixer-prep: error: missing-input: No such file or directory"
    printf 'path,genre\nonly-a-path\n' >bad.csv
    run 2 "$PREP" bad.csv out
    has_line err.txt "remixer-prep: error: bad.csv:2: expected 'path,genre', got 'only-a-path'"
    printf 'a.wav,rock\nb.wav,rock\n\na.wav,jazz\n' >twice.csv
    run 2 "$PREP" twice.csv out
    has_line err.txt "remixer-prep: error: twice.csv:4: 'a.wav' is listed again (first on line 1)"
    run 3 "$PREP" in out
    has_line err.txt "remixer-prep: error: in: no audio files found (expected sub-folders <genre>/ holding .wav, .flac, .ogg or .mp3 files)"
    [ ! -e out ] || fail "a refused run created OUTDIR"
}

case_bad_inputs() {
    mkdir -p in/good
    tone in/good/a.wav 22050 1 4 440
    tone in/good/b.flac 44100 2 4 660
    tone in/good/c.ogg 48000 1 4 880
    good=3
    # MP3 needs a libsndfile built with LAME to write the fixture; reading is what is tested.
    if "$FIXTURE" in/good/d.mp3 44100 2 4 330 2>/dev/null; then good=4; else rm -f in/good/d.mp3; fi
    make_bad_files in/bad
    run 0 "$PREP" --threads 2 in out
    has_line err.txt "$W in/bad/dangling.wav: cannot open: No such file or directory"
    has_line err.txt "$W in/bad/folder.wav: is a directory"
    has_line err.txt "$W in/bad/empty.wav: empty file (0 bytes)"
    has_line err.txt "$W in/bad/zero.wav: no audio frames"
    has_line err.txt "$W in/bad/notes.WAV: not an audio file libsndfile can read (Format not recognised.)"
    has_line err.txt "$W in/bad/truncated.wav: truncated: the header declares 220500 bytes of audio, the file holds 99956 (60272 frames, 2.73 s, missing: more than the 1 s tolerated)"
    has_line err.txt "$W in/bad/header.wav: malformed or truncated header (Error in WAV file. No 'data' chunk marker.)"
    has_line err.txt "$W in/bad/short.flac: too short: 1.00 s gives 87 frames, one segment needs 256 (2.96 s)"
    grep -q "^$W in/bad/cut.flac: truncated or corrupt: decoded [0-9]* of 110250 frames" err.txt ||
        fail "no warning about in/bad/cut.flac: $(cat err.txt)"
    lacks err.txt readme.txt
    lacks err.txt in/good
    has_line out.txt "remixer-prep: $((good + 9)) files listed, $good read, 9 skipped (2 unreadable, 2 empty, 1 not audio, 3 truncated or corrupt, 1 too short)"
    # the good genre: one val file, the rest train; cut.flac's shard ends up empty and is dropped
    has_line out.txt "  train: $((good - 1)) files, $((good - 1)) segments, $((good - 1)) shards in out/train"
    has_line out.txt "  val:   1 files, 1 segments, 1 shards in out/val"
    has_line out.txt "  genre bad              train      0  val      0 segments"
    [ -f out/train/shard-00000.h5 ] && [ -f out/val/shard-00000.h5 ] || fail "no shards written"
    [ ! -e "out/train/shard-0000$((good - 1)).h5" ] || fail "an empty shard was written"
}

# Headers that state more audio than the file holds or decodes: at most 1 s missing keeps the
# frames that decode, with a warning and a line in the summary; more is a truncated file.
case_short_header() {
    mkdir -p in/g
    tone in/g/whole.wav 22050 1 5 440
    tone in/g/over.wav 22050 2 5 440 22050       # the data chunk states exactly 1 s more: kept
    tone in/g/over-more.wav 22050 1 5 440 22051  # one frame more than 1 s: skipped
    tone full.wav 22050 1 5 440                  # 44 bytes of header, 220500 of audio
    head -c $((220544 - 11025)) full.wav >in/g/cut.wav      # 5512.5 frames (0.25 s) cut off
    head -c $((220544 - 50000)) full.wav >in/g/cut-more.wav # 25000 frames (1.13 s) cut off
    tone full.flac 22050 1 5 440
    size=$(wc -c <full.flac)
    head -c $((size - 100)) full.flac >in/g/cut.flac        # decodes short of STREAMINFO's count
    head -c $((size - 20000)) full.flac >in/g/cut-more.flac
    tone full.ogg 22050 1 5 440
    size=$(wc -c <full.ogg)
    head -c $((size - 100)) full.ogg >in/g/cut.ogg          # no last page: no length at all
    run 0 "$PREP" --val-fraction 0 --shards 1 in out
    K="remixer-prep: warning:"
    has_line err.txt "$K in/g/over.wav: the header states 132300 frames, 110250 decode: keeping them, 22050 frames (1.00 s) missing"
    has_line err.txt "$K in/g/cut.wav: the header states 110250 frames, 104737 decode: keeping them, 5513 frames (0.25 s) missing"
    grep -qx "$K in/g/cut\.flac: the header states 110250 frames, [0-9]* decode: keeping them, [0-9]* frames (0\.[0-9][0-9] s) missing" err.txt ||
        fail "no warning about in/g/cut.flac: $(cat err.txt)"
    has_line err.txt "$W in/g/over-more.wav: truncated: the header declares 264602 bytes of audio, the file holds 220500 (22051 frames, 1.00 s, missing: more than the 1 s tolerated)"
    has_line err.txt "$W in/g/cut-more.wav: truncated: the header declares 220500 bytes of audio, the file holds 170500 (25000 frames, 1.13 s, missing: more than the 1 s tolerated)"
    grep -qx "$W in/g/cut-more\.flac: truncated or corrupt: decoded [0-9]* of 110250 frames ([0-9]* frames, [0-9.]* s, missing: more than the 1 s tolerated)" err.txt ||
        fail "no warning about in/g/cut-more.flac: $(cat err.txt)"
    has_line err.txt "$W in/g/cut.ogg: truncated: the header states no length (a stream cut before its last page)"
    lacks err.txt in/g/whole.wav
    [ "$(wc -l <err.txt)" = 7 ] || fail "expected 7 warnings: $(cat err.txt)"
    has_line out.txt "remixer-prep: 8 files listed, 4 read, 4 skipped (4 truncated or corrupt)"
    grep -qx "  short: 3 files kept with 1\.[0-9][0-9] s less audio than their headers state (at most 1 s each)" out.txt ||
        fail "no summary of the short files: $(cat out.txt)"
    has_line out.txt "  train: 4 files, 4 segments, 1 shards in out/train"
    # two ranks: each warning once, the same shards
    run 0 "$@" -np 2 "$PREP" --val-fraction 0 --shards 1 in out2
    [ "$(grep -c "keeping them" err.txt)" = 3 ] || fail "expected 3 kept-file warnings from 2 ranks: $(cat err.txt)"
    same_shards out out2
}

case_all_bad() {
    make_bad_files in/only
    run 3 "$PREP" in out
    has_line err.txt "remixer-prep: error: no usable audio: all 9 files were skipped, nothing written"
    has_line out.txt "remixer-prep: 9 files listed, 0 read, 9 skipped (2 unreadable, 2 empty, 1 not audio, 3 truncated or corrupt, 1 too short)"
    has_line err.txt "$W in/only/empty.wav: empty file (0 bytes)"
    [ ! -e out ] || fail "OUTDIR made by a failed run was left behind"
    mkdir kept
    run 3 "$@" -np 2 "$PREP" in kept
    [ "$(grep -c 'remixer-prep: error:' err.txt)" = 1 ] || fail "expected one error line from 2 ranks: $(cat err.txt)"
    [ "$(grep -c "$W in/only/empty.wav" err.txt)" = 1 ] || fail "expected each warning once from 2 ranks"
    [ -d kept ] || fail "an existing OUTDIR was removed"
    no_leftovers kept
    [ -z "$(ls -A kept)" ] || fail "a failed run left files in OUTDIR: $(ls -A kept)"
}

case_determinism() {
    run 0 "$PREP" --demo demo
    run 0 "$PREP" --threads 1 demo/audio t1
    run 0 "$PREP" --threads 1 demo/audio t1-again
    same_shards t1 t1-again
    run 0 "$PREP" --threads 4 demo/audio t4
    same_shards t1 t4
    same_shards t1 demo
    run 0 "$@" -np 1 "$PREP" --threads 2 demo/audio m1
    same_shards t1 m1
    run 0 "$@" -np 2 "$PREP" --threads 1 demo/audio m2
    same_shards t1 m2
    run 0 "$@" -np 3 "$PREP" --threads 2 demo/audio m3
    same_shards t1 m3
    # more shards than ranks and an uneven split
    run 0 "$PREP" --threads 1 --shards 5 --val-shards 2 demo/audio s1
    run 0 "$@" -np 2 "$PREP" --threads 2 --shards 5 --val-shards 2 demo/audio s2
    same_shards s1 s2
    [ -z "$(find . -name '.prep-*')" ] || fail "staging folders left behind"
}

check_attrs() {
    "$PY" "$CHECK" "$@"
    rc=$?
    [ "$rc" = 77 ] && exit 77
    [ "$rc" = 0 ] || fail "check_shards.py $*"
}

case_attributes() {
    run 0 "$PREP" --demo demo
    check_attrs demo 4 1 arpeggio,chords,drums,noise sample_rate=22050 n_fft=2048 win_length=2048 \
        hop_length=256 n_mels=128 fmin=0 fmax=11025 log_floor=1e-5 segment_frames=256
    run 0 "$PREP" --sample-rate 16000 --n-fft 1024 --hop 128 --mels 64 --fmin 30 --fmax 7000 --log-floor 1e-4 \
        --segment 100 --val-fraction 0.25 --shards 3 --val-shards 2 --seed 7 demo/audio out
    # 12 s at 16 kHz: 1501 frames, 15 segments of 100; 10 files a genre: 3 val (round 2.5 up), 7 train
    has_line out.txt "  train: 28 files, 420 segments, 3 shards in out/train"
    has_line out.txt "  val:   12 files, 180 segments, 2 shards in out/val"
    check_attrs out 3 2 arpeggio,chords,drums,noise sample_rate=16000 n_fft=1024 win_length=1024 \
        hop_length=128 n_mels=64 fmin=30 fmax=7000 log_floor=1e-4 segment_frames=100
}

case_csv() {
    run 0 "$PREP" --demo demo
    # the demo files listed in reverse, CRLF line ends, a header, quoted paths relative to the CSV
    {
        printf 'path,genre\r\n'
        for f in $(cd demo/audio && ls -r */*.wav); do printf '"%s", %s\r\n' "$f" "${f%%/*}"; done
    } >demo/audio/list.csv
    run 0 "$PREP" demo/audio/list.csv from-csv
    same_shards demo from-csv
    # absolute paths and no header
    for f in "$PWD"/demo/audio/*/*.wav; do g=${f%/*}; echo "$f,${g##*/}"; done >absolute.csv
    run 0 "$PREP" absolute.csv from-absolute
    has_line out.txt "  train: 36 files, 144 segments, 4 shards in from-absolute/train"
    printf 'path,genre\ndemo/audio/drums/drums-00.wav,drums\nmissing.wav,drums\n' >one-missing.csv
    run 0 "$PREP" --val-fraction 0 one-missing.csv one
    has_line err.txt "$W ./missing.wav: cannot open: No such file or directory"
    has_line out.txt "  val:   0 files, 0 segments, 0 shards in one/val"
}

case_existing() {
    run 0 "$PREP" --demo demo
    cp -R demo/train saved-train
    run 2 "$PREP" demo/audio demo
    has_line err.txt "remixer-prep: error: demo/train already holds a dataset; pass --force to replace it or choose another OUTDIR"
    same_shards saved-train demo/train
    run 0 "$PREP" --force --shards 2 demo/audio demo
    [ "$(ls demo/train)" = "$(printf 'shard-00000.h5\nshard-00001.h5')" ] || fail "train after --force: $(ls demo/train)"
    no_leftovers demo/audio
    [ -z "$(find demo -name '.prep-*')" ] || fail "staging folder left in OUTDIR"
    echo "mine" >demo/train/notes.txt
    run 2 "$PREP" --force demo/audio demo
    has_line err.txt "remixer-prep: error: refusing to replace demo/train: it holds files that are not shards (notes.txt)"
    [ -f demo/train/notes.txt ] && [ -f demo/train/shard-00001.h5 ] || fail "a refused run touched demo/train"
}

case_demo() {
    start=$(date +%s)
    run 0 "$PREP" --demo d
    took=$(($(date +%s) - start))
    has_line out.txt "remixer-prep: 40 files listed, 40 read, 0 skipped"
    has_line out.txt "  train: 36 files, 144 segments, 4 shards in d/train"
    has_line out.txt "  val:   4 files, 16 segments, 1 shards in d/val"
    for g in arpeggio chords drums noise; do
        [ "$(ls d/audio/$g/*.wav | wc -l)" = 10 ] || fail "expected 10 $g files"
        has_line out.txt "  genre $(printf '%-16s' $g) train     36  val      4 segments"
    done
    [ "$took" -le 60 ] || fail "the demo took $took s"
    run 0 "$PREP" --threads 1 --demo d2
    same_shards d d2
    for f in $(cd d/audio && ls */*.wav); do cmp d/audio/$f d2/audio/$f || fail "demo audio $f differs"; done
    run 0 "$PREP" --demo d # again over itself: --demo replaces its own output
    same_shards d d2
    run 0 "$PREP" --seed 1 --demo d3
    ! cmp -s d/audio/drums/drums-00.wav d3/audio/drums/drums-00.wav || fail "--seed does not change the demo audio"
}

case "$CASE" in
usage | bad_inputs | short_header | all_bad | determinism | attributes | csv | existing | demo) "case_$CASE" "$@" ;;
*) fail "unknown case" ;;
esac
echo "prep $CASE: ok"
