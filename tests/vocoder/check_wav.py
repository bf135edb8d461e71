#!/usr/bin/env python3
"""Reads a WAV's RIFF chunks (independently of libsndfile) and checks what remixer-reconstruct
promises: PCM 16-bit mono, the rate, the length, the metadata strings (LIST/INFO), the peak level.

  check_wav.py OUT.wav --rate R --frames N [--info KEY=SUBSTRING]... [--peak-dbfs D]
Exit 0, or 1 with a message."""
import argparse
import math
import struct
import sys


def chunks(data, start, end):
    at = start
    while at + 8 <= end:
        cid, size = data[at:at + 4], struct.unpack("<I", data[at + 4:at + 8])[0]
        yield cid, data[at + 8:at + 8 + size]
        at += 8 + size + (size & 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wav")
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--info", action="append", default=[])
    ap.add_argument("--peak-dbfs", type=float, default=None)
    a = ap.parse_args()
    data = open(a.wav, "rb").read()
    errors = []
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        print(f"FAIL: {a.wav} is not a RIFF/WAVE file", file=sys.stderr)
        return 1
    fmt = pcm = None
    info = {}
    for cid, body in chunks(data, 12, len(data)):
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            pcm = body
        elif cid == b"LIST" and body[:4] == b"INFO":
            for k, v in chunks(body, 4, len(body)):
                info[k.decode("ascii")] = v.rstrip(b"\0").decode("utf-8", "replace")
    if fmt is None or pcm is None:
        errors.append("no fmt or data chunk")
    else:
        tag, channels, rate, _, _, bits = fmt
        if (tag, channels, bits) != (1, 1, 16):
            errors.append(f"format tag {tag}, {channels} channels, {bits} bits; expected PCM, mono, 16")
        if rate != a.rate:
            errors.append(f"rate {rate}, expected {a.rate}")
        frames = len(pcm) // 2
        if frames != a.frames:
            errors.append(f"{frames} frames, expected {a.frames}")
        if a.peak_dbfs is not None and frames:
            peak = max(abs(v) for v in struct.unpack(f"<{frames}h", pcm[:2 * frames]))
            dbfs = 20 * math.log10(peak / 32767) if peak else -math.inf
            if abs(dbfs - a.peak_dbfs) > 0.01:
                errors.append(f"peak {dbfs:.3f} dBFS, expected {a.peak_dbfs}")
    for kv in a.info:
        k, _, want = kv.partition("=")
        if want not in info.get(k, ""):
            errors.append(f"INFO {k} is {info.get(k)!r}, expected it to contain {want!r}")
    for e in errors:
        print(f"FAIL: {a.wav}: {e}", file=sys.stderr)
    if not errors:
        print(f"{a.wav}: ok; INFO {sorted(info)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
