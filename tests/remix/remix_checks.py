#!/usr/bin/env python3
"""The remix stage (stage 3) end to end: the real remixer-train, the real configs, tiny demo shards
(32 mels x 64 frames), a tiny stage-1 autoencoder and a tiny stage-2 transformer trained first.
Each subcommand is one ctest test; it exits 1 with a message on failure.

  models        (fixture) stage 1 (channel_mult [1, 2]: 4 x 16 x 32 latents) and stage 2 (DiT hidden
                32, depth 1, patch 4): the checkpoint diffusion.checkpoint points to
  reference     (fixture) uninterrupted 12-step remix runs on 1, 2 and 4 ranks, evaluating and
                checkpointing every 4 steps
  learns        a 150-step remix run: the training total loss falls clearly; the logged total is
                the weighted sum of its terms; the checkpoint holds /model, /optim, /ema, /diffusion
                (config, source, step, latent_scale), /autoencoder, /audio as documented
  resume_bitexact
                SIGTERM to one rank of a 2-rank run at a random step, exit 75, relaunch: every
                metrics line and every tensor of the final checkpoint bit-identical to the
                uninterrupted run; a checkpoint of the 2-rank run resumed on 1 rank and on 4 ranks
                follows the 2-rank trajectory within the summation tolerance
  worldsize     1, 2 and 4 ranks log the same training and validation losses (summation order only)
  eval_png      one eval-NNNNNN.png per evaluation, remix.eval_pairs rows x 3 columns (original |
                style | remix) laid out as the stage-2 PNG, the rows' segments as documented,
                byte-identical for 1, 2 and 4 ranks
  eval_png_micro_batch1
                the evaluation PNG with train.micro_batch 1 (the panels must fit buffers of one
                sample)
  errors        bad inputs: each a clear message naming the key and file, the documented exit code,
                nothing written into the run folder
  program       remixer-remix on the reference run's checkpoint: a 12 s original (many segments)
                in the style of another song; the same call writes the same bytes; the output is
                as long as the original and carries its settings in the WAV metadata; --strength 0
                gives exactly remixer-reconstruct's samples (the original through the
                autoencoder); another strength or style gives other audio; originals of 0.5 s (less
                than a segment), 1 s and 10.5 s give remixes of their length, a style shorter than a
                segment is padded with a warning; bad inputs: a stage-1 or stage-2 checkpoint (4),
                audio that is missing, not audio or too short (3), a missing output folder or option
                (2), each without leaving a file
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "checkpoint"))
from ckpt_checks import (ckpt_name, env_with, fail, fresh_dir, metrics_lines, rank_pids, send,  # noqa: E402
                         tensors, train_lines, wait_until)

TIMEOUT = 300
AE_STEPS = 40
DIT_STEPS = 20
STEPS = 12
EVERY = 4
PAIRS = 5  # more rows than the 4 demo genres (the genres wrap), and not a multiple of 2 or 4 ranks
GENRES = ["arpeggio", "chords", "drums", "noise"]
# Summation order only: the diffusion tests' tolerance for the same comparison.
RANK_TOL = 2e-5
# PNGs of runs trained on different world sizes (weights equal up to summation order): the share
# of pixels that may differ, and by how many 8-bit levels.
PNG_PIXELS = 0.005
PNG_LEVELS = 4
# Stage 1: 3 levels would make 4 x 8 x 16 latents; 2 levels (4 x 16 x 32) keep the default
# content/style layers (enc.conv_in, enc.down.0.res.0, enc.down.1.res.0, enc.mid.res).
AE = ["--set", "model.channel_mult=[1, 2]", "--set", f"train.steps={AE_STEPS}", "--set", "eval.every=0",
      "--set", "checkpoint.every=0"]
DIT = ["--set", "dit.hidden=32", "--set", "dit.depth=1", "--set", "dit.heads=2", "--set", "dit.patch=4",
       "--set", "diffusion.latent_samples=16", "--set", "diffusion.sample_steps=4",
       "--set", "diffusion.eval_timesteps=2",
       "--set", f"train.steps={DIT_STEPS}", "--set", "eval.every=0", "--set", "checkpoint.every=0"]
TINY = ["--set", "remix.sample_steps=4", "--set", f"remix.eval_pairs={PAIRS}", "--set", "train.global_batch=8",
        "--set", "train.micro_batch=2", "--set", "train.warmup=2"]
COMMON = TINY + ["--set", f"train.steps={STEPS}", "--set", "log.every=4", "--set", f"eval.every={EVERY}",
                 "--set", "eval.batches=1", "--set", f"checkpoint.every={EVERY}", "--set", "checkpoint.keep=10"]
WEIGHTS = {"content": "content_weight", "style": "style_weight", "tv": "tv_weight", "mse": "diffusion_weight"}


def read_png(path):
    """An 8-bit RGB, non-interlaced PNG (what train/png.c writes) -> uint8 array [H, W, 3]."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path}: not a PNG")
    at, idat, hdr = 8, b"", None
    while at < len(data):
        n, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        at += 12 + n
    width, height, depth, colour, _, _, interlace = hdr
    if depth != 8 or colour != 2 or interlace != 0:
        fail(f"{path}: expected 8-bit RGB without interlacing, got depth {depth} colour type {colour}")
    raw = zlib.decompress(idat)
    stride = width * 3
    img = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        out = line.copy()
        if kind == 1 or kind == 3 or kind == 4:
            for x in range(stride):
                a = out[x - 3] if x >= 3 else 0
                if kind == 1:
                    out[x] = (line[x] + a) & 255
                elif kind == 3:
                    out[x] = (line[x] + (a + prev[x]) // 2) & 255
                else:
                    b, c = prev[x], (prev[x - 3] if x >= 3 else 0)
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    out[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        elif kind == 2:
            out = (line + prev) & 255
        elif kind != 0:
            fail(f"{path}: row {y} has filter type {kind}")
        img[y] = out
        prev = out
    return img.astype(np.uint8).reshape(height, width, 3)


class Checks:
    def __init__(self, args):
        self.a = args
        self.work = args.work

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    @property
    def ae(self):
        return self.path("ae", ckpt_name(AE_STEPS))

    @property
    def dit(self):
        return self.path("dit", ckpt_name(DIT_STEPS))

    def config(self, name):
        return os.path.join(self.a.configs, name)

    def mpirun(self, ranks):
        if ranks == 0:  # one rank without mpirun (MPI singleton): what the refusals need, 2 s faster
            return []
        return [self.a.mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)]

    def data_args(self, data=None, val=True):
        data = data or self.a.data
        return ["--set", f"data.train={data}/train", "--set", f"data.val={data}/val" if val else "data.val="]

    def command(self, ranks, run_dir, extra=(), ckpt=None):
        return self.mpirun(ranks) + [self.a.train, self.config("demo-remix.yaml")] + self.data_args() + [
            "--set", f"run.dir={run_dir}",
            "--set", f"diffusion.checkpoint={self.dit if ckpt is None else ckpt}"] + list(extra)

    def run(self, cmd, expect_rc=0, env=None):
        print("$ " + " ".join(cmd), flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env_with(env), timeout=TIMEOUT)
        out = p.stdout + p.stderr
        if expect_rc is not None and p.returncode != expect_rc:
            print(out)
            fail(f"exit code {p.returncode}, expected {expect_rc}")
        return out

    def metrics(self, run_dir, split):
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return [r for r in map(json.loads, f) if r["split"] == split]

    # ---- fixtures ----

    def check_models(self):
        out = self.run(self.mpirun(2) + [self.a.train, self.config("demo-vae.yaml")] + self.data_args() +
                       ["--set", f"run.dir={fresh_dir(self.path('ae'))}"] + AE)
        if not os.path.exists(self.ae):
            print(out)
            fail(f"stage 1 must leave {self.ae}")
        out = self.run(self.mpirun(2) + [self.a.train, self.config("demo-diffusion.yaml")] + self.data_args() +
                       ["--set", f"run.dir={fresh_dir(self.path('dit'))}", "--set",
                        f"autoencoder.checkpoint={self.ae}"] + DIT)
        if not os.path.exists(self.dit):
            print(out)
            fail(f"stage 2 must leave {self.dit}")
        print(f"stage-1 checkpoint {self.ae}, stage-2 checkpoint {self.dit}")

    def check_reference(self):
        for ranks in (1, 2, 4):
            run_dir = fresh_dir(self.path(f"ref{ranks}"))
            out = self.run(self.command(ranks, run_dir, COMMON))
            final = os.path.join(run_dir, ckpt_name(STEPS))
            if f"final checkpoint {final}" not in out:
                print(out)
                fail(f"a finished run must leave {final} and name it")
        print("reference remix runs on 1, 2 and 4 ranks done")

    # ---- learning, and what a checkpoint holds ----

    def check_learns(self):
        run_dir = fresh_dir(self.path("learns"))
        steps = self.a.learn_steps
        self.run(self.command(2, run_dir, TINY + [
            "--set", f"train.steps={steps}", "--set", "train.micro_batch=4", "--set", "train.warmup=5",
            "--set", "train.lr=2e-3", "--set", "train.min_lr=2e-4", "--set", "log.every=25",
            "--set", "eval.every=0", "--set", "checkpoint.every=0"], ckpt=self.dit) + ["--set", "data.val="])
        train = self.metrics(run_dir, "train")
        if [r["step"] for r in train] != list(range(1, steps + 1)):
            fail(f"expected one train line per step 1..{steps}")
        # the logged total is the weighted sum of the logged terms (the config's remix.* weights)
        with h5py.File(os.path.join(run_dir, ckpt_name(steps)), "r") as f:
            cfg = f.attrs["config"]
        weights = {}
        for term, key in WEIGHTS.items():
            m = re.search(rf"^\s+{key}: (\S+)$", cfg, re.M)
            if not m:
                fail(f"the checkpoint's config has no remix.{key}:\n{cfg}")
            weights[term] = float(m.group(1))
        for r in train:
            if r.get("skipped"):
                fail(f"step {r['step']} was skipped (non-finite)")
            total = sum(weights[k] * r[k] for k in weights)
            if abs(total - r["loss"]) > 1e-5 * abs(r["loss"]) + 1e-6:
                fail(f"step {r['step']}: loss {r['loss']!r} is not the weighted sum of its terms {total!r}")
        print("every train line: loss = " + " + ".join(f"{w:g} {k}" for k, w in weights.items()))

        def mean(rows, key):
            return sum(r[key] for r in rows) / len(rows)

        first, last = train[:10], train[-20:]
        for key in ("loss", "content", "style", "tv", "mse"):
            print(f"{key:8s} first 10 steps {mean(first, key):9.4f}  last 20 steps {mean(last, key):9.4f}  "
                  f"ratio {mean(last, key) / mean(first, key):.3f}")
        ratio = mean(last, "loss") / mean(first, "loss")
        if not ratio < self.a.learn_ratio:
            fail(f"the training loss fell only to {ratio:.3f} of its start (want < {self.a.learn_ratio})")
        print(f"training loss: mean of the last 20 steps / mean of the first 10 = {ratio:.3f} "
              f"(want < {self.a.learn_ratio})")
        self.checkpoint_layout(os.path.join(run_dir, ckpt_name(steps)), steps)

    def checkpoint_layout(self, path, steps):
        with h5py.File(path, "r") as f, h5py.File(self.dit, "r") as d, h5py.File(self.ae, "r") as ae:
            groups = sorted(k for k in f)
            want = ["audio", "autoencoder", "diffusion", "ema", "model", "optim"]
            if groups != want:
                fail(f"{path}: groups {groups}, want {want}")
            if f.attrs["stage"] != "remix" or f.attrs["step"] != steps:
                fail(f"{path}: stage {f.attrs['stage']!r} step {f.attrs['step']!r}")
            if not f.attrs["config"].startswith("stage: remix") or "dit:" in f.attrs["config"]:
                fail(f"{path}: the root config must be the remix run's own (no dit.* section)")
            model = [s.rsplit(" [", 1)[0] for s in f["model"].attrs["tensors"]]
            ema = [s.rsplit(" [", 1)[0] for s in f["ema"].attrs["tensors"]]
            if model != ema:
                fail(f"{path}: /model and /ema must list the same tensors")
            for name in ("style_embedder.proj.weight", "style_embedder.proj.bias", "pos_embed",
                         "x_embedder.proj.weight", "blocks.0.attn.qkv.weight"):
                if name not in model:
                    fail(f"{path}: /model lacks {name}: {model}")
            stage2 = [s.rsplit(" [", 1)[0] for s in d["ema"].attrs["tensors"]]
            if not set(stage2) < set(model):
                fail(f"{path}: /model must hold every stage-2 tensor ({sorted(set(stage2) - set(model))} missing)")
            for name in stage2:
                if f["model"][name].shape != d["ema"][name].shape:
                    fail(f"{path}: /model/{name} {f['model'][name].shape}, stage 2 {d['ema'][name].shape}")
            if np.array_equal(f["model"]["blocks.0.attn.qkv.weight"][()], f["ema"]["blocks.0.attn.qkv.weight"][()]):
                fail(f"{path}: the EMA weights must differ from the trained ones after {steps} steps")
            if np.array_equal(f["model"]["blocks.0.attn.qkv.weight"][()], d["ema"]["blocks.0.attn.qkv.weight"][()]):
                fail(f"{path}: the transformer did not train: blocks.0.attn.qkv.weight is stage 2's")
            if not np.array_equal(f["ema"]["pos_embed"][()], d["ema"]["pos_embed"][()]):
                fail(f"{path}: pos_embed must be stage 2's")
            optim = sorted(f["optim"])
            if optim != ["m", "v"] or sorted(f["optim"]["m"]) != sorted(n for n in model if n != "pos_embed"):
                fail(f"{path}: /optim must hold m and v of every trained tensor: {optim}")
            # /diffusion: latent_scale and the schedule from stage 2, with its config, source, step
            g = f["diffusion"]
            for key in ("config", "source", "step", "timesteps", "beta_start", "beta_end", "prediction"):
                if key not in g.attrs:
                    fail(f"{path}: /diffusion lacks the attribute {key}")
            if g.attrs["source"] != self.dit or g.attrs["step"] != DIT_STEPS:
                fail(f"{path}: /diffusion source {g.attrs['source']!r} step {g.attrs['step']!r}, "
                     f"want {self.dit!r} {DIT_STEPS}")
            if g.attrs["config"] != d.attrs["config"]:
                fail(f"{path}: /diffusion config must be the stage-2 run's config")
            scale, scale2 = g["latent_scale"][()], d["diffusion"]["latent_scale"][()]
            if scale.tobytes() != scale2.tobytes() or not scale[0] > 0:
                fail(f"{path}: latent_scale {scale} must be stage 2's {scale2}")
            for key in ("timesteps", "beta_start", "beta_end", "prediction"):
                if g.attrs[key] != d["diffusion"].attrs[key]:
                    fail(f"{path}: /diffusion {key} {g.attrs[key]!r}, stage 2 {d['diffusion'].attrs[key]!r}")
            # /autoencoder: the frozen stage-1 weights, unchanged
            for name in ae["model"]:
                if f["autoencoder"][name][()].tobytes() != ae["model"][name][()].tobytes():
                    fail(f"{path}: /autoencoder/{name} differs from the stage-1 checkpoint's")
            for key in ("config", "source", "step"):
                if f["autoencoder"].attrs[key] != d["autoencoder"].attrs[key]:
                    fail(f"{path}: /autoencoder {key} must be the stage-2 checkpoint's")
            genres = list(f["audio"].attrs["genre_names"])
            if genres != GENRES or f["audio"].attrs["n_mels"] != 32 or f["audio"].attrs["segment_frames"] != 64:
                fail(f"{path}: /audio {dict(f['audio'].attrs)}")
        print(f"{path}: /model, /ema ({len(model)} tensors, style part included), /optim, /diffusion "
              f"(latent_scale {float(scale[0]):.4g}, config, source, step {DIT_STEPS}), /autoencoder, /audio")

    # ---- resume ----

    def resume_on(self, ranks, written_by, step):
        """The reference checkpoint of `written_by` ranks at `step`, resumed on `ranks`."""
        src = self.path(f"ref{written_by}")
        run_dir = fresh_dir(self.path(f"resume{written_by}to{ranks}"))
        shutil.copy(os.path.join(src, ckpt_name(step)), run_dir)
        shutil.copy(os.path.join(src, "metrics.jsonl"), run_dir)
        out = self.run(self.command(ranks, run_dir, COMMON))
        if f"at step {step} (written by {written_by} ranks)" not in out:
            print(out)
            fail(f"expected the {ranks}-rank run to resume from the {written_by}-rank checkpoint")
        want = {(r["split"], r["step"]): r for r in self.metrics(src, "train") + self.metrics(src, "val")}
        got = self.metrics(run_dir, "train") + self.metrics(run_dir, "val")
        worst = 0.0
        for r in got:
            w = want[(r["split"], r["step"])]
            for key in ("loss", "content", "style", "tv", "mse"):
                rel = abs(r[key] - w[key]) / max(abs(w[key]), 1e-12)
                worst = max(worst, rel)
                if rel > RANK_TOL:
                    fail(f"{r['split']} step {r['step']} {key}: resumed on {ranks} ranks {r[key]!r}, "
                         f"the {written_by}-rank run {w[key]!r} (rel diff {rel:.2e} > {RANK_TOL})")
        print(f"{written_by}-rank checkpoint of step {step} resumed on {ranks} ranks follows the {written_by}-rank "
              f"run over {len(got)} lines (largest relative difference {worst:.2e}, tolerance {RANK_TOL})")

    def check_resume_bitexact(self):
        ref_dir = self.path("ref2")
        run_dir = fresh_dir(self.path("bitexact"))
        seed = random.randrange(1 << 30)
        after = random.Random(seed).randint(2, STEPS - 3)
        print(f"stopping after {after} logged steps (random seed {seed})")
        log = self.path("bitexact.log")
        cmd = self.command(2, run_dir, COMMON)
        print("$ " + " ".join(cmd) + " &", flush=True)
        p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env_with())
        wait_until(f"{after} train lines", lambda: train_lines(run_dir) >= after, p)
        send(rank_pids(p.pid)[1], signal.SIGTERM)  # not rank 0: the ranks must agree on it
        rc = p.wait(timeout=TIMEOUT)
        out = open(log).read()
        m = re.search(r"preempted by SIGTERM at step (\d+): checkpoint (\S+) saved", out)
        if rc != 75 or not m:
            print(out)
            fail(f"expected exit 75 and the preemption line, got exit {rc}")
        step = int(m.group(1))
        print(f"stopped at step {step}")
        if step >= STEPS:
            fail(f"the stop came too late to test anything (step {step} of {STEPS})")
        out = self.run(self.command(2, run_dir, COMMON))
        if f"resumed from {os.path.join(run_dir, ckpt_name(step))} at step {step}" not in out:
            print(out)
            fail("the relaunch must resume from the checkpoint the stop wrote")
        want, got = metrics_lines(ref_dir), metrics_lines(run_dir)
        if want != got:
            for i, (a, b) in enumerate(zip(want, got)):
                if a != b:
                    fail(f"metrics.jsonl line {i + 1} differs:\n  want {a}\n  got  {b}")
            fail(f"metrics.jsonl has {len(got)} lines, the uninterrupted run {len(want)}")
        later = sum(1 for line in got if json.loads(line)["step"] > step)
        print(f"metrics.jsonl: all {len(got)} lines identical to the uninterrupted run ({later} after the stop)")
        a, b = tensors(os.path.join(ref_dir, ckpt_name(STEPS))), tensors(os.path.join(run_dir, ckpt_name(STEPS)))
        if sorted(a) != sorted(b) or any(a[k].tobytes() != b[k].tobytes() for k in a):
            bad = sorted(k for k in a if k not in b or a[k].tobytes() != b[k].tobytes())
            fail(f"the final checkpoint differs from the uninterrupted run's: {bad[:8]}")
        print(f"{ckpt_name(STEPS)}: all {len(a)} datasets bit-identical (model, ema, optim, diffusion, autoencoder)")
        for png in sorted(f for f in os.listdir(ref_dir) if f.startswith("eval-")):
            if int(png[5:11]) > step and open(os.path.join(ref_dir, png), "rb").read() != \
                    open(os.path.join(run_dir, png), "rb").read():
                fail(f"{png} of the resumed run differs from the uninterrupted run's")
        # another world size: the same trajectory up to summation order
        self.resume_on(1, 2, EVERY)
        self.resume_on(4, 2, 2 * EVERY)

    # ---- world size ----

    def check_worldsize(self):
        runs = {ranks: self.metrics(self.path(f"ref{ranks}"), "train") + self.metrics(self.path(f"ref{ranks}"), "val")
                for ranks in (1, 2, 4)}
        keys = [(r["split"], r["step"]) for r in runs[1]]
        if len([k for k in keys if k[0] == "train"]) != STEPS or \
                [k[1] for k in keys if k[0] == "val"] != list(range(0, STEPS + 1, EVERY)):
            fail(f"1 rank logged {keys}")
        worst = 0.0
        for ranks in (2, 4):
            if [(r["split"], r["step"]) for r in runs[ranks]] != keys:
                fail(f"{ranks} ranks logged other steps than 1 rank")
            for a, b in zip(runs[1], runs[ranks]):
                for key in ("loss", "content", "style", "tv", "mse"):
                    rel = abs(a[key] - b[key]) / max(abs(a[key]), 1e-12)
                    worst = max(worst, rel)
                    if rel > RANK_TOL:
                        fail(f"{a['split']} step {a['step']} {key}: 1 rank {a[key]!r}, {ranks} ranks {b[key]!r} "
                             f"(rel diff {rel:.2e} > {RANK_TOL})")
            print(f"{ranks} ranks: " + ", ".join(f"{r['split']} {r['step']}: {r['loss']:.6f}" for r in runs[ranks]
                                                 if r["split"] == "val" or r["step"] % EVERY == 0))
        print("1 rank:  " + ", ".join(f"{r['split']} {r['step']}: {r['loss']:.6f}" for r in runs[1]
                                        if r["split"] == "val" or r["step"] % EVERY == 0))
        print(f"1, 2 and 4 ranks agree on {len(keys)} lines x 5 figures "
              f"(largest relative difference {worst:.2e}, tolerance {RANK_TOL})")

    # ---- the evaluation PNG ----

    def png_geometry(self):
        """(gap, mels, frames) of the panel layout, from the stage-2 PNG of G rows x 2 columns."""
        with h5py.File(os.path.join(self.a.data, "val", "shard-00000.h5"), "r") as f:
            n, mels, frames = f["mel"].shape
        pngs = sorted(p for p in os.listdir(self.path("dit")) if p.startswith("eval-") and p.endswith(".png"))
        if not pngs:
            fail(f"stage 2 wrote no evaluation PNG into {self.path('dit')}")
        h, w, _ = read_png(self.path("dit", pngs[-1])).shape
        gap = (w - 2 * frames) / 3
        if gap != int(gap) or h != gap + len(GENRES) * (mels + gap):
            fail(f"the stage-2 PNG is {w} x {h}: not 2 columns x {len(GENRES)} rows of {frames} x {mels} panels")
        return int(gap), mels, frames

    def check_eval_png(self):
        gap, mels, frames = self.png_geometry()
        width, height = gap + 3 * (frames + gap), gap + PAIRS * (mels + gap)
        print(f"stage-2 layout: panels of {frames} x {mels} pixels, {gap}-pixel gaps; a remix PNG of {PAIRS} pairs "
              f"must be {width} x {height}")
        steps = list(range(0, STEPS + 1, EVERY))
        names = [f"eval-{s:06d}.png" for s in steps]
        for ranks in (1, 2, 4):
            run_dir = self.path(f"ref{ranks}")
            found = sorted(p for p in os.listdir(run_dir) if p.startswith("eval-"))
            if found != names:
                fail(f"{run_dir}: expected one PNG per evaluation {names}, found {found}")
            if [r["step"] for r in self.metrics(run_dir, "val")] != steps:
                fail(f"{run_dir}: expected evaluations at {steps}")
            if not os.path.exists(os.path.join(run_dir, "loss.png")):
                fail(f"{run_dir}: no loss.png")
        for name in names:
            img = read_png(self.path("ref1", name))
            if img.shape != (height, width, 3):
                fail(f"{name}: {img.shape[1]} x {img.shape[0]} pixels, want {width} x {height} "
                     f"(3 columns x {PAIRS} rows of {frames} x {mels} panels, {gap}-pixel gaps)")
            white = np.all(img == 255, axis=2)
            panels = {}
            for r in range(PAIRS):
                for c in range(3):
                    y0, x0 = gap + r * (mels + gap), gap + c * (frames + gap)
                    panel = img[y0:y0 + mels, x0:x0 + frames]
                    if np.all(panel == 255) or len(np.unique(panel.reshape(-1, 3), axis=0)) < 8:
                        fail(f"{name}: panel row {r} column {c} is blank")
                    panels[r, c] = panel
                    white[y0:y0 + mels, x0:x0 + frames] = True
            if not white.all():
                fail(f"{name}: pixels outside the panels are not background")
            # row r: the first validation segment of genre r mod G | of genre r+1 mod G | its remix
            for r in range(1, PAIRS):
                if np.array_equal(panels[r, 0], panels[r - 1, 0]):
                    fail(f"{name}: rows {r - 1} and {r} show the same original")
                if not np.array_equal(panels[r, 0], panels[r - 1, 1]):
                    fail(f"{name}: row {r}'s original must be row {r - 1}'s style (successive genres)")
            g = len(GENRES)
            if not (np.array_equal(panels[g, 0], panels[0, 0]) and np.array_equal(panels[g, 1], panels[0, 1])):
                fail(f"{name}: row {g} must show row 0's pair again (the genres wrap)")
            for r in range(PAIRS):
                if np.array_equal(panels[r, 2], panels[r, 0]) or np.array_equal(panels[r, 2], panels[r, 1]):
                    fail(f"{name}: row {r}'s remix is a copy of an input panel")
        # The same weights give the same picture on any number of ranks: the untrained model (step 0),
        # and a checkpoint of the 2-rank run resumed on 1 and on 4 ranks (a resumed run repeats the
        # evaluation due at its starting step).
        for ranks in (2, 4):
            if open(self.path("ref1", names[0]), "rb").read() != open(self.path(f"ref{ranks}", names[0]), "rb").read():
                fail(f"{names[0]}: the {ranks}-rank run's PNG differs from the 1-rank run's")
        step = 2 * EVERY
        name = f"eval-{step:06d}.png"
        for ranks in (1, 4):
            run_dir = fresh_dir(self.path(f"png{ranks}"))
            shutil.copy(self.path("ref2", ckpt_name(step)), run_dir)
            out = self.run(self.command(ranks, run_dir, COMMON + ["--set", f"train.steps={step + 1}"]))
            if f"at step {step} (written by 2 ranks)" not in out:
                print(out)
                fail(f"expected the {ranks}-rank run to resume from the 2-rank checkpoint of step {step}")
            if open(os.path.join(run_dir, name), "rb").read() != open(self.path("ref2", name), "rb").read():
                fail(f"{name}: the 2-rank checkpoint of step {step} evaluated on {ranks} rank(s) draws another PNG "
                     "than on 2 ranks")
        print(f"{names[0]} byte-identical for 1, 2 and 4 ranks; {name} of the 2-rank run's weights byte-identical "
              "when evaluated on 1, 2 and 4 ranks")
        # Trained on other world sizes the weights differ in summation order only (as the losses):
        # the pictures may differ in a rounding of a colour here and there.
        worst = (0, 0)
        for name in names[1:]:
            a = read_png(self.path("ref1", name)).astype(int)
            for ranks in (2, 4):
                d = np.abs(a - read_png(self.path(f"ref{ranks}", name)).astype(int)).max(axis=2)
                share, level = (d > 0).mean(), d.max()
                worst = max(worst, (share, level))
                if share > PNG_PIXELS or level > PNG_LEVELS:
                    fail(f"{name}: {ranks} ranks against 1: {100 * share:.3f}% of the pixels differ, by up to "
                         f"{level} levels (tolerance {100 * PNG_PIXELS}%, {PNG_LEVELS} levels)")
        print(f"trained on 1, 2 and 4 ranks: at most {100 * worst[0]:.3f}% of the pixels differ, by up to {worst[1]} "
              f"colour levels (tolerance {100 * PNG_PIXELS}%, {PNG_LEVELS} levels)")
        first, last = read_png(self.path("ref1", names[0])), read_png(self.path("ref1", names[-1]))
        if np.array_equal(first, last):
            fail(f"{names[-1]} is {names[0]}: the remixes must change as the model trains")
        print(f"{len(names)} PNGs per run ({', '.join(names)}): {width} x {height}, {PAIRS} rows x 3 panels "
              f"(original | style | remix)")

    def check_eval_png_micro_batch1(self):
        gap, mels, frames = self.png_geometry()
        run_dir = fresh_dir(self.path("mb1"))
        out = self.run(self.command(1, run_dir, TINY + [
            "--set", "train.steps=1", "--set", "train.global_batch=2", "--set", "train.micro_batch=1",
            "--set", "remix.eval_pairs=2", "--set", "eval.every=0", "--set", "checkpoint.every=0"]), expect_rc=None)
        if "batch larger than the arena" in out or "ckpt-00000001.h5" not in out:
            print(out)
            fail("train.micro_batch 1 must evaluate (the PNG's rows encode original and style 2 at a time "
                 "into buffers of micro_batch samples: train/stage_remix.c remix_panel_row)")
        img = read_png(os.path.join(run_dir, "eval-000001.png"))
        if img.shape != (gap + 2 * (mels + gap), gap + 3 * (frames + gap), 3):
            fail(f"eval-000001.png: {img.shape}")
        print("micro_batch 1: evaluation and PNG fine")

    # ---- bad input ----

    def expect(self, what, cmd, rc, wants, run_dir):
        out = self.run(cmd, expect_rc=rc)
        for want in wants:
            if want not in out:
                print(out)
                fail(f"{what}: expected '{want}'")
        if os.path.exists(run_dir) and os.listdir(run_dir):
            fail(f"{what}: the run folder {run_dir} must stay empty, holds {os.listdir(run_dir)}")
        line = next((l for l in out.splitlines() if "error" in l), out.strip().splitlines()[0])
        print(f"{what}: exit {rc}: {line}")

    def check_errors(self):
        shutil.rmtree(self.path("errors"), ignore_errors=True)
        os.makedirs(self.path("errors"))
        run_dir = self.path("errors", "run")
        cfg = self.config("demo-remix.yaml")

        def cmd(ckpt, extra=(), data=None):
            c = self.command(0, run_dir, TINY + ["--set", "train.steps=2"] + list(extra), ckpt=ckpt)
            if data:
                c += ["--set", f"data.train={data}/train", "--set", "data.val="]
            return c

        missing = self.path("errors", "nothing.h5")
        self.expect("diffusion.checkpoint missing", cmd(missing), 4,
                    [f"{cfg}: diffusion.checkpoint: {missing}: No such file or directory"], run_dir)
        self.expect("diffusion.checkpoint empty", cmd(""), 2,
                    ["--set diffusion.checkpoint=: diffusion.checkpoint: expected the path of a stage-2 checkpoint"],
                    run_dir)
        self.expect("a stage-1 checkpoint", cmd(self.ae), 4,
                    [f"{cfg}: diffusion.checkpoint: {self.ae} is a checkpoint of stage vae",
                     "needs a stage-2 (diffusion) checkpoint"], run_dir)
        damaged = self.path("errors", "truncated.h5")
        data = open(self.dit, "rb").read()
        open(damaged, "wb").write(data[: len(data) // 2])
        self.expect("a truncated copy", cmd(damaged), 4,
                    [f"{cfg}: diffusion.checkpoint: {damaged}: damaged checkpoint: it is {len(data) // 2} bytes long "
                     f"but was written with {len(data)}: truncated"], run_dir)
        flipped = self.path("errors", "flipped.h5")
        shutil.copy(self.dit, flipped)
        with h5py.File(flipped, "r") as f:
            dset = f["ema"]["blocks.0.attn.qkv.weight"]
            offset = dset.id.get_chunk_info(0).byte_offset
        with open(flipped, "r+b") as f:
            f.seek(offset + 100)
            byte = f.read(1)
            f.seek(offset + 100)
            f.write(bytes([byte[0] ^ 0x10]))
        self.expect("a bit flipped in /ema", cmd(flipped), 4,
                    [f"{cfg}: diffusion.checkpoint: {flipped}: damaged checkpoint: checksum of bytes 4096..",
                     "differs: the file is damaged"], run_dir)
        notckpt = self.path("errors", "notes.h5")
        open(notckpt, "w").write("not a checkpoint\n")
        self.expect("not a checkpoint", cmd(notckpt), 4,
                    [f"{cfg}: diffusion.checkpoint: {notckpt}: cannot open it as a checkpoint"], run_dir)
        stage3 = self.path("ref2", ckpt_name(STEPS))
        self.expect("a stage-3 checkpoint", cmd(stage3), 4,
                    [f"{cfg}: diffusion.checkpoint: {stage3} is a checkpoint of stage remix; this needs a stage-2 "
                     "(diffusion) checkpoint", "a remix run resumes from its own run folder"], run_dir)
        self.expect("data prepared with other n_mels", cmd(self.dit, data=self.a.odd), 3,
                    [f"{cfg}: data.train does not match the autoencoder: {self.a.odd}/train: attribute 'n_mels' "
                     f"is 16 but the autoencoder's data ({self.dit}) has 32", "diffusion.checkpoint"], run_dir)
        layers = "enc.conv_in, enc.down.0.res.0, enc.down.0.downsample, enc.down.1.res.0, enc.mid.res"
        self.expect("an unknown content layer",
                    cmd(self.dit, ["--set", "remix.content_layers=enc.mid.res, enc.down.2.res.0"]), 2,
                    [f"{cfg}: remix.content_layers: unknown encoder layer 'enc.down.2.res.0' "
                     f"(this autoencoder has: {layers})"], run_dir)
        self.expect("an unknown style layer", cmd(self.dit, ["--set", "remix.style_layers=enc.conv_in,dec.conv_in"]),
                    2, [f"{cfg}: remix.style_layers: unknown encoder layer 'dec.conv_in' (this autoencoder has: "
                        f"{layers})"], run_dir)
        from_ckpt = "(the autoencoder, the transformer and the schedule come from diffusion.checkpoint)"
        for key in ("dit.hidden=64", "dit.depth=2", "diffusion.timesteps=500", f"autoencoder.checkpoint={self.ae}"):
            name = key.split("=")[0]
            self.expect(f"{name} in a remix config", cmd(self.dit, ["--set", key]), 2,
                        [f"--set {key}: {name}: belongs to stage diffusion, but this config's stage is remix "
                         + from_ckpt], run_dir)
        # the same in the YAML file itself: the message names file, line and column
        yaml = self.path("errors", "with-dit.yaml")
        text = open(cfg).read().replace("diffusion:\n", "dit:\n  hidden: 64\n\ndiffusion:\n", 1)
        open(yaml, "w").write(text)
        line = text.splitlines().index("  hidden: 64") + 1  # the message points at the value
        c = cmd(self.dit)
        c[c.index(cfg)] = yaml
        self.expect("dit.hidden in the YAML", c, 2,
                    [f"{yaml}:{line}:11: dit.hidden: belongs to stage diffusion, but this config's stage is remix "
                     + from_ckpt], run_dir)
        self.expect("strength_max below strength_min",
                    cmd(self.dit, ["--set", "remix.strength_min=0.7", "--set", "remix.strength_max=0.5"]), 2,
                    ["--set remix.strength_max=0.5: remix.strength_max: expected a number >= remix.strength_min "
                     "(0.7), got '0.5'"], run_dir)
        self.expect("a model.* key", cmd(self.dit, ["--set", "model.channels=16"]), 2,
                    ["--set model.channels=16: model.channels: belongs to stage vae, but this config's stage is "
                     "remix " + from_ckpt], run_dir)
        # resuming a remix run over another autoencoder: refused, naming the tensor
        other = fresh_dir(self.path("errors", "ae-other"))
        self.run(self.mpirun(1) + [self.a.train, self.config("demo-vae.yaml")] + self.data_args(val=False) +
                 ["--set", f"run.dir={other}", "--set", "model.channel_mult=[1, 2]", "--set", "train.steps=1",
                  "--set", "train.seed=5", "--set", "checkpoint.every=0", "--set", "eval.every=0"])
        other_dit = fresh_dir(self.path("errors", "dit-other"))
        self.run(self.mpirun(1) + [self.a.train, self.config("demo-diffusion.yaml")] + self.data_args(val=False) +
                 ["--set", f"run.dir={other_dit}",
                  "--set", f"autoencoder.checkpoint={os.path.join(other, ckpt_name(1))}"]
                 + DIT + ["--set", "train.steps=1"])
        resume_dir = fresh_dir(self.path("errors", "resume"))
        shutil.copy(self.path("ref2", ckpt_name(EVERY)), resume_dir)
        out = self.run(self.command(1, resume_dir, COMMON, ckpt=os.path.join(other_dit, ckpt_name(1))), expect_rc=4)
        want = (f"diffusion.checkpoint {os.path.join(other_dit, ckpt_name(1))} has another autoencoder than "
                f"{os.path.join(resume_dir, ckpt_name(EVERY))}")
        if want not in out or "enc.conv_in.weight" not in out or "refusing to resume" not in out:
            print(out)
            fail(f"resuming over another autoencoder: expected '{want}' naming enc.conv_in.weight")
        print("resuming over another autoencoder: exit 4, the tensor named")


def wav_samples(path):
    import wave
    with wave.open(path) as w:
        return w.getframerate(), w.readframes(w.getnframes())


def write_wav(path, x, rate):
    """x (floats in [-1, 1]) as 16-bit mono PCM."""
    import wave
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def wav_comment(path):
    """The LIST/INFO ICMT text of a WAV, or ''."""
    data = open(path, "rb").read()
    at = data.find(b"ICMT")
    if at < 0:
        return ""
    n = struct.unpack("<I", data[at + 4:at + 8])[0]
    return data[at + 8:at + 8 + n].rstrip(b"\0").decode()


class Program(Checks):
    def remix(self, ckpt, original, style, out, extra=(), rc=0):
        return self.run([self.a.remix, ckpt, "--original", original, "--style", style, "-o", out,
                         "--steps", "10", "--iterations", "4"] + list(extra), expect_rc=rc)

    def check_program(self):
        folder = self.path("program")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        ckpt = self.path("ref2", ckpt_name(STEPS))
        audio = self.a.audio
        original, style = os.path.join(audio, "drums", "drums-00.wav"), os.path.join(audio, "arpeggio", "arpeggio-00.wav")
        a, b = os.path.join(folder, "a.wav"), os.path.join(folder, "b.wav")
        self.remix(ckpt, original, style, a)
        self.remix(ckpt, original, style, b)
        if open(a, "rb").read() != open(b, "rb").read():
            fail("the same remix call wrote different bytes")
        rate, pcm = wav_samples(a)
        rate0, pcm0 = wav_samples(original)
        if rate != rate0 or len(pcm) != len(pcm0):
            fail(f"the remix has {len(pcm) // 2} samples at {rate} Hz, the original {len(pcm0) // 2} at {rate0}")
        comment = wav_comment(a)
        for want in ("strength=0.5", "style_scale=2", f"style={style}", f"original={original}", "seed=0"):
            if want not in comment:
                fail(f"the WAV metadata lacks '{want}': {comment}")
        print(f"deterministic, {len(pcm) // 2} samples as the original, metadata: {comment[:80]}...")
        zero, recon = os.path.join(folder, "zero.wav"), os.path.join(folder, "recon.wav")
        self.remix(ckpt, original, style, zero, ["--strength", "0"])
        self.run([self.a.reconstruct, "--checkpoint", ckpt, "--iterations", "4", original, recon])
        if wav_samples(zero)[1] != wav_samples(recon)[1]:
            fail("--strength 0 differs from remixer-reconstruct through the same autoencoder")
        print("--strength 0: the same samples as remixer-reconstruct (the original through the autoencoder)")
        for name, extra, sty in (("strength", ["--strength", "0.3"], style),
                                 ("style", [], os.path.join(audio, "noise", "noise-00.wav"))):
            other = os.path.join(folder, f"other-{name}.wav")
            self.remix(ckpt, original, sty, other, extra)
            if wav_samples(other)[1] == wav_samples(a)[1]:
                fail(f"another {name} gave the same audio")
        print("another strength, another style: other audio")
        # any length: shorter than one segment (0.5 s), a style shorter than a segment (padded,
        # with a warning), and 3.5 segments' worth
        source = wav_samples(original)[1]
        pcm = np.frombuffer(source, dtype="<i2").astype(np.float64) / 32768.0
        for seconds, style_song in ((0.5, style), (1.0, "short-style"), (10.5, style)):
            if style_song == "short-style":
                style_song = os.path.join(folder, "short-style.wav")
                write_wav(style_song, pcm[:8000], 22050)  # 0.36 s: under a segment here (64 frames)
            clip = os.path.join(folder, f"original-{seconds:g}.wav")
            write_wav(clip, np.resize(pcm, int(seconds * 22050)), 22050)
            got = os.path.join(folder, f"remix-{seconds:g}.wav")
            text = self.remix(ckpt, clip, style_song, got)
            n = len(wav_samples(got)[1]) // 2
            if n != int(seconds * 22050):
                fail(f"a {seconds:g} s original gave {n} samples, expected {int(seconds * 22050)}")
            if style_song.endswith("short-style.wav") and "shorter than one segment" not in text:
                fail(f"a style shorter than a segment must be named in a warning: {text}")
        print("originals of 0.5, 1 and 10.5 s give remixes of their length; a 0.36 s style is padded with a warning")
        # bad inputs
        notaudio = os.path.join(folder, "notaudio.wav")
        open(notaudio, "w").write("not audio\n")
        out = os.path.join(folder, "bad.wav")
        cases = [("a stage-2 checkpoint", [self.dit, original, style, out], 4, "remixing needs a stage-3 (remix)"),
                 ("a missing original", [ckpt, os.path.join(folder, "none.wav"), style, out], 3, "--original: "),
                 ("a style that is not audio", [ckpt, original, notaudio, out], 3, "--style: " + notaudio),
                 ("a missing output folder", [ckpt, original, style, os.path.join(folder, "no", "x.wav")], 2,
                  "cannot write into folder")]
        tiny = os.path.join(folder, "tiny.wav")  # 1000 samples: less than one STFT window (1024)
        write_wav(tiny, np.full(1000, 0.1), 22050)
        cases += [("a stage-1 checkpoint", [self.ae, original, style, out], 4, "remixing needs a stage-3 (remix)"),
                  ("an original that is too short", [ckpt, tiny, style, out], 3, f"--original: {tiny}: too short"),
                  ("a style that is too short", [ckpt, original, tiny, out], 3, f"--style: {tiny}: too short")]
        for what, (c, o, st, dst), rc, want in cases:
            text = self.remix(c, o, st, dst, rc=rc)
            if want not in text or os.path.exists(dst):
                print(text)
                fail(f"{what}: expected exit {rc} with '{want}' and no file")
            print(f"{what}: exit {rc}")
        text = self.run([self.a.remix, ckpt, "--original", original, "-o", out], expect_rc=2)
        if "--style B is required" not in text:
            fail(f"a missing --style: {text}")
        print("a missing --style: exit 2")


def main():
    checks = [n[6:] for n in dir(Program) if n.startswith("check_")]
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=checks)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--data", required=True, help="the demo audio prepared at 32 mels x 64 frames")
    ap.add_argument("--odd", required=True, help="demo audio prepared at 16 mels")
    ap.add_argument("--work", required=True)
    ap.add_argument("--remix", help="remixer-remix")
    ap.add_argument("--reconstruct", help="remixer-reconstruct")
    ap.add_argument("--audio", help="the demo audio folder")
    ap.add_argument("--learn-steps", type=int, default=150)
    ap.add_argument("--learn-ratio", type=float, default=0.75)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    getattr(Program(args), "check_" + args.check)()
    print("PASS")


if __name__ == "__main__":
    main()
