#!/bin/sh
# End-to-end tests of remixer-reconstruct, one CASE per ctest test.
# usage: test_reconstruct.sh CASE WORKDIR FIXTURE_DIR RECONSTRUCT PREP TRAIN CONFIGS PYTHON CHECK_WAV
#   CASE fixture makes FIXTURE_DIR: the demo dataset (remixer-prep --demo) and a stage-1 checkpoint
#   trained 20 steps on it (configs/demo-vae.yaml, CPU); the other cases read it.
# Bounds on the spectral convergence were measured on demo file chords/chords-00.wav (12 s):
#   no checkpoint 0.338 (bound 0.40); the 20-step checkpoint 0.793 (bound 1.0: an untrained model,
#   the case checks the plumbing, not the model).
set -u
CASE=$1 WORK=$2 FIX=$3 REC=$4 PREP=$5 TRAIN=$6 CONFIGS=$7 PY=$8 CHECK_WAV=$9
export RMX_NO_PROGRESS=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
IN=$FIX/demo/audio/chords/chords-00.wav
CKPT=$FIX/run/ckpt-00000020.h5
P="remixer-reconstruct: error:"

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

# sc_below LABEL BOUND: the figure printed after "spectral convergence, LABEL: " is finite and < BOUND.
sc_below() {
    v=$(sed -n "s/^spectral convergence, $1: //p" out.txt)
    [ -n "$v" ] || fail "no '$1' spectral convergence printed"
    awk -v v="$v" -v b="$2" 'BEGIN { exit !(v == v + 0 && v >= 0 && v < b) }' ||
        fail "spectral convergence, $1: $v is not a number below $2"
    echo "spectral convergence, $1: $v (bound $2)"
}

# nothing_left DIR: no output (x.wav, a.wav) and no temporary in DIR.
nothing_left() {
    [ -z "$(find "$1" -maxdepth 1 \( -name x.wav -o -name a.wav -o -name '.*.tmp.*' \) 2>/dev/null)" ] ||
        fail "output left behind in $1: $(ls -A "$1")"
}

samples() { # samples WAV: frames of a WAV (the input's length)
    "$PY" -c "import wave, sys; print(wave.open(sys.argv[1]).getnframes())" "$1"
}

case_fixture() {
    rm -rf "$FIX"
    mkdir -p "$FIX" || fail "cannot create $FIX"
    "$PREP" --demo "$FIX/demo" >"$FIX/prep.log" 2>&1 || fail "remixer-prep --demo failed: $(cat "$FIX/prep.log")"
    "$TRAIN" "$CONFIGS/demo-vae.yaml" --set data.train="$FIX/demo/train" --set data.val= --set device=cpu \
        --set run.dir="$FIX/run" --set train.steps=20 >"$FIX/train.log" 2>&1 ||
        fail "remixer-train failed: $(tail -5 "$FIX/train.log")"
    [ -f "$CKPT" ] || fail "no checkpoint $CKPT"
}

case_usage() {
    run 0 "$REC" --help
    grep -q "^usage: remixer-reconstruct" out.txt || fail "--help lacks the usage line"
    grep -q "^exit codes:" out.txt || fail "--help lacks the exit codes"
    run 2 "$REC"
    has_line err.txt "$P expected IN and OUT.wav (see --help)"
    run 2 "$REC" "$IN"
    run 2 "$REC" "$IN" a.wav b.wav
    has_line err.txt "$P expected IN and OUT.wav, got 3 arguments (see --help)"
    run 2 "$REC" --bogus "$IN" a.wav
    has_line err.txt "$P unknown option '--bogus' (see --help)"
    run 2 "$REC" --iterations many "$IN" a.wav
    has_line err.txt "$P --iterations: expected an integer in [0, 100000], got 'many'"
    run 2 "$REC" --seed -1 "$IN" a.wav
    has_line err.txt "$P --seed: expected a non-negative integer, got '-1'"
    run 2 "$REC" "$IN" --iterations
    has_line err.txt "$P --iterations needs a value (see --help)"
    nothing_left .
}

