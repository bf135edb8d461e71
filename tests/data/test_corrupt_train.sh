#!/bin/sh
# remixer-train on a damaged shard: test_corrupt_train.sh WORK PREP TRAIN TOOL CONFIGS MPIRUN...
# One demo file's 4 segments, segment 1's /mel chunk with a flipped bit; global batch 4 reads all of
# them every step. Default (stop): exit 3 naming shard, segment, sample and source. skip: finishes,
# warns once naming the segment, reports 3 replaced samples for 3 steps, on 1 rank and on 2. A
# flipped bit in the superblock: exit 3 naming the shard, no crash.
set -u
work=$1 prep=$2 train=$3 tool=$4 configs=$5
shift 5
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$work" && mkdir -p "$work" || fail "cannot make $work"
"$prep" --demo "$work/demo" >/dev/null || fail "demo prep"
printf 'audio/chords/chords-00.wav,chords\n' > "$work/demo/one.csv"
"$prep" --val-fraction 0 --shards 1 "$work/demo/one.csv" "$work/one" >/dev/null || fail "prep"
shard="$work/one/train/shard-00000.h5"
"$tool" flip "$shard" 1 || fail "flip"

run() { # run NAME EXPECTED_RC [launcher...] -- [--set ...]
    name=$1 want=$2
    shift 2
    launcher=""
    while [ "$1" != "--" ]; do launcher="$launcher $1"; shift; done
    shift
    $launcher "$train" "$configs/demo-vae.yaml" --set "data.train=$work/one/train" --set data.val= \
        --set train.steps=3 --set train.global_batch=4 --set train.micro_batch=2 --set train.warmup=1 \
        --set model.channel_mult=[1,2] --set eval.every=0 --set checkpoint.every=0 \
        --set train.threads=1 --set "run.dir=$work/run-$name" "$@" >"$work/$name.log" 2>&1
    rc=$?
    [ "$rc" = "$want" ] || { cat "$work/$name.log"; fail "$name: exit $rc, expected $want"; }
}
expect() { # expect NAME TEXT: the log holds TEXT
    grep -F -- "$2" "$work/$1.log" >/dev/null || { cat "$work/$1.log"; fail "$1: no '$2' in the log"; }
}

run stop 3 --
expect stop "damaged segment: $shard segment 1 (sample 1 of $work/one/train) from audio/chords/chords-00.wav: data error detected by Fletcher32 checksum"

run skip 0 -- --set data.on_corrupt=skip
expect skip "skipped damaged segment: $shard segment 1 (sample 1 of $work/one/train) from audio/chords/chords-00.wav"
expect skip "damaged segments skipped: 3 training samples"
[ "$(grep -c 'skipped damaged segment' "$work/skip.log")" = 1 ] || fail "skip: one warning per damaged segment"

if [ $# -gt 0 ]; then
    run skip2 0 "$@" -np 2 -- --set data.on_corrupt=skip
    expect skip2 "damaged segments skipped: 3 training samples"
fi

"$tool" flipbyte "$shard" 30 || fail "flipbyte"
run meta 3 --
expect meta "$shard: cannot open as HDF5"
echo "all checks passed"
