#!/usr/bin/env python3
"""Generation end to end: the README's main job (scripts/demo.sh: demo data -> autoencoder ->
diffusion transformer -> remixer-generate) into a test folder, then remixer-generate on its
checkpoint. Each subcommand is one ctest test; it exits 1 with a message on failure.

  pipeline      (fixture) scripts/demo.sh runs to the end and writes the clips and the remixes
                (tests/remix/remix_quality.py judges those); a second run has nothing to do
  genres        a classifier built only from the real demo audio (genre_classifier.py) labels at
                least 80 % of the generated clips as the genre requested; real held-out clips near
                100 %
  guidance      the same classifier scores clips generated with --cfg 1 (conditional only) and
                --cfg 0 (unconditional) lower than with the default guidance; the three figures
  continuation  a 3-segment clip: no jump in level at the seams compared with the level changes
                within the segments
  determinism   the same call writes the same bytes; --seconds of any length; --count; every genre
  errors        bad arguments and inputs: messages, exit codes, no partial WAV
"""
import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import wave

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import genre_classifier  # noqa: E402

TIMEOUT = 3600  # seconds a command may run; --timeout sets it (CMake: the test's limit less a minute)
SR = 22050


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def run(cmd, expect_rc=0, env=None):
    e = dict(os.environ, RMX_NO_PROGRESS="1")
    e.update(env or {})
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=TIMEOUT)
    out = p.stdout + p.stderr
    if expect_rc is not None and p.returncode != expect_rc:
        print(out)
        fail(f"exit code {p.returncode}, expected {expect_rc}")
    return out


def wav_samples(path):
    with wave.open(path) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0


