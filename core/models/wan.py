"""The Reasoner's model family: a diffusers Wan image-to-video pipeline in the Wan2.2 TI2V style.

One specification object for the family, in the finetrainers spirit: how to build a tiny
random one from an architecture config, how to load any one by path (our shipped tiny
checkpoint or a real ``Wan2.2-TI2V-5B`` folder), and the few model-level operations that
training and the method share:

* latent normalisation (``latents_mean`` / ``latents_std`` from the VAE config),
* the TI2V conditioning: the first latent frame is the clean encoded first frame and its
  tokens get timestep 0, the others get the current noise level (exactly what
  ``WanImageToVideoPipeline`` does with ``expand_timesteps=True``),
* one velocity evaluation of the transformer and an Euler sampler over the scheduler's
  sigmas.

Flow-matching convention (diffusers' ``FlowMatchEulerDiscreteScheduler``): ``z_s = (1 - s) x0
+ s eps`` for noise level ``s`` in [0, 1], timestep ``t = 1000 s``, velocity ``v = eps - x0``;
so the clean-latent prediction at any level is ``x0_hat = z_s - s v``.
"""

from __future__ import annotations

import logging
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from pydantic import BaseModel, Field
from transformers import PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

from core.errors import InputError

log = logging.getLogger(__name__)

#: The pipeline default, kept so that ``pipe(image, prompt)`` sees what training saw.
MAX_SEQUENCE_LENGTH = 512


class WanReasonerArch(BaseModel):
    """Sizes of a tiny Wan TI2V Reasoner. Defaults are the shipped zoo's."""

    text_dim: int = Field(64, description="UMT5 d_model (the transformer's text_dim).")
    text_layers: int = 2
    text_heads: int = 4
    vae_base_dim: int = 8
    vae_z_dim: int = 16
    # 4x spatial, 4x temporal: 64x64x17 -> 16x5x16x16. 8x spatial (Wan2.1's) was measured ~5 dB
    # worse at equal training steps on this data; the transformer sees 8x8 tokens per frame.
    vae_dim_mult: list[int] = [1, 2, 2]
    vae_temporal_downsample: list[bool] = [True, True]
    dit_heads: int = 4
    dit_head_dim: int = 16
    dit_layers: int = 4
    dit_ffn_dim: int = 256
    dit_freq_dim: int = 64
    scheduler_shift: float = 1.0

    @classmethod
    def micro(cls) -> WanReasonerArch:
        """Smallest sensible sizes, for tests that train a zoo in seconds."""
        return cls(text_dim=16, text_layers=1, text_heads=2, vae_base_dim=4, vae_z_dim=4, vae_dim_mult=[1, 2, 2],
                   vae_temporal_downsample=[True, True], dit_heads=2, dit_head_dim=8, dit_layers=1, dit_ffn_dim=32,
                   dit_freq_dim=16)


def build_text_encoder(arch: WanReasonerArch, vocab_size: int) -> UMT5EncoderModel:
    cfg = UMT5Config(
        vocab_size=vocab_size, d_model=arch.text_dim, d_kv=arch.text_dim // arch.text_heads, d_ff=2 * arch.text_dim,
        num_layers=arch.text_layers, num_heads=arch.text_heads, relative_attention_num_buckets=16,
        relative_attention_max_distance=64, dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0,
    )
    return UMT5EncoderModel(cfg)


def build_vae(arch: WanReasonerArch) -> AutoencoderKLWan:
    if len(arch.vae_temporal_downsample) != len(arch.vae_dim_mult) - 1:
        raise InputError("arch.vae_temporal_downsample", f"has {len(arch.vae_temporal_downsample)} entries",
                         f"len(vae_dim_mult) - 1 = {len(arch.vae_dim_mult) - 1}")
    return AutoencoderKLWan(
        base_dim=arch.vae_base_dim, z_dim=arch.vae_z_dim, dim_mult=list(arch.vae_dim_mult), num_res_blocks=1,
        attn_scales=[], temperal_downsample=list(arch.vae_temporal_downsample), dropout=0.0,
        latents_mean=[0.0] * arch.vae_z_dim, latents_std=[1.0] * arch.vae_z_dim,
        scale_factor_temporal=2 ** sum(arch.vae_temporal_downsample),
        scale_factor_spatial=2 ** (len(arch.vae_dim_mult) - 1),
    )


def build_transformer(arch: WanReasonerArch) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=arch.dit_heads, attention_head_dim=arch.dit_head_dim,
        in_channels=arch.vae_z_dim, out_channels=arch.vae_z_dim, text_dim=arch.text_dim, freq_dim=arch.dit_freq_dim,
        ffn_dim=arch.dit_ffn_dim, num_layers=arch.dit_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=256,
    )


