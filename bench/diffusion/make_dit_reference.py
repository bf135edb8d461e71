"""Writes a DiT reference case for tests/dit/test_dit_reference.c from the PyTorch twin.

usage: make_dit_reference.py OUT.h5 [--size tiny|small] [--seed N] [--batch B] [--style]
       make_dit_reference.py OUT.h5 --names-only [--size bench|tiny|small] [--style]

A case: a twin of the chosen size with every trained tensor randomised (so the layers DiT starts
at zero - adaLN, final layer - carry gradients and are exercised), fixed inputs x, t (fractional
values included), y (the null class included) and a target noise; in float64, the output, the
loss = mean squared error against the target, loss.backward(), and one AdamW step (lr 1e-3,
betas 0.9 / 0.999, eps 1e-8, weight decay 0). The weights are drawn in float32, so the C side
loads exactly the values the twin used; the results are stored as float32 (rounded from float64:
what is measured is Remixer's float32 error).

File layout (every tensor under its state_dict name, with the state_dict shape):
    attributes  the hyper-parameters (in_channels, height, width, patch, hidden, depth, heads,
                mlp_ratio, num_classes, freq_dim), batch, lr, beta1, beta2, eps, weight_decay,
                seed, torch version, generator
    /names      the state_dict keys in order (fixed-length strings), /shapes [count, 4]
                (unused dimensions 0)
    /weights/<name>   float32, pos_embed included (the twin's own sin-cos positions)
    /inputs/x [B, C, H, W], /inputs/t float32 [B], /inputs/y int32 [B], /inputs/target
    /output [B, C, H, W], /loss [1], /grads/<name> (trained tensors), /dx [B, C, H, W]
    /updated/<name>   the trained tensors after the AdamW step
--names-only writes the attributes, /names and /shapes (the bench size: 33 M parameters).
The committed tests/dit/ref/dit_tiny.h5 is `make_dit_reference.py tests/dit/ref/dit_tiny.h5`.

--style: the twin with style tokens (DiTTwin(style=True); attribute style = 1, else 0), the four
style tensors randomised like the rest (style_type and style_null as [1, 1, D] matrices), and
two more inputs: /inputs/style [B, C, H, W] (drawn after x and target) and /inputs/style_keep
uint8 [B] (1, 0, 1, 1, 0, ...: some samples' styles dropped, the first kept). The committed
tests/dit/ref/dit_tiny_style.h5 is
`make_dit_reference.py tests/dit/ref/dit_tiny_style.h5 --style --seed 4321`.
"""
import argparse
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_twin import DiTTwin, loss as dit_loss  # noqa: E402

SIZES = {
    # Small enough for a committed file (< 300 KB); 4 heads of 4, a 4 x 6 token grid.
    "tiny": dict(in_channels=4, height=8, width=12, patch=2, hidden=16, depth=2, heads=4,
                 mlp_ratio=4.0, num_classes=3, freq_dim=256),
    # The live check: 6 heads, a 3 x 8 grid of 4 x 4 patches, a 3x MLP, 3 blocks.
    "small": dict(in_channels=3, height=12, width=32, patch=4, hidden=48, depth=3, heads=6,
                  mlp_ratio=3.0, num_classes=5, freq_dim=256),
    # The bench size, for names and shapes only.
    "bench": dict(in_channels=8, height=32, width=64, patch=2, hidden=384, depth=12, heads=6,
                  mlp_ratio=4.0, num_classes=4, freq_dim=256),
}
ADAMW = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)