case_plain() {
    run 0 "$REC" --iterations 32 "$IN" out.wav
    cat out.txt
    has_line out.txt "normalisation: no --checkpoint, so the file's own mean $(sed -n 's/.*own mean \([^ ]*\) and.*/\1/p' out.txt) and std $(sed -n 's/.* and std \(.*\)$/\1/p' out.txt)"
    grep -q "^wrote out.wav: 264600 samples (12.00 s) at 22050 Hz, 16-bit PCM mono, peak -1.0 dBFS" out.txt ||
        fail "no 'wrote' line"
    grep -q "^time: decode .* total " out.txt || fail "no timing line"
    sc_below "STFT magnitude, input vs output" 0.40
    sc_below "mel magnitude, input vs output" 0.15
    n=$(samples "$IN")
    "$PY" "$CHECK_WAV" out.wav --rate 22050 --frames "$n" --peak-dbfs -1 --info "INAM=chords-00.wav" \
        --info "ICMT=checkpoint=none" --info "ICMT=iterations=32" --info "ICMT=nnls_iterations=200" \
        --info "ICMT=seed=0" --info "ISFT=Remixer" || fail "out.wav is not what was promised"
    mv out.wav first.wav
    run 0 "$REC" --iterations 32 --threads 1 "$IN" out.wav
    cmp first.wav out.wav || fail "a second run (1 thread) wrote different bytes"
    run 0 "$REC" --iterations 32 --seed 1 "$IN" seed1.wav
    cmp -s first.wav seed1.wav && fail "--seed 1 wrote the same bytes as seed 0"
    [ -z "$(find . -name '.*.tmp.*')" ] || fail "a temporary file was left"
    # A real-format input: the sox recording of the figure (OGG Vorbis, stereo, 44.1 kHz), resampled.
    if command -v sox >/dev/null; then
        sh "$(dirname "$CHECK_WAV")/make_music.sh" music.ogg || fail "make_music.sh failed"
        run 0 "$REC" music.ogg music.wav
        grep -q "^music.ogg: 6.25 s, 2 channels at 44100 Hz -> mono 22050 Hz, 137813 samples, 539 frames x 128 mels$" \
            out.txt || fail "unexpected description of music.ogg: $(head -1 out.txt)"
        sc_below "STFT magnitude, input vs output" 0.35
        "$PY" "$CHECK_WAV" music.wav --rate 22050 --frames 137813 --peak-dbfs -1 || fail "music.wav"
    fi
}

