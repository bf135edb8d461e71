#!/usr/bin/env bash
# mpirun with the flags a workstation or CI container needs: --allow-run-as-root when root (CI and
# containers), --oversubscribe so more ranks than cores still start, no core binding (each rank
# runs its own OpenMP threads). Usage: scripts/mpirun.sh -np 2 build/train/remixer-train CONFIG
set -euo pipefail
flags=(--oversubscribe --bind-to none)
if [[ $(id -u) -eq 0 ]]; then flags+=(--allow-run-as-root); fi
exec mpirun "${flags[@]}" "$@"
