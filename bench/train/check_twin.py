"""The PyTorch twin against Remixer: names, shapes, loss and gradients.

usage: check_twin.py LIST_PARAMS WORK_DIR [AE_REFERENCE_TEST]

1. For the bench size (kl and vq) and a small size, the twin's state_dict keys, shapes and order
   equal list_params' output.
2. On a small size (1x32x64, C 16, mult [1, 2], batch 4), with Remixer's initial weights, input and
   kl noise loaded into the twin (which runs in double), the loss terms agree to a relative 1e-5
   and every gradient tensor (and d loss / d x) to a relative 1e-4 in the 2-norm of the
   difference, on the cpu and ref backends; the same for vq (a code picked differently would show
   in the gradients). C is 16, not 8: with one channel per GroupNorm group the bias of a conv
   followed by a GroupNorm would have an exactly zero gradient, which float32 rounding leaves at
   ~1e-9, a meaningless relative difference.
3. With AE_REFERENCE_TEST (tests/model/test_ae_reference.c, which CI runs on the committed
   tests/model/ref/*.h5 without torch): make_ae_reference.py writes fresh kl and vq cases (another
   seed than the committed ones) and the test passes on them, so the generator, the twin and the
   committed files stay in step.
Exit 77 (skipped) when torch cannot be imported.
"""
import os
import subprocess
import sys

try:
    import numpy as np
    import torch
except ImportError as e:
    print(f"SKIPPED: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ae_twin import AutoencoderTwin  # noqa: E402

LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
# kl_weight 0.5 rather than 1e-6, so that the KL's share of the encoder gradients is checked too.
SMALL = dict(channels=16, channel_mult=(1, 2), res_blocks=1, latent_channels=4, codebook_size=64,
             kl_weight=0.5)
SMALL_ARGS = ["--channels", "16", "--mult", "1,2", "--latent", "4", "--codebook", "64",
              "--kl-weight", "0.5", "--size", "32x64", "--batch", "4"]


def registry(exe, args):
    out = subprocess.run([exe] + args, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        name, shape = line.split(" ", 1)
        rows.append((name, tuple(int(d) for d in shape.strip("[]").split(","))))
    return rows


def twin_rows(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def check_names(exe):
    failures = 0
    cases = [([], {}), (["--bottleneck", "vq"], dict(bottleneck="vq")),
             (SMALL_ARGS, SMALL), (SMALL_ARGS + ["--bottleneck", "vq"], dict(SMALL, bottleneck="vq"))]
    for args, kwargs in cases:
        ours, theirs = registry(exe, args), twin_rows(AutoencoderTwin(**kwargs))
        ok = ours == theirs
        failures += not ok
        print(f"names/shapes {' '.join(args) or '(bench size, kl)'}: {len(ours)} tensors, "
              f"{'identical' if ok else 'DIFFERENT'}")
        if not ok:
            for a, b in zip(ours + [None] * len(theirs), theirs + [None] * len(ours)):
                if a != b:
                    print(f"  first difference: remixer {a} twin {b}")
                    break
    return failures


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check_numbers(exe, workdir, backend, bottleneck):
    d = os.path.join(workdir, f"{backend}-{bottleneck}")
    os.makedirs(d, exist_ok=True)
    args = SMALL_ARGS + ["--bottleneck", bottleneck, "--backend", backend, "--dump", d]
    rows = registry(exe, args)
    load = lambda name: np.fromfile(os.path.join(d, name), dtype=np.float32)  # noqa: E731
    values, grads = load("params.f32"), load("grads.f32")
    model = AutoencoderTwin(**dict(SMALL, bottleneck=bottleneck)).double()
    state, offset = {}, 0
    for name, shape in rows:
        n = int(np.prod(shape))
        state[name] = torch.from_numpy(values[offset:offset + n].reshape(shape).astype(np.float64))
        offset += n
    model.load_state_dict(state)
    # Double precision on the PyTorch side: the difference measured is Remixer's float32 error.
    x = torch.from_numpy(load("x.f32").astype(np.float64)).reshape(4, 1, 32, 64).requires_grad_()
    eps = None
    if bottleneck == "kl":
        eps = torch.from_numpy(load("eps.f32").astype(np.float64)).reshape(4, 4, 16, 32)
    total, rec, reg = model.losses(x, eps)
    total.backward()

    ours = [float(v) for v in open(os.path.join(d, "loss.txt")).read().split()]
    ours_reg = ours[1] if bottleneck == "kl" else ours[2]
    failures = 0
    print(f"{backend} {bottleneck}: loss remixer {ours[3]:.8g} twin {total.item():.8g} "
          f"(rec {ours[0]:.8g} / {rec.item():.8g}, reg {ours_reg:.8g} / {reg.item():.8g})")
    for label, a, b in (("total", ours[3], total.item()), ("rec", ours[0], rec.item()),
                        ("reg", ours_reg, reg.item())):
        err = abs(a - b) / max(abs(b), 1e-30)
        if err > LOSS_RTOL:
            print(f"  FAIL loss {label}: relative difference {err:.3g} > {LOSS_RTOL}")
            failures += 1
    worst, worst_name, offset = 0.0, "", 0
    params = dict(model.named_parameters())
    for name, shape in rows:
        if name not in params:
            continue
        n = int(np.prod(shape))
        err = rel(grads[offset:offset + n], params[name].grad.numpy().ravel())
        offset += n
        if err > worst:
            worst, worst_name = err, name
        if err > GRAD_RTOL:
            print(f"  FAIL gradient {name}: relative difference {err:.3g} > {GRAD_RTOL}")
            failures += 1
    err_dx = rel(load("dx.f32"), x.grad.numpy().ravel())
    if err_dx > GRAD_RTOL:
        print(f"  FAIL d loss / d x: relative difference {err_dx:.3g} > {GRAD_RTOL}")
        failures += 1
    print(f"  {len(params)} gradients, worst relative difference {worst:.3g} ({worst_name}); "
          f"d loss / d x {err_dx:.3g}")
    return failures


def check_reference(test_exe, workdir):
    make = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_ae_reference.py")
    files = []
    for case in ("kl", "vq"):
        out = os.path.join(workdir, f"ae_{case}.h5")
        subprocess.run([sys.executable, make, out, "--case", case, "--seed", "4321"], check=True)
        files.append(out)
    r = subprocess.run([test_exe] + files, capture_output=True, text=True)
    print(r.stdout + r.stderr, end="")
    print(f"fresh reference cases: {'pass' if r.returncode == 0 else 'FAIL'}")
    return 1 if r.returncode else 0


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    exe, workdir = sys.argv[1], sys.argv[2]
    os.makedirs(workdir, exist_ok=True)
    failures = check_names(exe)
    for backend in ("cpu", "ref"):
        for bottleneck in ("kl", "vq"):
            failures += check_numbers(exe, workdir, backend, bottleneck)
    if len(sys.argv) == 4:
        failures += check_reference(sys.argv[3], workdir)
    print("twin matches" if failures == 0 else f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
