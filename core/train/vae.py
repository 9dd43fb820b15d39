"""Train a (tiny) Wan VAE for reconstruction, and fit its latent normalisation.

The Wan VAE is causal in time: the first frame of a clip is encoded on its own, later frames
in chunks of four with a cache of the previous chunk. Clips must be as long as the videos
the VAE will see: measured here, a VAE with 4x temporal compression trained on 5- or 9-frame
clips reconstructs the chunks it never saw in training 8-15 dB worse (without temporal
compression, 9-frame clips were measured at 29.6 dB on whole 17-frame videos). Spatially,
grid-aligned crops cut the cost by four at little loss (the network is convolutional), so training uses whole-length clips
of cropped frames.
The encoder's posterior *mode* is what the pipeline uses, so that is what is trained
(a deterministic autoencoder with a small latent-magnitude penalty in place of the KL).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from pydantic import Field, model_serializer

from core.bench.synth.palette import RGB
from core.config import StrictConfig, drop_unset
from core.models.wan import decode_latents, encode_videos, frames_to_tensor
from core.train.checkpoint import TrainingCheckpoint, resume
from core.train.common import one_cycle, psnr, seed_everything, step_progress

log = logging.getLogger(__name__)


class VaeTrainConfig(StrictConfig):
    # At equal compute, 16-pixel crops in batches of 8 reached 22.3 dB where 32-pixel crops in
    # batches of 4 reached 21.0 dB (1200 vs 600 steps); wider VAEs ([1,2,4], [1,4,8]) were worse.
    steps: int = Field(4000, ge=1)
    batch: int = Field(8, ge=1)
    crop: int = Field(16, ge=8, description="Square crop side in pixels, a multiple of the spatial factor.")
    clip_frames: int | None = Field(None, description="Frames per training clip; None: the whole video.")
    lr: float = 3e-3
    latent_penalty: float = 1e-4
    foreground_weight: float = Field(
        8.0, ge=0, description="Extra loss weight on pixels away from the clip's background colour (small objects).")
    colour_aug: float = Field(
        0.3, ge=0, le=1, description="Probability that a clip's RGB channels are permuted and sign-flipped.")
    palette_weight: float = Field(0.0, ge=0, description=(
        "Weight of a hinge on each exactly-palette pixel's decoded distance to its own colour beyond "
        "palette_margin: the scorer classifies pixels by palette colour within a tolerance."))
    palette_margin: float = Field(0.2, gt=0, description="[-1, 1] units; the scorer's tolerance is 0.47.")
    motion_weight: float = Field(0.0, ge=0, description=(
        "Weight of an extra squared error on pixels that change between neighbouring frames (moving objects)."))
    seed: int = 0

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        return drop_unset(handler(self), palette_weight=0.0, palette_margin=0.2, motion_weight=0.0)


#: The palette in the VAE's [-1, 1] units, laid out to broadcast against (B, 3, K, T, H, W).
_PALETTE_UNITS = torch.tensor(RGB / 127.5 - 1.0, dtype=torch.float32).T.reshape(1, 3, -1, 1, 1, 1)


def palette_hinge(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge on |y - x| beyond ``margin`` over the pixels of ``x`` that are exactly a palette colour.

    The scorer reads a pixel as a colour only within a distance of it; a squared error that is
    small on average still leaves small objects' pixels outside that distance.
    """
    d2 = ((x[:, :, None] - _PALETTE_UNITS.to(x)) ** 2).sum(1)  # (B, K, T, H, W)
    exact = d2.min(1).values < 1e-4
    dist = ((y - x) ** 2).sum(1).clamp_min(1e-8).sqrt()
    return (weights[:, 0] * torch.relu(dist - margin) * exact).mean() / weights.mean()


def motion_mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error on the pixels whose colour changes from the previous or to the next frame.

    A random crop mostly shows static walls and floor; a moving sprite is a few percent of the
    pixels, and it is what the codec was measured to lose first (docs/zoo.md).
    """
    change = (x[:, :, 1:] - x[:, :, :-1]).abs().amax(1) > 1e-3  # (B, T-1, H, W)
    moving = torch.zeros_like(x[:, 0], dtype=torch.bool)
    moving[:, 1:] |= change
    moving[:, :-1] |= change
    return (((y - x) ** 2).sum(1) * moving).sum() / moving.sum().clamp_min(1)


def _clips(videos: torch.Tensor, cfg: VaeTrainConfig, st: int, ss: int, gen: torch.Generator) -> torch.Tensor:
    n, _, t, h, w = videos.shape
    idx = torch.randint(n, (cfg.batch,), generator=gen)
    length = t if cfg.clip_frames is None else min(cfg.clip_frames, t)
    start = int(torch.randint(0, t - length + 1, (1,), generator=gen))
    crop = min(cfg.crop, h, w)
    cy = ss * int(torch.randint(0, (h - crop) // ss + 1, (1,), generator=gen))
    cx = ss * int(torch.randint(0, (w - crop) // ss + 1, (1,), generator=gen))
    clips = videos[idx, :, start : start + length, cy : cy + crop, cx : cx + crop]
    return recolour(clips, cfg.colour_aug, gen) if cfg.colour_aug else clips


def recolour(clips: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Permute and sign-flip the RGB channels of each clip with probability ``prob``.

    The objects that carry a task's answer (agent, goal, keys) are rare colours, each under 1%
    of the training pixels, and a tiny VAE trained on them as they come reconstructs them as
    grey (measured: 0% of green, cyan or yellow pixels within the scorer's tolerance). The 48
    channel permutations and flips of [-1, 1] RGB are exact on blended edges too (they act on
    each channel linearly) and paint large regions in every hue, so no colour stays rare.
    """
    b = clips.shape[0]
    chosen = torch.rand(b, generator=gen) < prob
    perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(b)])
    signs = torch.where(torch.rand(b, 3, generator=gen) < 0.5, -1.0, 1.0).to(clips.dtype)
    out = clips.clone()
    for i in chosen.nonzero().flatten().tolist():
        out[i] = clips[i, perms[i]] * signs[i].view(3, 1, 1, 1)
    return out


