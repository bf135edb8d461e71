#!/usr/bin/env python3
"""The vocoder figure: on a real-format recording's round trip (OGG Vorbis music -> the prep's
mel -> audio), the spectral convergence of our vocoder (NNLS + fast Griffin-Lim, C) against the
original STFT magnitude is at least as good as the numpy reference's (librosa's algorithm:
clipped pseudo-inverse + the same fast Griffin-Lim, numpy_vocoder.py) at 32, 64 and 100
Griffin-Lim iterations, on the same mel.

  figure.py --tool VOCODER_TOOL --music MAKE_MUSIC_SH --work DIR [--margin M]

Both outputs are scored by the same numpy code (numpy_vocoder.spectral_convergence); the SC our
tool prints (data/vocoder.c's rmx_spectral_convergence) must agree with it. Exit 0 or 1."""
import argparse
import os
import re
import subprocess
import sys

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy_vocoder  # noqa: E402

ITERATIONS = (32, 64, 100)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited with {p.returncode}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--music", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--margin", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    ogg = os.path.join(a.work, "music.ogg")
    run(["sh", a.music, ogg])
    print(run([a.tool, "mel", ogg, a.work]).strip())
    ref = np.fromfile(os.path.join(a.work, "audio.f32"), dtype=np.float32)
    rows, failures = [], []
    for n in ITERATIONS:
        ours_path = os.path.join(a.work, f"ours-{n}.f32")
        out = run([a.tool, "vocode", a.work, str(n), "default", str(a.seed), ours_path])
        c_sc = float(re.search(r"sc=([0-9.eE+-]+)", out).group(1))
        ours = np.fromfile(ours_path, dtype=np.float32)
        theirs = numpy_vocoder.vocode(a.work, n, a.seed)
        sc_ours = numpy_vocoder.spectral_convergence(ref, ours)
        sc_theirs = numpy_vocoder.spectral_convergence(ref, theirs)
        rows.append((n, sc_ours, sc_theirs))
        if abs(c_sc - sc_ours) > 1e-4:
            failures.append(f"{n} iterations: the C spectral convergence {c_sc:.6f} differs from numpy's "
                            f"{sc_ours:.6f} for the same audio")
        if not (np.isfinite(sc_ours) and sc_ours <= sc_theirs + a.margin):
            failures.append(f"{n} iterations: ours {sc_ours:.4f} is worse than numpy's {sc_theirs:.4f} "
                            f"(+{a.margin})")
    print("spectral convergence against the original STFT magnitude (lower is better)")
    print("  Griffin-Lim iterations   ours (NNLS + fast GL, C)   numpy (pinv + fast GL)")
    for n, o, t in rows:
        print(f"  {n:22d}   {o:24.4f}   {t:22.4f}")
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
