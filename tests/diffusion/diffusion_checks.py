#!/usr/bin/env python3
"""The diffusion stage through the real remixer-train, the real configs and real (demo) shards.
Each subcommand is one ctest test; it exits 1 with a message on failure, 77 when skipped.

  autoencoders  (fixture) the stage-1 checkpoints the stage starts from: kl (demo-vae) and vq
  reference     (fixture) uninterrupted diffusion runs on 2 and on 4 ranks
  bitexact      SIGTERM to one rank at a random step, exit 75, resume: metrics and every tensor
                of the final checkpoint bit-identical to the uninterrupted run
  worldsize     1, 2 and 4 ranks log the same losses (summation order only); a checkpoint of
                the 4-rank run resumed on 2 ranks follows the 4-rank trajectory
  learns        configs/demo-diffusion.yaml: the validation loss falls well below its start,
                one PNG per evaluation
  overfit       one segment, no label drop: the noise-prediction loss goes near zero
  vq            the stage over a vq autoencoder trains and evaluates
  checkpoint    what a stage-2 checkpoint holds (h5py): /model, /ema, /optim, /diffusion,
                /autoencoder, /audio; /model and /ema load into the PyTorch twin (skipped
                without torch)
  errors        bad inputs: each a clear message, the documented exit code, nothing written
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "checkpoint"))
from ckpt_checks import (ckpt_name, env_with, fail, fresh_dir, metrics_lines, rank_pids, send,  # noqa: E402
                         tensors, temporaries, train_lines, wait_until)

TIMEOUT = 600
STEPS = 12
EVERY = 4
# A tiny DiT over the demo autoencoder's latents (4 x 32 x 64, patch 4: 128 tokens of 64 features).
TINY = ["--set", "dit.hidden=64", "--set", "dit.depth=2", "--set", "dit.heads=2", "--set", "dit.patch=4",
        "--set", "diffusion.latent_samples=16", "--set", "diffusion.sample_steps=4",
        "--set", "diffusion.eval_timesteps=3"]
COMMON = TINY + ["--set", f"train.steps={STEPS}", "--set", "train.global_batch=8", "--set", "train.micro_batch=2",
                 "--set", "train.warmup=2", "--set", "log.every=4", "--set", f"eval.every={EVERY}",
                 "--set", "eval.batches=1", "--set", f"checkpoint.every={EVERY}", "--set", "checkpoint.keep=10"]


class Checks:
    def __init__(self, args):
        self.a = args
        self.work = args.work

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    @property
    def kl_ae(self):
        return self.path("ae-kl", "ckpt-00000060.h5")

    @property
    def vq_ae(self):
        return self.path("ae-vq", "ckpt-00000030.h5")

    def mpirun(self, ranks):
        return [self.a.mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)]

    def command(self, ranks, run_dir, extra=(), config="demo-diffusion.yaml", ae=None):
        return self.mpirun(ranks) + [
            self.a.train, os.path.join(self.a.configs, config), "--set", f"data.train={self.a.data}/train",
            "--set", f"data.val={self.a.data}/val", "--set", f"run.dir={run_dir}",
            "--set", f"autoencoder.checkpoint={ae or self.kl_ae}"] + list(extra)

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

    def check_autoencoders(self):
        vae = os.path.join(self.a.configs, "demo-vae.yaml")
        common = ["--set", f"data.train={self.a.data}/train", "--set", f"data.val={self.a.data}/val",
                  "--set", "eval.every=0", "--set", "checkpoint.every=0"]
        vq = ["--set", "model.bottleneck=vq", "--set", "model.codebook_size=64"]
        handful = ["--set", f"data.train={self.a.handful}/train", "--set", "data.val=",
                   "--set", "train.global_batch=4", "--set", "train.micro_batch=4"]
        for name, ranks, steps, extra in (("ae-kl", 2, 60, []), ("ae-vq", 2, 30, vq), ("ae-handful", 1, 40, handful)):
            run_dir = fresh_dir(self.path(name))
            self.run(self.mpirun(ranks) + [self.a.train, vae, "--set", f"run.dir={run_dir}",
                                           "--set", f"train.steps={steps}"] + common + extra)
        print("stage-1 checkpoints ready: kl 60 steps, vq 30 steps, one segment's 40 steps")

    def check_reference(self):
        for name, ranks in (("ref2", 2), ("ref4", 4)):
            run_dir = fresh_dir(self.path(name))
            out = self.run(self.command(ranks, run_dir, COMMON))
            final = os.path.join(run_dir, ckpt_name(STEPS))
            if f"final checkpoint {final}" not in out:
                print(out)
                fail(f"a finished run must leave {final} and name it")
            if "latent_scale" not in out:
                print(out)
                fail("a fresh run measures latent_scale and says so")
        print("reference runs on 2 and 4 ranks done")

    # ---- resume ----

    def check_bitexact(self):
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
        out = self.run(self.command(2, run_dir, COMMON))
        if f"resumed from {os.path.join(run_dir, ckpt_name(step))} at step {step}" not in out:
            print(out)
            fail("the relaunch must resume from the checkpoint the stop wrote")
        if "latent_scale" in out:
            fail("a resumed run takes latent_scale from its checkpoint, it does not measure it again")
        want, got = metrics_lines(ref_dir), metrics_lines(run_dir)
        if want != got:
            for i, (a, b) in enumerate(zip(want, got)):
                if a != b:
                    fail(f"metrics.jsonl line {i + 1} differs:\n  want {a}\n  got  {b}")
            fail(f"metrics.jsonl has {len(got)} lines, the uninterrupted run {len(want)}")
        print(f"metrics.jsonl: all {len(got)} lines identical to the uninterrupted run")
        a, b = tensors(os.path.join(ref_dir, ckpt_name(STEPS))), tensors(os.path.join(run_dir, ckpt_name(STEPS)))
        if sorted(a) != sorted(b) or any(a[k].tobytes() != b[k].tobytes() for k in a):
            fail("the final checkpoint differs from the uninterrupted run's")
        print(f"{ckpt_name(STEPS)}: all {len(a)} datasets bit-identical (model, ema, optim, autoencoder)")

    def check_worldsize(self):
        losses = {}
        for ranks in (1, 2, 4):
            run_dir = fresh_dir(self.path(f"ws{ranks}"))
            self.run(self.command(ranks, run_dir, TINY + ["--set", "train.steps=6", "--set", "train.global_batch=8",
                                                         "--set", "train.micro_batch=2", "--set", "eval.every=0",
                                                         "--set", "data.val="]))
            losses[ranks] = [(r["step"], r["loss"]) for r in self.metrics(run_dir, "train")]
        worst = 0.0
        for ranks in (2, 4):
            if [s for s, _ in losses[ranks]] != [s for s, _ in losses[1]]:
                fail(f"{ranks} ranks logged other steps than 1 rank")
            for (s, x), (_, y) in zip(losses[1], losses[ranks]):
                rel = abs(x - y) / max(abs(x), 1e-12)
                worst = max(worst, rel)
                print(f"step {s}: 1 rank {x:.9g}, {ranks} ranks {y:.9g}, rel diff {rel:.2e}")
                if rel > 2e-5:
                    fail(f"step {s}: the loss differs by {rel:.2e} between 1 and {ranks} ranks")
        print(f"1, 2 and 4 ranks agree (largest relative difference {worst:.2e})")
        # a checkpoint of the 4-rank run, resumed on 2 ranks
        run_dir = fresh_dir(self.path("ws4to2"))
        shutil.copy(os.path.join(self.path("ref4"), ckpt_name(2 * EVERY)), run_dir)
        shutil.copy(os.path.join(self.path("ref4"), "metrics.jsonl"), run_dir)
        out = self.run(self.command(2, run_dir, COMMON))
        if f"at step {2 * EVERY} (written by 4 ranks)" not in out:
            print(out)
            fail("expected the 2-rank run to resume from the 4-rank checkpoint")
        want = {r["step"]: r["loss"] for r in self.metrics(self.path("ref4"), "train")}
        worst = 0.0
        for r in self.metrics(run_dir, "train"):
            rel = abs(r["loss"] - want[r["step"]]) / max(abs(want[r["step"]]), 1e-12)
            worst = max(worst, rel)
            if rel > 2e-5:
                fail(f"step {r['step']}: resumed on 2 ranks {r['loss']!r}, the 4-rank run {want[r['step']]!r}")
        print(f"4-rank checkpoint resumed on 2 ranks follows the 4-rank run (largest relative difference {worst:.2e})")

    # ---- learning ----

    def check_learns(self):
        run_dir = fresh_dir(self.path("learns"))
        steps = self.a.learn_steps
        self.run(self.command(2, run_dir, ["--set", f"train.steps={steps}", "--set", f"eval.every={steps // 4}",
                                           "--set", "checkpoint.every=0"]))
        val = self.metrics(run_dir, "val")
        if len(val) != 5 or val[0]["step"] != 0:
            fail(f"expected evaluations at steps 0, {steps // 4}, ... {steps}: {[r['step'] for r in val]}")
        first, last = val[0]["loss"], val[-1]["loss"]
        print("val loss by step: " + ", ".join(f"{r['step']}: {r['loss']:.4f}" for r in val))
        print("val loss by timestep at the end: " +
              ", ".join(f"{k[6:]}: {v:.3f}" for k, v in val[-1].items() if k.startswith("loss_t")))
        ratio = last / first
        print(f"val loss {first:.4f} -> {last:.4f} (ratio {ratio:.3f})")
        if not ratio < self.a.learn_ratio:
            fail(f"the validation loss fell only to {ratio:.3f} of its start (want < {self.a.learn_ratio})")
        pngs = sorted(f for f in os.listdir(run_dir) if f.startswith("eval-") and f.endswith(".png"))
        if len(pngs) != len(val) or not os.path.exists(os.path.join(run_dir, "loss.png")):
            fail(f"expected one PNG per evaluation and loss.png, found {pngs}")

    def check_overfit(self):
        run_dir = fresh_dir(self.path("overfit"))
        self.run(self.command(1, run_dir, ae=self.path("ae-handful", ckpt_name(40)), extra=TINY + [
            "--set", f"data.train={self.a.handful}/train", "--set", "data.val=", "--set", "train.steps=300",
            "--set", "train.global_batch=4", "--set", "train.micro_batch=4", "--set", "train.lr=3e-3",
            "--set", "train.min_lr=3e-4", "--set", "train.warmup=10", "--set", "diffusion.label_drop=0",
            "--set", "dit.hidden=128", "--set", "dit.heads=4", "--set", "dit.depth=3"]))
        train = self.metrics(run_dir, "train")
        first = sum(r["loss"] for r in train[:10]) / 10
        last = sum(r["loss"] for r in train[-20:]) / 20
        ratio = last / first
        print(f"train loss on one segment: {first:.4f} -> {last:.4f} (ratio {ratio:.4f})")
        if not ratio < self.a.overfit_ratio:
            fail(f"could not overfit one segment: the loss fell only to {ratio:.4f} (want < {self.a.overfit_ratio})")

    def check_vq(self):
        run_dir = fresh_dir(self.path("vq"))
        out = self.run(self.command(2, run_dir, COMMON, ae=self.vq_ae))
        val = self.metrics(run_dir, "val")
        if not val or not all(np.isfinite(r["loss"]) for r in val):
            print(out)
            fail("the stage over a vq autoencoder must train and evaluate")
        print(f"vq autoencoder: {len(val)} evaluations, final val loss {val[-1]['loss']:.4f}")

    # ---- what a checkpoint holds ----

    def check_checkpoint(self):
        path = os.path.join(self.path("ref2"), ckpt_name(STEPS))
        with h5py.File(path, "r") as f:
            if f.attrs["stage"] != "diffusion" or f.attrs["step"] != STEPS:
                fail(f"{path}: stage {f.attrs['stage']!r} step {f.attrs['step']!r}")
            model = [s.rsplit(" [", 1)[0] for s in f["model"].attrs["tensors"]]
            ema = [s.rsplit(" [", 1)[0] for s in f["ema"].attrs["tensors"]]
            if model != ema or "pos_embed" not in model or "y_embedder.embedding_table.weight" not in model:
                fail(f"{path}: /model and /ema must list the same DiT tensors, pos_embed included")
            if any(np.array_equal(f["model"][n][()], f["ema"][n][()]) for n in ("blocks.0.attn.qkv.weight",)):
                fail(f"{path}: the EMA weights must differ from the trained ones after {STEPS} steps")
            scale = float(f["diffusion"]["latent_scale"][()][0])
            if not (np.isfinite(scale) and scale > 0):
                fail(f"{path}: latent_scale {scale}")
            for key, want in (("timesteps", 1000), ("prediction", "epsilon")):
                if f["diffusion"].attrs[key] != want:
                    fail(f"{path}: /diffusion {key} is {f['diffusion'].attrs[key]!r}")
            with h5py.File(self.kl_ae, "r") as ae:
                for name in ae["model"]:
                    if not np.array_equal(ae["model"][name][()], f["autoencoder"][name][()]):
                        fail(f"{path}: /autoencoder/{name} differs from the stage-1 checkpoint's")
                if f["autoencoder"].attrs["config"] != ae.attrs["config"]:
                    fail(f"{path}: /autoencoder config must be the stage-1 config")
            if f["autoencoder"].attrs["source"] != self.kl_ae:
                fail(f"{path}: /autoencoder source {f['autoencoder'].attrs['source']!r}")
            genres = list(f["audio"].attrs["genre_names"])
            if genres != ["arpeggio", "chords", "drums", "noise"]:
                fail(f"{path}: /audio genre_names {genres}")
            if f["model"]["y_embedder.embedding_table.weight"].shape[0] != len(genres) + 1:
                fail(f"{path}: the label table needs one row per genre and the null row")
        print(f"{path}: /model, /ema, /optim, /diffusion (latent_scale {scale:.4g}), /autoencoder, /audio as documented")
        probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
        if probe.returncode != 0:
            print("SKIPPED (twin): python3-torch not installed; the h5py checks above passed")
            return
        twin = os.path.join(self.a.repo, "bench", "diffusion", "load_checkpoint.py")
        out = subprocess.run([sys.executable, twin, path], capture_output=True, text=True)
        print(out.stdout + out.stderr)
        if out.returncode != 0:
            fail("/model and /ema must load into the PyTorch twin with load_state_dict(strict=True)")

    # ---- bad input ----

    def expect(self, what, cmd, rc, want, run_dir):
        out = self.run(cmd, expect_rc=rc)
        if want not in out:
            print(out)
            fail(f"{what}: expected '{want}'")
        if os.path.exists(run_dir) and os.listdir(run_dir):
            fail(f"{what}: the run folder {run_dir} must stay empty, holds {os.listdir(run_dir)}")
        print(f"{what}: exit {rc}, '{want}'")

    def check_errors(self):
        run_dir = self.path("errors", "run")
        shutil.rmtree(self.path("errors"), ignore_errors=True)
        os.makedirs(self.path("errors"))
        cfg = os.path.join(self.a.configs, "demo-diffusion.yaml")

        def cmd(extra, ae=None, data=None):
            c = self.command(1, run_dir, TINY + extra, ae=ae)
            if data:
                c += ["--set", f"data.train={data}/train", "--set", "data.val="]
            return c

        missing = self.path("errors", "nothing.h5")
        self.expect("missing autoencoder", cmd([], ae=missing), 4,
                    f"{cfg}: autoencoder.checkpoint: {missing}: No such file or directory", run_dir)
        damaged = self.path("errors", "damaged.h5")
        with open(self.kl_ae, "rb") as f:
            data = bytearray(f.read())
        data = data[: len(data) // 2]
        open(damaged, "wb").write(bytes(data))
        self.expect("truncated autoencoder", cmd([], ae=damaged), 4, f"autoencoder.checkpoint: {damaged}", run_dir)
        notckpt = self.path("errors", "notes.h5")
        open(notckpt, "w").write("not a checkpoint\n")
        self.expect("not a checkpoint", cmd([], ae=notckpt), 4, f"{notckpt}: cannot open it as a checkpoint",
                    run_dir)
        stage2 = os.path.join(self.path("ref2"), ckpt_name(STEPS))
        self.expect("a stage-2 checkpoint as the autoencoder", cmd([], ae=stage2), 4,
                    f"autoencoder.checkpoint: {stage2} is a checkpoint of stage diffusion; "
                    "autoencoder.checkpoint needs a stage-1 (vae) checkpoint", run_dir)
        self.expect("another input size", cmd([], data=self.a.odd), 3,
                    "data.train does not match the autoencoder", run_dir)
        # the demo shards with one genre renamed: everything else matches the autoencoder's data
        renamed = self.path("errors", "renamed")
        shutil.copytree(os.path.join(self.a.data, "train"), os.path.join(renamed, "train"))
        for shard in os.listdir(os.path.join(renamed, "train")):
            with h5py.File(os.path.join(renamed, "train", shard), "r+") as f:
                names = [g.decode() if isinstance(g, bytes) else g for g in f.attrs["genre_names"]]
                f.attrs["genre_names"] = [("ambient" if g == "noise" else g).encode() for g in names]
        self.expect("other genres", cmd([], data=renamed), 3,
                    "data.train does not match the autoencoder: " + os.path.join(renamed, "train"), run_dir)
        self.expect("another dataset", cmd([], data=self.a.handful), 3,
                    "data.train does not match the autoencoder", run_dir)
        self.expect("a key of the wrong stage", cmd(["--set", "model.channels=16"]), 2,
                    "--set model.channels=16: model.channels: belongs to stage vae, but this config's stage is "
                    "diffusion", run_dir)
        self.expect("heads not dividing the width", cmd(["--set", "dit.heads=3"]), 2,
                    "--set dit.heads=3: dit.heads: expected a divisor of dit.hidden (64), got '3'", run_dir)
        self.expect("a patch not dividing the latent grid", cmd(["--set", "dit.patch=3"]), 2,
                    "dit.patch (3) must divide the latent grid 32 x 64", run_dir)
        # resuming with another autoencoder: same architecture, other weights
        resume_dir = fresh_dir(self.path("errors", "resume"))
        shutil.copy(os.path.join(self.path("ref2"), ckpt_name(EVERY)), resume_dir)
        other_ae = self.path("ae-kl-other")
        fresh_dir(other_ae)
        self.run(self.mpirun(1) + [self.a.train, os.path.join(self.a.configs, "demo-vae.yaml"),
                                   "--set", f"data.train={self.a.data}/train", "--set", "data.val=",
                                   "--set", f"run.dir={other_ae}", "--set", "train.steps=2",
                                   "--set", "train.seed=5", "--set", "checkpoint.every=0"])
        out = self.run(self.command(1, resume_dir, COMMON, ae=os.path.join(other_ae, ckpt_name(2))), expect_rc=4)
        want = (f"autoencoder.checkpoint {os.path.join(other_ae, ckpt_name(2))} differs from the autoencoder in "
                f"{os.path.join(resume_dir, ckpt_name(EVERY))}: its enc.conv_in.weight differs; refusing to resume")
        if want not in out:
            print(out)
            fail(f"resuming with another autoencoder: expected '{want}'")
        print("resuming with another autoencoder: exit 4, the difference named")


def main():
    checks = [n[6:] for n in dir(Checks) if n.startswith("check_")]
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=checks)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--data", required=True, help="the demo dataset")
    ap.add_argument("--handful", required=True, help="a dataset of one demo file, one genre")
    ap.add_argument("--odd", required=True, help="a dataset of 250-frame segments")
    ap.add_argument("--work", required=True)
    ap.add_argument("--learn-steps", type=int, default=200)
    ap.add_argument("--learn-ratio", type=float, default=0.6)
    ap.add_argument("--overfit-ratio", type=float, default=0.1)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    getattr(Checks(args), "check_" + args.check)()
    print("PASS")


if __name__ == "__main__":
    main()
