#!/usr/bin/env bash
# Tests of scripts/relaunch.sh with fake commands.
#
#   tests/k8s/test_relaunch.sh RELAUNCH_SH CASE
#
# CASE is one of: retry, stop, failure, max-restarts, usage, signal-term, signal-int,
# signal-mpirun, signal-during-pause, mpirun (a real two-rank mpirun; skipped when mpirun is
# absent), shellcheck (skipped when shellcheck is absent). Exit 0: pass, 1: fail, 77: skipped.

set -u

relaunch="$1"
case_name="$2"
state="$(mktemp -d)"
# On the way out, end any fake trainer still running (a failed test may leave one behind:
# relaunch.sh starts its command in a session of its own).
cleanup() {
    local pid
    if [ -f "$state/pids" ]; then
        while read -r pid; do
            kill -KILL "$pid" 2>/dev/null
        done < "$state/pids"
    fi
    rm -rf "$state"
}
trap cleanup EXIT
export STATE="$state"

fail() {
    echo "FAIL ($case_name): $*" >&2
    if [ -f "$state/log" ]; then
        echo "--- relaunch.sh output:" >&2
        cat "$state/log" >&2
    fi
    exit 1
}

# A fake trainer that exits with the codes listed in $CODES, one per run ("75 75 0" exits
# 75 on the first two runs and 0 on the third); it counts its runs in $STATE/runs.
cat > "$state/fake-exit" <<'EOF'
#!/bin/sh
n=$(($(cat "$STATE/runs" 2>/dev/null || echo 0) + 1))
echo "$n" > "$STATE/runs"
set -- $CODES
shift $((n - 1)) 2>/dev/null || true
exit "${1:-75}"
EOF

