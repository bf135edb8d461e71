#!/usr/bin/env python3
"""remixer-serve end to end: the real server on tiny stage-2 and stage-3 checkpoints, real HTTP on
loopback. Each subcommand is one ctest test; it exits 1 with a message on failure (77: skipped).

  models   (fixture) the demo audio at 32 mels x 64 frames; a stage-1 autoencoder, a stage-2
           transformer and a stage-3 remix run on it (tests/remix's tiny settings), one rank each
  api      every endpoint and every bad input: the page and its files (nothing from elsewhere),
           /healthz, /api/info, generate and remix jobs whose bytes equal remixer-generate's and
           remixer-remix's, progress, 409 before a result exists, JSON errors naming the field
           (bad JSON, wrong types, ranges, unknown fields and genres, uploads that are not audio,
           empty, missing or too long, an operation the model lacks), 413 for a body over the
           limit (Content-Length and chunked), 503 with Retry-After when the queue is full, 404/405,
           a stalled client cut off by the timeout, garbage on the socket, results that expire by
           count and by time
  load     concurrent clients beyond the queue for a bounded time: every request answered 2xx or
           503, every finished job's WAV whole, the server's VmRSS flat; p50/p99 job latency
  sigterm  SIGTERM while jobs run and wait: exit 0 within the grace period, queued and running jobs
           cancelled, no result served that is not whole; and with a grace period shorter than a
           job, exit 0 within it
  browser  Debian's chromium (headless, selenium): the page on a phone-width window, a genre
           chosen and generated with the keyboard only, the player's WAV of the requested length;
           a remix of two uploaded files through the same view; screenshots
"""
import argparse
import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "checkpoint"))
sys.path.insert(0, os.path.join(HERE, "..", "remix"))
from ckpt_checks import ckpt_name, env_with, fail, fresh_dir  # noqa: E402
from remix_checks import AE, AE_STEPS, DIT, DIT_STEPS, TINY  # noqa: E402

SKIP = 77
REMIX_STEPS = 4
GENRES = ["arpeggio", "chords", "drums", "noise"]
RATE = 22050
FAST = {"steps": 10, "iterations": 4}
SECONDS = 4.0  # the browser's clip: long enough (default 50 steps) for the page to show progress part-way  # cheap jobs: length and format are what is checked


# ---- the server ----

class Server:
    """remixer-serve on a free loopback port; its output is collected in the background."""

    def __init__(self, binary, ckpt, args=(), cwd=None):
        self.cmd = [binary, ckpt, "--port", "0", "--device", "cpu"] + list(args)
        print("$ " + " ".join(self.cmd), flush=True)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env_with(), cwd=cwd)
        self.lines = []
        self.port = None
        deadline = time.time() + 60
        while self.port is None:
            line = self.proc.stdout.readline()
            if not line:
                fail(f"remixer-serve exited ({self.proc.wait()}) before listening:\n" + "".join(self.lines))
            self.lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
            if time.time() > deadline:
                fail("remixer-serve did not start listening within 60 s")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self):
        return "".join(self.lines)

    def connect(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """(status, headers, body bytes) on a fresh connection (or conn)."""
        c = conn or self.connect()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            if conn is None:
                c.close()

    def json(self, method, path, doc=None, raw=None, headers=None, conn=None):
        body = raw if raw is not None else (json.dumps(doc).encode() if doc is not None else None)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        status, h, data = self.request(method, path, body, hdrs, conn)
        try:
            return status, h, json.loads(data)
        except ValueError:
            fail(f"{method} {path}: answer {status} is not JSON: {data[:200]!r}")

    def wait_job(self, job_id, timeout=120, seen=None):
        deadline = time.time() + timeout
        while True:
            status, _, doc = self.json("GET", f"/api/jobs/{job_id}")
            if status != 200:
                fail(f"job {job_id}: GET answered {status} {doc}")
            if seen is not None:
                seen.append(doc["progress"])
            if doc["state"] in ("done", "failed", "cancelled"):
                return doc
            if time.time() > deadline:
                fail(f"job {job_id} still {doc['state']} after {timeout} s")
            time.sleep(0.05)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail(f"remixer-serve did not exit within {timeout} s of SIGTERM")
        if rc != 0:
            fail(f"remixer-serve exited {rc} after SIGTERM:\n{self.output()}")


def multipart(fields, files):
    """(body, content type) of a multipart/form-data request; files: name -> (filename, bytes)."""
    boundary = "rmxboundary%016x" % random.getrandbits(64)
    out = []
    for name, value in fields.items():
        out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode())
    for name, (filename, data) in files.items():
        out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                   f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def wav_info(data, what):
    """(rate, frames) of WAV bytes, which must be a whole 16-bit mono file."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        fail(f"{what}: not a WAV file: {data[:16]!r}")
    riff = struct.unpack("<I", data[4:8])[0]
    if riff + 8 != len(data):
        fail(f"{what}: the RIFF header says {riff + 8} bytes, got {len(data)}: not whole")
    import io
    with wave.open(io.BytesIO(data)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            fail(f"{what}: expected 16-bit mono, got {w.getnchannels()} channels of {w.getsampwidth()} bytes")
        return w.getframerate(), w.getnframes()


def expect_error(what, got, status, field):
    st, h, doc = got
    if st != status or not isinstance(doc, dict) or not doc.get("error") or doc.get("field", "") != field:
        fail(f"{what}: expected {status} naming field '{field}', got {st} {doc}")
    if "application/json" not in h.get("content-type", ""):
        fail(f"{what}: the error is not JSON ({h.get('content-type')})")
    print(f"{what}: {st} {field}: {doc['error'][:90]}", flush=True)
    return doc


def raw_exchange(port, data, timeout=10):
    """Sends bytes on a fresh socket and returns what comes back until the server closes or times out."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                if m and len(rest) >= int(m.group(1)):
                    break
        return out
    finally:
        s.close()


