"""Reads shards written by the C writer with h5py and checks every attribute, type, shape and
value; then runs the h5py snippet of data/FORMAT.md on them, so the documentation stays true.
Usage: check_h5py.py WRITE_FIXTURE_BINARY FORMAT_MD."""
import re
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:  # not a failure of Remixer: the check cannot run here
    print(f"SKIP: h5py is not importable ({e})")
    sys.exit(77)

M, T, GENRES, ROWS = 8, 16, 3, [3, 4]


def text(value):
    """Fixed-length HDF5 strings arrive as bytes in h5py; the format promises UTF-8."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def expected_mel(key):
    b = np.arange(M)[:, None]
    t = np.arange(T)[None, :]
    return (((key * 131 + b * 7 + t) % 1000).astype(np.float32) / np.float32(8) - np.float32(60))


def check_attributes(f, index):
    a = f.attrs
    assert text(a["format"]) == "remixer-mel", a["format"]
    assert int(a["format_version"]) == 2
    ints = dict(sample_rate=22050, n_fft=2048, win_length=2048, hop_length=256, n_mels=M,
                segment_frames=T, n_genres=GENRES, shard_index=index, shard_count=len(ROWS))
    for name, want in ints.items():
        assert int(a[name]) == want and a[name].dtype == np.int32, (name, a[name])
    floats = dict(fmin=0.0, fmax=11025.0, log_floor=np.float32(1e-10), norm_mean=-4.25, norm_std=2.5)
    for name, want in floats.items():
        assert a[name].dtype == np.float32 and a[name] == np.float32(want), (name, a[name])
    assert [text(g) for g in a["genre_names"]] == ["g0", "g1", "g2"], a["genre_names"]


def check_datasets(f, first_key):
    n = f["mel"].shape[0]
    assert f["mel"].dtype == np.dtype("<f4") and f["mel"].shape == (n, M, T)
    assert f["mel"].chunks == (1, M, T) and f["mel"].maxshape == (None, M, T)
    assert all(f[name].fletcher32 for name in ("mel", "genre", "source", "offset", "sources"))
    assert f["genre"].dtype == np.dtype("<i4") and f["genre"].shape == (n,)
    assert f["source"].dtype == np.dtype("<i4") and f["offset"].dtype == np.dtype("<i8")
    sources = [text(s) for s in f["sources"][:]]
    for row in range(n):
        key = first_key + row
        assert np.array_equal(f["mel"][row], expected_mel(key)), row
        assert f["genre"][row] == key % GENRES
        assert sources[f["source"][row]] == f"genre{key // 3 % 4}/file_{key // 3:03d}.wav"
        assert f["offset"][row] == (key % 3) * T
    return n


def run_documented_snippet(format_md, shard_path):
    """Executes the ```python block of FORMAT.md with its example path pointed at a real shard."""
    with open(format_md, encoding="utf-8") as f:
        code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
    names = {}
    exec(code.replace("demo-data/train/shard-00000.h5", shard_path), names)
    assert names["genres"] == ["g0", "g1", "g2"] and names["genre"] == "g0"
    assert names["source"] == "genre0/file_000.wav" and names["first_frame"] == 0
    assert np.allclose(names["log_mel"], expected_mel(0) * 2.5 - 4.25)


def main():
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.argv[1], d], check=True)
        key = 0
        for index, rows in enumerate(ROWS):
            with h5py.File(f"{d}/shard-{index:05d}.h5", "r") as f:
                check_attributes(f, index)
                assert check_datasets(f, key) == rows
                key += rows
        run_documented_snippet(sys.argv[2], f"{d}/shard-00000.h5")
    print(f"check_h5py: {sum(ROWS)} segments in {len(ROWS)} shards read back with h5py {h5py.__version__}")


if __name__ == "__main__":
    main()
