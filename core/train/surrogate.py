"""Distil a surrogate decoder from any Wan VAE: ``SurrogateDecoder(z) ~= vae.decode(z)``.

Generic on purpose: give it a user's real ``AutoencoderKLWan`` on a GPU and videos at that
model's resolution, and it trains a surrogate for that VAE the same way it does for ours.
Targets are the VAE decoder's own outputs (not the ground-truth pixels), for the encoded
training videos and for noisy versions of those latents: during test-time optimisation the
surrogate decodes the Reasoner's first-step predictions, which lie near but not on the
encoder's manifold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from pydantic import BaseModel, Field

from core.models.surrogate import SurrogateDecoder
from core.models.wan import denormalise, encode_videos
from core.train.common import psnr, seed_everything, step_progress
from core.train.vae import stack_videos

log = logging.getLogger(__name__)


class SurrogateTrainConfig(BaseModel):
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


def train_surrogate(
    vae: AutoencoderKLWan, videos: Sequence[np.ndarray], cfg: SurrogateTrainConfig
) -> tuple[SurrogateDecoder, list[float]]:
    """Distil a surrogate for ``vae`` from its decodes of ``videos`` (and noisy latents)."""
    gen = seed_everything(cfg.seed)
    latents, targets = decoder_pairs(vae, videos, cfg.latent_noise, cfg.seed)
    model = build_surrogate_for(vae, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    curve = []
    with step_progress("surrogate decoder", cfg.steps) as advance:
        for step in range(cfg.steps):
            idx = torch.randint(len(latents), (cfg.batch,), generator=gen)
            y = model(latents[idx])
            loss = (y - targets[idx]).abs().mean() + ((y - targets[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0:
                curve.append(round(loss.item(), 5))
            advance(loss=loss.item())
    model.eval()
    return model, curve


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
        z = denormalise(vae, encode_videos(vae, stack_videos([video])))
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
