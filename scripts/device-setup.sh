#!/usr/bin/env bash
# Builds and runs Remixer's GPU tests and GPU benchmark on a lent GPU machine that has the CUDA
# toolkit, a compiler and CMake but not the Debian libraries the project links (Open MPI, HDF5,
# libyaml, libsndfile, soxr, FFTW, OpenBLAS, libpng, Random123). Those travel as Debian packages,
# unpacked under the build folder (never over /), with the environment pointed at them.
#
#   scripts/device-setup.sh fetch      HERE, on the Debian 12 development machine (the project's
#                                      packages installed, scripts/setup-deps.sh): downloads the
#                                      .debs into build-device/debs (ignored by git, ~50 MB)
#   scripts/device-setup.sh all        THERE, in one device call with carry ["build-device/debs"]:
#                                      unpack, configure, build, ctest -L gpu, the benchmark;
#                                      logs to $OUT when set (the device tool's result folder)
#   scripts/device-setup.sh unpack | build | test | bench    the steps of `all` one by one
#
# Which packages: the recursive dependencies of the build packages, as apt resolved them on this
# machine (the chosen alternatives; Debian 12's current versions), minus the toolchain and base system every
# CUDA development image has (compilers, binutils, glibc, libstdc++, perl, ...). Debian 12 builds
# need glibc >= 2.36 there (Ubuntu 24.04 has 2.39). The update-alternatives links the packages'
# scripts would have made (mpicc, libblas.so.3, hdf5.pc, ...) are recorded at fetch time and
# recreated at unpack time. NCCL comes from the CUDA toolkit or, failing that, PyTorch's pip
# package (nvidia-nccl-cu13).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
top=$repo/build-device
debs=$top/debs
root=$top/root
build=$top/build
arch=x86_64-linux-gnu

build_packages=(libopenmpi-dev openmpi-bin libhdf5-dev libyaml-dev libsndfile1-dev libsoxr-dev
                libfftw3-dev libopenblas-dev libpng-dev librandom123-dev pkgconf)
# What the image has anyway, and must keep its own of (glibc, the compilers' runtimes).
base_regex='^(gcc|g\+\+|cpp|gfortran|binutils|libc6|libc-dev|libc-bin|linux-libc-dev|libstdc\+\+|libgcc|libgfortran-[0-9]+-dev|libperl|perl|libicu|openssh|autoconf|automake|autotools-dev|libtool|m4|make|libasan|liblsan|libtsan|libubsan|libhwasan|libitm|libquadmath|libatomic|libcc1|libisl|libmpc|libmpfr|libgmp|libz3|libgprofng|libctf|libbinutils|libjansson|libsframe|libcrypt|libtinfo|libncurses|ncurses|readline-common|libreadline|libselinux|libpcre|libsystemd|libudev|libcap|libaudit|libpam|libsemanage|libsepol|libacl|libattr|tzdata|debconf|dpkg|sensible-utils|netbase|ca-certificates|libdebconfclient|base-files|bash|coreutils|libjs-|javascript-common|libpython|python3|libexpat|libffi|liblzma5|libzstd1|libbz2|libmd0|libbsd0|libgomp1|libx11|libxcb|libxau|libxdmcp|libdb5|libslang|libnss3|libnspr4|libsqlite3)'
# The device tool carries at most 64 MiB with the working tree.
max_mb=56

