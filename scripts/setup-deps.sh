#!/usr/bin/env bash
# Installs every Debian package Remixer needs to build and test. Nothing is downloaded from
# anywhere but Debian's archive. Run as root (or with sudo available).
#   scripts/setup-deps.sh           build + test dependencies
#   scripts/setup-deps.sh --bench   also the PyTorch twin used by bench/ (large)
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin            # MPI: launch, CPU all-reduce, NCCL id broadcast
  libhdf5-dev                           # datasets and checkpoints
  libyaml-dev                           # configs
  libsndfile1-dev libsoxr-dev           # audio decode, resampling
  libfftw3-dev libopenblas-dev          # STFT, CPU GEMMs
  libpng-dev                            # spectrogram PNGs
  librandom123-dev                      # counter-based RNG (Philox)
  python3 python3-numpy python3-h5py    # tests read shards and checkpoints with h5py
  python3-yaml python3-jsonschema       # tests validate the Kubernetes manifests
  shellcheck                            # tests lint the launcher scripts
  sox                                   # vocoder tests synthesise a music recording, encode it to OGG
  clang libclang-rt-14-dev              # tests/fuzz: libFuzzer harnesses with ASan/UBSan
  libcurl4-openssl-dev libssl-dev zip   # lambda/: Runtime API client, base64 (libcrypto); the Lambda zip
  libmicrohttpd-dev libjansson-dev      # serve/: remixer-serve's HTTP server and JSON
  chromium chromium-driver python3-selenium  # tests/serve: the page in a real (headless) browser
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3-torch)
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup-deps: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup-deps: all packages present"
fi
