"""PyTorch side of bench/generate (not a test): remixer-generate's computation with the twins.

    torch_generate.py CKPT [--genre NAME] [--count N] [--steps K] [--cfg W] [--eta E] [--threads T]
                           [--device cpu|cuda] [--iterations N] [--repeats R] [--check DIR [--tol X]]

From the stage-2 checkpoint CKPT: the EMA transformer loaded into bench/diffusion/dit_twin.py's
DiTTwin with load_state_dict(strict=True) (architecture and tensors read as
bench/diffusion/load_checkpoint.py does), the frozen autoencoder (/autoencoder, its stage-1 config
in the group's `config` attribute) into bench/train/ae_twin.py's AutoencoderTwin with
load_state_dict(strict=True), of which the decoder runs; latent_scale, the schedule (the training
config's diffusion.timesteps, beta_start, beta_end: betas linear, computed in double as
model/diffusion.c) and the audio parameters from the file.

The sampler is model/diffusion.c's: DDIM over K trailing timesteps t_k = round((k + 1) T / K) - 1
(round half up, as lround), the step coefficients A = sqrt(a') / sqrt(a),
B = sqrt(1 - a' - sig^2) - sqrt(a') sqrt(1 - a) / sqrt(a) computed in double and applied in float32
as x = A x + B eps (+ sig z for eta > 0, drawn with torch's generator: not Remixer's noise);
classifier-free guidance eps = (1 - w) eps_u + w eps_c with the conditional and unconditional
halves in one batch of 2n (w = 1 or 0: one branch of n). Then z / latent_scale through the decoder
(vq: quantised first), which gives the normalised log-mel.

The vocoder is librosa's algorithm written in torch (this file, `TorchVocoder`): mel power =
exp(x * norm_std + norm_mean); magnitude = sqrt(max(pinv(F) @ mel power, 0)) with F the Slaney
filterbank of tests/vocoder/numpy_vocoder.py (librosa.filters.mel(htk=False, norm='slaney')); fast
Griffin-Lim (librosa.griffinlim: momentum 0.99, init='random', the given iterations) with
torch.stft / torch.istft (n_fft, hop, periodic Hann window of n_fft, centred with reflect padding,
istft normalised by the summed squared window), all clips of the batch at once. It does NOT run
Remixer's NNLS refinement (200 projected-gradient iterations), only the clipped pseudo-inverse
librosa starts from.

--check DIR: parity with Remixer before any timing. DIR holds `bench_generate --dump`'s files
(Remixer's starting noise, its sampled latent, decoded mel, audio, info.txt); the twin samples
from the same noise in float32 and in float64 and the script prints the relative 2-norm
differences of the latent and the mel (Remixer against the twin, both against float64), exits 1
when Remixer and the float32 twin differ by more than --tol (relative 2-norm, latent and mel). It
also checks TorchVocoder against tests/vocoder/numpy_vocoder.py (same initial phase) on the mel.

Otherwise: a short warm-up (2 DDIM steps, 2 Griffin-Lim iterations), then R repeats each printing
    RESULT model_s=.. model_cpu_s=.. vocoder_s=.. vocoder_cpu_s=.. audio_s=.. foreign_cpu_pct=..
"""
import argparse
import math
import os
import sys
import time

import h5py
import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(os.path.dirname(here))
sys.path.insert(0, os.path.join(repo, "bench", "diffusion"))
sys.path.insert(0, os.path.join(repo, "bench", "train"))
sys.path.insert(0, os.path.join(repo, "tests", "vocoder"))
from ae_twin import AutoencoderTwin  # noqa: E402
from dit_twin import DiTTwin  # noqa: E402
from load_checkpoint import architecture, state_dict  # noqa: E402
import numpy_vocoder  # noqa: E402


