"""Distil a surrogate decoder from any Wan VAE: ``SurrogateDecoder(z) ~= vae.decode(z)``.

Generic on purpose: give it a user's real ``AutoencoderKLWan`` on a GPU and videos at that
model's resolution, and it trains a surrogate for that VAE the same way it does for ours.
Targets are the VAE decoder's own outputs (not the ground-truth pixels), for the encoded
training videos and for noisy versions of those latents: during test-time optimisation the
surrogate decodes the Reasoner's first-step predictions, which lie near but not on the
encoder's manifold.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from pydantic import BaseModel, Field

from core.config import StrictConfig
from core.errors import InputError
from core.models.surrogate import SurrogateDecoder
from core.models.wan import denormalise, encode_videos
from core.train.checkpoint import TrainingCheckpoint, resume
from core.train.common import one_cycle, psnr, seed_everything, step_progress
from core.train.vae import stack_videos

log = logging.getLogger(__name__)


class SurrogateTrainConfig(StrictConfig):
    hidden: int = 64
    num_res_blocks: int = 2
    steps: int = Field(2000, ge=1)
    batch: int = Field(8, ge=1)
    lr: float = 2e-3
    latent_noise: float = Field(0.5, ge=0, description="Std of the noise added to normalised latents for the noisy copies.")
    seed: int = 0


def build_surrogate_for(vae: AutoencoderKLWan, cfg: SurrogateTrainConfig) -> SurrogateDecoder:
    c = vae.config
    return SurrogateDecoder(
        z_dim=c.z_dim, scale_factor_spatial=c.scale_factor_spatial, scale_factor_temporal=c.scale_factor_temporal,
        hidden=cfg.hidden, num_res_blocks=cfg.num_res_blocks, latents_mean=list(c.latents_mean), latents_std=list(c.latents_std),
    )


@torch.no_grad()
def decoder_pairs(
    vae: AutoencoderKLWan, videos: Sequence[np.ndarray], latent_noise: float, seed: int, batch: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw latents, vae.decode(latents)) for each video, once clean and once with noisy latents."""
    gen = torch.Generator().manual_seed(seed)
    device = next(vae.parameters()).device
    lat, out = [], []
    for i in range(0, len(videos), batch):
        z = encode_videos(vae, stack_videos(videos[i : i + batch]).to(device))
        noisy = z + latent_noise * torch.randn(z.shape, generator=gen).to(device)
        for zz in (z, noisy):
            raw = denormalise(vae, zz)
            lat.append(raw.cpu())
            out.append(vae.decode(raw).sample.clamp(-1, 1).cpu())
    return torch.cat(lat), torch.cat(out)


