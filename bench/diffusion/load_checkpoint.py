"""Loads a Remixer stage-2 checkpoint's transformer into the PyTorch twin (bench/diffusion/dit_twin.py).

usage: load_checkpoint.py CKPT.h5 [--group model|ema|both]

The architecture is read from the checkpoint itself: width, latent channels, patch, depth, MLP
width, timestep features and genres from the tensor shapes; the token grid from pos_embed (its
row features, sin(row) at frequency 1, first turn non-zero at the start of grid row 1); the head
count, which no shape carries, from the rendered config stored with the checkpoint (dit.heads).
Then /model and /ema (the EMA weights; pos_embed is stored with both) are each loaded with
load_state_dict(strict=True): same names, same shapes, nothing missing, nothing extra. The twin's
own sin-cos positions must equal the checkpoint's, and a forward pass on random input must give a
finite output of the latent's shape. Exit 0 when everything holds.

As a library: `twin_from_checkpoint(path, group="ema")` returns the loaded float64 twin.
"""
import argparse
import os
import re
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_twin import DiTTwin, sincos_positions  # noqa: E402


def config_heads(config_text):
    """dit.heads of the rendered config (DiT-S's 6 when the key is absent)."""
    try:
        import yaml
        heads = ((yaml.safe_load(config_text) or {}).get("dit") or {}).get("heads")
    except ImportError:
        m = re.search(r"^dit:\s*\n((?:[ \t]+.*\n?)*)", config_text, re.M)
        h = re.search(r"^\s+heads:\s*(\d+)", m.group(1), re.M) if m else None
        heads = int(h.group(1)) if h else None
    return int(heads) if heads is not None else 6


def architecture(f):
    """The twin's constructor arguments for the transformer stored in the open checkpoint f."""
    g = f["model"]
    hidden, channels, patch, _ = g["x_embedder.proj.weight"].shape
    depth = len({k.split(".")[1] for k in g if k.startswith("blocks.")})
    mlp_width = g["blocks.0.mlp.fc1.weight"].shape[0]
    pos = g["pos_embed"][()][0]
    tokens = pos.shape[0]
    # Feature hidden/2 is sin(row * 1): 0 on grid row 0, sin(1) from the first token of row 1.
    row_started = np.nonzero(np.abs(pos[:, hidden // 2]) > 1e-3)[0]
    grid_w = int(row_started[0]) if len(row_started) else tokens
    grid_h = tokens // grid_w
    config = f.attrs["config"]
    config = config.decode() if isinstance(config, bytes) else str(config)
    return dict(in_channels=int(channels), height=grid_h * int(patch), width=grid_w * int(patch),
                patch=int(patch), hidden=int(hidden), depth=depth, heads=config_heads(config),
                mlp_ratio=mlp_width / hidden,
                num_classes=int(g["y_embedder.embedding_table.weight"].shape[0]) - 1,
                freq_dim=int(g["t_embedder.mlp.0.weight"].shape[1]))


def state_dict(f, group):
    """The tensors of /group as torch float64 tensors, pos_embed from /model when absent."""
    g = f[group]
    sd = {k: torch.from_numpy(g[k][()].astype(np.float64)) for k in g}
    if "pos_embed" not in sd:
        sd["pos_embed"] = torch.from_numpy(f["model"]["pos_embed"][()].astype(np.float64))
    return sd


def twin_from_checkpoint(path, group="ema"):
    with h5py.File(path, "r") as f:
        model = DiTTwin(**architecture(f)).double()
        model.load_state_dict(state_dict(f, group), strict=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--group", choices=["model", "ema", "both"], default="both")
    args = ap.parse_args()
    failures = 0
    with h5py.File(args.checkpoint, "r") as f:
        arch = architecture(f)
        print("architecture: " + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in arch.items()))
        model = DiTTwin(**arch).double()
        ours = f["model"]["pos_embed"][()][0].astype(np.float64)
        theirs = sincos_positions(arch["height"] // arch["patch"], arch["width"] // arch["patch"],
                                  arch["hidden"])
        err = float(np.abs(ours - theirs).max())
        print(f"pos_embed: {ours.shape[0]} tokens, max difference from the twin's {err:.2e}")
        if err > 1e-6:
            print("FAIL: the checkpoint's pos_embed is not the twin's sin-cos grid")
            failures += 1
        groups = ["model", "ema"] if args.group == "both" else [args.group]
        for group in groups:
            if group not in f:
                print(f"FAIL: the checkpoint has no /{group}")
                failures += 1
                continue
            try:
                model.load_state_dict(state_dict(f, group), strict=True)
            except RuntimeError as e:
                print(f"FAIL: /{group} does not load with strict=True: {e}")
                failures += 1
                continue
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(2, arch["in_channels"], arch["height"], arch["width"], generator=gen,
                            dtype=torch.float64)
            with torch.no_grad():
                out = model(x, torch.tensor([10.0, 900.0], dtype=torch.float64),
                            torch.tensor([0, arch["num_classes"]]))
            ok = out.shape == x.shape and bool(torch.isfinite(out).all())
            print(f"/{group}: {len(f[group])} tensors, {n} trained parameters, loaded with "
                  f"strict=True; forward {tuple(out.shape)} {'finite' if ok else 'NOT FINITE'}")
            failures += not ok
    print("checkpoint loads into the twin" if failures == 0 else f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
