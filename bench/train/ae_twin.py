"""PyTorch twin of Remixer's stage-1 autoencoder (model/autoencoder.h).

state_dict() keys, shapes and order are exactly those of our parameter registry (the trained
tensors, then, for vq, the codebook state), so a Remixer checkpoint maps onto it by name:

    import sys; sys.path.insert(0, "bench/train")
    from ae_twin import AutoencoderTwin
    model = AutoencoderTwin(channels=32, channel_mult=(1, 2, 4), res_blocks=1, latent_channels=8)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in tensors.items()})

loss(x, eps) is Remixer's training loss on the batch x [B, 1, M, T]: rec + kl_weight * kl (kl)
or rec + commitment * commit (vq), every term summed over elements and divided by B. The vq
codebook is a buffer: Remixer updates it by EMA, which the twin does not reproduce.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels):
    return nn.GroupNorm(min(8, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class Mid(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.res = ResBlock(channels, channels)


class EncoderLevel(nn.Module):
    def __init__(self, cin, cout, res_blocks, downsample):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(cin if j == 0 else cout, cout) for j in range(res_blocks))
        self.downsample = nn.Conv2d(cout, cout, 3, stride=2, padding=1) if downsample else None


class DecoderLevel(nn.Module):
    def __init__(self, cin, cout, res_blocks, upsample):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(cin if j == 0 else cout, cout) for j in range(res_blocks))
        # The conv after the nearest x2 upsample, registered as `upsample` itself.
        self.upsample = nn.Conv2d(cout, cout, 3, padding=1) if upsample else None


class Encoder(nn.Module):
    def __init__(self, channels, channel_mult, res_blocks, out_channels):
        super().__init__()
        widths = [channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(1, channels, 3, padding=1)
        self.down = nn.ModuleList(
            EncoderLevel(([channels] + widths)[i], widths[i], res_blocks, i < len(widths) - 1)
            for i in range(len(widths)))
        self.mid = Mid(widths[-1])
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for block in level.res:
                h = block(h)
            if level.downsample is not None:
                h = level.downsample(h)
        h = self.mid.res(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, channels, channel_mult, res_blocks, latent_channels):
        super().__init__()
        widths = [channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(latent_channels, widths[-1], 3, padding=1)
        self.mid = Mid(widths[-1])
        # Keyed by level and inserted from the deepest one: Remixer's registration order.
        levels = range(len(widths) - 1, -1, -1)
        self.up = nn.ModuleDict(
            (str(i), DecoderLevel((widths + [widths[-1]])[i + 1], widths[i], res_blocks, i > 0))
            for i in levels)
        self.norm_out = group_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], 1, 3, padding=1)

    def forward(self, z):
        h = self.mid.res(self.conv_in(z))
        for level in self.up.values():
            for block in level.res:
                h = block(h)
            if level.upsample is not None:
                h = level.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class Codebook(nn.Module):
    def __init__(self, codebook_size, latent_channels):
        super().__init__()
        k = codebook_size
        self.register_buffer("codebook", torch.empty(k, latent_channels).uniform_(-1 / k, 1 / k))
        self.register_buffer("ema_count", torch.ones(k))
        self.register_buffer("ema_sum", self.codebook.clone())

    def forward(self, z_e):
        """Nearest code per position (ties: lowest index); z_e and the result [B, d, h, w]."""
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        codes = (flat[:, None, :] - self.codebook[None]).square().sum(dim=2).argmin(dim=1)
        return self.codebook[codes].reshape(b, h, w, d).permute(0, 3, 1, 2)


class AutoencoderTwin(nn.Module):
    def __init__(self, channels=32, channel_mult=(1, 2, 4), res_blocks=1, latent_channels=8,
                 bottleneck="kl", codebook_size=512, kl_weight=1e-6, commitment=0.25):
        super().__init__()
        if bottleneck not in ("kl", "vq"):
            raise ValueError("bottleneck must be 'kl' or 'vq'")
        self.bottleneck = bottleneck
        self.latent_channels = latent_channels
        self.kl_weight = kl_weight
        self.commitment = commitment
        moments = 2 * latent_channels if bottleneck == "kl" else latent_channels
        self.enc = Encoder(channels, tuple(channel_mult), res_blocks, moments)
        self.dec = Decoder(channels, tuple(channel_mult), res_blocks, latent_channels)
        self.vq = Codebook(codebook_size, latent_channels) if bottleneck == "vq" else None

    def losses(self, x, eps=None):
        """(total, rec, kl or commit) on the batch x, with the kl noise eps (drawn when None)."""
        batch = x.shape[0]
        encoded = self.enc(x)
        if self.bottleneck == "kl":
            mean, logvar = encoded.chunk(2, dim=1)
            logvar = logvar.clamp(-30.0, 20.0)
            if eps is None:
                eps = torch.randn_like(mean)
            z = mean + torch.exp(0.5 * logvar) * eps
            reg = -0.5 * (1 + logvar - mean.square() - logvar.exp()).sum() / batch
            weight = self.kl_weight
        else:
            z_q = self.vq(encoded.detach())
            z = encoded + (z_q - encoded).detach()  # straight-through
            reg = (encoded - z_q).square().sum() / batch
            weight = self.commitment
        rec = (x - self.dec(z)).square().sum() / batch
        return rec + weight * reg, rec, reg

    def loss(self, x, eps=None):
        return self.losses(x, eps)[0]

    def forward(self, x):
        """Deterministic reconstruction: the kl mean, or the nearest codes."""
        encoded = self.enc(x)
        if self.bottleneck == "kl":
            z = encoded[:, :self.latent_channels]
        else:
            z = self.vq(encoded)
        return self.dec(z)
