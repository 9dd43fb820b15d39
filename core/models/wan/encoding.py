"""What enters and leaves the transformer: normalised video latents (VAE), text embeddings, an item's noise."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline

from core.errors import InputError


#: The pipeline default, kept so that ``pipe(image, prompt)`` sees what training saw.
MAX_SEQUENCE_LENGTH = 512


def latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` shaped (1, C, 1, 1, 1) from the VAE config."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, dtype=like.dtype, device=like.device).view(shape)
    std = torch.tensor(vae.config.latents_std, dtype=like.dtype, device=like.device).view(shape)
    return mean, std


def normalise(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    mean, std = latent_stats(vae, z)
    return (z - mean) / std


def denormalise(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    mean, std = latent_stats(vae, z)
    return z * std + mean


def frames_to_tensor(video: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1], the VAE's input range."""
    return torch.from_numpy(np.array(video, copy=True)).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def encode_videos(vae: AutoencoderKLWan, videos: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> normalised latents (the posterior mode, as the pipeline uses)."""
    return normalise(vae, vae.encode(videos).latent_dist.mode())


def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> (B, 3, T, H, W) in [-1, 1] through the VAE decoder."""
    return vae.decode(denormalise(vae, latents)).sample.clamp(-1, 1)


@torch.no_grad()
def encode_prompts(pipe: WanImageToVideoPipeline, prompts: list[str], max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> torch.Tensor:
    """Text embeddings exactly as the pipeline computes them (zero-padded to the max length)."""
    embeds, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                   device=pipe.text_encoder.device)
    return embeds


@torch.no_grad()
def encode_first_frames(vae: AutoencoderKLWan, images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 first frames -> normalised one-frame latents (B, C, 1, h, w), as the pipeline encodes them."""
    x = torch.stack([frames_to_tensor(im[None]) for im in images]).to(vae.device, vae.dtype)
    return encode_videos(vae, x)


def latent_shape(pipe: WanImageToVideoPipeline, n_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(C, T', h, w) of the latents of an ``n_frames`` video at ``height`` x ``width``."""
    st, ss = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    if (n_frames - 1) % st:
        raise InputError("n_frames", f"{n_frames}", f"1 + a multiple of {st} (the VAE's temporal factor)")
    return pipe.vae.config.z_dim, (n_frames - 1) // st + 1, height // ss, width // ss


def item_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The noise for one item from its recorded seed (reused for its final video)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
