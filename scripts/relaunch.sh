#!/usr/bin/env bash
# relaunch.sh: run a training command again and again until it finishes.
#
#   scripts/relaunch.sh [OPTIONS] [--] COMMAND [ARG...]
#
#   scripts/relaunch.sh mpirun -np 8 remixer-train configs/vqvae.yaml    # a workstation
#   (the MPIJob launcher in k8s/ runs the same line around its mpirun)
#
# Exit status of COMMAND (see util/exitcodes.h) decides what happens next:
#   0        finished: relaunch.sh exits 0.
#   75       preempted, checkpoint saved, start me again: COMMAND is started again after
#            a short pause (with `checkpoint.resume: auto` the trainer resumes from the
#            newest valid checkpoint), at most --max-restarts times.
#   other    (1 runtime failure, 2 usage/config error, 3 data error, 4 checkpoint refused,
#            128+N killed by signal N, ...): relaunch.sh stops and exits with that code;
#            a broken config must not loop.
#
# Signals: SIGTERM, SIGINT and SIGUSR1 sent to relaunch.sh (a preempted pod, Ctrl-C) are
# forwarded to COMMAND, relaunch.sh waits for it to exit (the trainer writes a checkpoint
# first) and then exits with its code without starting it again. The signal forwarded is
# the one received, except when COMMAND is mpirun/mpiexec/orterun: Open MPI's mpirun turns
# SIGTERM/SIGINT into "kill every rank within a second", which leaves no time for a
# checkpoint, whereas it passes SIGUSR1 on to every rank untouched, and the trainer treats
# SIGUSR1 exactly like SIGTERM. So for mpirun the forwarded signal is SIGUSR1.
# COMMAND runs in its own session, so a Ctrl-C in the terminal reaches relaunch.sh only
# and COMMAND gets the forwarded signal once.
#
# Options (each also settable through the environment variable named):
#   -m, --max-restarts N      restarts allowed after exit 75 (RMX_MAX_RESTARTS, default 100)
#   -d, --delay SECONDS       pause before each restart (RMX_RESTART_DELAY, default 5)
#   -s, --forward-signal SIG  signal forwarded to COMMAND, e.g. TERM or USR1
#                             (RMX_FORWARD_SIGNAL, default as described above)
#   -h, --help                print this help
#
# Output: one line on stderr per attempt, "[relaunch] <UTC time> attempt N exited with C
# (meaning) -> what happens next". Options are read up to the first non-option word or "--".

set -u

readonly EXIT_OK=0
readonly EXIT_USAGE=2
readonly EXIT_PREEMPTED=75

usage() {
    # The header comment above is the help text.
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
}

die_usage() {
    printf 'relaunch.sh: %s (try --help)\n' "$1" >&2
    exit "$EXIT_USAGE"
}

log() {
    printf '[relaunch] %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

# What an exit code means, for the log line.
describe() {
    case "$1" in
        0) echo "finished" ;;
        1) echo "runtime failure" ;;
        2) echo "usage or config error" ;;
        3) echo "data error" ;;
        4) echo "checkpoint refused" ;;
        75) echo "preempted, checkpoint saved" ;;
        *)
            if [ "$1" -gt 128 ] && [ "$1" -lt 160 ]; then
                echo "killed by signal $(kill -l "$(($1 - 128))" 2>/dev/null || echo "$(($1 - 128))")"
            else
                echo "failed"
            fi
            ;;
    esac
}

max_restarts="${RMX_MAX_RESTARTS:-100}"
delay="${RMX_RESTART_DELAY:-5}"
forward="${RMX_FORWARD_SIGNAL:-}"

while [ $# -gt 0 ]; do
    case "$1" in
        -m | --max-restarts)
            [ $# -ge 2 ] || die_usage "$1 needs a value"
            max_restarts="$2"
            shift 2
            ;;
        -d | --delay)
            [ $# -ge 2 ] || die_usage "$1 needs a value"
            delay="$2"
            shift 2
            ;;
        -s | --forward-signal)
            [ $# -ge 2 ] || die_usage "$1 needs a value"
            forward="$2"
            shift 2
            ;;
        -h | --help)
            usage
            exit "$EXIT_OK"
            ;;
        --)
            shift
            break
            ;;
        -*) die_usage "unknown option '$1'" ;;
        *) break ;;
    esac
