"""Writes an autoencoder reference case for tests/model/test_ae_reference.c from the PyTorch twin.

usage: make_ae_reference.py OUT.h5 [--case kl|vq] [--seed N]

Like llm.c's reference tensors for GPT-2: the twin (ae_twin.py) runs once, in float64, and the
C test, which needs no torch, checks Remixer against what it wrote. A case:
  - a twin of the case's size with every tensor randomised in float32 (so that the C side loads
    exactly the values the twin used): conv kernels U(-a, a) with a = sqrt(3 / fan_in), conv
    biases and GroupNorm biases U(-0.2, 0.2), GroupNorm weights U(0.5, 1.5);
  - vq: a codebook of encoder outputs of this batch plus noise (the default U(-1/K, 1/K) codes
    are all about equally far from every z_e), ema_count 1 and ema_sum = codebook, and a seed
    whose nearest codes win by a clear margin, so float32 rounding cannot pick another code;
  - an input x ~ N(0, 1) [B, 1, M, T];
  - kl: the latent noise Remixer draws for (seed, RMX_RNG_LATENT, step, sample index), computed
    here with an independent Philox4x32-10 and Box-Muller (util/rng.h), seed, step and sample
    indices beyond 32 bits so that every word of the counter and key is used;
  - the losses (rec, kl or commit, total = rec + weight * reg, each summed over elements and
    divided by B), every parameter gradient and d total / d x (total.backward());
  - kl: one AdamW step (torch.optim.AdamW, lr 1e-3, betas 0.9 / 0.999, eps 1e-8, weight decay 0.1
    on the tensors of 2 or more dimensions, none on biases and GroupNorm, as Remixer's registry);
    the step does not depend on the bottleneck, so the vq case leaves it out (the file stays
    small: both committed files together are under 500 KB).
Results are stored as float32 (rounded from float64): what the test measures is Remixer's
float32 error.

File layout (every tensor under its state_dict name, with the state_dict shape):
    attributes  the hyper-parameters (channels, channel_mult, res_blocks, latent_channels,
                bottleneck, kl_weight, codebook_size, commitment, mels, frames), batch, seed,
                step, lr, beta1, beta2, eps, weight_decay, torch_version, generator
    /names      the state_dict keys in order (fixed-length strings), /shapes [count, 4]
                (unused dimensions 0): the trained tensors, then the vq buffers
    /weights/<name>   float32, every state_dict tensor (vq buffers included)
    /inputs/x [B, 1, M, T], /inputs/sample_index int64 [B], /inputs/eps [B, latent, h, w] (kl)
    /loss float64 [3]: rec, reg (kl or commit), total
    /grads/<name> (trained tensors), /dx [B, 1, M, T]
    /updated/<name>   the trained tensors after the AdamW step (kl)
    /codes int32 [B * h * w] (vq): the nearest code per latent position, (b, y, x) order
The committed files are `make_ae_reference.py tests/model/ref/ae_kl.h5 --case kl` and
`make_ae_reference.py tests/model/ref/ae_vq.h5 --case vq` (torch 1.13, Debian's python3).
"""
import argparse
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ae_twin import AutoencoderTwin  # noqa: E402

CASES = {
    # Two levels: C 8 then 16, so GroupNorm runs with 1 and with 2 channels per group, the skip
    # convolutions (8 -> 16, 16 -> 8), the stride-2 downsample and the nearest x2 upsample.
    # kl_weight 0.5 rather than 1e-6, so that the KL's share of the encoder gradients counts.
    "kl": dict(channels=8, channel_mult=(1, 2), res_blocks=1, latent_channels=2, bottleneck="kl",
               kl_weight=0.5, codebook_size=16, commitment=0.25, mels=16, frames=32, batch=2),
    # The bottleneck is what this case adds; one level and a small input keep the file small.
    "vq": dict(channels=4, channel_mult=(1,), res_blocks=1, latent_channels=2, bottleneck="vq",
               kl_weight=0.5, codebook_size=16, commitment=0.25, mels=8, frames=16, batch=2),
}
ADAMW = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
SEED = 0x12345678ABC        # the run seed: both words of Philox's key
STEP = (1 << 32) + 17       # both words of the step
SAMPLE_INDEX = [11, (1 << 32) + 3]
RNG_LATENT = 2              # util/rng.h: RMX_RNG_LATENT
MARGIN = 1e-3               # vq: nearest code ahead of the next by this share of the distances