def randomise(model, gen):
    """Every trained tensor U(-a, a): matrices a = sqrt(3 / fan_in) (unit-variance outputs), the
    label table a = 1, biases a = 0.2. Drawn in float32."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name.endswith("embedding_table.weight"):
                a = 1.0
            elif p.dim() >= 2:
                a = (3.0 / (p.numel() // p.shape[0])) ** 0.5
            else:
                a = 0.2
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1) * a)


def write_header(f, cfg, args, model):
    for k, v in cfg.items():
        f.attrs[k] = v
    f.attrs["style"] = int(args.style)
    f.attrs["seed"] = args.seed
    f.attrs["torch_version"] = str(torch.__version__)
    f.attrs["generator"] = "bench/diffusion/make_dit_reference.py"
    sd = model.state_dict()
    names = list(sd.keys())
    f.create_dataset("names", data=np.array([n.encode() for n in names], dtype="S96"))
    shapes = np.zeros((len(names), 4), dtype=np.int64)
    for i, n in enumerate(names):
        shapes[i, :sd[n].dim()] = sd[n].shape
    f.create_dataset("shapes", data=shapes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--names-only", action="store_true")
    ap.add_argument("--style", action="store_true", help="the twin with style tokens")
    args = ap.parse_args()
    cfg = SIZES[args.size]
    torch.manual_seed(args.seed)
    if args.names_only:
        model = DiTTwin(**cfg, style=args.style)
        with h5py.File(args.out, "w") as f:
            write_header(f, cfg, args, model)
        print(f"{args.out}: {len(model.state_dict())} tensors, "
              f"{sum(p.numel() for p in model.parameters() if p.requires_grad)} trained parameters")
        return 0

    gen = torch.Generator().manual_seed(args.seed)
    model = DiTTwin(**cfg, style=args.style)
    randomise(model, gen)
    weights32 = {k: v.detach().clone().float().numpy() for k, v in model.state_dict().items()}
    model = model.double()

    b, c, h, w = args.batch, cfg["in_channels"], cfg["height"], cfg["width"]
    x32 = torch.randn((b, c, h, w), generator=gen, dtype=torch.float32)
    target32 = torch.randn((b, c, h, w), generator=gen, dtype=torch.float32)
    # Integer timesteps across the range, a fractional one (samplers pass any value).
    t32 = torch.tensor([999.0, 0.0, 421.0, 37.5, 640.25, 5.0, 250.0, 880.0][:b], dtype=torch.float32)
    # The null class (num_classes) included.
    y = torch.tensor([cfg["num_classes"], 0, 2, 1, cfg["num_classes"], 1, 0, 2][:b], dtype=torch.int64)
    y = y.clamp(max=cfg["num_classes"])
    style32, keep = None, None
    if args.style:
        style32 = torch.randn((b, c, h, w), generator=gen, dtype=torch.float32)
        keep = torch.tensor([(1, 0, 1, 1, 0)[i % 5] for i in range(b)], dtype=torch.uint8)

    x = x32.double().requires_grad_()
    style = None if style32 is None else style32.double()
    out = model(x, t32.double(), y, style, keep)
    value = dit_loss(model, x, t32.double(), y, target32.double(), style, keep)
    value.backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = {n: p.grad.detach().float().numpy() for n, p in trained}
    opt = torch.optim.AdamW([p for _, p in trained], lr=ADAMW["lr"],
                            betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"])
    opt.step()
    updated = {n: p.detach().float().numpy() for n, p in trained}

    with h5py.File(args.out, "w") as f:
        write_header(f, cfg, args, model)
        f.attrs["batch"] = b
        for k, v in ADAMW.items():
            f.attrs[k] = v
        g = f.create_group("weights")
        for k, v in weights32.items():
            g.create_dataset(k, data=v)
        g = f.create_group("inputs")
        g.create_dataset("x", data=x32.numpy())
        g.create_dataset("t", data=t32.numpy())
        g.create_dataset("y", data=y.numpy().astype(np.int32))
        g.create_dataset("target", data=target32.numpy())
        if args.style:
            g.create_dataset("style", data=style32.numpy())
            g.create_dataset("style_keep", data=keep.numpy())
        f.create_dataset("output", data=out.detach().float().numpy())
        f.create_dataset("loss", data=np.array([value.item()], dtype=np.float64))
        f.create_dataset("dx", data=x.grad.float().numpy())
        g = f.create_group("grads")
        for k, v in grads.items():
            g.create_dataset(k, data=v)
        g = f.create_group("updated")
        for k, v in updated.items():
            g.create_dataset(k, data=v)
    print(f"{args.out}: {args.size} DiT{' with style tokens' if args.style else ''}, {sum(p.numel() for _, p in trained)} trained parameters, "
          f"loss {value.item():.8g}, {os.path.getsize(args.out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
