"""The DiT's PyTorch twin against Remixer, live: fresh reference cases, checked by the C test.

usage: check_dit_twin.py TEST_DIT_REFERENCE WORK_DIR

1. The bench size (D 384, depth 12, heads 6, patch 2, latent 8 x 32 x 64, 4 genres): the twin's
   state_dict names, shapes and order equal Remixer's registries (pos_embed, then the trained
   tensors), 32,488,736 trained parameters.
2. Fresh cases (new weights, inputs, timesteps, labels with the null class, target noise) at two
   sizes that are not the committed file's: "small" (6 heads, 4 x 4 patches on a 3 x 8 grid, MLP
   ratio 3, 3 blocks) and "tiny" with another seed and batch; each goes through
   test_dit_reference (output, loss, every gradient, the input gradient, one AdamW step, on the
   ref and cpu backends).
3. Style tokens (stage 3): the bench size's names and shapes with style=True (the four style
   tensors last), and fresh "small" and "tiny" cases with style tokens, some styles dropped.
Exit 77 (skipped) when torch cannot be imported.
"""
import os
import subprocess
import sys

try:
    import torch  # noqa: F401
    import h5py  # noqa: F401
except ImportError as e:
    print(f"SKIPPED: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
MAKE = os.path.join(HERE, "make_dit_reference.py")

CASES = [
    ("bench-names", ["--size", "bench", "--names-only"]),
    ("small", ["--size", "small", "--seed", "20240611", "--batch", "3"]),
    ("tiny", ["--size", "tiny", "--seed", "97", "--batch", "5"]),
    ("bench-names-style", ["--size", "bench", "--names-only", "--style"]),
    ("small-style", ["--size", "small", "--seed", "20250101", "--batch", "3", "--style"]),
    ("tiny-style", ["--size", "tiny", "--seed", "98", "--batch", "6", "--style"]),
]


def main():
    exe, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    failures = 0
    for name, args in CASES:
        path = os.path.join(work, f"{name}.h5")
        subprocess.run([sys.executable, MAKE, path] + args, check=True)
        rc = subprocess.run([exe, path]).returncode
        print(f"{name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'}", flush=True)
        failures += rc != 0
    print("twin matches" if failures == 0 else f"{failures} case(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