class Checks:
    def __init__(self, a):
        self.a = a
        self.demo = os.path.join(a.work, "demo")
        self.data = os.path.join(self.demo, "demo-data")
        self.clips = os.path.join(self.demo, "runs", "demo-diffusion", "clips")

    @property
    def ckpt(self):
        folder = os.path.join(self.demo, "runs", "demo-diffusion")
        found = sorted(f for f in os.listdir(folder) if f.startswith("ckpt-") and f.endswith(".h5"))
        if not found:
            fail(f"no stage-2 checkpoint in {folder}")
        return os.path.join(folder, found[-1])

    def generate(self, out, *args, expect_rc=0):
        return run([self.a.generate, self.ckpt, "--out", out, *args], expect_rc=expect_rc,
                   env={"OMP_NUM_THREADS": "2"})

    def demo_env(self):
        return {"RMX_DEMO_DIR": self.demo, "RMX_DEMO_NO_BUILD": "1", "RMX_BUILD_DIR": self.a.build}

    # ---- the pipeline ----

    def check_pipeline(self):
        shutil.rmtree(self.demo, ignore_errors=True)
        os.makedirs(self.demo)
        out = run(["bash", os.path.join(self.a.repo, "scripts", "demo.sh")], env=self.demo_env())
        wavs = sorted(f for f in os.listdir(self.clips) if f.endswith(".wav"))
        want = [f"{g}-{k}.wav" for g in ("arpeggio", "chords", "drums", "noise") for k in range(2)]
        if wavs != want:
            print(out[-3000:])
            fail(f"expected {want} in {self.clips}, found {wavs}")
        remixes = os.path.join(self.demo, "runs", "demo-remix", "remixes")
        found = sorted(f for f in os.listdir(remixes) if f.endswith(".wav"))
        want = [f"{g}-in-the-style-of-{s}.wav" for g, s in (("arpeggio", "chords"), ("chords", "drums"),
                                                             ("drums", "noise"), ("noise", "arpeggio"))]
        if found != want:
            print(out[-3000:])
            fail(f"expected {want} in {remixes}, found {found}")
        if f"done: listen to {self.clips}/*.wav and {remixes}/*.wav" not in out:
            fail("the main job must end by saying where the WAVs are")
        again = run(["bash", os.path.join(self.a.repo, "scripts", "demo.sh")], env=self.demo_env())
        if again.count("nothing to do") != 3 or "nothing to generate" not in again or "nothing to remix" not in again:
            print(again)
            fail("a second run must find the three stages finished and the clips and remixes up to date")
        print(f"pipeline: {len(wavs)} clips in {self.clips}, {len(found)} remixes in {remixes}; "
              "a second run has nothing to do")

    # ---- what the clips sound like ----

    def accuracy(self, clf, folder):
        right, total = 0, 0
        for name in sorted(os.listdir(folder)):
            if name.endswith(".wav"):
                total += 1
                right += clf.predict(wav_samples(os.path.join(folder, name))) == name.rsplit("-", 1)[0]
        return right / total, total

    def check_genres(self):
        clf = genre_classifier.Classifier(self.data)
        held = [(g, w) for rel, g in genre_classifier.split_files(self.data, "val").items()
                for w in genre_classifier.windows(genre_classifier.read_wav(os.path.join(self.data, "audio", rel)))]
        real = sum(clf.predict(w) == g for g, w in held) / len(held)
        more = os.path.join(self.a.work, "genres")
        shutil.rmtree(more, ignore_errors=True)
        for seed in ("7", "11"):  # 4 clips a genre per seed, named apart: drums-0.wav -> drums-s7_0.wav
            folder = os.path.join(self.a.work, f"genres-{seed}")
            shutil.rmtree(folder, ignore_errors=True)
            self.generate(folder, "--genre", "all", "--count", "4", "--seed", seed)
            os.makedirs(more, exist_ok=True)
            for name in os.listdir(folder):
                shutil.copy(os.path.join(folder, name), os.path.join(more, name.replace("-", f"-s{seed}_", 1)))
        for name in os.listdir(self.clips):  # and the pipeline's own clips: drums-0.wav -> drums-p0.wav
            shutil.copy(os.path.join(self.clips, name), os.path.join(more, name.replace("-", "-p", 1)))
        acc, n = self.accuracy(clf, more)
        print(f"classifier: real held-out clips {real:.3f} ({len(held)}), generated clips {acc:.3f} ({n})")
        if real < 0.95:
            fail(f"the classifier must recognise real held-out clips (got {real:.3f})")
        if acc < 0.8:
            fail(f"only {acc:.3f} of the generated clips were recognised as their genre (want >= 0.8)")

    def check_guidance(self):
        clf = genre_classifier.Classifier(self.data)
        figures = {}
        for cfg, seeds in (("default", ("21", "22")), ("1", ("21", "22")), ("0", ("21",))):
            right = total = 0
            for seed in seeds:
                folder = os.path.join(self.a.work, f"cfg-{cfg}-{seed}")
                shutil.rmtree(folder, ignore_errors=True)
                extra = [] if cfg == "default" else ["--cfg", cfg]
                self.generate(folder, "--genre", "all", "--count", "4", "--seed", seed, *extra)
                acc, n = self.accuracy(clf, folder)
                right, total = right + acc * n, total + n
            figures[cfg] = right / total
        print(f"genre accuracy: default guidance (--cfg 3) {figures['default']:.3f}, --cfg 1 {figures['1']:.3f}, "
              f"--cfg 0 {figures['0']:.3f}")
        if not (figures["default"] > figures["1"] > figures["0"]):
            fail("guidance must matter: the default must score above --cfg 1 (conditional only), and that above "
                 "--cfg 0 (unconditional)")

    def check_continuation(self):
        folder = os.path.join(self.a.work, "long")
        shutil.rmtree(folder, ignore_errors=True)
        out = self.generate(folder, "--genre", "all", "--seconds", "7", "--seed", "3")
        if "(3 segments)" not in out:
            print(out)
            fail("a 7 s clip is made of 3 segments")
        # segment s starts at s * (256 - 64) frames of hop 256; the crossfade spans the first 64
        seams = [s * 192 * 256 + 32 * 256 for s in (1, 2)]
        worst = 0.0
        for name in sorted(os.listdir(folder)):
            x = wav_samples(os.path.join(folder, name))
            if len(x) != 7 * SR:
                fail(f"{name}: {len(x)} samples, expected {7 * SR}")
            win = 2048  # frame energies in dB, 93 ms frames
            e = 10 * np.log10(np.array([np.mean(x[i:i + win] ** 2) + 1e-10 for i in range(0, len(x) - win, win // 2)]))
            half = 4  # 0.19 s either side

            def jump(at):
                k = at // (win // 2)
                return abs(e[k - half:k].mean() - e[k:k + half].mean())

            inside = [jump(p) for p in range(half * win, len(x) - half * win, win // 2)
                      if all(abs(p - s) > 64 * 256 for s in seams)]
            bound = max(np.percentile(inside, 95), 3.0)
            for s in seams:
                j = jump(s)
                worst = max(worst, j / bound)
                print(f"{name}: level change across the seam at {s / SR:.2f} s {j:.2f} dB "
                      f"(within segments: 95th percentile {np.percentile(inside, 95):.2f} dB)")
                if j > bound:
                    fail(f"{name}: a jump of {j:.2f} dB at the seam at {s / SR:.2f} s (bound {bound:.2f} dB)")
        print(f"no seam jumps beyond the within-segment changes (worst {worst:.2f} of the bound)")

    def check_determinism(self):
        a, b = os.path.join(self.a.work, "det-a"), os.path.join(self.a.work, "det-b")
        for folder in (a, b):
            shutil.rmtree(folder, ignore_errors=True)
            self.generate(folder, "--genre", "chords", "--count", "2", "--seconds", "4.2", "--seed", "5")
        for name in os.listdir(a):
            if not filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False):
                fail(f"{name}: the same call wrote other bytes")
        print("same call, same bytes")
        for seconds in ("0.5", "1", "4.2"):
            folder = os.path.join(self.a.work, f"len-{seconds}")
            shutil.rmtree(folder, ignore_errors=True)
            self.generate(folder, "--genre", "drums", "--seconds", seconds, "--steps", "5")
            n = len(wav_samples(os.path.join(folder, "drums-0.wav")))
            if n != round(float(seconds) * SR):
                fail(f"--seconds {seconds}: {n} samples")
        print("--seconds 0.5, 1, 4.2: exact lengths")
        folder = os.path.join(self.a.work, "count")
        shutil.rmtree(folder, ignore_errors=True)
        out = self.generate(folder, "--genre", "all", "--count", "3", "--steps", "3", "--seconds", "1")
        want = sorted(f"{g}-{k}.wav" for g in ("arpeggio", "chords", "drums", "noise") for k in range(3))
        if sorted(os.listdir(folder)) != want or out.count("wrote ") != 12:
            fail(f"--count 3 --genre all: {sorted(os.listdir(folder))}")
        print("--count 3 of every genre: 12 files, each reported")

    def check_errors(self):
        folder = os.path.join(self.a.work, "errors")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        g = self.a.generate

        def expect(what, cmd, rc, want):
            out = run(cmd, expect_rc=rc)
            if want not in out:
                print(out)
                fail(f"{what}: expected '{want}'")
            leftovers = [f for f in os.listdir(folder) if f.endswith(".wav") or ".tmp." in f]
            if leftovers:
                fail(f"{what}: left {leftovers} behind")
            print(f"{what}: exit {rc}")

        out_dir = os.path.join(folder, "out")
        expect("unknown genre", [g, self.ckpt, "--genre", "polka", "--out", out_dir], 2,
               "'polka' is not a genre of")
        expect("unknown genre lists the genres", [g, self.ckpt, "--genre", "polka", "--out", out_dir], 2,
               "its genres are arpeggio, chords, drums, noise")
        stage1 = sorted(f for f in os.listdir(os.path.join(self.demo, "runs", "demo-vae")) if f.endswith(".h5"))[-1]
        stage1 = os.path.join(self.demo, "runs", "demo-vae", stage1)
        expect("a stage-1 checkpoint", [g, stage1, "--genre", "drums", "--out", out_dir], 4,
               "is a checkpoint of stage vae; this needs a stage-2 (diffusion) checkpoint")
        damaged = os.path.join(folder, "damaged.h5")
        data = open(self.ckpt, "rb").read()
        open(damaged, "wb").write(data[: len(data) // 2])  # a copy cut short
        expect("a truncated checkpoint", [g, damaged, "--genre", "drums", "--out", out_dir], 4,
               f"{damaged}: damaged checkpoint: it is {len(data) // 2} bytes long but was written with {len(data)}: "
               "truncated")
        for bad in ("0", "-1"):
            expect(f"--count {bad}", [g, self.ckpt, "--genre", "drums", "--count", bad], 2, "--count: expected")
            expect(f"--seconds {bad}", [g, self.ckpt, "--genre", "drums", "--seconds", bad], 2, "--seconds: expected")
        blocker = os.path.join(folder, "file")
        open(blocker, "w").write("x")
        expect("an output folder that is a file", [g, self.ckpt, "--genre", "drums", "--out", blocker], 2, "--out:")
        ro = os.path.join(folder, "readonly")
        os.makedirs(ro)
        os.chmod(ro, 0o500)
        if os.access(ro, os.W_OK):  # root writes anyway: a folder under a file cannot be made
            expect("an output folder that cannot be made", [g, self.ckpt, "--genre", "drums", "--out",
                                                           os.path.join(blocker, "sub")], 2, "--out:")
        else:
            expect("an output folder that cannot be written", [g, self.ckpt, "--genre", "drums", "--out", ro], 2,
                   "cannot write into it")
        expect("no genre", [g, self.ckpt], 2, "--genre NAME|all is required")


def main():
    global TIMEOUT
    checks = [n[6:] for n in dir(Checks) if n.startswith("check_")]
    ap = argparse.ArgumentParser()
    ap.add_argument("check", choices=checks)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--generate", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds each command may run")
    args = ap.parse_args()
    TIMEOUT = args.timeout
    os.makedirs(args.work, exist_ok=True)
    getattr(Checks(args), "check_" + args.check)()
    print("PASS")


if __name__ == "__main__":
    main()