def _distil(model: SurrogateDecoder, batch, cfg: SurrogateTrainConfig, gen: torch.Generator,
            checkpoint: TrainingCheckpoint | None) -> list[float]:
    """The regression loop: ``batch(step)`` gives (raw latents, VAE decodes) on the model's device, drawn with ``gen``."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = one_cycle(opt, cfg.lr, cfg.steps)
    ckpt = resume(checkpoint, cfg, {"surrogate": model}, opt, sched, gen)
    [curve] = ckpt.restore(curve=[])
    with step_progress("surrogate decoder", cfg.steps, ckpt.step) as advance:
        for step in range(ckpt.step, cfg.steps):
            z, target = batch(step)
            y = model(z)
            loss = (y - target).abs().mean() + ((y - target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0:
                curve.append(round(loss.item(), 5))
            advance(loss=loss.item())
            ckpt.tick(step + 1, curve=curve)
    model.eval()
    return curve


def train_surrogate(
    vae: AutoencoderKLWan, videos: Sequence[np.ndarray], cfg: SurrogateTrainConfig,
    checkpoint: TrainingCheckpoint | None = None,
) -> tuple[SurrogateDecoder, list[float]]:
    """Distil a surrogate for ``vae`` from its decodes of ``videos`` (and noisy latents).

    Every decode is computed once and kept: right for small VAEs and videos (the zoo's). A
    real VAE's decodes do not fit in memory; use ``train_surrogate_cropped`` for those.
    ``checkpoint``: save there periodically and resume from it (``core.train.checkpoint``).
    """
    gen = seed_everything(cfg.seed)
    latents, targets = decoder_pairs(vae, videos, cfg.latent_noise, cfg.seed)
    model = build_surrogate_for(vae, cfg)

    def batch(_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(latents), (cfg.batch,), generator=gen)
        return latents[idx], targets[idx]

    return model, _distil(model, batch, cfg, gen, checkpoint)


def train_surrogate_cropped(
    vae: AutoencoderKLWan, videos: Sequence[np.ndarray], cfg: SurrogateTrainConfig, crop: int,
    checkpoint: TrainingCheckpoint | None = None,
) -> tuple[SurrogateDecoder, list[float]]:
    """Distil a surrogate for a VAE too large to keep its decodes (a real Wan2.2 VAE on a GPU).

    Every video is encoded once (latents kept on the CPU, a few MB each); each step takes
    ``cfg.batch`` random ``crop`` x ``crop`` latent windows over all latent frames, half of
    them with latent noise, and decodes them with the VAE on its own device as the targets.
    The surrogate is convolutional, so what it learns on windows holds on whole latents.
    The surrogate trains on the VAE's device.
    """
    gen = seed_everything(cfg.seed)
    device = next(vae.parameters()).device
    with torch.no_grad():
        latents = [encode_videos(vae, stack_videos([v]).to(device)).cpu() for v in videos]
    h, w = latents[0].shape[-2:]
    if crop > min(h, w) or any(z.shape != latents[0].shape for z in latents):
        raise InputError("crop", f"is {crop} latent pixels for latents shaped {[tuple(z.shape[1:]) for z in latents[:3]]}",
                         f"at most {min(h, w)}, and videos of one size (the VAE's latents must stack)")
    model = build_surrogate_for(vae, cfg).to(device)

    @torch.no_grad()
    def batch(_step: int) -> tuple[torch.Tensor, torch.Tensor]:
        windows = []
        for _ in range(cfg.batch):
            z = latents[int(torch.randint(len(latents), (1,), generator=gen))]
            y, x = (int(torch.randint(n - crop + 1, (1,), generator=gen)) for n in (h, w))
            window = z[..., y : y + crop, x : x + crop]
            if float(torch.rand(1, generator=gen)) < 0.5:
                window = window + cfg.latent_noise * torch.randn(window.shape, generator=gen)
            windows.append(window)
        raw = denormalise(vae, torch.cat(windows).to(device))
        return raw, vae.decode(raw).sample.clamp(-1, 1)

    return model, _distil(model, batch, cfg, gen, checkpoint)


class DecoderFidelity(BaseModel):
    psnr_vs_vae_db: float
    vae_decode_s: float = Field(description="Seconds per video, batch 1, this machine.")
    surrogate_decode_s: float
    speedup: float


@torch.no_grad()
def decoder_fidelity(vae: AutoencoderKLWan, surrogate: SurrogateDecoder, videos: Sequence[np.ndarray]) -> DecoderFidelity:
    """Surrogate vs VAE decode on the same latents: PSNR and per-video decode time."""
    values, t_vae, t_sur = [], 0.0, 0.0
    for video in videos:
        z = denormalise(vae, encode_videos(vae, stack_videos([video]).to(next(vae.parameters()).device)))
        t0 = time.perf_counter()
        ref = vae.decode(z).sample.clamp(-1, 1)
        t1 = time.perf_counter()
        approx = surrogate(z)
        t2 = time.perf_counter()
        t_vae, t_sur = t_vae + t1 - t0, t_sur + t2 - t1
        values.append(psnr(approx, ref))
    n = len(videos)
    return DecoderFidelity(
        psnr_vs_vae_db=round(float(np.mean(values)), 2), vae_decode_s=round(t_vae / n, 4),
        surrogate_decode_s=round(t_sur / n, 4), speedup=round(t_vae / max(t_sur, 1e-9), 1),
    )


class SurrogateForConfig(BaseModel):
    """``vlmt zoo surrogate``: a surrogate for any Wan VAE, trained on a benchmark's ground-truth videos."""

    train: SurrogateTrainConfig = SurrogateTrainConfig()
    crop: int = Field(16, ge=1, description="Latent window side (16 -> 256 pixels for Wan2.2's 16x VAE).")
    videos: int = Field(64, ge=2, description="Ground-truth videos used: the last min(4, half) measure fidelity, the rest train.")
    device: str | None = Field(None, description="cuda, cpu, ...; None: cuda when available.")


def fit_to_vae(video: np.ndarray, temporal: int, spatial: int) -> np.ndarray:
    """Trim a (T, H, W, 3) video to 1 + k*temporal frames and centre-crop it to multiples of ``spatial``."""
    t = 1 + temporal * ((len(video) - 1) // temporal)
    h, w = (spatial * (n // spatial) for n in video.shape[1:3])
    y, x = (video.shape[1] - h) // 2, (video.shape[2] - w) // 2
    return video[:t, y : y + h, x : x + w]


def vae_folder(path: str | Path) -> Path:
    """The ``AutoencoderKLWan`` folder of ``path`` (itself, or a Wan pipeline's ``vae/``); refuses anything else."""
    path = Path(path)
    folder = path / "vae" if (path / "model_index.json").is_file() else path
    config = folder / "config.json"
    cls = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
    if cls != "AutoencoderKLWan":
        raise InputError(path, f"is not a VAE folder ({config.name}: _class_name {cls!r})",
                         "a diffusers AutoencoderKLWan folder or a Wan pipeline folder with vae/")
    return folder


def distil_surrogate_for(vae_dir: Path, bench_dir: Path, out: Path, cfg: SurrogateForConfig,
                         checkpoint: TrainingCheckpoint | None = None) -> dict:
    """Train and save a surrogate for the VAE in ``vae_dir`` (a VAE folder, or a pipeline folder
    with ``vae/``) on ``bench_dir``'s ground-truth videos; returns its fidelity and timings.
    ``checkpoint``: the training loop's (``core.train.checkpoint``)."""
    from core.bench.source import open_benchmark
    from core.media import read_video

    vae_dir = vae_folder(vae_dir)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vae = AutoencoderKLWan.from_pretrained(vae_dir).to(device).eval().requires_grad_(False)
    instances = [i for i in open_benchmark(bench_dir).instances if i.ground_truth is not None][: cfg.videos]
    if len(instances) < 2:
        raise InputError(bench_dir, f"has {len(instances)} instances with a ground-truth video", "at least 2")
    c = vae.config
    videos = [fit_to_vae(read_video(i.ground_truth), c.scale_factor_temporal, c.scale_factor_spatial) for i in instances]
    held_out = min(4, len(videos) // 2)
    t0 = time.perf_counter()
    surrogate, curve = train_surrogate_cropped(vae, videos[:-held_out], cfg.train, cfg.crop, checkpoint)
    seconds = time.perf_counter() - t0
    fidelity = decoder_fidelity(vae, surrogate, videos[-held_out:])
    surrogate.cpu().save_pretrained(out)
    log.info("surrogate for %s: %s, trained in %.0f s", vae_dir, fidelity, seconds)
    return {"vae": str(vae_dir), "out": str(out), "train_seconds": round(seconds, 1), "train_videos": len(videos) - held_out,
            "curve": curve, **fidelity.model_dump()}
