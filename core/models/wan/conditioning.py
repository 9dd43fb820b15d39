"""The first-frame conditioning, in the two ways ``WanImageToVideoPipeline`` does it (``FrameCondition``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline

from core.errors import InputError
from core.models.wan.encoding import encode_first_frames, encode_videos, frames_to_tensor


def token_timesteps(latents: torch.Tensor, timestep: torch.Tensor, patch: tuple[int, int] = (2, 2)) -> torch.Tensor:
    """Per-token timesteps (B, seq): 0 on the first latent frame (the clean condition), ``timestep`` elsewhere."""
    b, _, t, h, w = latents.shape
    per_frame = torch.ones(t, dtype=latents.dtype, device=latents.device)
    per_frame[0] = 0
    grid = per_frame.view(1, t, 1, 1).expand(b, t, h // patch[0], w // patch[1])
    return (grid * timestep.view(b, 1, 1, 1)).flatten(1)


def with_condition(noisy: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Replace the first latent frame by the encoded first frame (the TI2V conditioning)."""
    return torch.cat([condition[:, :, :1], noisy[:, :, 1:]], dim=2)


def _check_prior(prior: float, concat: bool) -> None:
    """A first-frame prior is a TI2V source: the Wan2.1 layout has no first latent frame to spread."""
    if prior and concat:
        raise InputError("first_frame_prior", f"is {prior}", "0 for a Wan2.1-style I2V folder (it applies to TI2V)")


@dataclass(frozen=True)
class FrameCondition:
    """How an item's first frame enters the transformer; fixed for all of the item's rollouts.

    ``concat=False`` (TI2V, ``expand_timesteps=True``): ``latents`` is the encoded first frame
    (B, C, 1, h, w); it replaces the first latent frame of every input and output.
    ``concat=True`` (Wan2.1 I2V): ``latents`` is (B, st + C, T', h, w), the first-frame mask
    and the encoded ``[first frame, grey...]`` video, concatenated to the noisy latents on the
    channel axis; the output is the transformer's own for every frame. ``image_embeds`` is the
    CLIP embedding for transformers with an image projection (``image_dim``), else None.
    ``prior`` (TI2V only) moves the flow's source to ``eps + prior * first`` (``FlowSource``).
    """

    latents: torch.Tensor
    concat: bool = False
    image_embeds: torch.Tensor | None = None
    prior: float = 0.0

    def __post_init__(self) -> None:
        _check_prior(self.prior, self.concat)

    @classmethod
    def first_frame_of(cls, latents: torch.Tensor, prior: float = 0.0) -> FrameCondition:
        """The TI2V condition of clean video latents (their first frame), as training uses it."""
        return cls(latents[:, :, :1], prior=prior)

    def prior_mean(self, like: torch.Tensor) -> torch.Tensor | None:
        """The source's mean, shaped as ``like``: the first frame's latent times ``prior`` on every
        frame; None when the source is pure noise."""
        if not self.prior:
            return None
        return (self.prior * self.latents.to(like.dtype)).expand_as(like)

    def source(self, noise: torch.Tensor) -> torch.Tensor:
        """Where the flow starts for ``noise`` (``z1``; what ``pipe(..., latents=)`` takes)."""
        mean = self.prior_mean(noise)
        return noise if mean is None else noise + mean

    def model_input(self, noisy: torch.Tensor) -> torch.Tensor:
        if self.concat:
            return torch.cat([noisy, self.latents.to(noisy.dtype)], dim=1)
        return with_condition(noisy, self.latents)

    def timesteps(self, noisy: torch.Tensor, timestep: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
        """The transformer's ``timestep`` argument: per token in TI2V, per video otherwise."""
        return timestep if self.concat else token_timesteps(noisy, timestep, patch)

    def finish(self, latents: torch.Tensor) -> torch.Tensor:
        """The clean latents the VAE decodes: TI2V puts the condition back as the first frame."""
        return latents if self.concat else with_condition(latents, self.latents)


@torch.no_grad()
def encode_conditions(pipe: WanImageToVideoPipeline, images: list[np.ndarray], n_frames: int,
                      prior: float = 0.0) -> FrameCondition:
    """The first frames' condition in the pipeline's own style (``prepare_latents`` and
    ``encode_image``); ``prior``: the folder's first-frame prior (``first_frame_prior``)."""
    _check_prior(prior, concat=not pipe.config.expand_timesteps)  # before any encoding
    if pipe.config.expand_timesteps:
        return FrameCondition(encode_first_frames(pipe.vae, images), prior=prior)
    vae, st = pipe.vae, pipe.vae_scale_factor_temporal
    first = torch.stack([frames_to_tensor(im[None]) for im in images])
    grey = first.new_zeros(first.shape[0], 3, n_frames - 1, *first.shape[3:])
    latents = encode_videos(vae, torch.cat([first, grey], dim=2).to(vae.device, vae.dtype))
    mask = torch.zeros(latents.shape[0], st, *latents.shape[2:], dtype=latents.dtype, device=latents.device)
    mask[:, :, 0] = 1.0  # every sub-frame of the first latent frame is given
    embeds = None
    if pipe.transformer.config.image_dim is not None:
        embeds = pipe.encode_image(list(images), pipe.image_encoder.device)
    return FrameCondition(torch.cat([mask, latents], dim=1), concat=True, image_embeds=embeds)
