"""The PyTorch twin's stage-3 (remix) training step, on the weights and inputs of a bench_remix_step case.

The models are the project's twins: bench/diffusion/dit_twin.py's DiTTwin(style=True) for the
transformer and bench/train/ae_twin.py's AutoencoderTwin for the autoencoder, both loaded from the
case file that `bench_remix_step --write FILE` wrote (load_state_dict(strict=True)). The
autoencoder is frozen (requires_grad False on every weight: its input gradients still flow).

A step does what bench_remix_step does (train/stage_remix.c's remix_loss, on one rank):
  zero the gradients (set_to_none);
  targets   without gradients: the encoder on the originals x (the content layers' features and
            the kl mean, times latent_scale: z) and on the styles xs (the style layers' Gram
            matrices G = F F^T / (C H W), and zs);
  z_t = a z + b eps;  eps_hat = DiT(z_t, t, y = null class, style = zs, keep);
  x0_hat = (z_t - b eps_hat) / a / latent_scale;  x_hat = decoder(x0_hat);
  the encoder's taps of x_hat up to the deepest layer any term reads;
  content = sum over content layers of mean (phi(x_hat) - phi(x))^2;
  style   = sum over style layers of ||G(x_hat) - G(xs)||_F^2, summed over the batch / B;
  tv      = mean squared neighbour difference of x_hat along frequency + along time;
  mse     = mean (eps_hat - eps)^2;
  total   = w_content content + w_style style + w_tv tv + w_mse mse (the case's weights);
  backward; the global gradient norm read back to Python; AdamW (the case's lr, betas 0.9 /
  0.999, eps 1e-8, weight decay 0); the EMA (decay min(ema_decay, (1 + k) / (10 + k)) at step
  k = 1, 2, ..., torch._foreach_mul_ / _foreach_add_).

Step 0 runs at the case's weights, so its loss must be the loss bench_remix_step stored in the
case: relative difference at most --tol (1e-5), else exit 1 before anything is timed. --check
only compares (total, each term, the gradient norm; with --f64 also the same step in float64, to
show how far each float32 side is from exact arithmetic), without timing.

usage: torch_remix_step.py --case FILE [--check [--f64]] [--threads N] [--steps N] [--warmup N] [--tol R]
Prints a report and one "RESULT key=value ..." line. Exit 77 when torch is missing.
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
    print(f"torch_remix_step: skipped: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "diffusion"))
sys.path.insert(0, os.path.join(HERE, "..", "train"))
from ae_twin import AutoencoderTwin  # noqa: E402
from dit_twin import DiTTwin  # noqa: E402
from torch_dit_step import read_case  # noqa: E402  (the case layout both C benches write)

MAGIC = "RMXREMIX-BENCH-CASE 1"
TERMS = ("content", "style", "tv", "mse")


def sub_state(tensors, prefix, dtype):
    return {k[len(prefix):]: torch.from_numpy(v).to(dtype) for k, v in tensors.items() if k.startswith(prefix)}


def build(header, tensors, dtype):
    """(DiT twin with style tokens, frozen autoencoder twin) at the case's sizes and weights."""
    latent = int(header["ae_latent"])
    mult = tuple(int(m) for m in header["ae_mult"].split(","))
    factor = 2 ** (len(mult) - 1)
    dit = DiTTwin(in_channels=latent, height=int(header["mels"]) // factor,
                  width=int(header["frames"]) // factor, patch=int(header["patch"]),
                  hidden=int(header["hidden"]), depth=int(header["depth"]), heads=int(header["heads"]),
                  mlp_ratio=float(header["mlp_ratio"]), num_classes=int(header["num_classes"]),
                  freq_dim=int(header["freq_dim"]), style=True)
    dit.load_state_dict(sub_state(tensors, "dit.", dtype), strict=True)
    ae = AutoencoderTwin(channels=int(header["ae_channels"]), channel_mult=mult,
                         res_blocks=int(header["ae_res_blocks"]), latent_channels=latent)
    ae.load_state_dict(sub_state(tensors, "ae.", dtype), strict=True)
    ae.requires_grad_(False)
    return dit.to(dtype), ae.to(dtype)