def text_attr(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def load_yaml(text):
    import yaml
    return yaml.safe_load(text) or {}


class Checkpoint:
    """Everything remixer-generate reads from a stage-2 checkpoint, as torch modules and numbers."""

    def __init__(self, path, dtype=torch.float32, device="cpu"):
        with h5py.File(path, "r") as f:
            cfg = load_yaml(text_attr(f.attrs["config"]))
            d = cfg.get("diffusion") or {}
            self.timesteps = int(d.get("timesteps", 1000))
            self.beta_start = float(d.get("beta_start", 1e-4))
            self.beta_end = float(d.get("beta_end", 0.02))
            self.latent_scale = float(f["diffusion"]["latent_scale"][()].reshape(-1)[0])
            a = f["audio"].attrs
            self.audio = {k: a[k] for k in a}
            self.genres = [text_attr(g) for g in a["genre_names"]]
            self.dit = DiTTwin(**architecture(f))
            sd = {k: v.to(torch.float32) for k, v in state_dict(f, "ema").items()}
            self.dit.load_state_dict(sd, strict=True)
            m = load_yaml(text_attr(f["autoencoder"].attrs["config"]))["model"]
            self.ae = AutoencoderTwin(channels=int(m["channels"]), channel_mult=tuple(m["channel_mult"]),
                                      res_blocks=int(m["res_blocks"]),
                                      latent_channels=int(m["latent_channels"]),
                                      bottleneck=m.get("bottleneck", "kl"),
                                      codebook_size=int(m.get("codebook_size", 512)))
            g = f["autoencoder"]
            self.ae.load_state_dict({k: torch.from_numpy(g[k][()].astype(np.float32)) for k in g},
                                    strict=True)
        self.dit = self.dit.to(device=device, dtype=dtype).eval()
        self.ae = self.ae.to(device=device, dtype=dtype).eval()
        self.dtype, self.device = dtype, device
        self.latent_shape = (self.dit.in_channels, self.dit.grid[0] * self.dit.patch,
                             self.dit.grid[1] * self.dit.patch)
        prod, self.alphas_cumprod = 1.0, []
        for t in range(self.timesteps):  # model/diffusion.c's loop, in double
            beta = self.beta_start + (self.beta_end - self.beta_start) * t / (self.timesteps - 1)
            prod *= 1.0 - beta
            self.alphas_cumprod.append(prod)


def ddim_timesteps(T, K):
    K = min(K, T)
    # lround((k + 1) T / K) - 1, descending; (k + 1) T / K >= 0, so round half up = floor(x + 1/2)
    return [((2 * (k + 1) * T + K) // (2 * K)) - 1 for k in range(K)][::-1]


@torch.inference_mode()
def sample(ck, x, labels, steps, cfg, eta, gen=None):
    """DDIM with guidance from the noise x [n, C, H, W] (t = T - 1): the scaled latent."""
    n = x.shape[0]
    null = len(ck.genres)
    ts = ddim_timesteps(ck.timesteps, steps)
    y = torch.as_tensor(labels, dtype=torch.long, device=x.device)
    if cfg == 1.0 or cfg == 0.0:
        yy = y if cfg == 1.0 else torch.full_like(y, null)
    else:
        yy = torch.cat([y, torch.full_like(y, null)])
    f64 = x.dtype == torch.float64
    for k, t in enumerate(ts):
        t_next = ts[k + 1] if k + 1 < len(ts) else -1
        a = ck.alphas_cumprod[t]
        a_next = ck.alphas_cumprod[t_next] if t_next >= 0 else 1.0
        sig = eta * math.sqrt((1.0 - a_next) / (1.0 - a)) * math.sqrt(1.0 - a / a_next)
        dirn = 1.0 - a_next - sig * sig
        coef_x = math.sqrt(a_next) / math.sqrt(a)
        coef_eps = math.sqrt(max(dirn, 0.0)) - math.sqrt(a_next) * math.sqrt(1.0 - a) / math.sqrt(a)
        tt = torch.full((yy.shape[0],), float(t), dtype=x.dtype, device=x.device)
        if cfg == 1.0 or cfg == 0.0:
            eps = ck.dit(x, tt, yy)
        else:
            out = ck.dit(torch.cat([x, x]), tt, yy)
            w_u = 1.0 - cfg if f64 else float(np.float32(1.0) - np.float32(cfg))
            eps = w_u * out[n:] + cfg * out[:n]
        if not f64:
            coef_x, coef_eps = float(np.float32(coef_x)), float(np.float32(coef_eps))
        x = coef_x * x + coef_eps * eps
        if eta > 0 and sig > 0:
            x = x + sig * torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
    return x


@torch.inference_mode()
def decode(ck, z):
    z = z / ck.latent_scale
    if ck.ae.bottleneck == "vq":
        z = ck.ae.vq(z)
    return ck.ae.dec(z)[:, 0]  # [n, M, T]


class TorchVocoder:
    """librosa's mel inversion (clipped pseudo-inverse) and fast Griffin-Lim, in torch."""

    def __init__(self, audio, device="cpu"):
        self.sr, self.n_fft, self.hop = int(audio["sample_rate"]), int(audio["n_fft"]), int(audio["hop_length"])
        self.mean, self.std = float(audio["norm_mean"]), float(audio["norm_std"])
        basis = numpy_vocoder.mel_filterbank(self.sr, self.n_fft, int(audio["n_mels"]), float(audio["fmin"]),
                                             float(audio["fmax"]))
        self.basis = basis
        self.pinv = torch.from_numpy(np.linalg.pinv(basis)).to(device)  # [bins, n_mels], float32
        self.window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float32, device=device)

    def magnitude(self, mel):
        power = torch.exp(mel * self.std + self.mean)
        return torch.sqrt(torch.clamp(self.pinv @ power, min=0))  # [n, bins, frames]

    def stft(self, y):
        return torch.stft(y, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)

    def istft(self, spec, length):
        return torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True, length=length)

    @torch.inference_mode()
    def __call__(self, mel, length, iterations, momentum=0.99, gen=None, angles=None):
        mag = self.magnitude(mel)
        if angles is None:
            u = torch.rand(mag.shape, generator=gen, dtype=torch.float32, device=mag.device)
            angles = torch.polar(torch.ones_like(u), 2 * math.pi * u)
        tiny = torch.finfo(torch.float32).tiny
        rebuilt = torch.zeros_like(angles)
        for _ in range(iterations):
            tprev = rebuilt
            rebuilt = self.stft(self.istft(mag * angles, length))
            angles = rebuilt - (momentum / (1 + momentum)) * tprev
            angles = angles / (angles.abs() + tiny)
        return self.istft(mag * angles, length)


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def read_info(d):
    info = {}
    with open(os.path.join(d, "info.txt")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            info[k] = v
    return info


def check(args):
    d = args.check
    info = read_info(d)
    n, C, H, W = (int(info[k]) for k in ("n", "lat_c", "lat_h", "lat_w"))
    M, T, samples = int(info["n_mels"]), int(info["frames"]), int(info["samples"])
    steps, cfg, eta = int(info["steps"]), float(info["cfg"]), float(info["eta"])
    labels = [int(v) for v in info["labels"].split(",")]
    noise = np.fromfile(os.path.join(d, "noise.f32"), dtype=np.float32).reshape(n, C, H, W)
    r_lat = np.fromfile(os.path.join(d, "latent.f32"), dtype=np.float32).reshape(n, C, H, W)
    r_mel = np.fromfile(os.path.join(d, "mel.f32"), dtype=np.float32).reshape(n, M, T)
    if eta > 0:
        print("note: eta > 0 draws noise at every step, which the twin does not share; the comparison "
              "below is not meaningful")
    failures = 0
    ck32 = Checkpoint(args.checkpoint, torch.float32)
    ck64 = Checkpoint(args.checkpoint, torch.float64)
    print(f"twin: DiTTwin {tuple(ck32.latent_shape)} latents and the decoder loaded with strict=True; "
          f"latent_scale {ck32.latent_scale:.6g} (Remixer {float(info['latent_scale']):.6g})")
    if abs(ck32.latent_scale - float(info["latent_scale"])) > 1e-6 * ck32.latent_scale:
        print("FAIL: latent_scale differs")
        failures += 1
    lat32 = sample(ck32, torch.from_numpy(noise), labels, steps, cfg, eta)
    mel32 = decode(ck32, lat32)
    lat64 = sample(ck64, torch.from_numpy(noise).double(), labels, steps, cfg, eta)
    mel64 = decode(ck64, lat64)
    lat32, mel32, lat64, mel64 = (v.numpy() for v in (lat32, mel32, lat64, mel64))
    d_lat, d_mel = rel(r_lat, lat32), rel(r_mel, mel32)
    print(f"latent after {steps} DDIM steps (cfg {cfg:g}, eta {eta:g}), relative 2-norm difference: "
          f"Remixer vs twin {d_lat:.2e}; from float64: Remixer {rel(r_lat, lat64):.2e}, "
          f"twin float32 {rel(lat32, lat64):.2e}; max |diff| {np.abs(r_lat - lat32).max():.2e}")
    print(f"decoded mel: Remixer vs twin {d_mel:.2e}; from float64: Remixer {rel(r_mel, mel64):.2e}, "
          f"twin float32 {rel(mel32, mel64):.2e}; max |diff| {np.abs(r_mel - mel32).max():.2e}")
    if not (d_lat <= args.tol and d_mel <= args.tol):
        print(f"FAIL: Remixer and the twin differ by more than {args.tol:g}")
        failures += 1
    # The torch vocoder against the numpy reference (librosa's algorithm), the same initial phase.
    voc = TorchVocoder(ck32.audio)
    mel = torch.from_numpy(r_mel[:1])
    mag_t = voc.magnitude(mel)[0].numpy()
    power = np.exp(r_mel[0] * np.float32(voc.std) + np.float32(voc.mean)).astype(np.float32)
    mag_n = numpy_vocoder.mel_to_magnitude_pinv(power, voc.basis)
    rng = np.random.default_rng(0)
    ang = np.exp(2j * np.pi * rng.random(mag_n.T.shape)).astype(np.complex64)  # [frames, bins]
    y_t = voc(mel, samples, args.iterations, angles=torch.from_numpy(ang.T.copy())[None])[0].numpy()
    stft = numpy_vocoder.Stft(voc.n_fft, voc.hop)
    mag_nt = mag_n.T.astype(np.float32)
    angles, rebuilt = ang, np.zeros(ang.shape, dtype=np.complex64)
    for _ in range(args.iterations):  # numpy_vocoder.griffinlim with the given initial phase
        tprev = rebuilt
        rebuilt = stft.forward(stft.inverse(mag_nt * angles, samples), frames=mag_nt.shape[0])
        angles = rebuilt - (0.99 / 1.99) * tprev
        angles /= np.abs(angles) + np.finfo(np.float32).tiny
    y_n = stft.inverse(mag_nt * angles, samples)
    d_mag, d_y = rel(mag_t, mag_n), rel(y_t, y_n)
    print(f"vocoder (torch, librosa's algorithm) vs tests/vocoder/numpy_vocoder.py, same initial phase, "
          f"{args.iterations} Griffin-Lim iterations, clip 0: magnitude {d_mag:.2e}, audio {d_y:.2e} "
          f"(relative 2-norm)")
    if not (d_mag <= 1e-4 and d_y <= 1e-2):
        print("FAIL: the torch vocoder is not the numpy reference's algorithm")
        failures += 1
    print(f"CHECK latent_rel={d_lat:.2e} mel_rel={d_mel:.2e} "
          f"remixer_latent_vs_f64={rel(r_lat, lat64):.2e} twin_latent_vs_f64={rel(lat32, lat64):.2e} "
          f"vocoder_vs_numpy={d_y:.2e} {'ok' if failures == 0 else 'FAILED'}")
    return 1 if failures else 0


def cpu_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy, busy + v[3] + v[4]


def stamp():
    b, t = cpu_jiffies()
    return time.perf_counter(), time.process_time(), b, t


def timed(args):
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("skipped: no GPU")
        return 0
    if device == "cuda":  # fp32 on both sides (Remixer runs with RMX_CUDA_TF32=0)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    ck = Checkpoint(args.checkpoint, torch.float32, device)
    genre = ck.genres.index(args.genre) if args.genre else 0
    voc = TorchVocoder(ck.audio, device)
    samples = (int(ck.audio["segment_frames"]) - 1) * int(ck.audio["hop_length"])  # one segment
    n = args.count
    gen = torch.Generator(device=device).manual_seed(0)
    audio_s = n * samples / voc.sr
    print(f"twin: DiTTwin on {'x'.join(map(str, ck.latent_shape))} latents, genre {ck.genres[genre]}, {n} clips "
          f"of {samples / voc.sr:.3f} s, DDIM {args.steps} steps, cfg {args.cfg:g}, eta {args.eta:g}, "
          f"device {device}, threads {torch.get_num_threads()}")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    tick = os.sysconf("SC_CLK_TCK")
    for r in range(-1, args.repeats):  # r = -1: a short warm-up (2 DDIM steps, 2 iterations)
        x = torch.randn((n,) + ck.latent_shape, generator=gen, device=device)
        s0 = stamp()
        mel = decode(ck, sample(ck, x, [genre] * n, args.steps if r >= 0 else 2, args.cfg, args.eta, gen))
        sync()
        s1 = stamp()
        voc(mel, samples, args.iterations if r >= 0 else 2, gen=gen)
        sync()
        s2 = stamp()
        if r < 0:
            continue
        foreign = ((s2[2] - s0[2]) - (s2[1] - s0[1]) * tick) / max(s2[3] - s0[3], 1)
        print(f"RESULT model_s={s1[0] - s0[0]:.4f} model_cpu_s={s1[1] - s0[1]:.4f} "
              f"vocoder_s={s2[0] - s1[0]:.4f} vocoder_cpu_s={s2[1] - s1[1]:.4f} audio_s={audio_s:.4f} "
              f"foreign_cpu_pct={max(0.0, 100 * foreign):.1f}", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--genre")
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--eta", type=float, default=0.0)
    ap.add_argument("--iterations", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    return check(args) if args.check else timed(args)


if __name__ == "__main__":
    sys.exit(main())
