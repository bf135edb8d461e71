"""The PyTorch twin's stage-2 training step, on the weights and inputs of a bench_dit_step case.

The model is dit_twin.DiTTwin with the case's hyper-parameters, loaded from the case file that
`bench_dit_step --write FILE` wrote (every tensor with load_state_dict(strict=True): pos_embed
and all trained tensors). A step does what bench_dit_step does: zero the gradients
(set_to_none), z_t = a z0 + b eps, eps_hat = model(z_t, t, y), loss = F.mse_loss(eps_hat, eps),
backward, the global gradient norm read back to Python (as clip_grad_norm_ computes it), AdamW
(lr 1e-4, betas 0.9 / 0.999, eps 1e-8, weight decay 0), the EMA of the weights (decay
min(0.9999, (1 + k) / (10 + k)) at step k, torch._foreach_mul_ / _foreach_add_).

Step 0 runs at the case's weights, so its loss must equal the loss bench_dit_step computed and
stored in the case: relative difference at most --tol (1e-5), else exit 1 before anything is
timed. --check only does that (and the same step in float64, to show how far each float32 side is
from exact arithmetic), without timing.

usage: torch_dit_step.py --case FILE [--check] [--threads N] [--steps N] [--warmup N]
                         [--device cpu|cuda] [--tf32 0|1] [--tol R] [--foreach 0|1]
                         [--peak-fp32 TFLOPS] [--peak-tf32 TFLOPS]
Prints a report and one "RESULT key=value ..." line. Exit 77 when torch (or, for --device cuda, a
CUDA device) is missing.
"""
import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"torch_dit_step: skipped: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_twin import DiTTwin  # noqa: E402

MAGIC = "RMXDIT-BENCH-CASE 1"
HPARAMS = ("in_channels", "height", "width", "patch", "hidden", "depth", "heads", "mlp_ratio",
           "num_classes", "freq_dim")


def read_case(path, magic=MAGIC, writer="bench_dit_step"):
    """(header, {tensor name: array}, {input or output name: array}) of a case file that `writer`
    wrote with the first line `magic` (bench_dit_step's; bench/remix's share the layout)."""
    header, items = {}, []
    with open(path, "rb") as f:
        if f.readline().decode().rstrip("\n") != magic:
            raise SystemExit(f"{path}: not a {writer} case file")
        while True:
            line = f.readline().decode()
            if not line:
                raise SystemExit(f"{path}: header without 'end'")
            if line == "end\n":
                break
            parts = line.split()
            if parts[0] in ("tensor", "input", "output"):
                ndim = int(parts[2])
                items.append((parts[0], parts[1], tuple(int(v) for v in parts[3:3 + ndim])))
            else:
                header[parts[0]] = parts[1]
        tensors, inputs = {}, {}
        for kind, name, shape in items:
            dtype = np.int32 if (kind, name) == ("input", "y") else np.float32
            count = int(np.prod(shape))
            a = np.fromfile(f, dtype=dtype, count=count)
            if a.size != count:
                raise SystemExit(f"{path}: truncated at {name}")
            (tensors if kind == "tensor" else inputs)[name] = a.reshape(shape)
    return header, tensors, inputs