def encoder_taps(enc, x, wanted):
    """{step name: output} for the encoder steps in `wanted` (model/autoencoder.h's names), running
    only as far as the deepest of them; with "latent" in wanted, also the kl mean (all steps)."""
    out = {}
    steps = [("enc.conv_in", enc.conv_in)]
    for i, level in enumerate(enc.down):
        steps += [(f"enc.down.{i}.res.{j}", block) for j, block in enumerate(level.res)]
        if level.downsample is not None:
            steps.append((f"enc.down.{i}.downsample", level.downsample))
    steps.append(("enc.mid.res", enc.mid.res))
    h = x
    for name, layer in steps:
        if not (wanted - out.keys()):
            return out
        h = layer(h)
        if name in wanted:
            out[name] = h
    if "latent" in wanted:
        out["latent"] = enc.conv_out(F.silu(enc.norm_out(h)))
    return out


def gram(f):
    b, c = f.shape[:2]
    flat = f.reshape(b, c, -1)
    return flat @ flat.transpose(1, 2) / flat.shape[2] / c


class RemixStep:
    """The whole loss of the case's batch, as functions of the DiT's weights."""

    def __init__(self, header, inputs, dit, ae, dtype):
        self.dit, self.ae = dit, ae
        self.content_layers = header["content_layers"].split(",")
        self.style_layers = header["style_layers"].split(",")
        self.weights = [float(header["w_" + k]) for k in TERMS]
        self.scale = float(header["latent_scale"])
        self.latent = int(header["ae_latent"])

        def f(name):
            return torch.from_numpy(inputs[name]).to(dtype)
        self.x, self.xs, self.eps = f("x"), f("xs"), f("eps")
        self.a, self.b = f("a")[:, None, None, None], f("b")[:, None, None, None]
        self.t = f("t")
        self.keep = torch.from_numpy(inputs["keep"] != 0)
        self.y = torch.from_numpy(inputs["y"].astype(np.int64))

    def targets(self):
        with torch.no_grad():
            orig = encoder_taps(self.ae.enc, self.x, set(self.content_layers) | {"latent"})
            style = encoder_taps(self.ae.enc, self.xs, set(self.style_layers) | {"latent"})
        z = orig["latent"][:, :self.latent] * self.scale
        zs = style["latent"][:, :self.latent] * self.scale
        return ([orig[k] for k in self.content_layers], [gram(style[k]) for k in self.style_layers], z, zs)

    def losses(self):
        """(total, [content, style, tv, mse]) with the graph for backward."""
        content_t, gram_t, z, zs = self.targets()
        zt = self.a * z + self.b * self.eps
        eps_hat = self.dit(zt, self.t, self.y, zs, self.keep)
        x_hat = self.ae.dec((zt - self.b * eps_hat) / self.a / self.scale)
        taps = encoder_taps(self.ae.enc, x_hat, set(self.content_layers) | set(self.style_layers))
        batch = x_hat.shape[0]
        content = sum(F.mse_loss(taps[k], t) for k, t in zip(self.content_layers, content_t))
        style = sum((gram(taps[k]) - g).square().sum() / batch for k, g in zip(self.style_layers, gram_t))
        tv = (x_hat[:, :, 1:] - x_hat[:, :, :-1]).square().mean() + \
            (x_hat[:, :, :, 1:] - x_hat[:, :, :, :-1]).square().mean()
        mse = F.mse_loss(eps_hat, self.eps)
        terms = [content, style, tv, mse]
        return sum(w * v for w, v in zip(self.weights, terms)), terms


def grad_norm(params):
    """The global 2-norm, as clip_grad_norm_ computes it, read back to Python."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()


def loss_and_norm(header, tensors, inputs, dtype):
    """Step 0's forward + backward (no update): total, terms, gradient norm."""
    dit, ae = build(header, tensors, dtype)
    total, terms = RemixStep(header, inputs, dit, ae, dtype).losses()
    total.backward()
    return total.item(), [v.item() for v in terms], grad_norm([p for p in dit.parameters() if p.requires_grad])


def rel(x, ref):
    return abs(x - ref) / abs(ref)


