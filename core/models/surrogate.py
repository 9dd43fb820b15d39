"""A lightweight surrogate for a Wan VAE decoder, used while optimising the Reasoner's LoRA.

The method decodes the Reasoner's first-step clean-latent prediction on every optimisation
step; the real Wan VAE decoder (causal 3D convolutions at full resolution) dominates that
cost. This network reproduces ``vae.decode`` from the same raw latents with 2D convolutions
per latent frame plus the previous latent frame as causal context, and pixel-shuffle
upsampling. It is a diffusers ``ModelMixin`` + ``ConfigMixin``: a folder with
``config.json`` and safetensors weights, loadable without the VAE.

Shapes follow the VAE: latents (B, C, 1 + (T-1)/st, H/ss, W/ss) -> video (B, 3, T, H, W)
in [-1, 1], with ``st`` the temporal and ``ss`` the spatial compression. The first latent
frame maps to one video frame, every later one to ``st`` frames.
"""

from __future__ import annotations

import math

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn import functional as F

from core.checks import naming_bad_weights


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class SurrogateDecoder(ModelMixin, ConfigMixin):
    """Latents -> video, a fast stand-in for ``AutoencoderKLWan.decode``."""

    @register_to_config
    def __init__(
        self,
        z_dim: int = 16,
        scale_factor_spatial: int = 8,
        scale_factor_temporal: int = 4,
        hidden: int = 64,
        num_res_blocks: int = 2,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
    ) -> None:
        super().__init__()
        if scale_factor_spatial & (scale_factor_spatial - 1):
            raise ValueError(f"scale_factor_spatial must be a power of two, got {scale_factor_spatial}")
        mean = torch.tensor(latents_mean or [0.0] * z_dim).view(1, z_dim, 1, 1)
        std = torch.tensor(latents_std or [1.0] * z_dim).view(1, z_dim, 1, 1)
        self.register_buffer("z_mean", mean, persistent=False)
        self.register_buffer("z_std", std, persistent=False)
        self.stem = nn.Conv2d(2 * z_dim, hidden, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(hidden) for _ in range(num_res_blocks)])
        ups: list[nn.Module] = []
        ch = hidden
        for _ in range(int(math.log2(scale_factor_spatial))):
            out = max(ch // 2, 4 * scale_factor_temporal)
            ups += [nn.Conv2d(ch, out * 4, 3, padding=1), nn.PixelShuffle(2), nn.SiLU()]
            ch = out
        self.up = nn.Sequential(*ups)
        self.head = nn.Conv2d(ch, 3 * scale_factor_temporal, 3, padding=1)

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> SurrogateDecoder:
        """diffusers' loader, naming the weights file when it is unreadable."""
        with naming_bad_weights(path):
            return super().from_pretrained(path, **kwargs)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw (un-normalised) latents, as ``vae.decode`` takes them -> video in [-1, 1]."""
        b, c, t, h, w = latents.shape
        st = self.config.scale_factor_temporal
        z = latents.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        z = ((z - self.z_mean) / self.z_std).view(b, t, c, h, w)
        prev = torch.cat([z[:, :1], z[:, :-1]], dim=1)  # causal context: the previous latent frame
        x = torch.cat([z, prev], dim=2).view(b * t, 2 * c, h, w)
        x = self.head(self.up(self.body(self.stem(x))))  # (b*t, 3*st, H, W)
        x = x.view(b, t, st, 3, x.shape[-2], x.shape[-1])
        frames = torch.cat([x[:, :1, -1], x[:, 1:].flatten(1, 2)], dim=1)  # first latent frame -> one frame
        return torch.tanh(frames.permute(0, 2, 1, 3, 4))
