#!/usr/bin/env bash
# preempt-drill.sh: a preemption drill on this machine, with the demo job, mpirun and the
# relaunch loop that the Kubernetes launcher runs.
#
#   scripts/preempt-drill.sh [OPTIONS]
#
# 1. Makes the demo dataset (remixer-prep --demo) unless --data names one.
# 2. Starts `scripts/relaunch.sh mpirun -np RANKS remixer-train configs/demo-vae.yaml` with
#    checkpoint.resume=auto, in a fresh run folder.
# 3. After --stop-after steps, sends SIGTERM to the ranks, as a preempted worker pod's preStop
#    hook does: the ranks agree at the next step, rank 0 saves a checkpoint, all exit 75, and
#    relaunch.sh starts mpirun again, which resumes from that checkpoint.
# 4. After as many steps again, sends SIGTERM to relaunch.sh, as Kubernetes does when the
#    launcher pod is preempted: relaunch.sh passes SIGUSR1 on to mpirun, the ranks save and exit
#    75, and relaunch.sh exits 75 without restarting.
# 5. Starts relaunch.sh again, as the MPI Operator starts a new launcher pod; the run resumes
#    and finishes.
# 6. Prints the train steps of metrics.jsonl and the losses around each stop, and fails unless
#    every step 1 .. steps is there exactly once (lines count completed steps).
#
# Options:
#   --build DIR       the CMake build folder holding train/remixer-train (default: build)
#   --data DIR        an existing demo dataset (default: WORK/demo, made if missing)
#   --work DIR        where the run goes (default: runs/preempt-drill)
#   --ranks N         MPI ranks (default 2)
#   --steps N         train.steps (default 36)
#   --stop-after N    steps between the stops (default 12; checkpoints come every 10)
#   --mpirun PATH     the mpirun to use (default: mpirun)
#   -h, --help        this text
# Exit status: 0 the drill passed, 1 it did not, 2 usage.

set -u

repo="$(cd "$(dirname "$0")/.." && pwd)"
build="$repo/build"
data=""
work="$repo/runs/preempt-drill"
ranks=2
steps=36
stop_after=12
mpirun=mpirun

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }
die() {
    echo "preempt-drill.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --build) build="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --ranks) ranks="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --stop-after) stop_after="$2"; shift 2 ;;
        --mpirun) mpirun="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "preempt-drill.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[ "$((stop_after * 2))" -lt "$steps" ] || { echo "preempt-drill.sh: --steps must exceed 2 x --stop-after" >&2; exit 2; }

train="$build/train/remixer-train"
prep="$build/data/remixer-prep"
[ -x "$train" ] || die "$train not found: build first (cmake -S . -B build && cmake --build build) or pass --build"
run_dir="$work/run"
log="$work/drill.log"
rm -rf "$run_dir"
mkdir -p "$work"
: > "$log"
if [ -z "$data" ]; then
    data="$work/demo"
    [ -d "$data/train" ] || "$prep" --demo "$data" >/dev/null || die "remixer-prep --demo $data failed"
fi

mpi_flags=(--oversubscribe --bind-to none)
[ "$(id -u)" -ne 0 ] || mpi_flags+=(--allow-run-as-root)
job=("$repo/scripts/relaunch.sh" --delay 1 "$mpirun" "${mpi_flags[@]}" -np "$ranks"
     "$train" "$repo/configs/demo-vae.yaml" --set "data.train=$data/train" --set "data.val=$data/val"
     --set "run.dir=$run_dir" --set "train.steps=$steps" --set log.every=5 --set eval.every=10
     --set checkpoint.every=10 --set checkpoint.resume=auto)
export OMP_NUM_THREADS=1 RMX_NO_PROGRESS=1

say() { printf '[drill] %s\n' "$*"; }

steps_logged() { grep -c '"split": "train"' "$run_dir/metrics.jsonl" 2>/dev/null || true; }

# The ranks of this drill's run: remixer-train processes whose command line names its folder.
rank_pids() {
    local pid
    for pid in $(pgrep -x remixer-train); do
        tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "run.dir=$run_dir " && echo "$pid"
    done
}

wait_for_steps() {
    local want="$1" loop_pid="$2" n
    while :; do
        n="$(steps_logged)"
        [ "${n:-0}" -ge "$want" ] && return 0
        kill -0 "$loop_pid" 2>/dev/null || die "the run ended before step $want (see $log)"
        sleep 0.05
    done
}

say "run folder $run_dir, log $log"
say "1. relaunch.sh mpirun -np $ranks remixer-train configs/demo-vae.yaml (train.steps=$steps)"
"${job[@]}" >>"$log" 2>&1 &
loop=$!
wait_for_steps "$stop_after" "$loop"
say "2. after $stop_after steps: SIGTERM to the ranks (a preempted worker pod)"
mapfile -t pids < <(rank_pids)
[ "${#pids[@]}" -gt 0 ] || die "no rank of this run found to signal"
kill -TERM "${pids[@]}"
wait_for_steps "$((2 * stop_after))" "$loop"
say "3. after $((2 * stop_after)) steps: SIGTERM to relaunch.sh (a preempted launcher pod)"
kill -TERM "$loop"
wait "$loop"
code=$?
[ "$code" -eq 75 ] || die "relaunch.sh exited $code after SIGTERM, expected 75 (see $log)"
say "   relaunch.sh exited 75: checkpoint saved, start again"
say "4. relaunch.sh again (a new launcher pod)"
"${job[@]}" >>"$log" 2>&1
code=$?
[ "$code" -eq 0 ] || die "the last attempt exited $code (see $log)"

say "what the trainer and relaunch.sh said:"
grep -E '^\[relaunch\]|preempted by|resumed from|^finished' "$log" | sed 's/^/    /'

# The log must read as one run: every train step once, in order.
python_check='
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "\"split\": \"train\"" in l]
got = [r["step"] for r in rows]
want = list(range(1, int(sys.argv[2]) + 1))  # labels count completed steps
print("    train steps in metrics.jsonl: " + " ".join(map(str, got)))
for stop in sys.argv[3:]:
    s = int(stop)
    near = ", ".join("step %d loss %.4f" % (r["step"], r["loss"]) for r in rows[s - 2:s + 2])  # steps s-1 .. s+2
    print(f"    around the stop at step {s}: {near}")
if got != want:
    dup = sorted({s for s in got if got.count(s) > 1}); gap = sorted(set(want) - set(got))
    print(f"    NOT continuous: duplicates {dup}, missing {gap}")
    sys.exit(1)
print(f"    continuous: {len(got)} steps, no gap, no duplicate")
'
mapfile -t stops < <(grep -o 'preempted by SIG[A-Z0-9]* at step [0-9]*' "$log" | awk '{print $NF}')
python3 -c "$python_check" "$run_dir/metrics.jsonl" "$steps" "${stops[@]}" || die "the loss log is not continuous"
[ "${#stops[@]}" -eq 2 ] || die "expected two preemptions in $log, found steps: ${stops[*]}"
say "passed"
