#!/usr/bin/env python3
"""Loads a Remixer checkpoint's /model into the PyTorch twin of the autoencoder and runs it.

    /usr/bin/python3 scripts/ckpt_to_torch.py runs/demo-vae/ckpt-00000150.h5 [--save model.pt]

A checkpoint's /model group is the twin's state_dict (bench/train/ae_twin.py): the same names
and shapes, the trained parameters and, for the vq bottleneck, the codebook buffers. So
load_state_dict(strict=True) takes it as it is. The twin's size comes from the model.* keys of
the checkpoint's `config` attribute, and the input size from its `input_shape` attribute. A
forward pass on random input then has to give an output of the input's shape, all finite.
--save writes the state_dict with torch.save, for use without h5py.

Needs h5py, PyYAML and torch (Debian: python3-h5py, python3-yaml, python3-torch, which
/usr/bin/python3 sees). Exit status: 0 loaded and ran, 1 failed, 2 usage.
"""
import argparse
import os
import sys

import h5py
import numpy as np
import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench", "train"))
from ae_twin import AutoencoderTwin  # noqa: E402  (found through the path set just above)


def twin_for(config):
    """The twin of the model a checkpoint's config describes."""
    m = config["model"]
    # float(): YAML 1.1, which PyYAML reads, takes "1e-06" (no dot) for a string.
    return AutoencoderTwin(channels=m["channels"], channel_mult=tuple(m["channel_mult"]),
                           res_blocks=m["res_blocks"], latent_channels=m["latent_channels"],
                           bottleneck=m["bottleneck"], codebook_size=m["codebook_size"],
                           kl_weight=float(m["kl_weight"]), commitment=float(m["commitment"]))


def read_checkpoint(path):
    """(config dict, input shape, {name: tensor}) of the checkpoint's /model."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != "remixer-checkpoint":
            raise ValueError(f"{path}: not a Remixer checkpoint (attribute 'format' is {f.attrs.get('format')!r})")
        config = yaml.safe_load(f.attrs["config"])
        input_shape = [int(d) for d in f.attrs["input_shape"]]
        state = {name: torch.from_numpy(np.asarray(ds[()])) for name, ds in f["model"].items()}
    return config, input_shape, state


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a ckpt-<step>.h5 file")
    ap.add_argument("--save", metavar="PT", help="also write the state_dict to this file with torch.save")
    args = ap.parse_args()
    try:
        config, input_shape, state = read_checkpoint(args.checkpoint)
        model = twin_for(config)
        model.load_state_dict(state, strict=True)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        print(f"ckpt_to_torch.py: {e}", file=sys.stderr)
        return 1
    buffers = {name for name, _ in model.named_buffers()}
    print(f"{args.checkpoint}: {len(state)} tensors into AutoencoderTwin "
          f"({config['model']['bottleneck']}, {len(state) - len(buffers)} parameters, {len(buffers)} buffers): "
          "load_state_dict(strict=True): ok")
    model.eval()
    x = torch.randn([2] + input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x)
    finite = bool(torch.isfinite(y).all())
    print(f"forward {list(x.shape)} -> {list(y.shape)}, {'finite' if finite else 'NOT FINITE'}")
    if list(y.shape) != list(x.shape) or not finite:
        print("ckpt_to_torch.py: the twin's output must have the input's shape and be finite", file=sys.stderr)
        return 1
    if args.save:
        torch.save(model.state_dict(), args.save)
        print(f"state_dict saved to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
