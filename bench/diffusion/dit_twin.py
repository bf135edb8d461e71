"""PyTorch twin of Remixer's stage-2 diffusion transformer (model/dit.h).

A DiT with adaLN-Zero as facebookresearch/DiT defines it (models.py), with learn_sigma off (the
output has the input's channels) and a rectangular latent (H x W, token grid H/p x W/p). Module
names, parameter shapes and state_dict order are DiT's, which are also Remixer's: a Remixer
stage-2 checkpoint's /model group loads with load_state_dict(strict=True):

    import sys; sys.path.insert(0, "bench/diffusion")
    from dit_twin import DiTTwin
    model = DiTTwin(in_channels=8, height=32, width=64, num_classes=4)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)

It needs torch only (no timm): the patch embedding, attention and MLP are written out here with
timm's parameter names (proj, qkv, fc1, fc2). Label dropout is the trainer's business (it passes
the null class, num_classes, for a dropped label), so forward() takes the labels as given.

Style tokens (stage 3, Remixer's hparams.style = 1): DiTTwin(..., style=True) adds, after every
stage-2 tensor in state_dict order, style_embedder.proj.weight [D, C, p, p], .bias [D],
style_type [1, 1, D] and style_null [1, 1, D]. forward(x, t, y, style, keep) embeds the style
latent (same shape as x) into N style tokens, style_embedder(style) + style_type + pos_embed, or
style_null + style_type + pos_embed for a sample with keep False, appends them after the N
content tokens (one joint sequence of 2N in every block) and reads out the content tokens only.
With style=False the model, its state_dict and its numbers are the stage-2 twin's.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_positions(grid_h, grid_w, dim):
    """Fixed 2-D positions [grid_h * grid_w, dim] (float64), tokens row-major over the grid.

    The first dim/2 features encode the column (width index), the second dim/2 the row; each
    half is [sin(pos * w), cos(pos * w)] with w_i = 1 / 10000^(i / (dim / 4)), i < dim / 4.
    """
    if dim % 4:
        raise ValueError("the 2-D sin-cos positions need a width divisible by 4")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    row, col = np.divmod(np.arange(grid_h * grid_w), grid_w)
    col_args = col[:, None].astype(np.float64) * omega[None, :]
    row_args = row[:, None].astype(np.float64) * omega[None, :]
    return np.concatenate([np.sin(col_args), np.cos(col_args), np.sin(row_args), np.cos(row_args)],
                          axis=1)


def timestep_features(t, dim, max_period=10000.0):
    """Sinusoidal features [len(t), dim] in t's dtype: [cos(t f), sin(t f)], f_j =
    exp(-ln(max_period) j / (dim/2)).

    As in DiT, which builds these in float32 whatever the model's dtype, the frequencies are
    float32 numbers and the arguments t f are float32 products (at t = 999 that rounding moves the
    features by up to ~5e-5: a property of the embedding, which the twin shares). The frequencies
    are the correctly rounded ones (DiT's float32 exp is sometimes an ulp away), as Remixer's
    kernels compute them; cos and sin of the float32 arguments are then evaluated in t's dtype.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = t.float()[:, None] * freqs.float()[None, :]
    args = args.to(t.dtype)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> D, as a Conv2d with kernel = stride = p; tokens row-major."""

    def __init__(self, patch, in_channels, hidden):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        return self.mlp(timestep_features(t, self.freq_dim))


class LabelEmbedder(nn.Module):
    """num_classes + 1 rows: the last one is the null class of classifier-free guidance."""

    def __init__(self, num_classes, hidden):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, y):
        return self.embedding_table(y)


class Attention(nn.Module):
    """Multi-head self-attention; qkv per token is q | k | v, each split into heads."""

    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        b, n, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax((q @ k.transpose(-2, -1)) * hd ** -0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, hidden, width):
        super().__init__()
        self.fc1 = nn.Linear(hidden, width)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(width, hidden)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    def __init__(self, hidden, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None, :] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None, :] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, hidden, patch, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiTTwin(nn.Module):
    def __init__(self, in_channels=8, height=32, width=64, patch=2, hidden=384, depth=12, heads=6,
                 mlp_ratio=4.0, num_classes=4, freq_dim=256, style=False):
        super().__init__()
        if height % patch or width % patch:
            raise ValueError("the patch must divide the latent grid")
        self.in_channels = in_channels
        self.patch = patch
        self.grid = (height // patch, width // patch)
        tokens = self.grid[0] * self.grid[1]
        self.x_embedder = PatchEmbed(patch, in_channels, hidden)
        self.t_embedder = TimestepEmbedder(hidden, freq_dim)
        self.y_embedder = LabelEmbedder(num_classes, hidden)
        # Fixed, not trained (DiT: a Parameter with requires_grad False, so it is in state_dict).
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, hidden), requires_grad=False)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden, patch, in_channels)
        self.style = bool(style)
        if self.style:
            self.style_embedder = PatchEmbed(patch, in_channels, hidden)
            self.style_type = nn.Parameter(torch.zeros(1, 1, hidden))
            self.style_null = nn.Parameter(torch.zeros(1, 1, hidden))
            # PyTorch lists a module's own parameters before its children's; Remixer registers
            # the two embeddings last (after style_embedder), so the state_dict moves them there.
            self._register_state_dict_hook(_style_last)
        self.initialize_weights()

    def initialize_weights(self):
        """DiT's initialisation: xavier-uniform Linears with zero bias, the patch embedding xavier
        on its [D, C p p] view, N(0, 0.02) label table and timestep-MLP weights, adaLN-Zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        pos = sincos_positions(self.grid[0], self.grid[1], self.pos_embed.shape[-1])
        with torch.no_grad():
            self.pos_embed.copy_(torch.from_numpy(pos)[None])
        proj = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zeroed = [b.adaLN_modulation[1] for b in self.blocks]
        zeroed += [self.final_layer.adaLN_modulation[1], self.final_layer.linear]
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.style:
            proj = self.style_embedder.proj.weight.data
            nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
            nn.init.zeros_(self.style_embedder.proj.bias)
            nn.init.normal_(self.style_type, std=0.02)
            nn.init.zeros_(self.style_null)

    def unpatchify(self, tokens):
        """[B, N, p p C] with features (p, q, c) -> [B, C, H, W] ('nhwpqc -> nchpwq')."""
        b = tokens.shape[0]
        gh, gw = self.grid
        p, c = self.patch, self.in_channels
        x = tokens.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, gh * p, gw * p)

    def style_tokens(self, batch, style, keep):
        """The style tokens [B, N, D]: style_embedder(style) where keep, else style_null; plus
        style_type and pos_embed. style may be None when no sample keeps its style."""
        tokens, hidden = self.pos_embed.shape[1], self.pos_embed.shape[2]
        keep = torch.zeros(batch, dtype=torch.bool) if keep is None else \
            torch.as_tensor(keep).to(torch.bool)
        null = self.style_null.expand(batch, tokens, hidden)
        if style is None:
            if bool(keep.any()):
                raise ValueError("a kept style needs the style latents")
            s = null
        else:
            s = torch.where(keep.to(style.device)[:, None, None], self.style_embedder(style), null)
        return s + self.style_type + self.pos_embed

    def forward(self, x, t, y, style=None, keep=None):
        """Noise prediction [B, C, H, W] for latents x, timesteps t [B] (float), labels y [B]; with
        style=True also the style latents [B, C, H, W] (None: every style dropped) and keep [B]
        (bool; False: that sample's style is dropped)."""
        h = self.x_embedder(x) + self.pos_embed
        tokens = h.shape[1]
        if self.style:
            h = torch.cat([h, self.style_tokens(x.shape[0], style, keep)], dim=1)
        elif style is not None:
            raise ValueError("style latents given to a twin without style tokens")
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c)
        return self.unpatchify(self.final_layer(h[:, :tokens], c))


def _style_last(module, state_dict, prefix, local_metadata):
    """state_dict hook: style_type and style_null after every other tensor (Remixer's order)."""
    for name in ("style_type", "style_null"):
        state_dict[prefix + name] = state_dict.pop(prefix + name)


def loss(model, x, t, y, target, style=None, keep=None):
    """Remixer's stage-2 objective on a batch: the mean squared error over all latent elements."""
    return F.mse_loss(model(x, t, y, style, keep), target)