def write_wav(path, seconds, rate=RATE, freq=330.0, width=2):
    """A sine as mono PCM of `width` bytes (1: unsigned 8-bit, 2: signed 16-bit)."""
    import math
    n = int(seconds * rate)
    wave_at = [math.sin(2 * math.pi * freq * i / rate) for i in range(n)]
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 1:
            w.writeframes(bytes(128 + int(32 * x) for x in wave_at))
        else:
            w.writeframes(b"".join(struct.pack("<h", int(8000 * x)) for x in wave_at))


class Checks:
    def __init__(self, a):
        self.a = a
        self.work = a.work

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    @property
    def stage2(self):
        return self.path("dit", ckpt_name(DIT_STEPS))

    @property
    def stage3(self):
        return self.path("remix", ckpt_name(REMIX_STEPS))

    def audio(self, genre, k=0):
        return self.path("demo", "audio", genre, f"{genre}-{k:02d}.wav")

    def run(self, cmd, cwd=None):
        print("$ " + " ".join(cmd), flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env_with(), cwd=cwd, timeout=600)
        if p.returncode != 0:
            print(p.stdout + p.stderr)
            fail(f"exit code {p.returncode}")
        return p.stdout + p.stderr

    # ---- fixture ----

    def check_models(self):
        prep, train, configs = self.a.prep, self.a.train, self.a.configs
        fresh_dir(self.work)
        self.run([prep, "--demo", self.path("demo")])
        data = self.path("small")
        self.run([prep, "--mels", "32", "--segment", "64", "--shards", "2", self.path("demo", "audio"), data])
        data_args = ["--set", f"data.train={data}/train", "--set", f"data.val={data}/val"]
        ae = self.path("ae", ckpt_name(AE_STEPS))
        self.run([train, os.path.join(configs, "demo-vae.yaml")] + data_args +
                 ["--set", f"run.dir={fresh_dir(self.path('ae'))}"] + AE)
        self.run([train, os.path.join(configs, "demo-diffusion.yaml")] + data_args +
                 ["--set", f"run.dir={fresh_dir(self.path('dit'))}", "--set", f"autoencoder.checkpoint={ae}"] + DIT)
        self.run([train, os.path.join(configs, "demo-remix.yaml")] + data_args + TINY +
                 ["--set", f"run.dir={fresh_dir(self.path('remix'))}", "--set", f"diffusion.checkpoint={self.stage2}",
                  "--set", f"train.steps={REMIX_STEPS}", "--set", "eval.every=0", "--set", "checkpoint.every=0"])
        for ckpt in (self.stage2, self.stage3):
            if not os.path.exists(ckpt):
                fail(f"the fixture must leave {ckpt}")
        print(f"stage-2 checkpoint {self.stage2}, stage-3 checkpoint {self.stage3}")

    # ---- api ----

    def check_page(self, srv):
        status, h, page = srv.request("GET", "/")
        if status != 200 or "text/html" not in h.get("content-type", "") or b'id="genre"' not in page:
            fail(f"GET / answered {status} {h.get('content-type')}")
        if "default-src 'self'" not in h.get("content-security-policy", ""):
            fail("the page must be served with a Content-Security-Policy of 'self'")
        for name, kind in (("/app.js", "javascript"), ("/style.css", "text/css")):
            st, hh, body = srv.request("GET", name)
            if st != 200 or kind not in hh.get("content-type", "") or not body:
                fail(f"GET {name} answered {st} {hh.get('content-type')}")
            page += body
        if re.search(rb"(src|href)=[\"']?(https?:)?//", page) or re.search(rb"import\s*\(?[\"']https?:", page):
            fail("the page loads something from elsewhere")
        print("the page, its script and its style: served from the binary, nothing from elsewhere")

    def check_generate_job(self, srv):
        req = dict(genre="drums", seconds=1.5, seed=7, **FAST)
        status, _, doc = srv.json("POST", "/api/generate", req)
        if status != 202 or not re.fullmatch(r"[0-9a-f]{32}", doc.get("id", "")):
            fail(f"POST /api/generate answered {status} {doc}")
        seen = []
        done = srv.wait_job(doc["id"], seen=seen)
        if done["state"] != "done" or seen != sorted(seen) or done["progress"] != 1.0:
            fail(f"the job ended {done} with progress {seen}")
        st, h, wav = srv.request("GET", f"/api/jobs/{doc['id']}/audio.wav")
        if st != 200 or h.get("content-type") != "audio/wav":
            fail(f"audio.wav answered {st} {h.get('content-type')}")
        rate, frames = wav_info(wav, "audio.wav")
        if rate != RATE or frames != round(1.5 * RATE):
            fail(f"audio.wav: {frames} frames at {rate} Hz, expected {round(1.5 * RATE)} at {RATE}")
        st, h, png = srv.request("GET", f"/api/jobs/{doc['id']}/mel.png")
        if st != 200 or h.get("content-type") != "image/png" or png[:8] != b"\x89PNG\r\n\x1a\n":
            fail(f"mel.png answered {st} {h.get('content-type')} {png[:8]!r}")
        width, height = struct.unpack(">II", png[16:24])
        if height != 32 + 8 or width != 1.5 * RATE // 256 + 1 + 8:
            fail(f"mel.png is {width} x {height}: expected the clip's frames x 32 mels with a 4-pixel border")
        out = fresh_dir(self.path("api-generate"))
        self.run([self.a.generate, self.stage2, "--genre", "drums", "--seconds", "1.5", "--seed", "7", "--steps", "10",
                  "--iterations", "4", "--out", out])
        if open(os.path.join(out, "drums-0.wav"), "rb").read() != wav:
            fail("the service's WAV differs from remixer-generate's for the same options")
        print(f"generate: 202, progress {len(seen)} polls rising to 1, a {frames}-frame WAV byte-identical to "
              f"remixer-generate's, a {width}x{height} PNG")
        return doc["id"]

    def check_generate_errors(self, srv):
        g = "/api/generate"
        cases = [("bad JSON", dict(raw=b"{genre: drums"), 400, "body"),
                 ("not an object", dict(raw=b"[1, 2]"), 400, "body"),
                 ("an empty body", dict(raw=b""), 400, "body"),
                 ("no genre", dict(doc={"seconds": 1}), 400, "genre"),
                 ("a genre of the wrong type", dict(doc={"genre": 3}), 400, "genre"),
                 ("an unknown genre", dict(doc={"genre": "polka"}), 422, "genre"),
                 ("seconds as a string", dict(doc={"genre": "drums", "seconds": "long"}), 400, "seconds"),
                 ("seconds over --max-seconds", dict(doc={"genre": "drums", "seconds": 999}), 422, "seconds"),
                 ("seconds 0", dict(doc={"genre": "drums", "seconds": 0}), 422, "seconds"),
                 ("steps a fraction", dict(doc={"genre": "drums", "steps": 1.5}), 400, "steps"),
                 ("steps 0", dict(doc={"genre": "drums", "steps": 0}), 422, "steps"),
                 ("guidance negative", dict(doc={"genre": "drums", "cfg": -1}), 422, "cfg"),
                 ("a negative seed", dict(doc={"genre": "drums", "seed": -1}), 422, "seed"),
                 ("a boolean seed", dict(doc={"genre": "drums", "seed": True}), 400, "seed"),
                 ("an unknown field", dict(doc={"genre": "drums", "colour": "red"}), 400, "colour")]
        for what, kw, status, field in cases:
            expect_error(f"generate, {what}", srv.json("POST", g, **kw), status, field)
        body, ctype = multipart({"strength": "0.5"}, {"original": ("a.wav", b"x"), "style": ("b.wav", b"y")})
        st, h, data = srv.request("POST", "/api/remix", body, {"Content-Type": ctype})
        expect_error("remix on a stage-2 model", (st, h, json.loads(data)), 422, "operation")

    def check_limits(self, srv, max_bytes):
        big = max_bytes + 1024
        head = (f"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {big}\r\n\r\n").encode()
        out = raw_exchange(srv.port, head + b" " * 4096)
        if not out.startswith(b"HTTP/1.1 413") or b'"field":"body"' not in out:
            fail(f"a Content-Length over the limit: expected 413 naming the body, got {out[:200]!r}")
        print("a Content-Length over --max-upload-mb: 413 before the body is read")
        chunk = b"x" * 65536
        body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(big // len(chunk) + 1)) + b"0\r\n\r\n"
        head = b"POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        out = raw_exchange(srv.port, head + body)
        if not out.startswith(b"HTTP/1.1 413"):
            fail(f"a chunked body over the limit: expected 413, got {out[:200]!r}")
        print("a chunked body over --max-upload-mb: 413, the body discarded")

    def check_routes(self, srv, done_id):
        other = "%032x" % random.getrandbits(128)
        for what, method, path, status, field in [
                ("an unknown job", "GET", f"/api/jobs/{other}", 404, "id"),
                ("a malformed job id", "GET", "/api/jobs/xyz", 404, "id"),
                ("an unknown job's audio", "GET", f"/api/jobs/{other}/audio.wav", 404, "id"),
                ("an unknown resource of a job", "GET", f"/api/jobs/{done_id}/other", 404, ""),
                ("an unknown endpoint", "GET", "/api/nothing", 404, ""),
                ("an unknown page", "GET", "/nothing.html", 404, ""),
                ("DELETE /api/generate", "DELETE", "/api/generate", 405, "method"),
                ("GET /api/generate", "GET", "/api/generate", 405, "method"),
                ("POST /healthz", "POST", "/healthz", 405, "method")]:
            expect_error(what, srv.json(method, path), status, field)

    def check_queue(self, srv):
        """One long job runs, the queue (2) fills, the next is refused with 503 and Retry-After."""
        slow = {"genre": "noise", "seconds": 5, "steps": 1000, "iterations": 4}
        status, _, first = srv.json("POST", "/api/generate", slow)
        if status != 202:
            fail(f"the long job: {status} {first}")
        st, _, doc = srv.json("GET", f"/api/jobs/{first['id']}/audio.wav")
        expect_error("a result before the job is done", (st, _, doc), 409, "")
        ids, refused = [first["id"]], None
        for _ in range(6):
            st, h, doc = srv.json("POST", "/api/generate", dict(genre="drums", seconds=0.2, **FAST))
            if st == 202:
                ids.append(doc["id"])
            elif st == 503:
                refused = (st, h, doc)
                break
            else:
                fail(f"while the queue fills: {st} {doc}")
        if not refused or refused[1].get("retry-after") != "2" or "queue is full" not in refused[2]["error"]:
            fail(f"a full queue: expected 503 with Retry-After after 3 jobs, got {refused}")
        if len(ids) != 3:
            fail(f"one running and --max-queue 2 waiting: 3 jobs accepted, got {len(ids)}")
        st, _, doc = srv.json("GET", f"/api/jobs/{ids[-1]}")
        if doc["state"] != "queued" or doc.get("queue_position") != 1:
            fail(f"the last accepted job: expected queued at position 1, got {doc}")
        print(f"queue full: 503, Retry-After {refused[1]['retry-after']}: {refused[2]['error']}")
        for i in ids:
            if srv.wait_job(i, timeout=300)["state"] != "done":
                fail(f"job {i} did not finish")
        return ids

    def check_slow_client(self, srv, timeout_s):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout_s + 10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
        t0 = time.time()
        try:
            got = s.recv(1024)
        except ConnectionResetError:
            got = b""
        waited = time.time() - t0
        s.close()
        if got or waited > timeout_s + 3:
            fail(f"a stalled client: expected the connection closed after ~{timeout_s} s, got {got!r} after {waited:.1f} s")
        print(f"a stalled client: closed after {waited:.1f} s (--client-timeout {timeout_s})")

    def check_garbage(self, srv):
        rng = random.Random(1)
        samples = [b"\x00" * 100, b"GET / HTTP/9.9\r\n\r\n", b"POST /api/generate HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                   b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"\r\n\r\n\r\n",
                   b"POST /api/remix HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=\r\n"
                   b"Content-Length: 10\r\n\r\n--\r\n\r\n--\r\n"]
        samples += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000))) for _ in range(40)]
        for data in samples:
            raw_exchange(srv.port, data, timeout=5)
        st, _, doc = srv.json("GET", "/healthz")
        if st != 200 or srv.proc.poll() is not None:
            fail(f"after {len(samples)} garbage requests the server answers {st} {doc}")
        print(f"{len(samples)} garbage requests: the server still answers /healthz")

    def check_usage(self):
        """The command line: --help, refused checkpoints, bad options, a port in use."""
        def code(args, want, text):
            p = subprocess.run([self.a.serve] + args, capture_output=True, text=True, env=env_with(), timeout=60)
            if p.returncode != want or text not in p.stdout + p.stderr:
                fail(f"remixer-serve {' '.join(args)}: expected exit {want} with '{text}', got {p.returncode}: "
                     f"{p.stdout + p.stderr}")
            print(f"remixer-serve {' '.join(args)[-60:]}: exit {want}")
        code(["--help"], 0, "exit codes:")
        code([self.path("none.h5")], 4, "none.h5")
        code([self.path("ae", ckpt_name(AE_STEPS))], 4, "is a checkpoint of stage vae")
        code([self.stage2, "--workers", "0"], 2, "--workers: expected an integer from 1")
        code([self.stage2, "--host", "example.com"], 2, "--host: expected an IPv4 or IPv6 address")
        code([self.stage2, "--colour"], 2, "--colour needs a value")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            code([self.stage2, "--device", "cpu", "--port", str(taken.getsockname()[1])], 1, "cannot listen")

    def check_api(self):
        self.check_usage()
        limit_mb = 1
        srv = Server(self.a.serve, self.stage2, ["--workers", "1", "--max-queue", "2", "--max-upload-mb", str(limit_mb),
                                                 "--max-seconds", "5", "--client-timeout", "2", "--max-results", "4"])
        try:
            st, _, doc = srv.json("GET", "/healthz")
            if st != 200 or doc != {"status": "ok"}:
                fail(f"/healthz answered {st} {doc}")
            st, _, info = srv.json("GET", "/api/info")
            if (st != 200 or info["stage"] != "diffusion" or info["operations"] != ["generate"] or
                    info["genres"] != GENRES or info["limits"]["max_seconds"] != 5 or
                    info["limits"]["max_upload_bytes"] != limit_mb << 20 or info["model"]["sample_rate"] != RATE):
                fail(f"/api/info answered {st} {info}")
            print(f"/api/info: {json.dumps(info)[:160]}...")
            self.check_page(srv)
            done_id = self.check_generate_job(srv)
            self.check_generate_errors(srv)
            self.check_limits(srv, limit_mb << 20)
            self.check_routes(srv, done_id)
            ids = self.check_queue(srv)
            # 1 + 3 finished jobs now, --max-results 4: one more and the oldest goes
            st, _, doc = srv.json("POST", "/api/generate", dict(genre="chords", seconds=0.2, **FAST))
            srv.wait_job(doc["id"])
            expect_error("the oldest result beyond --max-results", srv.json("GET", f"/api/jobs/{done_id}"), 404, "id")
            if srv.json("GET", f"/api/jobs/{ids[0]}")[0] != 200:
                fail("a newer result must still be kept")
            self.check_slow_client(srv, 2)
            self.check_garbage(srv)
        finally:
            srv.stop()
        self.check_remix_api()

    def remix_fields(self, original, style, **fields):
        files = {"original": (os.path.basename(original), open(original, "rb").read()),
                 "style": (os.path.basename(style), open(style, "rb").read())}
        return multipart({k: str(v) for k, v in fields.items()}, files)

    def check_remix_api(self):
        folder = fresh_dir(self.path("api-remix"))
        original, style = self.audio("drums"), self.audio("arpeggio")
        for f in (original, style):
            shutil.copy(f, folder)
        srv = Server(self.a.serve, self.stage3, ["--max-seconds", "13", "--max-upload-mb", "3", "--result-ttl", "3"])
        try:
            st, _, info = srv.json("GET", "/api/info")
            if info["stage"] != "remix" or info["operations"] != ["remix"]:
                fail(f"/api/info of a stage-3 model: {info}")
            body, ctype = self.remix_fields(original, style, strength=0.5, **FAST)
            st, _, data = srv.request("POST", "/api/remix", body, {"Content-Type": ctype})
            doc = json.loads(data)
            if st != 202:
                fail(f"POST /api/remix answered {st} {doc}")
            if srv.wait_job(doc["id"])["state"] != "done":
                fail(f"the remix job failed: {srv.json('GET', '/api/jobs/' + doc['id'])}")
            wav = srv.request("GET", f"/api/jobs/{doc['id']}/audio.wav")[2]
            rate, frames = wav_info(wav, "remix audio.wav")
            with wave.open(original) as w:
                want = w.getnframes()
            if frames != want:
                fail(f"the remix has {frames} frames, the original {want}")
            self.run([self.a.remix, self.stage3, "--original", os.path.basename(original), "--style",
                      os.path.basename(style), "-o", "cli.wav", "--strength", "0.5", "--steps", "10",
                      "--iterations", "4"], cwd=folder)
            if open(os.path.join(folder, "cli.wav"), "rb").read() != wav:
                fail("the service's remix differs from remixer-remix's for the same inputs and options")
            print(f"remix (multipart): 202, a {frames}-frame WAV byte-identical to remixer-remix's")
            b64 = {"original": base64.b64encode(open(original, "rb").read()).decode(),
                   "style": base64.b64encode(open(style, "rb").read()).decode(),
                   "original_name": os.path.basename(original), "style_name": os.path.basename(style),
                   "strength": 0.5, **FAST}
            st, _, doc = srv.json("POST", "/api/remix", b64)
            if st != 202 or srv.wait_job(doc["id"])["state"] != "done" or \
                    srv.request("GET", f"/api/jobs/{doc['id']}/audio.wav")[2] != wav:
                fail(f"the same remix as JSON with base64 audio: {st} {doc}")
            print("remix (JSON, base64 audio): the same bytes")
            first = doc["id"]
            self.check_remix_errors(srv, original, style, folder)
            expect_error("generate on a stage-3 model", srv.json("POST", "/api/generate", {"genre": "drums"}), 422,
                         "operation")
            time.sleep(4)
            expect_error("a result after --result-ttl", srv.json("GET", f"/api/jobs/{first}"), 404, "id")
        finally:
            srv.stop()

    def check_remix_errors(self, srv, original, style, folder):
        notaudio = os.path.join(folder, "notes.txt")
        open(notaudio, "w").write("not audio\n")
        empty = os.path.join(folder, "empty.wav")
        open(empty, "wb").close()
        long_wav = os.path.join(folder, "long.wav")
        write_wav(long_wav, 14)

        def post(body_ctype):
            st, h, data = srv.request("POST", "/api/remix", body_ctype[0], {"Content-Type": body_ctype[1]})
            return st, h, json.loads(data)

        def job_error(what, body_ctype, status, field):
            st, h, doc = post(body_ctype)
            if st == 202:  # the upload is judged when the job decodes it
                doc = srv.wait_job(doc["id"])
                st = doc.get("status", 0) if doc["state"] == "failed" else 202
                got = (st, {"content-type": "application/json"}, doc)
            else:
                got = (st, h, doc)
            expect_error(what, got, status, field)

        job_error("an original that is not audio", self.remix_fields(notaudio, style), 400, "original")
        job_error("an empty style", self.remix_fields(original, empty), 400, "style")
        job_error("an original longer than --max-seconds", self.remix_fields(long_wav, style), 422, "original")
        # 601 s of 8-bit PCM at 4 kHz (the lowest rate audio may have): 2.4 MB, under the upload limit
        long_style = os.path.join(folder, "long-style.wav")
        write_wav(long_style, 601, rate=4000, freq=100, width=1)
        job_error("a style longer than 600 s (judged before decoding)", self.remix_fields(original, long_style), 422,
                  "style")
        only = multipart({}, {"original": ("a.wav", open(original, "rb").read())})
        expect_error("no style", post(only), 400, "style")
        expect_error("strength 2", post(self.remix_fields(original, style, strength=2)), 422, "strength")
        expect_error("strength as text", post(self.remix_fields(original, style, strength="strong")), 400, "strength")
        expect_error("an unknown field", post(self.remix_fields(original, style, tempo=120)), 400, "tempo")
        expect_error("base64 that is not", srv.json("POST", "/api/remix", {"original": "@@@", "style": "AAAA"}), 400,
                     "original")

    # ---- load ----

    def check_load(self):
        duration, clients, workers, queue = 20.0, 12, 2, 3
        srv = Server(self.a.serve, self.stage2, ["--workers", str(workers), "--max-queue", str(queue),
                                                 "--max-results", "16"])
        stats = {"202": 0, "503": 0, "done": 0}
        latencies, problems, rss = [], [], []
        lock = threading.Lock()
        t_end = time.time() + duration

        def client(k):
            rng = random.Random(k)
            conn = srv.connect()
            while time.time() < t_end and not problems:
                req = dict(genre=rng.choice(GENRES), seconds=0.5, seed=rng.randrange(1000), steps=4, iterations=2)
                t0 = time.time()
                try:
                    st, h, doc = srv.json("POST", "/api/generate", req, conn=conn)
                    if st == 503:
                        with lock:
                            stats["503"] += 1
                        if h.get("retry-after") is None:
                            problems.append("a 503 without Retry-After")
                        time.sleep(0.05)
                        continue
                    if st != 202:
                        problems.append(f"POST answered {st} {doc}")
                        break
                    with lock:
                        stats["202"] += 1
                    while True:
                        st, _, job = srv.json("GET", f"/api/jobs/{doc['id']}", conn=conn)
                        if st != 200 or job["state"] in ("failed", "cancelled"):
                            problems.append(f"job {doc['id']}: {st} {job}")
                            return
                        if job["state"] == "done":
                            break
                        time.sleep(0.02)
                    lat = time.time() - t0
                    st, _, wav = srv.request("GET", f"/api/jobs/{doc['id']}/audio.wav", conn=conn)
                    if st != 200:
                        problems.append(f"audio.wav answered {st}")
                        return
                    wav_info(wav, "a load-test WAV")
                    with lock:
                        stats["done"] += 1
                        latencies.append(lat)
                except (OSError, http.client.HTTPException) as e:
                    problems.append(f"client {k}: {type(e).__name__}: {e}")
                    return

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        t0 = time.time()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            rss.append((time.time() - t0, srv.rss_kb()))
            time.sleep(0.25)
        for t in threads:
            t.join()
        srv.stop()
        if problems:
            fail("; ".join(problems[:5]))
        if not stats["503"] or stats["done"] < 10:
            fail(f"expected some refusals beyond the queue and at least 10 jobs done: {stats}")
        # flat: after a warm-up (the model's arenas, the kept results filling up), no growth
        warm = [kb for t, kb in rss if duration * 0.25 <= t < duration * 0.5]
        late = [kb for t, kb in rss if t >= duration * 0.75]
        base, end = max(warm), max(late)
        lat = sorted(latencies)
        p50, p99 = statistics.median(lat), lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"{clients} clients, {workers} workers, queue {queue}, {duration:.0f} s: {stats['202']} accepted, "
              f"{stats['503']} refused with 503, {stats['done']} WAVs fetched whole; "
              f"job latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
              f"VmRSS {base / 1024:.1f} MiB after warm-up, {end / 1024:.1f} MiB at the end")
        if "address" in self.a.sanitizers:
            # ASan's quarantine keeps up to 256 MiB of freed memory: growth says nothing there.
            print("memory growth not checked: an AddressSanitizer build")
        elif end > base * 1.10 + 4096:
            fail(f"the server's memory grew from {base} kB to {end} kB during the run")

    # ---- sigterm ----

    def check_sigterm(self):
        grace = 20
        srv = Server(self.a.serve, self.stage2, ["--workers", "1", "--max-queue", "4", "--grace", str(grace)])
        conn = srv.connect()
        done = srv.json("POST", "/api/generate", dict(genre="drums", seconds=0.5, **FAST), conn=conn)[2]["id"]
        srv.wait_job(done)
        slow = {"genre": "noise", "seconds": 20, "steps": 1000, "iterations": 32}
        ids = [srv.json("POST", "/api/generate", slow, conn=conn)[2]["id"] for _ in range(3)]
        while srv.json("GET", f"/api/jobs/{ids[0]}", conn=conn)[2]["progress"] <= 0:
            time.sleep(0.02)
        served, states = [], {}
        stop, ready = threading.Event(), threading.Event()

        def poll():  # a keep-alive connection made before the signal keeps asking
            c = srv.connect(timeout=5)
            while not stop.is_set():
                if states:
                    ready.set()
                try:
                    for i in [done] + ids:
                        st, _, body = srv.request("GET", f"/api/jobs/{i}/audio.wav", conn=c)
                        if st == 200:
                            served.append((i, body))
                        states[i] = srv.json("GET", f"/api/jobs/{i}", conn=c)[2]["state"]
                except (OSError, http.client.HTTPException, ValueError) as e:
                    print(f"the polling client stops: {type(e).__name__}: {e}", flush=True)
                    return
                time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        if not ready.wait(30):
            fail("the polling client got no answer before the signal")
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            rc = srv.proc.wait(timeout=grace + 5)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            fail(f"remixer-serve did not exit within {grace + 5} s of SIGTERM")
        took = time.time() - t0
        stop.set()
        poller.join()
        time.sleep(0.2)
        out = srv.output()
        if rc != 0 or "stopping" not in out or "stopped" not in out:
            fail(f"SIGTERM during jobs: exit {rc}, output:\n{out}")
        for i, body in served:
            if i != done:
                fail(f"job {i} was running or queued at the signal, yet its WAV was served")
            wav_info(body, "a WAV served while stopping")
        if not served:
            fail("the finished job's WAV was never served on the open connection while stopping")
        if any(states.get(i) != "cancelled" for i in ids[1:]):
            fail(f"queued jobs must be cancelled, not run: {states}")
        try:
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
            fail("the port still accepts connections after exit")
        except OSError:
            pass
        print(f"SIGTERM with a job running and 2 queued: exit 0 after {took:.1f} s (grace {grace} s); states seen "
              f"while stopping {states}; the finished job's WAV served {len(served)} times around the signal, always "
              f"whole, the others' never")
        # a grace period shorter than the job's model section: still exit 0, within it
        srv = Server(self.a.serve, self.stage2, ["--workers", "1", "--grace", "0.5"])
        job = srv.json("POST", "/api/generate", dict(slow, steps=1000))[2]["id"]
        while srv.json("GET", f"/api/jobs/{job}")[2]["progress"] <= 0:
            time.sleep(0.02)
        t0 = time.time()
        srv.stop(timeout=10)
        took = time.time() - t0
        if took > 3:
            fail(f"--grace 0.5: exit took {took:.1f} s")
        print(f"--grace 0.5 with a long job running: exit 0 after {took:.1f} s")

    # ---- browser ----

    def check_browser(self):
        chromium = shutil.which("chromium")
        driver = shutil.which("chromedriver")
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
            from selenium.webdriver.common.by import By
            from selenium.webdriver.common.keys import Keys
            from selenium.webdriver.support.ui import WebDriverWait
        except ImportError:
            chromium = None
        if not chromium or not driver:
            print("skipped: chromium, chromedriver or python3-selenium is not installed")
            sys.exit(SKIP)
        shots = fresh_dir(self.path("browser"))
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--autoplay-policy=no-user-gesture-required", "--window-size=390,844"):
            opts.add_argument(arg)
        browser = webdriver.Chrome(service=Service(driver), options=opts)
        browser.set_script_timeout(60)
        try:
            self.browser_generate(browser, By, Keys, WebDriverWait, shots)
            self.browser_remix(browser, By, WebDriverWait, shots)
        finally:
            browser.quit()

    @staticmethod
    def screenshot(browser, path):
        """The whole page at phone width (a window as tall as the page), then the window back."""
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(390, height + 120)
        browser.save_screenshot(path)
        browser.set_window_size(390, 844)

    @staticmethod
    def played_wav(browser):
        """The player's WAV as the page fetches it: (rate, frames) from its RIFF header and size."""
        return browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const src = document.getElementById('player').currentSrc;
            fetch(src).then(r => r.arrayBuffer()).then(b => {
              const v = new DataView(b);
              const tag = (o) => String.fromCharCode(...new Uint8Array(b, o, 4));
              let at = 12, data = -1;
              while (at + 8 <= b.byteLength) {
                const size = v.getUint32(at + 4, true);
                if (tag(at) === 'data') { data = size; break; }
                at += 8 + size + (size & 1);
              }
              done([tag(0), tag(8), v.getUint32(24, true), v.getUint16(22, true), data / 2, b.byteLength]);
            }).catch(e => done(['error', String(e)]));""")

    def wait_player(self, browser, WebDriverWait, what):
        WebDriverWait(browser, 120, 0.1).until(
            lambda b: b.execute_script("const p = document.getElementById('player');"
                                       "return !document.getElementById('result').hidden && p.readyState >= 1 "
                                       "|| !document.getElementById('error').hidden"))
        err = browser.execute_script("const e = document.getElementById('error'); return e.hidden ? '' : e.textContent")
        if err:
            fail(f"{what}: the page shows an error: {err}")
        duration = browser.execute_script("return document.getElementById('player').duration")
        riff, kind, rate, channels, frames, size = self.played_wav(browser)
        if riff != "RIFF" or kind != "WAVE" or channels != 1:
            fail(f"{what}: the player's audio is not a mono WAV: {riff} {kind} {channels}")
        mel = browser.execute_script("const i = document.getElementById('mel'); return [i.complete, i.naturalWidth]")
        if not mel[0] or mel[1] <= 0:
            fail(f"{what}: the spectrogram image did not load: {mel}")
        href = browser.execute_script("return document.getElementById('download').href")
        if not href.endswith("/audio.wav"):
            fail(f"{what}: the download link points to {href}")
        return rate, frames, duration

    def browser_generate(self, browser, By, Keys, WebDriverWait, shots):
        srv = Server(self.a.serve, self.stage2, ["--max-seconds", "5"])
        try:
            browser.get(f"http://127.0.0.1:{srv.port}/")
            WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
            if browser.find_element(By.ID, "remix").is_displayed():
                fail("the page shows remix for a stage-2 model")
            options = [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#genre option")]
            if options != GENRES:
                fail(f"the genre dropdown holds {options}, expected the model's {GENRES}")
            wide = browser.execute_script("return document.documentElement.scrollWidth > window.innerWidth")
            if wide:
                fail("the page scrolls sideways at 390 px (phone width)")
            # keyboard only: focus the dropdown, choose by typing, move on with Tab, submit with Enter
            body = browser.find_element(By.TAG_NAME, "body")
            body.send_keys(Keys.TAB)
            active = browser.switch_to.active_element
            if active.get_attribute("id") != "genre":
                fail(f"the first Tab should reach the genre dropdown, reached {active.get_attribute('id')}")
            active.send_keys("drums")
            active.send_keys(Keys.TAB)
            seconds = browser.switch_to.active_element
            seconds.send_keys(Keys.CONTROL, "a")
            seconds.send_keys(str(SECONDS))
            # what the progress bar shows while the job runs, sampled every 20 ms
            browser.execute_script("window.shown = []; setInterval(() => { const w = document.getElementById("
                                   "'working'); if (!w.hidden) shown.push(document.getElementById('progress')"
                                   ".value); }, 20)")
            seconds.send_keys(Keys.ENTER)
            rate, frames, duration = self.wait_player(browser, WebDriverWait, "generate")
            shown = sorted(set(browser.execute_script("return window.shown")))
            genre = browser.execute_script("return document.getElementById('genre').value")
            if genre != "drums" or rate != RATE or frames != round(SECONDS * RATE) or abs(duration - SECONDS) > 0.01:
                fail(f"generate: {genre}, the player's WAV has {frames} frames at {rate} Hz ({duration} s), expected "
                     f"drums, {round(SECONDS * RATE)} at {RATE}")
            if not any(0 < v < 1 for v in shown):
                fail(f"the progress bar never showed the job part-way: {shown}")
            self.screenshot(browser, os.path.join(shots, "generate.png"))
            print(f"browser, keyboard only: drums, {SECONDS} s -> progress bar at {', '.join(f'{v:.2f}' for v in shown)}"
                  f"; the player's WAV {frames} frames at {rate} Hz ({duration:.3f} s); screenshot {shots}/generate.png")
        finally:
            srv.stop()

    def browser_remix(self, browser, By, WebDriverWait, shots):
        srv = Server(self.a.serve, self.stage3)
        try:
            browser.get(f"http://127.0.0.1:{srv.port}/")
            WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
            if browser.find_element(By.ID, "generate").is_displayed():
                fail("the page shows generate for a stage-3 model")
            original, style = self.audio("chords", 1), self.audio("noise", 2)
            browser.find_element(By.ID, "original").send_keys(original)
            browser.find_element(By.ID, "style").send_keys(style)
            browser.execute_script("const s = document.getElementById('strength'); s.value = 0.4;"
                                   "s.dispatchEvent(new Event('input'))")
            browser.find_element(By.ID, "remix-button").click()
            rate, frames, duration = self.wait_player(browser, WebDriverWait, "remix")
            with wave.open(original) as w:
                want = w.getnframes()
            if rate != RATE or frames != want:
                fail(f"remix: the player's WAV has {frames} frames at {rate} Hz, the original {want}")
            self.screenshot(browser, os.path.join(shots, "remix.png"))
            print(f"browser remix: two uploads, strength 0.4 -> the player's WAV {frames} frames ({duration:.2f} s), "
                  f"as long as the original; screenshot {shots}/remix.png")
        finally:
            srv.stop()


def main():
    checks = [n[6:] for n in dir(Checks) if n.startswith("check_") and n[6:] in
              ("models", "api", "load", "sigterm", "browser")]
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=checks)
    ap.add_argument("--serve", required=True)
    ap.add_argument("--generate", required=True)
    ap.add_argument("--remix", required=True)
    ap.add_argument("--prep", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--sanitizers", default="", help="REMIXER_SANITIZE of the build (empty: none)")
    a = ap.parse_args()
    getattr(Checks(a), "check_" + a.check)()


if __name__ == "__main__":
    main()
