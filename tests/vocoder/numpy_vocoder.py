#!/usr/bin/env python3
"""The reference the vocoder is measured against: librosa's algorithm written out in plain numpy
(no librosa, no scipy), i.e. what a Python project would run:

  mel power = exp(x * std + mean)
  magnitude = sqrt(max(pinv(F) @ mel, 0))        (librosa's mel_to_stft *start*: the clipped
                                                   pseudo-inverse, here without the L-BFGS-B
                                                   refinement, which needs scipy)
  fast Griffin-Lim as librosa.griffinlim: random initial phase exp(2 pi i U(0, 1)), then n_iter
  times  y = istft(S * angles); R = stft(y); angles = R - m / (1 + m) * R_prev;
         angles /= |angles| + tiny; R_prev = R   and a last istft.

Same conventions as remixer-prep: 22,050 Hz, n_fft 2048, hop 256, periodic Hann, centred frames
with reflect padding, Slaney mel filterbank (librosa.filters.mel(htk=False, norm='slaney'),
written out here from its definition); float32 storage (complex64 spectra) as librosa keeps it.

  numpy_vocoder.py vocode DIR ITERATIONS SEED OUT.f32 [REPEATS]
      DIR as written by `vocoder_tool mel`; prints "seconds=<median wall time of REPEATS runs>
      cpu_seconds=<median CPU time>"
  numpy_vocoder.py sc REF.f32 Y.f32
      prints the spectral convergence || |STFT ref| - |STFT y| ||_F / || |STFT ref| ||_F
"""
import sys
import time

import numpy as np


def read_info(d):
    info = {}
    with open(f"{d}/info.txt") as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            info[k] = v
    return info


# ---------------------------------------------------------------- Slaney mel filterbank

def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    lin = f / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, lin)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sr, n_fft, n_mels, fmin, fmax):
    """Triangles between mel-spaced edges, area-normalised by 2 / (f[i+2] - f[i]); float32."""
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


# ---------------------------------------------------------------- STFT / ISTFT

class Stft:
    def __init__(self, n_fft, hop):
        self.n_fft, self.hop = n_fft, hop
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
        self._norm = {}

    def frames(self, n):
        return 1 + n // self.hop

    def forward(self, y, frames=None):
        """Centred, reflect-padded STFT, complex64 [frames, bins]."""
        n_fft, hop = self.n_fft, self.hop
        t = self.frames(len(y)) if frames is None else frames
        yp = np.pad(np.asarray(y, dtype=np.float64), n_fft // 2, mode="reflect")
        need = (t - 1) * hop + n_fft
        if len(yp) < need:
            yp = np.pad(yp, (0, need - len(yp)))
        view = np.lib.stride_tricks.sliding_window_view(yp, n_fft)[::hop][:t]
        return np.fft.rfft(view * self.window, axis=-1).astype(np.complex64)

    def inverse(self, spec, length):
        """Overlap-add of windowed inverse FFTs divided by the summed squared window (where it
        exceeds float32's tiny), centre padding removed, cut or zero-padded to `length`."""
        n_fft, hop = self.n_fft, self.hop
        t = spec.shape[0]
        fr = np.fft.irfft(spec, n=n_fft, axis=-1) * self.window
        total = n_fft + hop * (t - 1)
        y = np.zeros(total)
        if n_fft % hop == 0:
            r = n_fft // hop
            blocks = y[: (t - 1 + r) * hop].reshape(-1, hop)
            fr = fr.reshape(t, r, hop)
            for j in range(r):
                blocks[j:j + t] += fr[:, j, :]
        else:
            for i in range(t):
                y[i * hop:i * hop + n_fft] += fr[i]
        key = (t,)
        if key not in self._norm:
            ws = np.zeros(total)
            w2 = self.window ** 2
            for i in range(t):
                ws[i * hop:i * hop + n_fft] += w2
            self._norm[key] = ws
        ws = self._norm[key]
        nz = ws > np.finfo(np.float32).tiny
        y[nz] /= ws[nz]
        y = y[n_fft // 2:]
        out = np.zeros(length, dtype=np.float32)
        m = min(length, len(y))
        out[:m] = y[:m]
        return out


# ---------------------------------------------------------------- the vocoder

def mel_to_magnitude_pinv(mel_power, basis):
    inverse = np.linalg.pinv(basis) @ mel_power  # float32, as librosa's nnls starts
    np.clip(inverse, 0, None, out=inverse)
    return np.sqrt(inverse)  # [bins, frames]


def griffinlim(mag, stft, n_iter, length, momentum=0.99, seed=0):
    """librosa.griffinlim(init='random') on magnitude [frames, bins]."""
    rng = np.random.default_rng(seed)
    angles = np.exp(2j * np.pi * rng.random(mag.shape)).astype(np.complex64)
    eps = np.finfo(np.float32).tiny
    rebuilt = np.zeros(mag.shape, dtype=np.complex64)
    for _ in range(n_iter):
        tprev = rebuilt
        inverse = stft.inverse(mag * angles, length)
        rebuilt = stft.forward(inverse, frames=mag.shape[0])
        angles = rebuilt - (momentum / (1 + momentum)) * tprev
        angles /= np.abs(angles) + eps
    return stft.inverse(mag * angles, length)


def vocode(d, n_iter, seed=0):
    info = read_info(d)
    sr, n_fft, hop = int(info["sample_rate"]), int(info["n_fft"]), int(info["hop"])
    n_mels, frames, n = int(info["n_mels"]), int(info["frames"]), int(info["n"])
    mel = np.fromfile(f"{d}/mel.f32", dtype=np.float32).reshape(n_mels, frames)
    mel_power = np.exp(mel * np.float32(info["norm_std"]) + np.float32(info["norm_mean"])).astype(np.float32)
    basis = mel_filterbank(sr, n_fft, n_mels, float(info["fmin"]), float(info["fmax"]))
    stft = Stft(n_fft, hop)
    mag = mel_to_magnitude_pinv(mel_power, basis).T.astype(np.float32)
    return griffinlim(mag, stft, n_iter, n, seed=seed)


def spectral_convergence(ref, y, n_fft=2048, hop=256):
    stft = Stft(n_fft, hop)
    n = min(len(ref), len(y))
    a = np.abs(stft.forward(np.asarray(ref[:n], dtype=np.float64))).astype(np.float64)
    b = np.abs(stft.forward(np.asarray(y[:n], dtype=np.float64))).astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def main(argv):
    if len(argv) >= 5 and argv[1] == "vocode":
        d, n_iter, seed, out = argv[2], int(argv[3]), int(argv[4]), argv[5]
        repeats = int(argv[6]) if len(argv) > 6 else 1
        times, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            y = vocode(d, n_iter, seed)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        y.astype(np.float32).tofile(out)
        print(f"seconds={sorted(times)[len(times) // 2]:.4f} cpu_seconds={sorted(cpu)[len(cpu) // 2]:.4f}")
        return 0
    if len(argv) == 4 and argv[1] == "sc":
        ref = np.fromfile(argv[2], dtype=np.float32)
        y = np.fromfile(argv[3], dtype=np.float32)
        print(f"sc={spectral_convergence(ref, y):.6f}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