# ---------------------------------------------------------------- util/rng.h, independently

def _mulhilo(a, b):
    p = np.uint64(a) * b.astype(np.uint64)
    return (p >> np.uint64(32)).astype(np.uint32), (p & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def philox4x32(ctr, key):
    """Philox4x32-10 (Random123) on arrays of counters: ctr 4 x uint32 arrays, key 2 words."""
    c = [np.asarray(v, dtype=np.uint32).copy() for v in ctr]
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    with np.errstate(over="ignore"):
        for r in range(10):
            if r:
                k0 = np.uint32((int(k0) + 0x9E3779B9) & 0xFFFFFFFF)
                k1 = np.uint32((int(k1) + 0xBB67AE85) & 0xFFFFFFFF)
            hi0, lo0 = _mulhilo(0xD2511F53, c[0])
            hi1, lo1 = _mulhilo(0xCD9E8D57, c[2])
            c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return c


def rmx_normal(seed, purpose, step, index, n):
    """rmx_normal(seed, purpose, step, index, n) for an array n, in float32 as the C code."""
    n = np.asarray(n, dtype=np.uint32)
    key = (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)
    idx = (index & 0xFFFFFFFF) ^ (((index >> 32) * 0x9E3779B9) & 0xFFFFFFFF)
    words = [n >> np.uint32(2),
             np.full(n.shape, (purpose ^ (((step >> 32) & 0xFFFFFFFF) << 8)) & 0xFFFFFFFF, np.uint32),
             np.full(n.shape, step & 0xFFFFFFFF, np.uint32), np.full(n.shape, idx, np.uint32)]
    r = philox4x32(words, key)
    pair = (n >> np.uint32(1)) & np.uint32(1)
    w1 = np.where(pair == 0, r[0], r[2])
    w2 = np.where(pair == 0, r[1], r[3])
    u01 = lambda w: ((w >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * np.float32(1.0 / 16777216.0)  # noqa: E731
    u1, u2 = u01(w1), u01(w2)
    rad = np.sqrt(np.float32(-2.0) * np.log(u1))
    ang = np.float32(6.283185307179586) * u2
    return np.where((n & np.uint32(1)) == 1, rad * np.sin(ang), rad * np.cos(ang)).astype(np.float32)


# ---------------------------------------------------------------- the file

def open_file(path):
    """A new HDF5 file without time stamps (the same case gives the same bytes)."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    return h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))


def group(parent, name):
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


# ---------------------------------------------------------------- the case

def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1
            if p.dim() >= 2:
                p.copy_(u * (3.0 / (p.numel() // p.shape[0])) ** 0.5)
            elif ".norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.5 * u)
            else:
                p.copy_(0.2 * u)


def nearest_margin(z_e, codebook):
    """Codes and the smallest (d2 - d1) / (d1 + d2) over positions, in float64."""
    d = z_e.shape[1]
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
    dist = (flat[:, None, :] - codebook[None]).square().sum(dim=2)
    two = dist.topk(2, dim=1, largest=False).values
    margin = ((two[:, 1] - two[:, 0]) / (two[:, 1] + two[:, 0] + 1e-30)).min().item()
    return dist.argmin(dim=1), margin


def make_codebook(model, x, gen, k):
    """k encoder outputs of this batch, jittered: every code near some z_e, several in use."""
    with torch.no_grad():
        z_e = model.enc(x)
    d = z_e.shape[1]
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
    pick = torch.randperm(flat.shape[0], generator=gen)[:k]
    jitter = torch.randn((k, d), generator=gen, dtype=torch.float64) * flat.std() * 0.5
    return (flat[pick] + jitter).float(), z_e


def build(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    kw = {k: cfg[k] for k in ("channels", "channel_mult", "res_blocks", "latent_channels",
                              "bottleneck", "kl_weight", "codebook_size", "commitment")}
    model = AutoencoderTwin(**kw)
    randomise(model, gen)
    b, m, t = cfg["batch"], cfg["mels"], cfg["frames"]
    x32 = torch.randn((b, 1, m, t), generator=gen, dtype=torch.float32)
    margin, codes = None, None
    if cfg["bottleneck"] == "vq":
        model64 = AutoencoderTwin(**kw).double()
        model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
        codebook, z_e = make_codebook(model64, x32.double(), gen, cfg["codebook_size"])
        with torch.no_grad():
            model.vq.codebook.copy_(codebook)
            model.vq.ema_sum.copy_(codebook)
            model.vq.ema_count.fill_(1.0)
        codes, margin = nearest_margin(z_e, codebook.double())
    return model, x32, codes, margin


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--case", choices=sorted(CASES), default="kl")
    ap.add_argument("--seed", type=int, default=1234, help="torch seed of weights and input")
    args = ap.parse_args()
    cfg = CASES[args.case]
    seed = args.seed
    model, x32, codes, margin = build(cfg, seed)
    while margin is not None and margin < MARGIN:  # vq: a seed whose codes are clear winners
        seed += 1
        model, x32, codes, margin = build(cfg, seed)
    weights32 = {k: v.detach().clone().float().numpy() for k, v in model.state_dict().items()}
    model = model.double()

    b = cfg["batch"]
    x = x32.double().requires_grad_()
    eps32 = None
    if cfg["bottleneck"] == "kl":
        with torch.no_grad():
            _, lc, lh, lw = model.enc(x).shape
        per = (lc // 2) * lh * lw
        eps32 = np.stack([rmx_normal(SEED, RNG_LATENT, STEP, i, np.arange(per)) for i in SAMPLE_INDEX])
        eps32 = eps32.reshape(b, lc // 2, lh, lw)
    total, rec, reg = model.losses(x, torch.from_numpy(eps32).double() if eps32 is not None else None)
    total.backward()
    trained = list(model.named_parameters())
    grads = {n: p.grad.detach().float().numpy() for n, p in trained}
    decay = [p for _, p in trained if p.dim() >= 2]
    no_decay = [p for _, p in trained if p.dim() < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=ADAMW["weight_decay"]),
                             dict(params=no_decay, weight_decay=0.0)],
                            lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"])
    opt.step()
    updated = {n: p.detach().float().numpy() for n, p in trained} if cfg["bottleneck"] == "kl" else {}

    with open_file(args.out) as f:
        for k, v in cfg.items():
            f.attrs[k] = np.array(v, dtype=np.int64) if k == "channel_mult" else v
        f.attrs["seed"] = np.uint64(SEED)
        f.attrs["step"] = np.uint64(STEP)
        f.attrs["torch_seed"] = seed
        for k, v in ADAMW.items():
            f.attrs[k] = v
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["generator"] = "bench/train/make_ae_reference.py"
        names = list(weights32)
        f.create_dataset("names", data=np.array([n.encode() for n in names], dtype="S96"), track_times=False)
        shapes = np.zeros((len(names), 4), dtype=np.int64)
        for i, n in enumerate(names):
            shapes[i, :weights32[n].ndim] = weights32[n].shape
        f.create_dataset("shapes", data=shapes, track_times=False)
        g = group(f, "weights")
        for k, v in weights32.items():
            g.create_dataset(k, data=v, track_times=False)
        g = group(f, "inputs")
        g.create_dataset("x", data=x32.numpy(), track_times=False)
        g.create_dataset("sample_index", data=np.array(SAMPLE_INDEX, dtype=np.int64), track_times=False)
        if eps32 is not None:
            g.create_dataset("eps", data=eps32, track_times=False)
        f.create_dataset("loss", data=np.array([rec.item(), reg.item(), total.item()]), track_times=False)
        f.create_dataset("dx", data=x.grad.float().numpy(), track_times=False)
        if codes is not None:
            f.create_dataset("codes", data=codes.numpy().astype(np.int32), track_times=False)
        g = group(f, "grads")
        for k, v in grads.items():
            g.create_dataset(k, data=v, track_times=False)
        if updated:
            g = group(f, "updated")
            for k, v in updated.items():
                g.create_dataset(k, data=v, track_times=False)
    extra = ""
    if codes is not None:
        extra = f", {len(set(codes.tolist()))} of {cfg['codebook_size']} codes used, margin {margin:.3g}"
    print(f"{args.out}: {args.case}, {sum(p.numel() for _, p in trained)} trained parameters, "
          f"loss {total.item():.8g} (rec {rec.item():.8g}, reg {reg.item():.8g}){extra}, "
          f"{os.path.getsize(args.out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
