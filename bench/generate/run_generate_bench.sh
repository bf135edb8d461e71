#!/bin/sh
# Generation speed, Remixer against a PyTorch twin of the same computation, one command:
#
#   bench/generate/run_generate_bench.sh BUILD_DIR [CHECKPOINT|-] [THREADS] [COUNT] [ROUNDS]
#
# What is timed, on both sides, for COUNT clips (default 4, one batch; 1..8) of one genre (the
# checkpoint's first), one segment each (remixer-generate's default length), at remixer-generate's
# defaults (DDIM 50 steps, guidance 3, eta 0, Griffin-Lim 32): the model part (DDIM with
# classifier-free guidance, cond and uncond halves in one batch, then the decoder) and the vocoder.
# Remixer: build/bench/generate/bench_generate, which makes the calls remixer-generate makes
# (rmx_generate_mel, rmx_vocoder_run per clip). PyTorch: bench/generate/torch_generate.py (DiTTwin
# and AutoencoderTwin's decoder loaded from the same checkpoint with strict=True, the same sampler,
# and librosa's vocoder algorithm in torch: clipped pseudo-inverse + fast Griffin-Lim 32, WITHOUT
# Remixer's NNLS refinement; Remixer's vocoder is also timed without its NNLS, like for like).
#
# 1. CHECKPOINT (a stage-2 checkpoint, e.g. runs/demo-diffusion/ckpt-00004000.h5); "-" or none:
#    a small one is made in a temporary folder (remixer-prep --demo, then remixer-train with
#    configs/demo-vae.yaml and configs/demo-diffusion.yaml for 4 steps each; about a minute:
#    speed does not depend on training).
# 2. Parity, before any timing: bench_generate --dump writes Remixer's starting noise, sampled
#    latent and decoded mel (checking that its replay of the sampler equals rmx_generate_mel byte
#    for byte); torch_generate.py --check samples from that noise and stops the benchmark unless
#    latent and mel agree to 1e-4 relative 2-norm (it also checks its vocoder against
#    tests/vocoder/numpy_vocoder.py from the same initial phase).
# 3. ROUNDS (default 3) rounds, each one Remixer process then one PyTorch process (load, a short
#    warm-up, one timed generation), so slow periods of a shared machine hit both.
# 4. Medians over the rounds whose runs saw other processes below 10 % of the machine (all
#    rounds, with a warning, when none did) of wall and CPU seconds, seconds of audio per second,
#    the ratios of the medians (PyTorch / Remixer) and the split model / vocoder.
#
# Environment for PyTorch at its best, as bench/diffusion/run_dit_bench.sh: OPENBLAS_CORETYPE=
# SkylakeX where the CPU has AVX-512F and it is unset (Debian's OpenBLAS otherwise falls back to
# SSE3 kernels on this CPU), ATEN_CPU_CAPABILITY=avx512 for the twin (TORCH_ENV, a list of
# assignments, replaces it), OMP_NUM_THREADS / OPENBLAS_NUM_THREADS = THREADS (default: all
# cores) and torch.set_num_threads(THREADS); Remixer runs with --threads THREADS.
# $PYTHON (default /usr/bin/python3) needs torch, numpy, h5py, yaml. RMX_GENERATE_DEVICE=cuda runs
# both sides on the GPU (run_generate_cuda_bench.sh sets it; the parity check's twin stays on the
# CPU, against Remixer's cuda dump).
set -eu

if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [CHECKPOINT|-] [THREADS] [COUNT] [ROUNDS]" >&2
    exit 2
fi
build=$1
ckpt=${2:--}
threads=${3:-$(nproc)}
count=${4:-4}
rounds=${5:-3}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bench=$build/bench/generate/bench_generate
python=${PYTHON:-/usr/bin/python3}
[ -x "$bench" ] || { echo "$0: $bench not found; build the bench_generate target" >&2; exit 1; }
"$python" -c 'import torch, h5py, yaml, numpy' 2>/dev/null ||
    { echo "$0: $python cannot import torch, h5py, yaml and numpy" >&2; exit 1; }

if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo; then
    OPENBLAS_CORETYPE=SkylakeX
    export OPENBLAS_CORETYPE