case_checkpoint() {
    run 0 "$REC" --checkpoint "$CKPT" "$IN" out.wav
    cat out.txt
    has_line out.txt "autoencoder: $CKPT (stage-1 step 20, kl bottleneck, latent 4 x 32 x 64 per segment): 5 segments of 256 frames, overlap 32 crossfaded"
    grep -q "^normalisation: mean .* of the checkpoint's training data$" out.txt || fail "no normalisation line"
    sc_below "mel magnitude, input vs autoencoder" 1.0
    sc_below "STFT magnitude, input vs output" 1.0
    n=$(samples "$IN")
    "$PY" "$CHECK_WAV" out.wav --rate 22050 --frames "$n" --peak-dbfs -1 --info "ICMT=checkpoint=$CKPT" \
        --info "ICMT=overlap=32" --info "ISFT=Remixer" || fail "out.wav is not what was promised"
    mv out.wav first.wav
    run 0 "$REC" --checkpoint "$CKPT" "$IN" out.wav
    cmp first.wav out.wav || fail "a second run wrote different bytes"
    # No overlap: segments butt-joined; a shorter input than one segment: padded, cut.
    run 0 "$REC" --checkpoint "$CKPT" --overlap 0 "$IN" flat.wav
    grep -q "5 segments of 256 frames, overlap 0 crossfaded" out.txt || fail "--overlap 0: $(cat out.txt)"
    "$PY" -c "
import wave
w = wave.open('$IN'); r = w.readframes(w.getnframes() // 6)
o = wave.open('short.wav', 'wb'); o.setparams(w.getparams()); o.writeframes(r); o.close()"
    run 0 "$REC" --checkpoint "$CKPT" short.wav short-out.wav
    grep -q "1 segment of 256 frames" out.txt || fail "a 2 s input: $(cat out.txt)"
    "$PY" "$CHECK_WAV" short-out.wav --rate 22050 --frames 44100 || fail "short-out.wav"
    run 2 "$REC" --checkpoint "$CKPT" --overlap 200 "$IN" out.wav
    has_line err.txt "$P --overlap: at most half a segment (128 frames), got 200"
}

# A stage-2 checkpoint carries the stage-1 autoencoder (/autoencoder): 2 diffusion steps on the
# fixture's checkpoint, then the same reconstruction, sample for sample. Skipped (77) while this
# tree has no configs/demo-diffusion.yaml.
case_stage2() {
    [ -f "$CONFIGS/demo-diffusion.yaml" ] || exit 77
    "$TRAIN" "$CONFIGS/demo-diffusion.yaml" --set data.train="$FIX/demo/train" --set data.val= --set device=cpu \
        --set run.dir=run2 --set train.steps=2 --set autoencoder.checkpoint="$CKPT" \
        --set diffusion.latent_samples=8 >train.log 2>&1 || fail "remixer-train (diffusion) failed: $(tail -5 train.log)"
    run 0 "$REC" --checkpoint run2/ckpt-00000002.h5 "$IN" stage2.wav
    grep -q "^autoencoder: run2/ckpt-00000002.h5 (stage-1 step 20, kl bottleneck" out.txt || fail "$(cat out.txt)"
    run 0 "$REC" --checkpoint "$CKPT" "$IN" stage1.wav
    "$PY" -c "
import sys, wave
a, b = wave.open('stage1.wav'), wave.open('stage2.wav')
sys.exit(a.readframes(a.getnframes()) != b.readframes(b.getnframes()))" ||
        fail "the stage-2 checkpoint's autoencoder reconstructs differently from its stage-1 source"
}

case_bad_inputs() {
    mkdir -p out
    echo "this is not audio" >notes.wav
    : >empty.wav
    run 3 "$REC" missing.wav out/x.wav
    has_line err.txt "$P missing.wav: cannot open: No such file or directory"
    run 3 "$REC" notes.wav out/x.wav
    grep -q "^$P notes.wav: not an audio file libsndfile can read" err.txt || fail "not audio: $(cat err.txt)"
    run 3 "$REC" empty.wav out/x.wav
    has_line err.txt "$P empty.wav: empty file (0 bytes)"
    nothing_left out
    # Output folders that cannot take the file (checked before any work).
    run 2 "$REC" "$IN" no-such-folder/x.wav
    has_line err.txt "$P no-such-folder/x.wav: cannot write into folder no-such-folder: No such file or directory"
    run 2 "$REC" "$IN" notes.wav/x.wav
    has_line err.txt "$P notes.wav/x.wav: notes.wav is not a folder"
    run 2 "$REC" "$IN" out
    has_line err.txt "$P out: is a folder; give the name of the WAV file to write"
    if [ "$(id -u)" != 0 ]; then # root writes anywhere
        mkdir ro && chmod 555 ro
        run 2 "$REC" "$IN" ro/x.wav
        has_line err.txt "$P ro/x.wav: cannot write into folder ro: Permission denied"
        nothing_left ro
    fi
    # Checkpoints: missing, not a checkpoint, damaged (bytes overwritten in the middle).
    run 4 "$REC" --checkpoint missing.h5 "$IN" out/x.wav
    has_line err.txt "$P missing.h5: No such file or directory"
    run 4 "$REC" --checkpoint "$IN" "$IN" out/x.wav
    grep -q "^$P .*chords-00.wav" err.txt || fail "a WAV as checkpoint: $(cat err.txt)"
    # Damaged: a chunk of a /model tensor overwritten (the whole-file checksum, checked before HDF5
    # opens the file, fails), and a checkpoint cut in half.
    cp "$CKPT" damaged.h5
    "$PY" -c "
import h5py
with h5py.File('damaged.h5', 'r') as f:
    off = f['model/enc.conv_in.weight'].id.get_chunk_info(0).byte_offset
with open('damaged.h5', 'r+b') as f:
    f.seek(off); f.write(bytes(16))" || fail "cannot damage the checkpoint (h5py)"
    run 4 "$REC" --checkpoint damaged.h5 "$IN" out/x.wav
    cat err.txt
    grep -q "^$P damaged.h5: damaged checkpoint: checksum of bytes .* differs" err.txt || fail "damaged checkpoint: $(cat err.txt)"
    head -c "$(($(wc -c <"$CKPT") / 2))" "$CKPT" >half.h5
    run 4 "$REC" --checkpoint half.h5 "$IN" out/x.wav
    cat err.txt
    grep -q "^$P half.h5" err.txt || fail "truncated checkpoint: $(cat err.txt)"
    nothing_left out
    nothing_left .
}

case "$CASE" in
fixture) case_fixture ;;
usage) case_usage ;;
plain) case_plain ;;
checkpoint) case_checkpoint ;;
stage2) case_stage2 ;;
bad_inputs) case_bad_inputs ;;
*) fail "unknown case" ;;
esac
echo "ok ($CASE)"
