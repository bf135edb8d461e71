#!/usr/bin/env bash
# The main job on the built-in demo data: build, synthesise and prepare the demo dataset
# (demo-data/, a few seconds), then train the demo autoencoder with 2 MPI ranks.
# Extra arguments go to remixer-train, e.g. scripts/demo.sh --set train.steps=300
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
if [[ ! -d demo-data/train ]]; then
  build/data/remixer-prep --demo demo-data
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
scripts/mpirun.sh -np "${RMX_RANKS:-2}" build/train/remixer-train configs/demo-vae.yaml "$@"