def machine_busy_s():
    """CPU seconds the whole machine spent busy since boot (every process), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s():
    t = os.times()
    return t.user + t.system


def rss_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(header, tensors, dtype, device):
    hp = {k: (float(header[k]) if k == "mlp_ratio" else int(header[k])) for k in HPARAMS}
    model = DiTTwin(**hp)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return model.to(device=device, dtype=dtype), hp


def flops_per_sample(hp):
    """rmx_dit_flops_per_sample (model/dit.c), for the report when the C side is absent."""
    n = (hp["height"] // hp["patch"]) * (hp["width"] // hp["patch"])
    d, dm, f = hp["hidden"], int(hp["hidden"] * hp["mlp_ratio"]), hp["freq_dim"]
    pd = hp["in_channels"] * hp["patch"] ** 2
    block = 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * dm + 2 * d * 6 * d
    return 2 * n * pd * d + 2 * f * d + 2 * d * d + hp["depth"] * block + 2 * d * 2 * d + 2 * n * d * pd


def inputs_on(inputs, dtype, device):
    def f(name):
        return torch.from_numpy(inputs[name]).to(device=device, dtype=dtype)
    z0, eps = f("z0"), f("eps")
    a, b = f("a")[:, None, None, None], f("b")[:, None, None, None]
    t = f("t")
    y = torch.from_numpy(inputs["y"].astype(np.int64)).to(device)
    return z0, eps, a, b, t, y


def loss_and_norm(model, z0, eps, a, b, t, y):
    """One forward + backward at the current weights (no update): loss, gradient norm, output."""
    model.zero_grad(set_to_none=True)
    out = model(a * z0 + b * eps, t, y)
    loss = F.mse_loss(out, eps)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return loss.item(), norm.item(), out.detach().double().cpu().numpy()


def rel_l2(x, ref):
    """||x - ref|| / ||ref|| in float64."""
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64) - ref) / np.linalg.norm(ref))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", required=True)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tf32", type=int, default=0, choices=(0, 1))
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--foreach", type=int, default=None, choices=(0, 1),
                    help="AdamW's foreach implementation (default: PyTorch's choice)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, one more step under torch.autograd.profiler: "
                         "a table of the ATen ops by self time")
    ap.add_argument("--peak-fp32", type=float, default=67.0)
    ap.add_argument("--peak-tf32", type=float, default=495.0)
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    steps = args.steps if args.steps is not None else (10 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    if cuda and not torch.cuda.is_available():
        print("torch_dit_step: skipped: no GPU (torch sees no CUDA device)")
        sys.exit(77)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)  # the patch embedding is a Conv2d
        torch.backends.cudnn.benchmark = True

    header, tensors, inputs = read_case(args.case)
    ref_loss, ref_norm = float(header["loss"]), float(header["grad_norm"])
    model, hp = build(header, tensors, torch.float32, device)
    batch = int(header["batch"])
    z0, eps, a, b, t, y = inputs_on(inputs, torch.float32, device)
    params = [p for p in model.parameters() if p.requires_grad]
    what = (f"on {torch.cuda.get_device_name(device)}, TF32 {'on' if args.tf32 else 'off'}" if cuda
            else f"cpu, {torch.get_num_threads()} threads, OPENBLAS_CORETYPE="
                 f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, ATEN_CPU_CAPABILITY="
                 f"{os.environ.get('ATEN_CPU_CAPABILITY', '(unset)')}")
    print(f"PyTorch {torch.__version__} DiT train step: twin of the case {args.case} "
          f"(written by the {header.get('backend', '?')} backend), batch {batch}, "
          f"{sum(p.numel() for p in params)} parameters, {what}")

    if args.check:
        loss32, norm32, out32 = loss_and_norm(model, z0, eps, a, b, t, y)
        model64, _ = build(header, tensors, torch.float64, device)
        loss64, norm64, out64 = loss_and_norm(model64, *inputs_on(inputs, torch.float64, device))
        ours = inputs["eps_hat"]
        print(f"step-0 output eps_hat (rms {np.sqrt(np.mean(out64 ** 2)):.4g}): relative 2-norm "
              f"error Remixer vs PyTorch float32 {rel_l2(ours, out32):.2e}; vs float64: Remixer "
              f"{rel_l2(ours, out64):.2e}, PyTorch {rel_l2(out32, out64):.2e}")
        rel = abs(loss32 - ref_loss) / abs(ref_loss)
        reln = abs(norm32 - ref_norm) / abs(ref_norm)
        print(f"step-0 loss: Remixer {ref_loss:.9g}, PyTorch float32 {loss32:.9g}, float64 "
              f"{loss64:.9g}")
        print(f"  Remixer vs PyTorch float32: relative {rel:.2e} (tolerance {args.tol:.0e}); "
              f"vs float64: Remixer {abs(ref_loss - loss64) / abs(loss64):.2e}, PyTorch "
              f"{abs(loss32 - loss64) / abs(loss64):.2e}")
        print(f"gradient norm: Remixer {ref_norm:.9g}, PyTorch float32 {norm32:.9g}, float64 "
              f"{norm64:.9g}; Remixer vs PyTorch relative {reln:.2e}")
        ok = rel <= args.tol
        print("CHECK " + ("OK" if ok else "FAILED") + f": the step-0 losses agree to {rel:.2e}")
        print(f"RESULT side=check rel_loss={rel:.3e} rel_norm={reln:.3e} "
              f"rel_loss_remixer_f64={abs(ref_loss - loss64) / abs(loss64):.3e} "
              f"rel_loss_torch_f64={abs(loss32 - loss64) / abs(loss64):.3e} "
              f"rel_out={rel_l2(ours, out32):.3e} ok={int(ok)}")
        return 0 if ok else 1

    adamw_kw = {} if args.foreach is None else {"foreach": bool(args.foreach)}
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            **adamw_kw)
    ema = [p.detach().clone() for p in params]
    base = rss_mib("VmRSS")

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def step(k):
        opt.zero_grad(set_to_none=True)
        out = model(a * z0 + b * eps, t, y)
        loss = F.mse_loss(out, eps)
        loss.backward()
        grads = [p.grad for p in params]
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        opt.step()
        decay = min(0.9999, (1.0 + k) / (10.0 + k))
        with torch.no_grad():
            torch._foreach_mul_(ema, decay)
            torch._foreach_add_(ema, [p.detach() for p in params], alpha=1.0 - decay)
        sync()
        return out, loss, norm

    times = []
    loss0 = last = None
    for s in range(warmup + steps):
        if s == warmup:  # other processes' CPU time over the timed steps
            busy0, own0, start = machine_busy_s(), own_cpu_s(), time.perf_counter()
        sync()
        t0 = time.perf_counter()
        out, loss, norm = step(s + 1)
        dt = time.perf_counter() - t0
        value = loss.item()
        if s == 0:
            loss0 = value
            rel = abs(value - ref_loss) / abs(ref_loss)
            print(f"  check: step-0 loss {value:.9g} against Remixer's {ref_loss:.9g}: relative "
                  f"{rel:.2e} (tolerance {args.tol:.0e}); gradient norm relative "
                  f"{abs(norm - ref_norm) / abs(ref_norm):.2e}; output relative 2-norm "
                  f"{rel_l2(out.detach().cpu().numpy(), inputs['eps_hat']):.2e}")
            if not rel <= args.tol:
                print("torch_dit_step: FAIL: the step-0 loss differs from Remixer's; not timing")
                return 1
        last = value
        if s >= warmup:
            times.append(dt)
        tag = " (warm-up)" if s < warmup else ""
        print(f"  step {s}{tag}: {1e3 * dt:8.1f} ms  loss {value:.7g}  grad norm {norm:.6g}")

    foreign = (machine_busy_s() - busy0) - (own_cpu_s() - own0)
    foreign_pct = 100 * max(foreign, 0) / ((time.perf_counter() - start) * os.cpu_count())
    if args.profile:
        with torch.autograd.profiler.profile(use_cuda=cuda) as prof:
            step(warmup + steps + 1)
        print("\nprofile of one more step (torch.autograd.profiler; ATen ops by self time):")
        print(prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else
                                        "self_cpu_time_total", row_limit=30))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med, best = statistics.median(times), min(times)
    gflop = flops_per_sample(hp) * batch * 3 / 1e9
    print(f"\nloss {loss0:.7g} -> {last:.7g} over {warmup + steps} steps")
    print(f"step time: median {1e3 * med:.1f} ms, min {1e3 * best:.1f} ms ({steps} timed steps "
          f"after {warmup} warm-up); other processes used {foreign_pct:.1f} % of the "
          f"{os.cpu_count()} cores meanwhile")
    print(f"achieved: {gflop / med:.1f} GFLOP/s ({gflop:.1f} GFLOP per step)")
    if cuda:
        dev_peak = torch.cuda.max_memory_allocated(device) / 2**20
        reserved = torch.cuda.max_memory_reserved(device) / 2**20
        tflops = gflop / med / 1e3
        print(f"achieved: {tflops:.2f} TFLOP/s = {100 * tflops / args.peak_fp32:.1f} % of fp32, "
              f"{100 * tflops / args.peak_tf32:.1f} % of TF32; {batch / med:.1f} samples/s")
        print(f"device memory: peak allocated {dev_peak:.0f} MiB, peak reserved {reserved:.0f} MiB; "
              f"host peak (ru_maxrss) {peak:.1f} MiB")
        print(f"RESULT side=torch backend=cuda tf32={args.tf32} batch={batch} "
              f"step_median_ms={1e3 * med:.2f} step_min_ms={1e3 * best:.2f} tflops={tflops:.2f} "
              f"pct_fp32={100 * tflops / args.peak_fp32:.1f} "
              f"pct_tf32={100 * tflops / args.peak_tf32:.1f} samples_s={batch / med:.1f} "
              f"loss0={loss0:.9g} device_mib={reserved:.0f} maxrss_mib={peak:.1f}")
    else:
        print(f"peak memory (ru_maxrss): {peak:.1f} MiB ({base:.1f} MiB resident before the first "
              f"step)")
        print(f"RESULT side=torch backend=cpu threads={torch.get_num_threads()} batch={batch} "
              f"tf32=0 step_median_ms={1e3 * med:.1f} step_min_ms={1e3 * best:.1f} "
              f"samples_s={batch / med:.2f} tflops={gflop / med / 1e3:.3f} "
              f"gflops={gflop / med:.1f} maxrss_mib={peak:.1f} base_rss_mib={base:.1f} "
              f"loss0={loss0:.9g} foreign_cpu_pct={foreign_pct:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