fi
if [ -z "${TORCH_ENV+set}" ] && grep -qw avx512f /proc/cpuinfo; then
    torch_env="ATEN_CPU_CAPABILITY=avx512"
else
    torch_env=${TORCH_ENV:-}
fi
OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
export OMP_NUM_THREADS OPENBLAS_NUM_THREADS

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-generate.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}${torch_env:+; PyTorch runs with $torch_env}; threads $threads; device ${RMX_GENERATE_DEVICE:-cpu}"
echo "load before: $(uptime | sed 's/.*load average: //')"

if [ "$ckpt" = - ] || [ -z "$ckpt" ]; then
    echo "checkpoint: none given; making a small one in $work (demo data, 4 steps per stage)"
    for p in data/remixer-prep train/remixer-train; do
        [ -x "$build/$p" ] || { echo "$0: $build/$p not found (needed to make a checkpoint)" >&2; exit 1; }
    done
    d=$work/demo
    # shellcheck disable=SC2015 # the last || reports any failure of the chain
    "$build/data/remixer-prep" --demo "$d/data" > "$work/mk.log" 2>&1 &&
    "$build/train/remixer-train" "$repo/configs/demo-vae.yaml" --set "data.train=$d/data/train" \
        --set "data.val=$d/data/val" --set "run.dir=$d/vae" --set train.steps=4 --set eval.every=4 \
        --set checkpoint.every=4 --set log.every=2 >> "$work/mk.log" 2>&1 &&
    "$build/train/remixer-train" "$repo/configs/demo-diffusion.yaml" --set "data.train=$d/data/train" \
        --set "data.val=$d/data/val" --set "run.dir=$d/dit" --set "autoencoder.checkpoint=$d/vae/ckpt-00000004.h5" \
        --set train.steps=4 --set eval.every=4 --set checkpoint.every=4 --set log.every=2 \
        --set diffusion.latent_samples=16 --set diffusion.sample_steps=2 >> "$work/mk.log" 2>&1 ||
        { cat "$work/mk.log"; echo "$0: could not make a checkpoint" >&2; exit 1; }
    ckpt=$d/dit/ckpt-00000004.h5
fi
[ -f "$ckpt" ] || { echo "$0: $ckpt: no such checkpoint" >&2; exit 1; }
echo "checkpoint: $ckpt"

device=${RMX_GENERATE_DEVICE:-cpu}
common="--count $count --threads $threads --device $device"
echo "parity: Remixer dumps its noise, latent and mel; the twin samples from the same noise"
mkdir -p "$work/dump"
# shellcheck disable=SC2086 # $common is a list of options
"$bench" "$ckpt" $common --dump "$work/dump" | sed 's/^/    /'
# shellcheck disable=SC2086 # TORCH_ENV is a list of assignments
if ! env $torch_env "$python" "$here/torch_generate.py" "$ckpt" --threads "$threads" --check "$work/dump" \
        > "$work/check" 2>&1; then
    sed 's/^/    /' "$work/check"
    echo "$0: the twin does not compute what Remixer computes: no timing" >&2
    exit 1
fi
sed 's/^/    /' "$work/check"

i=1
while [ "$i" -le "$rounds" ]; do
    echo "round $i/$rounds: Remixer"
    # shellcheck disable=SC2086
    "$bench" "$ckpt" $common --repeats 1 > "$work/remixer.$i" 2>&1 || { cat "$work/remixer.$i"; exit 1; }
    sed -n 's/^RESULT /    /p' "$work/remixer.$i"
    sed -n 's/^RESULT //p' "$work/remixer.$i" >> "$work/remixer.res"
    echo "round $i/$rounds: PyTorch"
    # shellcheck disable=SC2086
    env $torch_env "$python" "$here/torch_generate.py" "$ckpt" $common --repeats 1 > "$work/torch.$i" 2>&1 ||
        { cat "$work/torch.$i"; exit 1; }
    sed -n 's/^RESULT /    /p' "$work/torch.$i"
    sed -n 's/^RESULT //p' "$work/torch.$i" >> "$work/torch.res"
    i=$((i + 1))
done
echo "load after: $(uptime | sed 's/.*load average: //')"
head -n 1 "$work/remixer.1" | sed 's/^/Remixer: /'
sed -n '1s/^twin: /PyTorch: /p' "$work/torch.1"

