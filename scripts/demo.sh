#!/usr/bin/env bash
# The main job on the built-in demo data, from nothing to music:
#   1. build (build/), synthesise and prepare the demo dataset (demo-data/, seconds);
#   2. stage 1, the autoencoder: configs/demo-vae.yaml on 2 MPI ranks -> runs/demo-vae/;
#   3. stage 2, the genre-conditioned diffusion transformer over its latents:
#      configs/demo-diffusion.yaml on 2 ranks -> runs/demo-diffusion/;
#   4. remixer-generate --genre all -> runs/demo-diffusion/clips/<genre>-<k>.wav;
#   5. stage 3, the remix model over stage 2's transformer: configs/demo-remix.yaml on 2 ranks ->
#      runs/demo-remix/;
#   6. remixer-remix: each genre's first song in the style of the next genre's ->
#      runs/demo-remix/remixes/<genre>-in-the-style-of-<genre>.wav.
# Every stage resumes where an interrupted run stopped; a finished stage says so and changes
# nothing, and clips or remixes newer than the checkpoint they came from are kept.
#   RMX_DEMO_DIR=DIR   put demo-data/ and runs/ under DIR instead of the repository (tests)
#   RMX_RANKS=N        ranks per training stage (default 2)
#   RMX_DEMO_CLIPS=N   clips per genre (default 2)
#   RMX_BUILD_DIR=DIR  the build folder (default build); RMX_DEMO_NO_BUILD=1 uses it as it is
# Extra arguments go to every remixer-train call, e.g. --set checkpoint.resume=never.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
bin="${RMX_BUILD_DIR:-build}"
[[ -n "${RMX_DEMO_NO_BUILD:-}" ]] || scripts/build.sh
dir="${RMX_DEMO_DIR:-$repo}"
data="$dir/demo-data" runs="$dir/runs" ranks="${RMX_RANKS:-2}" clips="${RMX_DEMO_CLIPS:-2}"
# All cores for generating and remixing (nproc itself would answer OMP_NUM_THREADS), one thread
# per rank for training.
cores="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
say() { printf '\n== %s\n' "$*"; }
newest_checkpoint() { find "$1" -maxdepth 1 -name 'ckpt-*.h5' 2>/dev/null | sort | tail -n 1; }

if [[ ! -d "$data/train" ]]; then
  say "demo dataset -> $data"
  "$bin"/data/remixer-prep --demo "$data"
fi
common=(--set "data.train=$data/train" --set "data.val=$data/val")
# train_stage N NAME CONFIG [--set ...]: trains one stage into $runs/NAME on $ranks ranks (with
# the script's extra arguments) and sets $checkpoint to the newest checkpoint it left.
extra=("$@")
train_stage() {
  local n=$1 name=$2 config=$3
  shift 3
  scripts/mpirun.sh -np "$ranks" "$bin"/train/remixer-train "$config" "${common[@]}" \
    --set "run.dir=$runs/$name" "$@" "${extra[@]}"
  checkpoint="$(newest_checkpoint "$runs/$name")"
  [[ -n "$checkpoint" ]] || { echo "demo.sh: stage $n left no checkpoint in $runs/$name" >&2; exit 1; }
}

say "stage 1: autoencoder (configs/demo-vae.yaml, $ranks ranks) -> $runs/demo-vae"
train_stage 1 demo-vae configs/demo-vae.yaml
ae="$checkpoint"

say "stage 2: diffusion transformer (configs/demo-diffusion.yaml, $ranks ranks) over $ae"
train_stage 2 demo-diffusion configs/demo-diffusion.yaml --set "autoencoder.checkpoint=$ae"
dit="$checkpoint"

out="$runs/demo-diffusion/clips"
read -r -a genres <<<"$("$bin"/infer/remixer-generate "$dit" --list-genres | tr -d ',')"
stale=0
for genre in "${genres[@]}"; do
  for ((k = 0; k < clips; k++)); do
    [[ "$out/$genre-$k.wav" -nt "$dit" ]] || stale=1
  done
done
if [[ "$stale" -eq 1 ]]; then
  say "generating $clips clips per genre with $dit"
  OMP_NUM_THREADS="$cores" "$bin"/infer/remixer-generate "$dit" --genre all --count "$clips" --out "$out"
else
  say "the clips in $out are newer than $dit: nothing to generate"
fi

say "stage 3: remix model (configs/demo-remix.yaml, $ranks ranks) over $dit"
train_stage 3 demo-remix configs/demo-remix.yaml --set "diffusion.checkpoint=$dit"
rmx="$checkpoint"

remixes="$runs/demo-remix/remixes"
mkdir -p "$remixes"
made=0
for ((i = 0; i < ${#genres[@]}; i++)); do
  genre="${genres[i]}" style="${genres[(i + 1) % ${#genres[@]}]}"
  wav="$remixes/$genre-in-the-style-of-$style.wav"
  [[ "$wav" -nt "$rmx" ]] && continue
  original="$(find "$data/audio/$genre" -name '*.wav' | sort | head -n 1)"
  style_song="$(find "$data/audio/$style" -name '*.wav' | sort | head -n 1)"
  [[ "$made" -eq 1 ]] || say "remixing each genre's first song in the style of the next genre's with $rmx"
  made=1
  OMP_NUM_THREADS="$cores" "$bin"/infer/remixer-remix "$rmx" --original "$original" --style "$style_song" -o "$wav"
done
[[ "$made" -eq 1 ]] || say "the remixes in $remixes are newer than $rmx: nothing to remix"
say "done: listen to $out/*.wav and $remixes/*.wav (spectrograms of each evaluation: $runs/demo-*/eval-*.png)"