def stack_videos(videos: Sequence[np.ndarray]) -> torch.Tensor:
    """List of (T, H, W, 3) uint8 -> (N, 3, T, H, W) in [-1, 1]."""
    return torch.stack([frames_to_tensor(v) for v in videos])


def decode_unclamped(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """``vae.decode`` before its final clamp to [-1, 1].

    The clamp has zero gradient wherever a prediction overshoots, so a pixel pushed past the
    wrong extreme never comes back; training on the raw decoder output avoids that. The raw
    per-chunk outputs are collected with a forward hook (public API, no copy of the decode loop).
    """
    chunks: list[torch.Tensor] = []
    handle = vae.decoder.register_forward_hook(lambda _m, _i, out: chunks.append(out))
    try:
        vae.decode(z)
    finally:
        handle.remove()
    return torch.cat(chunks, dim=2)


def foreground_weights(x: torch.Tensor, extra: float) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, T, H, W): ``1 + extra`` away from each clip's background colour.

    The task lives in small objects (an agent is one 4x4 cell, under 1% of the pixels); an
    unweighted loss is satisfied by the background and measured here to smear those objects
    into the wrong colour. The background is the clip's per-channel median.
    """
    background = x.flatten(2).median(dim=2).values[:, :, None, None, None]
    away = ((x - background).abs().amax(dim=1, keepdim=True) > 0.2).to(x.dtype)
    return 1.0 + extra * away


def train_vae(
    vae: AutoencoderKLWan, videos: Sequence[np.ndarray], cfg: VaeTrainConfig, checkpoint: TrainingCheckpoint | None = None
) -> list[float]:
    """Train ``vae`` in place on ground-truth videos; returns the loss curve (every 50 steps).

    ``checkpoint``: save there periodically and resume from it (``core.train.checkpoint``).
    """
    gen = seed_everything(cfg.seed)
    data = stack_videos(videos)
    st, ss = vae.config.scale_factor_temporal, vae.config.scale_factor_spatial
    if cfg.crop % ss:
        raise ValueError(f"crop {cfg.crop} must be a multiple of the VAE's spatial factor {ss}")
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = one_cycle(opt, cfg.lr, cfg.steps)
    vae.train()
    ckpt = resume(checkpoint, cfg, {"vae": vae}, opt, sched, gen)
    [curve] = ckpt.restore(curve=[])
    with step_progress("VAE", cfg.steps, ckpt.step) as advance:
        for step in range(ckpt.step, cfg.steps):
            x = _clips(data, cfg, st, ss, gen)
            z = vae.encode(x).latent_dist.mode()
            y = decode_unclamped(vae, z)
            w = foreground_weights(x, cfg.foreground_weight)
            err = (y - x).abs() + (y - x) ** 2
            loss = (w * err).mean() / w.mean() + cfg.latent_penalty * (z**2).mean()
            if cfg.palette_weight:
                loss = loss + cfg.palette_weight * palette_hinge(x, y, w, cfg.palette_margin)
            if cfg.motion_weight:
                loss = loss + cfg.motion_weight * motion_mse(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0:
                curve.append(round(loss.item(), 5))
            advance(loss=loss.item())
            ckpt.tick(step + 1, curve=curve)
    vae.eval()
    return curve


@torch.no_grad()
def fit_latent_stats(vae: AutoencoderKLWan, videos: Sequence[np.ndarray], batch: int = 8) -> None:
    """Set ``latents_mean`` / ``latents_std`` in the VAE config from the training videos' latents."""
    vae.register_to_config(latents_mean=[0.0] * vae.config.z_dim, latents_std=[1.0] * vae.config.z_dim)
    lat = torch.cat([encode_videos(vae, stack_videos(videos[i : i + batch])) for i in range(0, len(videos), batch)])
    mean = lat.mean(dim=(0, 2, 3, 4))
    std = lat.std(dim=(0, 2, 3, 4)).clamp_min(1e-3)
    vae.register_to_config(latents_mean=[round(float(m), 6) for m in mean], latents_std=[round(float(s), 6) for s in std])


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKLWan, videos: Sequence[np.ndarray], batch: int = 8) -> float:
    """Mean PSNR (dB) of encode -> decode over whole videos."""
    values = []
    for i in range(0, len(videos), batch):
        x = stack_videos(videos[i : i + batch])
        values.append(psnr(decode_latents(vae, encode_videos(vae, x)), x))
    return float(np.mean(values))