"$python" - "$work/remixer.res" "$work/torch.res" "$(sed -n 's/^CHECK //p' "$work/check")" <<'EOF'
import statistics
import sys


def runs(path):
    out = []
    for line in open(path):
        out.append({k: float(v) for k, v in (f.split("=") for f in line.split())})
    return out


def kept(name, rs):
    quiet = [r for r in rs if r["foreign_cpu_pct"] < 10]
    load = ", ".join(f"{r['foreign_cpu_pct']:.0f}" for r in rs)
    if quiet:
        print(f"{name}: {len(quiet)} of {len(rs)} runs below 10 % load from other processes ({load} %)")
        return quiet
    print(f"{name}: WARNING: every run shared the CPU with other processes ({load} % of the machine); "
          "wall times are pessimistic, CPU times steadier")
    return rs


r_all, t_all = runs(sys.argv[1]), runs(sys.argv[2])
r, t = kept("Remixer", r_all), kept("PyTorch", t_all)
med = lambda rs, k: statistics.median(x[k] for x in rs)
for rs in (r, t):
    for x in rs:
        x["total_s"] = x["model_s"] + x["vocoder_s"]
        x["total_cpu_s"] = x["model_cpu_s"] + x["vocoder_cpu_s"]
for x in r:
    x["pinv_total_s"] = x["model_s"] + x["vocoder_pinv_s"]
    x["pinv_total_cpu_s"] = x["model_cpu_s"] + x["vocoder_pinv_cpu_s"]
audio = r[0]["audio_s"]
print(f"\nsummary: {audio:.2f} s of audio per generation; medians over the kept runs; parity: {sys.argv[3]}")
print(f"  {'':44s} {'Remixer':>10s} {'PyTorch':>10s} {'PyT/Rmx':>8s}")


def row(label, rk, tk, unit="s"):
    a, b = med(r, rk), med(t, tk)
    print(f"  {label:44s} {a:9.3f}{unit} {b:9.3f}{unit} {b / a:8.2f}")


row("sampler + decode, wall", "model_s", "model_s")
row("vocoder, wall", "vocoder_s", "vocoder_s")
row("total, wall", "total_s", "total_s")
row("sampler + decode, CPU", "model_cpu_s", "model_cpu_s")
row("vocoder, CPU", "vocoder_cpu_s", "vocoder_cpu_s")
row("total, CPU", "total_cpu_s", "total_cpu_s")
ra, ta = audio / med(r, "total_s"), audio / med(t, "total_s")
rc, tc = audio / med(r, "total_cpu_s"), audio / med(t, "total_cpu_s")
print(f"  {'audio seconds per wall second':44s} {ra:10.3f} {ta:10.3f}")
print(f"  {'audio seconds per CPU second':44s} {rc:10.3f} {tc:10.3f}")
def split(rs, suffix):
    m, v = med(rs, "model" + suffix), med(rs, "vocoder" + suffix)
    return f"model {100 * m / (m + v):.0f} % / vocoder {100 * v / (m + v):.0f} %"


print(f"  split (of the sum of the two medians), wall: Remixer {split(r, '_s')}; PyTorch {split(t, '_s')}")
print(f"  split (of the sum of the two medians), CPU:  Remixer {split(r, '_cpu_s')}; PyTorch {split(t, '_cpu_s')}")
print("  like for like (Remixer's vocoder without its NNLS, i.e. pinv + fast GL 32 as the twin's):")
row("  vocoder (pinv), wall", "vocoder_pinv_s", "vocoder_s")
row("  vocoder (pinv), CPU", "vocoder_pinv_cpu_s", "vocoder_cpu_s")
row("  total (pinv vocoder), wall", "pinv_total_s", "total_s")
row("  total (pinv vocoder), CPU", "pinv_total_cpu_s", "total_cpu_s")
print(f"RATIO speed Remixer / PyTorch (ratio of median totals, >1: Remixer faster): "
      f"wall {med(t, 'total_s') / med(r, 'total_s'):.2f}, CPU {med(t, 'total_cpu_s') / med(r, 'total_cpu_s'):.2f}")
EOF
