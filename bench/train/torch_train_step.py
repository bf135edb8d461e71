"""One training step of the PyTorch twin, timed like bench_train_step.

A step: zero the gradients, forward + loss (fresh kl noise), backward, the global gradient norm
read back to Python, AdamW (lr 1e-4, betas 0.9 / 0.999, eps 1e-8, no weight decay): what
bench_train_step does. Prints a report and one "RESULT key=value ..." line.

usage: /usr/bin/python3 torch_train_step.py [--threads N] [--steps N] [--warmup N] [--batch B]
"""
import argparse
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ae_twin import AutoencoderTwin  # noqa: E402


def rss_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy_s():
    """CPU seconds the whole machine spent busy since boot (every process), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s():
    t = os.times()
    return t.user + t.system


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    model = AutoencoderTwin()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    x = torch.randn(args.batch, 1, 128, 256)
    base = rss_mib("VmRSS")
    print(f"PyTorch {torch.__version__} train step: twin autoencoder, batch {args.batch}, "
          f"{sum(p.numel() for p in params)} parameters, {torch.get_num_threads()} threads, "
          f"mkldnn {torch.backends.mkldnn.is_available()}")

    times = []
    for s in range(args.warmup + args.steps):
        if s == args.warmup:  # other processes' CPU time over the timed steps
            busy0, own0, start = machine_busy_s(), own_cpu_s(), time.perf_counter()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.loss(x)
        loss.backward()
        norm = torch.sqrt(sum(p.grad.square().sum() for p in params)).item()
        opt.step()
        dt = time.perf_counter() - t0
        if s >= args.warmup:
            times.append(dt)
        tag = " (warm-up)" if s < args.warmup else ""
        print(f"  step {s}{tag}: {1e3 * dt:8.1f} ms  loss {loss.item():.6g}  grad norm {norm:.4g}")

    foreign = (machine_busy_s() - busy0) - (own_cpu_s() - own0)
    foreign_pct = 100 * max(foreign, 0) / ((time.perf_counter() - start) * os.cpu_count())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med, best = statistics.median(times), min(times)
    print(f"step time: median {1e3 * med:.1f} ms, min {1e3 * best:.1f} ms "
          f"({args.steps} timed steps after {args.warmup} warm-up); other processes used "
          f"{foreign_pct:.1f} % of the {os.cpu_count()} cores meanwhile")
    print(f"peak memory (ru_maxrss): {peak:.1f} MiB ({base:.1f} MiB resident before the first step)")
    print(f"RESULT threads={torch.get_num_threads()} batch={args.batch} step_median_ms={1e3 * med:.1f} "
          f"step_min_ms={1e3 * best:.1f} maxrss_mib={peak:.1f} base_rss_mib={base:.1f} "
          f"foreign_cpu_pct={foreign_pct:.1f}")


if __name__ == "__main__":
    main()