done

[ $# -gt 0 ] || die_usage "no command given"
case "$max_restarts" in
    '' | *[!0-9]*) die_usage "max restarts must be a non-negative integer, got '$max_restarts'" ;;
esac
case "$delay" in
    '' | *[!0-9.]* | *.*.* | .) die_usage "delay must be a non-negative number of seconds, got '$delay'" ;;
esac
if [ -n "$forward" ]; then
    forward="${forward#SIG}"
    kill -l "$forward" >/dev/null 2>&1 || die_usage "unknown signal '$forward'"
else
    case "${1##*/}" in
        mpirun | mpiexec | orterun) forward=USR1 ;;
    esac
fi

child=""          # pid of the running COMMAND, empty between attempts
stop_signal=""    # set once a stop signal arrived: no more restarts
interrupted=0     # set by the handler so that the main loop knows `wait` was cut short
pause_pid=""      # pid of the sleep between attempts

on_signal() {
    local sig="$1"
    stop_signal="$sig"
    interrupted=1
    if [ -n "$child" ]; then
        local to="${forward:-$sig}"
        log "received SIG$sig, forwarding SIG$to to pid $child and waiting for it to exit"
        kill -s "$to" "$child" 2>/dev/null || true
    elif [ -n "$pause_pid" ]; then
        kill "$pause_pid" 2>/dev/null || true
    fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal USR1' USR1

# Starts COMMAND in the background, in its own session when setsid(1) is available.
# A background command of a non-interactive shell starts with SIGINT and SIGQUIT ignored;
# the subshell restores the defaults first so that a forwarded SIGINT is not lost.
start_child() {
    if command -v setsid >/dev/null 2>&1; then
        (
            trap - INT QUIT
            exec setsid "$@"
        ) &
    else
        (
            trap - INT QUIT
            exec "$@"
        ) &
    fi
    child=$!
}

# Waits for the child; a trapped signal interrupts `wait` (status > 128) while the child
# runs on, so wait again until the child's own status comes back (bash keeps the status
# of a child that exited meanwhile).
wait_child() {
    local status
    while :; do
        interrupted=0
        wait "$child"
        status=$?
        [ "$interrupted" -eq 1 ] || break
    done
    child=""
    return "$status"
}

log "running: $*"
attempt=0
restarts=0
while :; do
    attempt=$((attempt + 1))
    start_child "$@"
    # A stop signal that arrived while the child was being started found no pid to forward to.
    [ -z "$stop_signal" ] || kill -s "${forward:-$stop_signal}" "$child" 2>/dev/null || true
    wait_child
    code=$?
    what="$(describe "$code")"

    if [ "$code" -eq "$EXIT_OK" ]; then
        log "attempt $attempt exited with $code ($what) -> done"
        exit "$EXIT_OK"
    fi
    if [ "$code" -ne "$EXIT_PREEMPTED" ]; then
        log "attempt $attempt exited with $code ($what) -> stopping"
        exit "$code"
    fi
    if [ -n "$stop_signal" ]; then
        log "attempt $attempt exited with $code ($what) -> not restarting after SIG$stop_signal"
        exit "$code"
    fi
    if [ "$restarts" -ge "$max_restarts" ]; then
        log "attempt $attempt exited with $code ($what) -> giving up after $restarts restarts"
        exit "$code"
    fi
    restarts=$((restarts + 1))
    log "attempt $attempt exited with $code ($what) -> restart $restarts of $max_restarts in ${delay}s"

    # Pause in the background so that a stop signal during the pause is handled at once.
    sleep "$delay" &
    pause_pid=$!
    wait "$pause_pid" 2>/dev/null
    pause_pid=""
    if [ -n "$stop_signal" ]; then
        log "received SIG$stop_signal during the pause -> not restarting"
        exit "$code"
    fi
done
