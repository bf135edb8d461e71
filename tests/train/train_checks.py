#!/usr/bin/env python3
"""End-to-end checks of remixer-train through the real program, the real config files and real
(demo) shards. Each subcommand is one ctest test; it exits non-zero with a message on failure.

  learns     the demo config trains: validation reconstruction falls well below its start
  worldsize  1, 2 and 4 ranks give the same loss at every step (summation order only)
  overfit    a handful of segments is memorised: reconstruction loss near zero
  errors     stage config errors: indivisible global batch, architecture not fitting the input
"""
import argparse
import json
import os
import shutil
import subprocess
import sys


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def run(cmd, expect_rc=0, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", RMX_NO_PROGRESS="1")
    env.update(env_extra or {})
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = p.stdout + p.stderr
    if expect_rc is not None and p.returncode != expect_rc:
        print(out)
        fail(f"exit code {p.returncode}, expected {expect_rc}")
    return p.returncode, out


def mpirun(args, ranks):
    return [args.mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
            "-np", str(ranks)]


def metrics(run_dir, split):
    rows = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row["split"] == split:
                rows.append(row)
    return rows


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    return path


def check_learns(args):
    run_dir = fresh_dir(os.path.join(args.work, "learns"))
    run(mpirun(args, 2) + [args.train, args.config("demo-vae.yaml"),
                           "--set", f"data.train={args.data}/train", "--set", f"data.val={args.data}/val",
                           "--set", f"run.dir={run_dir}"])
    val = metrics(run_dir, "val")
    if len(val) < 2 or val[0]["step"] != 0:
        fail(f"expected a step-0 baseline and later evaluations, got {val}")
    first, last = val[0]["rec"], val[-1]["rec"]
    ratio = last / first
    print(f"val rec: step 0 {first:.2f} -> step {val[-1]['step']} {last:.2f} (ratio {ratio:.3f})")
    if not ratio < 0.35:
        fail(f"validation reconstruction fell only to {ratio:.3f} of its start (want < 0.35)")
    pngs = [f for f in os.listdir(run_dir) if f.startswith("eval-") and f.endswith(".png")]
    if len(pngs) != len(val):
        fail(f"expected one PNG per evaluation ({len(val)}), found {sorted(pngs)}")
    train = metrics(run_dir, "train")
    if [r["step"] for r in train] != list(range(1, len(train) + 1)) or not all("kl" in r for r in train):
        fail("metrics.jsonl train lines must carry every step once, labelled with completed steps "
             "(1, 2, ...), with the loss terms by name")
    if train[-1]["step"] != val[-1]["step"]:
        fail(f"the last training line ({train[-1]['step']}) and the final evaluation "
             f"({val[-1]['step']}) must carry the same step label")


def check_worldsize(args):
    losses, pngs = {}, {}
    for ranks in (1, 2, 4):
        run_dir = fresh_dir(os.path.join(args.work, f"ws{ranks}"))
        run(mpirun(args, ranks) + [args.train, args.config("demo-vae.yaml"),
                                   "--set", f"data.train={args.data}/train",
                                   "--set", f"data.val={args.data}/val", "--set", "eval.every=6",
                                   "--set", "train.steps=6", "--set", "train.global_batch=8",
                                   "--set", "train.micro_batch=2", "--set", "train.warmup=2",
                                   "--set", f"run.dir={run_dir}"])
        losses[ranks] = [(r["step"], r["loss"], r["rec"], r["kl"]) for r in metrics(run_dir, "train")]
        with open(os.path.join(run_dir, "eval-000000.png"), "rb") as f:
            pngs[ranks] = f.read()
    # The untrained model's evaluation picture: the same 4 panels whatever the number of ranks.
    for ranks in (2, 4):
        if pngs[ranks] != pngs[1]:
            fail(f"eval-000000.png from {ranks} ranks differs from the 1-rank picture")
    print("eval-000000.png byte-identical for 1, 2 and 4 ranks")
    base = losses[1]
    for ranks in (2, 4):
        if len(losses[ranks]) != len(base):
            fail(f"{ranks} ranks logged {len(losses[ranks])} steps, 1 rank {len(base)}")
        for a, b in zip(base, losses[ranks]):
            for name, x, y in zip(("loss", "rec", "kl"), a[1:], b[1:]):
                rel = abs(x - y) / max(abs(x), 1e-12)
                print(f"step {a[0]} {name}: 1 rank {x:.9g}, {ranks} ranks {y:.9g}, rel diff {rel:.2e}")
                if rel > 2e-5:
                    fail(f"step {a[0]} {name} differs by {rel:.2e} between 1 and {ranks} ranks")


def check_overfit(args):
    run_dir = fresh_dir(os.path.join(args.work, "overfit"))
    run(mpirun(args, 1) + [args.train, args.config("demo-vae.yaml"),
                           "--set", f"data.train={args.handful}/train", "--set", "data.val=",
                           "--set", "train.steps=100", "--set", "train.global_batch=4",
                           "--set", "train.micro_batch=4", "--set", "train.lr=3e-3",
                           "--set", "train.min_lr=3e-4", "--set", "model.channels=16",
                           "--set", "model.channel_mult=[1,2]",
                           "--set", "model.latent_channels=8", "--set", "model.kl_weight=1e-8",
                           "--set", f"run.dir={run_dir}"])
    train = metrics(run_dir, "train")
    first, last = train[0]["rec"], min(r["rec"] for r in train[-10:])
    print(f"train rec on 4 segments: {first:.1f} -> {last:.2f} (ratio {last / first:.4f})")
    if not last / first < 0.01:
        fail(f"could not overfit 4 segments: reconstruction fell only to {last / first:.4f} of its start")


def check_errors(args):
    common = [args.train, args.config("demo-vae.yaml"), "--set", f"data.train={args.data}/train",
              "--set", "data.val=", "--dry-run"]
    rc, out = run(mpirun(args, 3) + common + ["--set", "train.micro_batch=2"], expect_rc=2)
    want = "remixer-train: error: train.global_batch 8 is not divisible by world size 3 x train.micro_batch 2"
    if want not in out:
        fail(f"expected '{want}' in:\n{out}")
    if out.count("not divisible") != 1:
        fail("the message must be printed once (rank 0), not by every rank:\n" + out)
    rc, out = run([args.train, args.config("demo-vae.yaml"), "--set", f"data.train={args.odd}/train",
                   "--set", "data.val=", "--set", "model.channel_mult=[1,2,4]", "--dry-run"], expect_rc=2)
    want = ("model.channel_mult has 3 levels, so the input (128 x 250) must be divisible by 4 in "
            "both dimensions; 250 is not")
    if want not in out or args.config("demo-vae.yaml") not in out:
        fail(f"expected the config file and '{want}' in:\n{out}")
    rc, out = run([args.train, args.config("demo-vae.yaml"), "--set", "data.train=/nonexistent/shards",
                   "--dry-run"], expect_rc=3)
    if "/nonexistent/shards" not in out:
        fail("a missing dataset must be named in the message:\n" + out)
    rc, out = run([args.train, args.config("demo-vae.yaml"), "--set", "train.lr=fast"], expect_rc=2)
    if "--set train.lr=fast: train.lr: expected a number, got 'fast'" not in out:
        fail("a bad --set must name the key and value:\n" + out)
    print("all stage errors reported as expected")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=["learns", "worldsize", "overfit", "errors"])
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--data", required=True, help="the demo dataset")
    ap.add_argument("--handful", help="a dataset of 4 segments")
    ap.add_argument("--odd", help="a dataset of 250-frame segments")
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    args.config = lambda name: os.path.join(args.configs, name)
    os.makedirs(args.work, exist_ok=True)
    {"learns": check_learns, "worldsize": check_worldsize, "overfit": check_overfit,
     "errors": check_errors}[args.check](args)
    print("PASS")


if __name__ == "__main__":
    main()
