"""Reads a remixer-prep output folder back with h5py and checks it against the options it was made with.

usage: check_shards.py OUTDIR TRAIN_SHARDS VAL_SHARDS GENRES key=value...
  GENRES is a comma-separated list; each key=value is a root attribute (numbers compared as float32).
Checks: the attributes round-trip; every shard has the same parameters and the dataset's genre
names; shard_index/shard_count number the shards; /mel is float32 [N, n_mels, segment_frames];
genres are in range; offsets step by segment_frames within a source; no source file is in both
train and val (split by file); every genre with 2+ files has a val file; the stored train data
has mean 0 and std 1 (the normalisation was computed on train and applied); the stored values
map back to log-mel values not below log(log_floor).
Exit 77 (skip) when h5py is missing."""
import glob
import os
import sys

try:
    import h5py
    import numpy as np
except ImportError:
    print("h5py/numpy not available: skipped")
    sys.exit(77)

failures = []


def check(cond, message):
    if not cond:
        failures.append(message)


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def read_split(outdir, split, expected_count, genres, attrs):
    paths = sorted(glob.glob(os.path.join(outdir, split, "shard-*.h5")))
    check(len(paths) == expected_count, f"{split}: {len(paths)} shards, expected {expected_count}")
    names = [os.path.basename(p) for p in paths]
    check(names == [f"shard-{i:05d}.h5" for i in range(len(paths))], f"{split}: shard names {names}")
    mel_all, genre_all, sources = [], [], {}
    for i, path in enumerate(paths):
        with h5py.File(path, "r") as f:
            a = f.attrs
            check(text(a["format"]) == "remixer-mel", f"{path}: format {a['format']!r}")
            check(int(a["format_version"]) == 2, f"{path}: format_version {a['format_version']}")
            check(all(f[n].fletcher32 for n in ("mel", "genre", "source", "offset", "sources")),
                  f"{path}: a dataset lacks Fletcher32 checksums")
            for key, want in attrs.items():
                got = a[key]
                check(np.float32(got) == np.float32(want), f"{path}: attribute {key} is {got}, expected {want}")
            check([text(g) for g in a["genre_names"]] == genres, f"{path}: genre_names {list(a['genre_names'])}")
            check(int(a["n_genres"]) == len(genres), f"{path}: n_genres {a['n_genres']}")
            check(int(a["shard_index"]) == i, f"{path}: shard_index {a['shard_index']}, expected {i}")
            check(int(a["shard_count"]) == len(paths), f"{path}: shard_count {a['shard_count']}")
            mel = f["mel"]
            check(mel.dtype == np.float32, f"{path}: /mel dtype {mel.dtype}")
            check(mel.shape[1:] == (int(attrs["n_mels"]), int(attrs["segment_frames"])), f"{path}: /mel shape {mel.shape}")
            check(mel.shape[0] > 0, f"{path}: empty shard")
            genre = f["genre"][:]
            check(len(genre) == mel.shape[0] and genre.min() >= 0 and genre.max() < len(genres), f"{path}: /genre {genre}")
            src = [text(f["sources"][j]) for j in f["source"][:]]
            offsets = f["offset"][:]
            for s, off, g in zip(src, offsets, genre):
                sources.setdefault(s, []).append((int(off), int(g)))
            mel_all.append(mel[:])
            genre_all.append(genre)
            norm = (float(a["norm_mean"]), float(a["norm_std"]))
    for s, segs in sources.items():
        offs = [o for o, _ in segs]
        step = int(attrs["segment_frames"])
        check(offs == list(range(0, step * len(offs), step)), f"{split}: {s} offsets {offs}")
        check(len({g for _, g in segs}) == 1, f"{split}: {s} has several genres")
        check(genres[segs[0][1]] == s.split("/")[0], f"{split}: {s} labelled {genres[segs[0][1]]}")
    return np.concatenate(mel_all) if mel_all else None, sources, norm


def main():
    outdir, n_train, n_val, genres = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
    attrs = dict(kv.split("=", 1) for kv in sys.argv[5:])
    attrs = {k: float(v) for k, v in attrs.items()}
    required = ["sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "fmin", "fmax", "log_floor", "segment_frames"]
    missing = [k for k in required if k not in attrs]
    if missing:
        print("check_shards.py: give every parameter; missing", missing)
        return 2
    train, train_src, norm = read_split(outdir, "train", n_train, genres, attrs)
    val, val_src, val_norm = read_split(outdir, "val", n_val, genres, attrs)
    check(norm == val_norm, f"train and val normalisation differ: {norm} vs {val_norm}")
    check(not set(train_src) & set(val_src), f"files in both splits: {set(train_src) & set(val_src)}")
    per_genre = {}
    for s in list(train_src) + list(val_src):
        per_genre.setdefault(s.split("/")[0], []).append(s)
    for g, files in per_genre.items():
        if len(files) >= 2:
            check(any(s in val_src for s in files), f"genre {g} has {len(files)} files but none in val")
    mean, std = float(train.astype(np.float64).mean()), float(train.astype(np.float64).std())
    check(abs(mean) < 1e-3 and abs(std - 1) < 1e-3, f"stored train data has mean {mean:.6f}, std {std:.6f}")
    logmel = train.astype(np.float64) * norm[1] + norm[0]
    check(logmel.min() >= np.log(attrs["log_floor"]) - 1e-3, f"log-mel {logmel.min()} below log(floor)")
    print(f"{outdir}: {len(train)} train and {len(val)} val segments, {len(train_src)}+{len(val_src)} files; "
          f"train mean {mean:.2e} std {std:.6f}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
