#!/usr/bin/env python3
"""A genre classifier for the demo genres, independent of every Remixer model: hand-made features of
the audio (numpy only) and a nearest-centroid rule, fitted on the demo dataset's TRAINING audio
files (the split remixer-prep chose, read from the train shards' /sources).

Features of a clip (22,050 Hz mono; STFT 1024 / hop 256, Hann):
  - spectral flatness (geometric / arithmetic mean of the power): noise pads are flat;
  - spectral centroid and its spread over time, in octaves;
  - energy in four bands (< 200 Hz, 200-1000, 1000-4000, > 4000 Hz), as fractions;
  - onset strength (positive spectral flux) mean and its peakiness (90th percentile / median):
    drums and arpeggios are percussive, chords and pads are not;
  - spectral "peakiness" (the share of power in the 20 strongest bins per frame): chords and
    arpeggios are tonal;
  - temporal stability of the spectrum (mean cosine similarity of frames 0.5 s apart).
Each feature is z-scored with the training statistics; a clip goes to the genre with the nearest
mean (Euclidean). Every training file is cut into 3 s windows.

  genre_classifier.py --data DEMO_DATASET --clips DIR        classifies DIR/<genre>-<k>.wav
  genre_classifier.py --data DEMO_DATASET --held-out          the validation files (the baseline)
Prints a line per clip and the accuracy; --min-accuracy A makes it exit 1 below A.
"""
import argparse
import os
import sys
import wave

import h5py
import numpy as np

SR = 22050
N_FFT, HOP = 1024, 256
WINDOW_S = 3.0
BANDS = (200.0, 1000.0, 4000.0)


def read_wav(path):
    with wave.open(path) as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16-bit PCM")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
        ch, rate = w.getnchannels(), w.getframerate()
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    if rate != SR:
        raise SystemExit(f"{path}: expected {SR} Hz, got {rate}")
    return x


def power_spectrogram(x):
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    win = np.hanning(N_FFT)
    n = 1 + (len(x) - N_FFT) // HOP
    frames = np.stack([x[i * HOP:i * HOP + N_FFT] * win for i in range(n)])
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12  # [frames, bins]


def features(x):
    p = power_spectrogram(x)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SR)
    total = p.sum(axis=1)
    flat = np.exp(np.mean(np.log(p), axis=1)) / np.mean(p, axis=1)
    centroid = (p * freqs).sum(axis=1) / total
    oct_centroid = np.log2(np.maximum(centroid, 20.0))
    edges = (0.0,) + BANDS + (SR / 2 + 1,)
    bands = [p[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) / total for lo, hi in zip(edges[:-1], edges[1:])]
    logp = np.log(p)
    flux = np.maximum(np.diff(logp, axis=0), 0).mean(axis=1)
    flux_peaky = np.percentile(flux, 90) / (np.median(flux) + 1e-9)
    top = np.sort(p, axis=1)[:, -20:].sum(axis=1) / total
    lag = int(0.5 * SR / HOP)
    a, b = p[:-lag], p[lag:]
    stability = np.mean((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    w = total / total.sum()  # loud frames weigh more
    return np.array([
        np.log(np.sum(w * flat)),
        np.sum(w * oct_centroid),
        np.sqrt(np.sum(w * (oct_centroid - np.sum(w * oct_centroid)) ** 2)),
        *[np.sum(w * bd) for bd in bands],
        np.log(flux.mean() + 1e-9),
        np.log(flux_peaky),
        np.sum(w * top),
        stability,
    ])


def windows(x):
    n = int(WINDOW_S * SR)
    return [x[i:i + n] for i in range(0, len(x) - n + 1, n)]


def split_files(data, split):
    """{path relative to the audio root: genre} of a split, from its shards."""
    out = {}
    folder = os.path.join(data, split)
    for shard in sorted(os.listdir(folder)):
        with h5py.File(os.path.join(folder, shard), "r") as f:
            names = [g.decode() if isinstance(g, bytes) else g for g in f.attrs["genre_names"]]
            sources = [s.decode() if isinstance(s, bytes) else s for s in f["sources"][()]]
            for src, genre in zip(f["source"][()], f["genre"][()]):
                out[sources[src]] = names[genre]
    return out


class Classifier:
    def __init__(self, data):
        audio = os.path.join(data, "audio")
        feats, labels = [], []
        for rel, genre in sorted(split_files(data, "train").items()):
            for w in windows(read_wav(os.path.join(audio, rel))):
                feats.append(features(w))
                labels.append(genre)
        feats = np.array(feats)
        self.mean, self.std = feats.mean(axis=0), feats.std(axis=0) + 1e-9
        z = (feats - self.mean) / self.std
        self.genres = sorted(set(labels))
        self.centroids = np.array([z[[l == g for l in labels]].mean(axis=0) for g in self.genres])

    def predict(self, x):
        z = (features(x) - self.mean) / self.std
        d = np.linalg.norm(self.centroids - z, axis=1)
        return self.genres[int(np.argmin(d))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the demo dataset (remixer-prep --demo DIR)")
    ap.add_argument("--clips", help="a folder of <genre>-<k>.wav")
    ap.add_argument("--held-out", action="store_true", help="classify the validation files' 3 s windows")
    ap.add_argument("--min-accuracy", type=float, default=0.0)
    args = ap.parse_args()
    clf = Classifier(args.data)
    items = []  # (name, want, audio)
    if args.held_out:
        for rel, genre in sorted(split_files(args.data, "val").items()):
            for i, w in enumerate(windows(read_wav(os.path.join(args.data, "audio", rel)))):
                items.append((f"{rel}#{i}", genre, w))
    if args.clips:
        for name in sorted(os.listdir(args.clips)):
            if name.endswith(".wav"):
                items.append((name, name.rsplit("-", 1)[0], read_wav(os.path.join(args.clips, name))))
    if not items:
        raise SystemExit("nothing to classify")
    right = 0
    for name, want, x in items:
        got = clf.predict(x)
        right += got == want
        print(f"{name}: {got}{'' if got == want else f'  (wanted {want})'}")
    acc = right / len(items)
    print(f"accuracy {acc:.3f} ({right} of {len(items)})")
    if acc < args.min_accuracy:
        print(f"FAIL: accuracy {acc:.3f} below {args.min_accuracy}")
        sys.exit(1)


if __name__ == "__main__":
    main()