def build_scheduler(arch: WanReasonerArch) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=arch.scheduler_shift)


def assemble_pipeline(
    tokenizer: PreTrainedTokenizerBase,
    text_encoder: UMT5EncoderModel,
    vae: AutoencoderKLWan,
    transformer: WanTransformer3DModel,
    scheduler: FlowMatchEulerDiscreteScheduler,
) -> WanImageToVideoPipeline:
    """A Wan2.2-TI2V-style pipeline: no CLIP image encoder, the first frame enters as latents."""
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer,
        image_encoder=None, image_processor=None, expand_timesteps=True,
    )


def load_reasoner(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> WanImageToVideoPipeline:
    """Load any Wan image-to-video pipeline folder; refuse other pipeline classes clearly."""
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise InputError(str(index), "does not exist", "a diffusers pipeline folder with model_index.json")
    pipe = WanImageToVideoPipeline.from_pretrained(path, dtype=dtype)
    if not pipe.config.expand_timesteps:
        log.warning("%s: expand_timesteps is False (Wan2.1 I2V style); the TI2V conditioning used here assumes True", path)
    return pipe.to(device)


# --------------------------------------------------------------------------- latents

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


# --------------------------------------------------------------------------- transformer

def token_timesteps(latents: torch.Tensor, sigma: torch.Tensor, patch: tuple[int, int] = (2, 2)) -> torch.Tensor:
    """Per-token timesteps (B, seq): 0 on the first latent frame (the clean condition), 1000*sigma elsewhere."""
    b, _, t, h, w = latents.shape
    per_frame = torch.ones(t, dtype=latents.dtype, device=latents.device)
    per_frame[0] = 0
    grid = per_frame.view(1, t, 1, 1).expand(b, t, h // patch[0], w // patch[1])
    return (grid * (sigma.view(b, 1, 1, 1) * 1000.0)).flatten(1)


def with_condition(noisy: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Replace the first latent frame by the encoded first frame (the TI2V conditioning)."""
    return torch.cat([condition[:, :, :1], noisy[:, :, 1:]], dim=2)


def velocity(
    transformer: WanTransformer3DModel, noisy: torch.Tensor, condition: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor
) -> torch.Tensor:
    """The transformer's flow velocity for latents at noise level ``sigma`` (per batch element)."""
    x = with_condition(noisy, condition)
    return transformer(hidden_states=x, timestep=token_timesteps(x, sigma), encoder_hidden_states=text, return_dict=False)[0]


def sampling_sigmas(scheduler: FlowMatchEulerDiscreteScheduler, steps: int) -> torch.Tensor:
    """The scheduler's sigma schedule for ``steps`` (ending with 0), fresh each call."""
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.clone().float()


def euler_sample(
    transformer: WanTransformer3DModel,
    noise: torch.Tensor,
    condition: torch.Tensor,
    text: torch.Tensor,
    sigmas: torch.Tensor,
) -> torch.Tensor:
    """Euler integration from ``noise`` over ``sigmas`` (what the scheduler's step does); returns clean latents."""
    z = noise
    for s, s_next in pairwise(sigmas):
        sig = torch.full((z.shape[0],), float(s), dtype=z.dtype, device=z.device)
        z = z + (s_next - s) * velocity(transformer, z, condition, sig, text)
    return with_condition(z, condition)


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


@torch.no_grad()
def generate_videos(
    pipe: WanImageToVideoPipeline,
    first_frames: list[np.ndarray],
    prompts: list[str],
    seeds: list[int],
    steps: int,
    n_frames: int,
    transformer: WanTransformer3DModel | None = None,
    batch: int = 16,
) -> list[np.ndarray]:
    """Sample videos with ``steps`` Euler steps and decode them with the VAE; (T, H, W, 3) uint8 each.

    Same arithmetic as ``pipe(...)`` without classifier-free guidance, batched over items.
    ``transformer`` overrides the pipeline's (e.g. to compare an undistilled one).
    """
    transformer = transformer or pipe.transformer
    h, w = first_frames[0].shape[:2]
    shape = latent_shape(pipe, n_frames, h, w)
    sigmas = sampling_sigmas(pipe.scheduler, steps)
    videos: list[np.ndarray] = []
    for i in range(0, len(prompts), batch):
        cond = encode_first_frames(pipe.vae, first_frames[i : i + batch])
        text = encode_prompts(pipe, prompts[i : i + batch])
        noise = torch.stack([item_noise(shape, s) for s in seeds[i : i + batch]])
        z = euler_sample(transformer, noise, cond, text, sigmas)
        videos += [tensor_to_frames(v) for v in decode_latents(pipe.vae, z)]
    return videos