# A fake trainer that runs until signalled, then records the signal, "writes a checkpoint"
# for a second and exits 75, as remixer-train does.
cat > "$state/fake-train" <<'EOF'
#!/bin/bash
echo "$$" >> "$STATE/pids"
n=$(($(cat "$STATE/runs" 2>/dev/null || echo 0) + 1))
echo "$n" > "$STATE/runs"
on_signal() {
    echo "$1" >> "$STATE/signals"
    sleep 1
    echo saved > "$STATE/saved"
    exit 75
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal USR1' USR1
touch "$STATE/ready" "$STATE/ready.${OMPI_COMM_WORLD_RANK:-0}"
while :; do sleep 0.1; done
EOF
chmod +x "$state/fake-exit" "$state/fake-train"
# The same fake trainer under the name mpirun, to check the signal relaunch.sh picks for it.
mkdir "$state/bin"
cp "$state/fake-train" "$state/bin/mpirun"

runs() { cat "$state/runs" 2>/dev/null || echo 0; }

# Waits up to 10 s for a file to appear.
wait_for() {
    local tries=0
    while [ "$tries" -lt 100 ]; do
        [ -e "$1" ] && return 0
        sleep 0.1
        tries=$((tries + 1))
    done
    fail "timed out waiting for $1"
}

# Waits up to 20 s for the background relaunch.sh to exit; its exit code goes to $code.
wait_bg() {
    local tries=0
    while kill -0 "$bg_pid" 2>/dev/null; do
        if [ "$tries" -ge 200 ]; then
            kill -KILL "$bg_pid" 2>/dev/null
            fail "relaunch.sh did not exit within 20 s of the signal"
        fi
        sleep 0.1
        tries=$((tries + 1))
    done
    wait "$bg_pid"
    code=$?
}

# Starts relaunch.sh in the background with default signal handling (a background job of
# a script otherwise starts with SIGINT ignored, which would hide the forwarding of SIGINT).
start_bg() {
    (
        trap - INT QUIT
        exec "$relaunch" "$@"
    ) >"$state/log" 2>&1 &
    bg_pid=$!
}

# Sends a signal to relaunch.sh once the fake trainer is up, then checks that relaunch.sh
# forwarded SIG$2, waited for the checkpoint, exited 75 and did not start it again.
signal_case() {
    local send="$1" expect="$2"
    shift 2
    start_bg "$@"
    wait_for "$state/ready"
    kill -s "$send" "$bg_pid"
    wait_bg
    [ "$code" -eq 75 ] || fail "exit code $code, expected 75"
    [ -f "$state/saved" ] || fail "relaunch.sh exited before the command finished its checkpoint"
    [ "$(cat "$state/signals" 2>/dev/null)" = "$expect" ] ||
        fail "the command received '$(tr '\n' ' ' < "$state/signals" 2>/dev/null)', expected SIG$expect once"
    [ "$(runs)" -eq 1 ] || fail "the command ran $(runs) times after a stop signal, expected 1"
    grep -q "not restarting after SIG$send" "$state/log" || fail "no 'not restarting' line"
}

export RMX_RESTART_DELAY=0
unset RMX_MAX_RESTARTS RMX_FORWARD_SIGNAL

case "$case_name" in
    retry)
        CODES="75 75 0" "$relaunch" "$state/fake-exit" >"$state/log" 2>&1
        code=$?
        [ "$code" -eq 0 ] || fail "exit code $code, expected 0"
        [ "$(runs)" -eq 3 ] || fail "ran $(runs) times, expected 3"
        [ "$(grep -c 'attempt [0-9]* exited with' "$state/log")" -eq 3 ] ||
            fail "expected one line per attempt"
        grep -q 'attempt 2 exited with 75' "$state/log" || fail "no line for attempt 2 and code 75"
        grep -q 'attempt 3 exited with 0' "$state/log" || fail "no line for attempt 3 and code 0"
        ;;
    stop)
        CODES="2" "$relaunch" "$state/fake-exit" >"$state/log" 2>&1
        code=$?
        [ "$code" -eq 2 ] || fail "exit code $code, expected 2"
        [ "$(runs)" -eq 1 ] || fail "a config error was retried: ran $(runs) times"
        grep -q 'attempt 1 exited with 2' "$state/log" || fail "no line for attempt 1 and code 2"
        ;;
    failure)
        CODES="75 1" "$relaunch" "$state/fake-exit" >"$state/log" 2>&1
        code=$?
        [ "$code" -eq 1 ] || fail "exit code $code, expected 1"
        [ "$(runs)" -eq 2 ] || fail "ran $(runs) times, expected 2"
        ;;
    max-restarts)
        CODES="75 75 75 75 75" RMX_MAX_RESTARTS=2 "$relaunch" "$state/fake-exit" >"$state/log" 2>&1
        code=$?
        [ "$code" -eq 75 ] || fail "exit code $code, expected 75"
        [ "$(runs)" -eq 3 ] || fail "ran $(runs) times with 2 restarts allowed, expected 3"
        grep -q 'giving up after 2 restarts' "$state/log" || fail "no 'giving up' line"
        # The option overrides the environment.
        rm -f "$state/runs"
        CODES="75 75 75" RMX_MAX_RESTARTS=5 "$relaunch" --max-restarts 0 "$state/fake-exit" \
            >"$state/log" 2>&1
        [ "$(runs)" -eq 1 ] || fail "--max-restarts 0 ran $(runs) times, expected 1"
        ;;
    usage)
        for bad in "RMX_MAX_RESTARTS=many" "RMX_RESTART_DELAY=soon" "RMX_FORWARD_SIGNAL=NOPE"; do
            env "$bad" CODES=0 "$relaunch" "$state/fake-exit" >"$state/log" 2>&1
            code=$?
            [ "$code" -eq 2 ] || fail "$bad: exit code $code, expected 2"
        done
        "$relaunch" >"$state/log" 2>&1
        [ $? -eq 2 ] || fail "no command: expected exit code 2"
        [ "$(runs)" -eq 0 ] || fail "the command ran despite a usage error"
        "$relaunch" --help >"$state/log" 2>&1 || fail "--help failed"
        grep -q 'RMX_MAX_RESTARTS' "$state/log" || fail "--help does not document RMX_MAX_RESTARTS"
        ;;
    signal-term)
        signal_case TERM TERM "$state/fake-train"
        ;;
    signal-int)
        signal_case INT INT "$state/fake-train"
        ;;
    signal-mpirun)
        # mpirun would kill the ranks within a second of a SIGTERM: relaunch.sh sends SIGUSR1.
        signal_case TERM USR1 "$state/bin/mpirun"
        rm -f "$state/runs" "$state/signals" "$state/saved" "$state/ready"
        # An explicit choice wins.
        RMX_FORWARD_SIGNAL=INT signal_case TERM INT "$state/bin/mpirun"
        ;;
    signal-during-pause)
        CODES="75 0" RMX_RESTART_DELAY=30 start_bg "$state/fake-exit"
        wait_for "$state/runs"
        sleep 0.5
        start=$SECONDS
        kill -TERM "$bg_pid"
        wait_bg
        [ "$code" -eq 75 ] || fail "exit code $code, expected 75"
        [ $((SECONDS - start)) -lt 10 ] || fail "relaunch.sh sat out its pause after SIGTERM"
        [ "$(runs)" -eq 1 ] || fail "restarted after SIGTERM during the pause"
        ;;
    mpirun)
        mpirun="$(command -v mpirun)" || { echo "SKIP: no mpirun"; exit 77; }
        start_bg "$mpirun" --allow-run-as-root --oversubscribe -np 2 "$state/fake-train"
        wait_for "$state/ready.0"
        wait_for "$state/ready.1"
        sleep 0.5
        kill -TERM "$bg_pid"
        wait_bg
        [ "$code" -eq 75 ] || fail "exit code $code, expected 75 (ranks checkpointed and exited 75)"
        [ "$(grep -c USR1 "$state/signals" 2>/dev/null)" -eq 2 ] ||
            fail "expected both ranks to receive SIGUSR1, got: $(tr '\n' ' ' < "$state/signals" 2>/dev/null)"
        ;;
    shellcheck)
        command -v shellcheck >/dev/null || { echo "SKIP: shellcheck not installed"; exit 77; }
        shellcheck "$relaunch" "$0" || fail "shellcheck reported problems"
        ;;
    *)
        echo "unknown case '$case_name'" >&2
        exit 2
        ;;
esac
echo "PASS ($case_name)"
