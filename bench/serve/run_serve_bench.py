#!/usr/bin/env python3
"""remixer-serve's throughput and latency (not a test; bench/serve/README.md says what is measured).

  bench/serve/run_serve_bench.py BUILD_DIR [--checkpoint CKPT] [--requests N] [--rounds R] [--threads T]
                                 [--env NAME=VALUE ...]

Without --checkpoint a small demo-sized stage-2 checkpoint is made first (remixer-prep --demo and
4 training steps per stage, as bench/generate/run_generate_bench.sh makes one: speed does not depend
on training). Then, for R rounds: remixer-generate for one clip (process wall, model load
included); an idle server with 1 worker answering N jobs one after another (latency = POST until
the WAV is in hand; the job's own run time as the server reports it); and for 1 and 2 workers N
jobs submitted at once (requests per minute = N / wall). All at the service's defaults: the
checkpoint's first genre, one segment, DDIM 50, guidance 3, Griffin-Lim 32. Prints medians over
the rounds and the command lines."""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def make_checkpoint(build, work):
    d = os.path.join(work, "demo")
    log = open(os.path.join(work, "mk.log"), "w")
    steps = ["--set", "train.steps=4", "--set", "eval.every=4", "--set", "checkpoint.every=4", "--set", "log.every=2"]
    data = ["--set", f"data.train={d}/data/train", "--set", f"data.val={d}/data/val"]
    for cmd in ([f"{build}/data/remixer-prep", "--demo", f"{d}/data"],
                [f"{build}/train/remixer-train", f"{REPO}/configs/demo-vae.yaml", "--set", f"run.dir={d}/vae"] + data +
                steps,
                [f"{build}/train/remixer-train", f"{REPO}/configs/demo-diffusion.yaml", "--set", f"run.dir={d}/dit",
                 "--set", f"autoencoder.checkpoint={d}/vae/ckpt-00000004.h5", "--set", "diffusion.latent_samples=16",
                 "--set", "diffusion.sample_steps=2"] + data + steps):
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"could not make a checkpoint: see {work}/mk.log")
    return f"{d}/dit/ckpt-00000004.h5"


class Server:
    def __init__(self, build, ckpt, workers, threads):
        self.cmd = [f"{build}/serve/remixer-serve", ckpt, "--port", "0", "--workers", str(workers), "--max-queue", "256",
                    "--threads", str(threads), "--device", "cpu"]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
        else:
            sys.exit("remixer-serve did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def call(self, conn, method, path, body=None):
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"} if body is not None else {})
        r = conn.getresponse()
        data = r.read()
        return r.status, data

    def job(self, genre, poll_s=0.005):
        """One job, POST to WAV in hand: (latency, the job's run seconds); the job's state is asked
        every poll_s seconds."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        t0 = time.perf_counter()
        st, data = self.call(conn, "POST", "/api/generate", {"genre": genre})
        if st != 202:
            sys.exit(f"POST answered {st} {data[:200]}")
        jid = json.loads(data)["id"]
        while True:
            st, data = self.call(conn, "GET", f"/api/jobs/{jid}")
            doc = json.loads(data)
            if doc["state"] == "done":
                break
            if doc["state"] != "queued" and doc["state"] != "running":
                sys.exit(f"job {jid}: {doc}")
            time.sleep(poll_s)
        st, wav = self.call(conn, "GET", f"/api/jobs/{jid}/audio.wav")
        if st != 200 or wav[:4] != b"RIFF":
            sys.exit(f"audio.wav answered {st}")
        conn.close()
        return time.perf_counter() - t0, doc["run_seconds"]

    def cpu_s(self):
        """The server's CPU seconds so far (user + system, all threads)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def burst(srv, genre, n):
    """n jobs submitted at once from n clients: requests per minute, the latencies, the server's CPU
    seconds per job."""
    lat = [None] * n

    def one(k):  # polling every 50 ms: n clients polling faster would take the cores from the server
        lat[k] = srv.job(genre, poll_s=0.05)[0]
    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    cpu0, t0 = srv.cpu_s(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - t0) * 60, lat, (srv.cpu_s() - cpu0) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--checkpoint")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="set for remixer-generate and remixer-serve, e.g. OMP_WAIT_POLICY=passive")
    a = ap.parse_args()
    for item in a.env:
        name, _, value = item.partition("=")
        os.environ[name] = value
    build = os.path.abspath(a.build)
    work = tempfile.mkdtemp(prefix="rmx-serve-bench-")
    ckpt = a.checkpoint or make_checkpoint(build, work)
    genre = subprocess.run([f"{build}/infer/remixer-generate", ckpt, "--list-genres"], capture_output=True,
                           text=True).stdout.strip().split(", ")[0]
    print(f"checkpoint {ckpt}, genre {genre}, {a.requests} requests, {a.rounds} rounds, threads {a.threads or 'all'}, "
          f"environment {' '.join(a.env) or '-'}; "
          f"load before: {os.getloadavg()[0]:.2f}")
    cli, idle, run_s, rpm, burst_lat, cpu = [], [], [], {1: [], 2: []}, {1: [], 2: []}, {1: [], 2: []}
    gen_cmd = [f"{build}/infer/remixer-generate", ckpt, "--genre", genre, "--out", work, "--threads", str(a.threads),
               "--device", "cpu"]
    for r in range(a.rounds):
        t0 = time.perf_counter()
        subprocess.run(gen_cmd, check=True, capture_output=True, env=dict(os.environ, RMX_NO_PROGRESS="1"))
        cli.append(time.perf_counter() - t0)
        srv = Server(build, ckpt, 1, a.threads)
        srv.job(genre)  # warm-up: the first job's allocations
        for _ in range(a.requests):
            lat, run = srv.job(genre)
            idle.append(lat)
            run_s.append(run)
        per_min, lat, c = burst(srv, genre, a.requests)
        rpm[1].append(per_min)
        burst_lat[1] += lat
        cpu[1].append(c)
        srv.stop()
        srv = Server(build, ckpt, 2, a.threads)
        srv.job(genre)
        per_min, lat, c = burst(srv, genre, a.requests)
        rpm[2].append(per_min)
        burst_lat[2] += lat
        cpu[2].append(c)
        srv.stop()
        print(f"round {r + 1}: remixer-generate {cli[-1]:.2f} s; 1 worker {rpm[1][-1]:.1f}/min, "
              f"2 workers {rpm[2][-1]:.1f}/min")
    med = statistics.median
    print(f"\n$ {' '.join(gen_cmd)}\n$ "
          f"{build}/serve/remixer-serve {ckpt} --port 0 --workers 1|2 --max-queue 256 --threads {a.threads}")
    print("| measure | median |\n| --- | --- |")
    print(f"| remixer-generate, one clip, whole process (model load included) | {med(cli):.3f} s |")
    print(f"| service, idle, 1 worker: POST to WAV in hand | {med(idle):.3f} s |")
    print(f"| service, the job's run time as the server reports it | {med(run_s):.3f} s |")
    print(f"| service overhead per job (HTTP, queue, polling every 5 ms) | {med(idle) - med(run_s):.3f} s |")
    for w in (1, 2):
        lat = sorted(burst_lat[w])
        print(f"| {w} worker{'s' if w > 1 else ''}: {a.requests} requests at once | {med(rpm[w]):.1f} requests/min, "
              f"latency p50 {med(lat):.2f} s, max {lat[-1]:.2f} s, {med(cpu[w]):.2f} CPU s per request |")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