log() { printf 'device-setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
fetch() {
  if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then die "fetch needs apt (Debian 12)"; fi
  local p missing=()
  for p in "${build_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] || die "not installed here: ${missing[*]} (run scripts/setup-deps.sh first)"
  rm -rf "$debs"
  mkdir -p "$debs"
  local want=() pr
  while read -r p; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || continue
    pr=$(dpkg-query -W -f='${Priority}' "$p")
    [[ $pr == required || $pr == important ]] && continue
    [[ $p =~ $base_regex ]] && continue
    want+=("$p")
  done < <(apt-cache depends --recurse --installed --no-recommends --no-suggests --no-conflicts \
             --no-breaks --no-replaces --no-enhances "${build_packages[@]}" | grep '^[a-z0-9]' | sort -u)
  log "downloading ${#want[@]} packages into $debs (apt's candidate versions: 'apt-get update' first)"
  (cd "$debs" && apt-get download -q "${want[@]}")
  # the alternatives' links (master and slaves) as they resolve here: "link target" per line
  local name link
  : >"$debs/links.txt"
  while read -r name _; do
    update-alternatives --query "$name" 2>/dev/null |
      awk '/^$/ {exit} /^Link: / {print $2} /^ / {print $2}' |
      while read -r link; do
        [[ -e $link ]] && printf '%s %s\n' "$link" "$(readlink -f "$link")"
      done >>"$debs/links.txt"
  done < <(update-alternatives --get-selections)
  local mb
  mb=$(du -sm "$debs" | cut -f1)
  log "$(find "$debs" -name '*.deb' | wc -l) packages, $mb MB"
  ((mb <= max_mb)) || die "$mb MB is more than the device tool carries with the tree ($max_mb MB)"
}

# ---------------------------------------------------------------------------------------------
unpack() {
  compgen -G "$debs/*.deb" >/dev/null || die "no packages in $debs: run 'fetch' here and carry build-device/debs"
  rm -rf "$root"
  mkdir -p "$root"
  local f link target t
  for f in "$debs"/*.deb; do dpkg-deb -x "$f" "$root"; done
  while read -r link target; do
    [[ -e $root$target ]] || continue
    mkdir -p "$(dirname "$root$link")"
    ln -sfn "$root$target" "$root$link"
  done <"$debs/links.txt"
  # absolute links inside the packages point at / there: into the unpacked tree instead, where
  # the target came along
  while IFS= read -r -d '' f; do
    t=$(readlink "$f")
    if [[ $t == /* && $t != "$root"* && -e $root$t ]]; then ln -sfn "$root$t" "$f"; fi
  done < <(find "$root" -type l -print0)
  # the HDF5 compiler wrapper (CMake's FindHDF5 asks it for paths) knows its prefix by heart
  [[ -f $root/usr/bin/h5cc ]] && sed -i "s|^prefix=\"/usr\"|prefix=\"$root/usr\"|" "$root/usr/bin/h5cc"
  write_env
  log "unpacked $(find "$debs" -name '*.deb' | wc -l) packages into $root"
}

nccl_root() {
  local cuda=${CUDA_HOME:-/usr/local/cuda} py d
  [[ -f $cuda/include/nccl.h ]] && { echo "$cuda"; return; }
  for py in python3 /opt/torch/.venv/bin/python3; do
    d=$("$py" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) if nvidia.nccl.__file__ else list(nvidia.nccl.__path__)[0])' 2>/dev/null) || continue
    [[ -f $d/include/nccl.h ]] && { echo "$d"; return; }
  done
  echo ""
}

write_env() {
  local u=$root/usr nccl
  nccl=$(nccl_root)
  cat >"$top/env.sh" <<EOF
# Generated by scripts/device-setup.sh: the unpacked Debian libraries, for building and running.
export PATH="$u/bin:${CUDA_HOME:-/usr/local/cuda}/bin:\$PATH"
export LD_LIBRARY_PATH="$u/lib/$arch:$u/lib/$arch/openmpi/lib:$u/lib/$arch/openblas-pthread:$u/lib/$arch/hdf5/serial${nccl:+:$nccl/lib}\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PKG_CONFIG_LIBDIR="$u/lib/$arch/pkgconfig:$u/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$root"
# keep -I/usr/include and friends in the flags: they are under the sysroot here
export PKG_CONFIG_SYSTEM_INCLUDE_PATH=/nonexistent PKG_CONFIG_SYSTEM_LIBRARY_PATH=/nonexistent
export CPATH="$u/include:$u/include/$arch\${CPATH:+:\$CPATH}"
export LIBRARY_PATH="$u/lib/$arch\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CMAKE_PREFIX_PATH="$u"
export OPAL_PREFIX="$u"
export OMPI_MCA_mca_base_component_path="$u/lib/$arch/openmpi/lib/openmpi3"
export PMIX_MCA_mca_base_component_path="$u/lib/$arch/pmix2/lib/pmix"
export PMIX_INSTALL_PREFIX="$u/lib/$arch/pmix2"
export NCCL_ROOT="$nccl"
EOF
}

# ---------------------------------------------------------------------------------------------
build() {
  [[ -f $top/env.sh ]] || die "run 'unpack' first"
  # shellcheck source=/dev/null
  source "$top/env.sh"
  local u=$root/usr gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S "$repo" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CUDA_COMPILER="${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DMPI_SKIP_COMPILER_WRAPPER=ON -DMPI_C_HEADER_DIR="$u/lib/$arch/openmpi/include" \
    -DMPI_C_LIB_NAMES=mpi -DMPI_mpi_LIBRARY="$u/lib/$arch/openmpi/lib/libmpi.so" \
    -DMPIEXEC_EXECUTABLE="$u/bin/mpirun.openmpi" \
    -DHDF5_C_COMPILER_EXECUTABLE="$u/bin/h5cc" \
    -DRANDOM123_INCLUDE_DIR="$u/include"
  cmake --build "$build" -j "$(nproc)"
}

test_gpu() {
  # shellcheck source=/dev/null
  source "$top/env.sh"
  nvidia-smi -L || true
  ctest --test-dir "$build" -L gpu --output-on-failure
}

bench() {
  # shellcheck source=/dev/null
  source "$top/env.sh"
  # the twin runs in the image's own Python, outside the Debian libraries' environment
  local py
  py=$(env -u LD_LIBRARY_PATH bash -c 'command -v python3')
  printf '#!/bin/sh\nexec env -u LD_LIBRARY_PATH "%s" "$@"\n' "$py" >"$top/python3"
  chmod +x "$top/python3"
  PYTHON="$top/python3" "$repo/bench/cuda/run_cuda_bench.sh" "$build" "$@"
  PYTHON="$top/python3" "$repo/bench/diffusion/run_dit_cuda_bench.sh" "$build" || log "the DiT GPU benchmark failed (rc $?)"
  PYTHON="$top/python3" "$repo/bench/generate/run_generate_cuda_bench.sh" "$build" || log "the generation GPU benchmark failed (rc $?)"
}

all() {
  local out=${OUT:-$top/out} rc=0
  mkdir -p "$out"
  { unpack && build; } 2>&1 | tee "$out/build.log" | tail -n 40 || return 1
  test_gpu 2>&1 | tee "$out/ctest-gpu.log" || rc=1
  bench 2>&1 | tee "$out/bench.log" || rc=1
  return $rc
}

case "${1:-}" in
  fetch) fetch ;;
  unpack) unpack ;;
  build) build ;;
  test) test_gpu ;;
  bench) shift; bench "$@" ;;
  all) all ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
