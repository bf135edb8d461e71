#!/usr/bin/env bash
# The main job on the built-in demo data, from nothing to music:
#   1. build (build/), synthesise and prepare the demo dataset (demo-data/, seconds);
#   2. stage 1, the autoencoder: configs/demo-vae.yaml on 2 MPI ranks -> runs/demo-vae/;
#   3. stage 2, the genre-conditioned diffusion transformer over its latents:
#      configs/demo-diffusion.yaml on 2 ranks -> runs/demo-diffusion/;
#   4. remixer-generate --genre all -> runs/demo-diffusion/clips/<genre>-<k>.wav.
# Every stage resumes where an interrupted run stopped; a finished stage says so and changes
# nothing, and clips newer than the checkpoint they came from are kept.
#   RMX_DEMO_DIR=DIR   put demo-data/ and runs/ under DIR instead of the repository (tests)
#   RMX_RANKS=N        ranks per training stage (default 2)
#   RMX_DEMO_CLIPS=N   clips per genre (default 2)
#   RMX_BUILD_DIR=DIR  the build folder (default build); RMX_DEMO_NO_BUILD=1 uses it as it is
# Extra arguments go to both remixer-train calls, e.g. --set checkpoint.resume=never.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
bin="${RMX_BUILD_DIR:-build}"
[[ -n "${RMX_DEMO_NO_BUILD:-}" ]] || scripts/build.sh
dir="${RMX_DEMO_DIR:-$repo}"
data="$dir/demo-data" runs="$dir/runs" ranks="${RMX_RANKS:-2}" clips="${RMX_DEMO_CLIPS:-2}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
say() { printf '\n== %s\n' "$*"; }
newest_checkpoint() { find "$1" -maxdepth 1 -name 'ckpt-*.h5' 2>/dev/null | sort | tail -n 1; }

if [[ ! -d "$data/train" ]]; then
  say "demo dataset -> $data"
  "$bin"/data/remixer-prep --demo "$data"
fi
common=(--set "data.train=$data/train" --set "data.val=$data/val")

say "stage 1: autoencoder (configs/demo-vae.yaml, $ranks ranks) -> $runs/demo-vae"
scripts/mpirun.sh -np "$ranks" "$bin"/train/remixer-train configs/demo-vae.yaml "${common[@]}" \
  --set "run.dir=$runs/demo-vae" "$@"
ae="$(newest_checkpoint "$runs/demo-vae")"
[[ -n "$ae" ]] || { echo "demo.sh: stage 1 left no checkpoint in $runs/demo-vae" >&2; exit 1; }

say "stage 2: diffusion transformer (configs/demo-diffusion.yaml, $ranks ranks) over $ae"
scripts/mpirun.sh -np "$ranks" "$bin"/train/remixer-train configs/demo-diffusion.yaml "${common[@]}" \
  --set "run.dir=$runs/demo-diffusion" --set "autoencoder.checkpoint=$ae" "$@"
dit="$(newest_checkpoint "$runs/demo-diffusion")"
[[ -n "$dit" ]] || { echo "demo.sh: stage 2 left no checkpoint in $runs/demo-diffusion" >&2; exit 1; }

out="$runs/demo-diffusion/clips"
stale=0
for genre in $("$bin"/infer/remixer-generate "$dit" --list-genres | tr -d ','); do
  for ((k = 0; k < clips; k++)); do
    [[ "$out/$genre-$k.wav" -nt "$dit" ]] || stale=1
  done
done
if [[ "$stale" -eq 1 ]]; then
  say "generating $clips clips per genre with $dit"
  OMP_NUM_THREADS="$(nproc)" "$bin"/infer/remixer-generate "$dit" --genre all --count "$clips" --out "$out"
else
  say "the clips in $out are newer than $dit: nothing to generate"
fi
say "done: listen to $out/*.wav (spectrograms of each evaluation: $runs/demo-diffusion/eval-*.png)"
