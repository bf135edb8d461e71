"""The PyTorch twin's training step on the GPU, timed like bench_cuda_step.

The model is bench/train/ae_twin.py's AutoencoderTwin (bench size, kl). A step: zero the
gradients, forward + loss (fresh kl noise) and backward over B / m micro-batches, the global
gradient norm read back to Python (a synchronisation, as the trainer's), AdamW (lr 1e-4, betas
0.9 / 0.999, eps 1e-8, weight decay 0.01): what bench_cuda_step does. Timed with the GPU
synchronised at both ends; the median of --steps after --warmup.

--tf32 0 turns TF32 off for cuBLAS AND cuDNN (PyTorch's cuDNN convolutions use TF32 by default);
--tf32 1 allows both. cudnn.benchmark picks the fastest convolution algorithms, as a tuned PyTorch
run would.

usage: python3 torch_cuda_step.py [--batch B] [--micro M] [--steps N] [--warmup N] [--tf32 0|1]
                                  [--device D] [--peak-fp32 TFLOPS] [--peak-tf32 TFLOPS]
Exit 77 when torch or a CUDA device is missing.
"""
import argparse
import os
import statistics
import sys
import time

try:
    import torch
except ImportError as e:
    print(f"torch_cuda_step: SKIPPED: {e}")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
from ae_twin import AutoencoderTwin  # noqa: E402

BRIEF_GFLOP_PER_8 = 381.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--micro", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tf32", type=int, default=0, choices=(0, 1))
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--peak-fp32", type=float, default=67.0)
    ap.add_argument("--peak-tf32", type=float, default=495.0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_cuda_step: SKIPPED: torch sees no CUDA device")
        sys.exit(77)
    if args.batch % args.micro:
        ap.error("--batch must be a multiple of --micro")

    dev = torch.device("cuda", args.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(42)
    model = AutoencoderTwin().to(dev)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    x = torch.randn(args.batch, 1, 128, 256, device=dev)
    accum = args.batch // args.micro
    print(f"PyTorch {torch.__version__} train step on {torch.cuda.get_device_name(dev)}: twin "
          f"autoencoder, batch {args.batch} = {accum} x micro-batch {args.micro}, "
          f"{sum(p.numel() for p in params)} parameters, TF32 {'on' if args.tf32 else 'off'}")

    times = []
    for s in range(args.warmup + args.steps):
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        for a in range(accum):
            # the loss divides by the micro-batch; scaled so the step's gradient is the batch mean
            loss = model.loss(x[a * args.micro:(a + 1) * args.micro]) * (args.micro / args.batch)
            loss.backward()
        norm = torch.sqrt(sum(p.grad.square().sum() for p in params)).item()
        opt.step()
        torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        if s >= args.warmup:
            times.append(dt)
        tag = " (warm-up)" if s < args.warmup else ""
        print(f"  step {s}{tag}: {1e3 * dt:8.2f} ms  grad norm {norm:.4g}")

    med = statistics.median(times)
    gflop = BRIEF_GFLOP_PER_8 * args.batch / 8
    tflops = gflop / med * 1e-3
    peak_mib = torch.cuda.max_memory_allocated(dev) / 2**20
    print(f"step: median {1e3 * med:.2f} ms, {args.batch / med:.0f} samples/s; {tflops:.1f} TFLOP/s = "
          f"{100 * tflops / args.peak_fp32:.1f}% of {args.peak_fp32:.0f} fp32, "
          f"{100 * tflops / args.peak_tf32:.1f}% of {args.peak_tf32:.0f} TF32; "
          f"peak GPU memory {peak_mib:.0f} MiB")
    print(f"RESULT backend=torch device=\"{torch.cuda.get_device_name(dev)}\" tf32={args.tf32} "
          f"batch={args.batch} micro={args.micro} step_ms={1e3 * med:.3f} "
          f"samples_s={args.batch / med:.1f} tflops={tflops:.2f} "
          f"pct_fp32={100 * tflops / args.peak_fp32:.1f} pct_tf32={100 * tflops / args.peak_tf32:.1f}")


if __name__ == "__main__":
    main()