def check(header, tensors, inputs, tol, f64):
    """Step 0 of the twins (float32; with f64 also float64) against the case's Remixer figures."""
    ref_total, ref_norm = float(header["loss"]), float(header["grad_norm"])
    ref_terms = [float(header[k]) for k in TERMS]
    total32, terms32, norm32 = loss_and_norm(header, tensors, inputs, torch.float32)
    exact = loss_and_norm(header, tensors, inputs, torch.float64) if f64 else None

    def vs64(ours, theirs, k):
        if exact is None:
            return ""
        ref = exact[0] if k is None else exact[1][k] if k >= 0 else exact[2]
        return f"; vs float64 ({ref:.9g}) Remixer {rel(ours, ref):.2e}, PyTorch {rel(theirs, ref):.2e}"
    print(f"step-0 loss: Remixer {ref_total:.9g}, PyTorch float32 {total32:.9g}{vs64(ref_total, total32, None)}")
    for i, (k, r, t32) in enumerate(zip(TERMS, ref_terms, terms32)):
        print(f"  {k:8s} Remixer {r:.9g}  PyTorch {t32:.9g}: relative {rel(r, t32):.2e}{vs64(r, t32, i)}")
    worst_term = max(rel(r, t) for r, t in zip(ref_terms, terms32))
    print(f"gradient norm: Remixer {ref_norm:.9g}, PyTorch float32 {norm32:.9g}: relative "
          f"{rel(ref_norm, norm32):.2e}{vs64(ref_norm, norm32, -1)}")
    r = rel(ref_total, total32)
    ok = r <= tol and worst_term <= 10 * tol and rel(ref_norm, norm32) <= 100 * tol
    print("CHECK " + ("OK" if ok else "FAILED") + f": total loss {r:.2e} (tolerance {tol:.0e}), worst term "
          f"{worst_term:.2e} ({10 * tol:.0e}), gradient norm {rel(ref_norm, norm32):.2e} ({100 * tol:.0e})")
    print(f"RESULT side=check rel_loss={r:.3e} rel_worst_term={worst_term:.3e} "
          f"rel_norm={rel(ref_norm, norm32):.3e} ok={int(ok)}")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", required=True)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--f64", action="store_true", help="--check also runs the step in float64 (slow: "
                    "PyTorch's float64 convolutions have no oneDNN path)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    header, tensors, inputs = read_case(args.case, MAGIC, "bench_remix_step")
    print(f"PyTorch {torch.__version__} remix train step: twins of the case {args.case} ({header['size']} "
          f"size, batch {header['batch']}), {torch.get_num_threads()} threads, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, ATEN_CPU_CAPABILITY="
          f"{os.environ.get('ATEN_CPU_CAPABILITY', '(unset)')}")
    if args.check:
        return check(header, tensors, inputs, args.tol, args.f64)

    dit, ae = build(header, tensors, torch.float32)
    step_fn = RemixStep(header, inputs, dit, ae, torch.float32)
    params = [p for p in dit.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(header["lr"]), betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    ema_decay = float(header["ema_decay"])
    ref_total = float(header["loss"])

    def step(k):
        opt.zero_grad(set_to_none=True)
        total, terms = step_fn.losses()
        total.backward()
        norm = grad_norm(params)
        opt.step()
        decay = min(ema_decay, (1.0 + k) / (10.0 + k))
        with torch.no_grad():
            torch._foreach_mul_(ema, decay)
            torch._foreach_add_(ema, [p.detach() for p in params], alpha=1.0 - decay)
        return total.item(), [v.item() for v in terms], norm

    times, cpu, loss0, last = [], [], None, None
    for s in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        total, terms, norm = step(s + 1)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if s == 0:
            loss0 = total
            r = rel(total, ref_total)
            print(f"  check: step-0 loss {total:.9g} against Remixer's {ref_total:.9g}: relative {r:.2e} "
                  f"(tolerance {args.tol:.0e}); gradient norm relative {rel(norm, float(header['grad_norm'])):.2e}")
            if not r <= args.tol:
                print("torch_remix_step: FAIL: the step-0 loss differs from Remixer's; not timing")
                return 1
        last = total
        if s >= args.warmup:
            times.append(dt)
            cpu.append(dc)
        tag = " (warm-up)" if s < args.warmup else ""
        print(f"  step {s}{tag}: {1e3 * dt:9.1f} ms  loss {total:.7g} (" +
              " ".join(f"{k} {v:.5g}" for k, v in zip(TERMS, terms)) + f")  grad norm {norm:.6g}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med, best = statistics.median(times), min(times)
    print(f"\nloss {loss0:.7g} -> {last:.7g} over {args.warmup + args.steps} steps")
    print(f"step time: median {1e3 * med:.1f} ms, min {1e3 * best:.1f} ms ({args.steps} timed steps after "
          f"{args.warmup} warm-up); process CPU time per step (median) {1e3 * statistics.median(cpu):.1f} ms; "
          f"peak memory (ru_maxrss) {peak:.1f} MiB")
    print(f"RESULT side=torch size={header['size']} threads={torch.get_num_threads()} batch={header['batch']} "
          f"step_median_ms={1e3 * med:.1f} step_min_ms={1e3 * best:.1f} "
          f"step_cpu_ms={1e3 * statistics.median(cpu):.1f} maxrss_mib={peak:.1f} loss0={loss0:.9g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
