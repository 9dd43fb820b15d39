"""The Reasoner's model family: a diffusers Wan image-to-video pipeline.

One specification object for the family, in the finetrainers spirit: how to build a tiny
random one from an architecture config (the shipped zoo is in the Wan2.2 TI2V style), how to
load any one by path (our shipped tiny checkpoint, a real ``Wan2.2-TI2V-5B`` folder, or a
Wan2.1-style I2V folder such as ``Wan2.1-I2V-14B-480P-Diffusers``), and the few model-level
operations that training and the method share:

* latent normalisation (``latents_mean`` / ``latents_std`` from the VAE config),
* the first-frame conditioning, in the two ways ``WanImageToVideoPipeline`` does it
  (``FrameCondition``): with ``expand_timesteps=True`` (TI2V) the first latent frame is the
  clean encoded first frame and its tokens get timestep 0; otherwise (Wan2.1 I2V) a mask and
  the encoded ``[first frame, grey frames]`` video are concatenated to the noisy latents on
  the channel axis, and a CLIP image embedding goes to the transformer when it has an image
  projection,
* one velocity evaluation of the transformer, and sampling with the folder's own solver
  (``scheduler.step``: Euler for the zoo's ``FlowMatchEulerDiscreteScheduler``, UniPC for
  Wan2.2's folders), so a vanilla video is the one ``pipe(...)`` makes.

Two-expert pipelines (Wan2.2-I2V-A14B: ``transformer_2`` and ``boundary_ratio``) sample as
the pipeline does, the high-noise ``transformer`` at timesteps >= ``boundary_ratio * 1000``
and ``transformer_2`` below (``expert``). The test-time LoRA goes on the high-noise expert,
the one the paper's first-step gradient passes through.

Flow-matching convention (diffusers' ``FlowMatchEulerDiscreteScheduler``): ``z_s = (1 - s) x0
+ s z1`` for noise level ``s`` in [0, 1], timestep ``t = 1000 s``, velocity ``v = z1 - x0``;
so the clean-latent prediction at any level is ``x0_hat = z_s - s v``. The flow's source ``z1``
is the noise ``eps`` (every diffusers Wan folder), or ``eps + p * first`` for a folder whose
``flow_source.json`` sets a first-frame prior ``p`` (``FlowSource``): the TI2V first frame's
latent on every frame, so that what the video keeps of its first frame is there before the
transformer acts. ``pipe(image, prompt, latents=z1)`` samples such a folder as we do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from pydantic import Field, model_serializer, model_validator
from transformers import PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

from core.checks import naming_bad_weights
from core.config import StrictConfig, drop_unset, load_config
from core.errors import InputError

log = logging.getLogger(__name__)

#: The pipeline default, kept so that ``pipe(image, prompt)`` sees what training saw.
MAX_SEQUENCE_LENGTH = 512


#: A Reasoner folder's own statement of where its flow starts (``FlowSource``); without it, pure noise.
FLOW_SOURCE_FILE = "flow_source.json"


class FlowSource(StrictConfig):
    """``<reasoner>/flow_source.json``: the flow's source is ``eps + first_frame_prior * first``.

    Written by the zoo's training when it trains with a prior (``FlowMatchConfig``), so the
    sampler of every consumer (the method, ``vlmt zoo eval``, mining) starts where the
    transformer was trained to start. Real checkpoints have none: pure noise, as diffusers.
    """

    first_frame_prior: float = Field(0.0, ge=0.0, description="Weight of the first frame's latent in the source.")
    why: str = ""


def first_frame_prior(reasoner_dir: str | Path) -> float:
    """The prior a Reasoner folder was trained with (``flow_source.json``), else 0 (pure noise)."""
    path = Path(reasoner_dir) / FLOW_SOURCE_FILE
    return load_config(FlowSource, path).first_frame_prior if path.is_file() else 0.0


class WanReasonerArch(StrictConfig):
    """Sizes of a tiny Wan TI2V Reasoner. Defaults are the shipped zoo's."""

    text_dim: int = Field(64, description="UMT5 d_model (the transformer's text_dim).")
    text_layers: int = 2
    text_heads: int = 4
    vae_base_dim: int = 8
    vae_z_dim: int = 16
    # 4x spatial, 4x temporal: 64x64x17 -> 16x5x16x16. 8x spatial (Wan2.1's) was measured ~5 dB
    # worse at equal training steps on this data; the transformer sees 8x8 tokens per frame.
    vae_dim_mult: list[int] = Field(default_factory=lambda: [1, 2, 2])
    vae_temporal_downsample: list[bool] = Field(default_factory=lambda: [True, True])
    vae_residual: bool = Field(False, description=(
        "Wan2.2's VAE blocks (is_residual): each down/up block adds a parameter-free shortcut that averages "
        "(duplicates) pixels into channels. Measured on this data: 22.2 vs 18.7 dB PSNR at 500 training steps, "
        "24.4 vs 24.1 at 2000, at 1.37x the cost per step; off in the shipped zoo."))
    dit_heads: int = 4
    dit_head_dim: int = 16
    dit_patch: int = Field(2, ge=1, description=(
        "The transformer's spatial patch (Wan's is 2 on a 16x VAE, 32 pixels a token). 4 on this 4x VAE: 16 pixels "
        "(2x2 cells) a token, 4x fewer tokens than 2, so a wider transformer trains faster (docs/zoo.md)."))
    dit_layers: int = 4
    dit_ffn_dim: int = 256
    dit_freq_dim: int = 64
    scheduler_shift: float = 1.0

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        return drop_unset(handler(self), vae_residual=False, dit_patch=2)

    @model_validator(mode="after")
    def _width_holds_a_token(self) -> WanReasonerArch:
        """A token's output is ``dit_patch**2 * vae_z_dim`` latent values, one linear map of the
        ``dit_heads * dit_head_dim`` hidden state: narrower, the velocity cannot hold the noise it
        must remove (its rank is the width), and samples keep a speckle no training removes
        (measured: docs/zoo-reasoner.md). Wan2.2-TI2V-5B: 3072 for 2 * 2 * 48 = 192."""
        width, token = self.dit_heads * self.dit_head_dim, self.dit_patch**2 * self.vae_z_dim
        if width < token:
            raise ValueError(f"dit_heads * dit_head_dim = {width} is narrower than a token's "
                             f"dit_patch**2 * vae_z_dim = {token} latent values: widen the transformer or shrink the patch")
        return self

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
        is_residual=arch.vae_residual,
        attn_scales=[], temperal_downsample=list(arch.vae_temporal_downsample), dropout=0.0,
        latents_mean=[0.0] * arch.vae_z_dim, latents_std=[1.0] * arch.vae_z_dim,
        scale_factor_temporal=2 ** sum(arch.vae_temporal_downsample),
        scale_factor_spatial=2 ** (len(arch.vae_dim_mult) - 1),
    )


def build_transformer(arch: WanReasonerArch) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=(1, arch.dit_patch, arch.dit_patch), num_attention_heads=arch.dit_heads, attention_head_dim=arch.dit_head_dim,
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
    scheduler: SchedulerMixin,
) -> WanImageToVideoPipeline:
    """A Wan2.2-TI2V-style pipeline: no CLIP image encoder, the first frame enters as latents."""
    return WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer,
        image_encoder=None, image_processor=None, expand_timesteps=True,
    )


def store_weights_as(folder: str | Path, dtype: torch.dtype) -> None:
    """Rewrite every ``*.safetensors`` file in a model folder with its floating tensors in ``dtype``.

    For a model shipped only as a reference (the zoo's undistilled ``reasoner-base``): bfloat16
    halves its bytes inside the ``models/`` budget, and ``from_pretrained`` loads it back as
    float32 (diffusers' default), so nothing that reads it changes. Its figures are measured on
    the stored weights. Each file is replaced atomically.
    """
    from safetensors.torch import load_file, save_file

    from core.io import atomic_path

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise InputError(str(folder), "holds no *.safetensors file", "a model folder saved with save_pretrained")
    for file in files:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(file).items()}
        with atomic_path(file) as tmp:
            save_file(tensors, tmp, metadata={"format": "pt"})


def load_reasoner(path: str | Path, device: str | torch.device = "cpu",
                  dtype: torch.dtype | dict[str, torch.dtype] = torch.float32) -> WanImageToVideoPipeline:
    """Load a Wan image-to-video pipeline folder (one transformer, or two experts); refuse anything else clearly.

    ``dtype`` may name one per component (diffusers' ``{"transformer": ..., "default": ...}``)."""
    path = Path(path)
    index = path / "model_index.json"
    if not index.is_file():
        raise InputError(str(index), "does not exist", "a diffusers pipeline folder with model_index.json")
    with naming_bad_weights(path):
        pipe = WanImageToVideoPipeline.from_pretrained(path, dtype=dtype)
    check_supported(pipe, str(index))
    return pipe.to(device)


def check_guidance_2(path: str | Path, scale_2: float | None) -> None:
    """Refuse a second guidance scale for a folder without two experts, from its ``model_index.json`` (no loading)."""
    if scale_2 is None:
        return
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise InputError(str(index), "does not exist", "a diffusers pipeline folder with model_index.json")
    if json.loads(index.read_text()).get("boundary_ratio") is None:
        raise _single_transformer(scale_2, str(path))


def _single_transformer(scale_2: float, what: str) -> InputError:
    return InputError("guidance.scale_2", f"is {scale_2}, but {what} has a single transformer (no boundary_ratio)",
                      "no second scale (it guides the low-noise expert of a two-expert folder such as Wan2.2-A14B)")


def check_supported(pipe: WanImageToVideoPipeline, where: str = "reasoner") -> None:
    """Raise ``InputError`` for a Wan I2V pipeline whose layout this code cannot condition correctly."""
    two_experts = pipe.transformer_2 is not None or pipe.config.get("boundary_ratio") is not None
    if pipe.transformer is None or (two_experts and (pipe.transformer_2 is None or pipe.config.boundary_ratio is None)):
        raise InputError(where, "lacks a transformer (or one of a two-expert pair, or its boundary_ratio)",
                         "transformer, and for two experts transformer_2 and boundary_ratio (Wan2.2-I2V-A14B)")
    z = pipe.vae.config.z_dim
    expected = z if pipe.config.expand_timesteps else 2 * z + pipe.vae_scale_factor_temporal
    style = "expand_timesteps=True (TI2V)" if pipe.config.expand_timesteps else "expand_timesteps=False (mask + latents)"
    for name in ("transformer", "transformer_2") if two_experts else ("transformer",):
        tf = getattr(pipe, name).config
        if tf.in_channels != expected:
            raise InputError(f"{where}: {name}.in_channels", f"is {tf.in_channels}",
                             f"{expected} for a VAE with z_dim {z} and {style}")
        if tf.image_dim is not None and (pipe.image_encoder is None or pipe.image_processor is None):
            raise InputError(f"{where}: {name}.image_dim", f"is {tf.image_dim} but the pipeline has no image encoder",
                             "an image_encoder and image_processor in the folder, or a transformer with image_dim null")


def expert(pipe: WanImageToVideoPipeline, timestep: torch.Tensor) -> WanTransformer3DModel:
    """The transformer ``pipe(...)`` uses at ``timestep``: the high-noise one unless two experts
    split the schedule at ``boundary_ratio`` and ``timestep`` lies below it."""
    ratio = pipe.config.get("boundary_ratio")
    if ratio is None or float(timestep.flatten()[0]) >= ratio * pipe.scheduler.config.num_train_timesteps:
        return pipe.transformer
    return pipe.transformer_2


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


def velocity(
    transformer: WanTransformer3DModel, noisy: torch.Tensor, condition: FrameCondition, timestep: torch.Tensor,
    text: torch.Tensor,
) -> torch.Tensor:
    """The transformer's flow velocity for latents at ``timestep`` (per batch element, ``1000 * sigma``)."""
    x = condition.model_input(noisy)
    t = condition.timesteps(x, timestep, tuple(transformer.config.patch_size[1:]))
    return transformer(hidden_states=x, timestep=t, encoder_hidden_states=text,
                       encoder_hidden_states_image=condition.image_embeds, return_dict=False)[0]


def fresh_scheduler(scheduler: SchedulerMixin, steps: int, device: torch.device | str | None = None) -> SchedulerMixin:
    """A new scheduler of the folder's class and config, set for ``steps`` on ``device``.

    Multistep solvers (UniPC, Wan2.2's default) keep per-run state, so every rollout gets
    its own; the pipeline's scheduler object is never stepped. Its timesteps live where the
    latents do (the transformer embeds them on its own device), as in ``pipe(...)``.
    """
    fresh = type(scheduler).from_config(scheduler.config)
    fresh.set_timesteps(steps, device=device)
    return fresh


def sampling_sigmas(scheduler: SchedulerMixin, steps: int) -> torch.Tensor:
    """The scheduler's sigma schedule for ``steps`` (ending with 0)."""
    return fresh_scheduler(scheduler, steps).sigmas.clone().float()


def solve(
    velocity_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    scheduler: SchedulerMixin,
    steps: int,
    graph_from: int | None = None,
) -> torch.Tensor:
    """Integrate from ``noise`` with the folder's own solver: ``scheduler.step`` at its timesteps.

    This is what ``pipe(...)`` does (Euler for ``FlowMatchEulerDiscreteScheduler``, UniPC for
    Wan2.2's folders). ``velocity_at(z, t)`` gives the velocity for a (B,) timestep, guided or
    not (``guided``). Steps before ``graph_from`` run without an autograd graph; ``None``
    builds none at all.
    """
    sched = fresh_scheduler(scheduler, steps, noise.device)
    z = noise
    for i, t in enumerate(sched.timesteps):
        with torch.set_grad_enabled(torch.is_grad_enabled() and graph_from is not None and i >= graph_from):
            v = velocity_at(z, t.expand(z.shape[0]).to(z.dtype))
            z = sched.step(v, t, z, return_dict=False)[0]
    return z


#: A guidance scale, or one per timestep (``guidance_scale_at``: two-expert folders).
Scale = float | Callable[[torch.Tensor], float]


def guidance_scale_at(pipe: WanImageToVideoPipeline, scale: float, scale_2: float | None) -> Scale:
    """The scale at each timestep as ``pipe(guidance_scale=scale, guidance_scale_2=scale_2)`` applies it.

    ``scale_2`` guides the low-noise expert's steps of a two-expert folder (Wan2.2-A14B);
    None means ``scale`` throughout, as in diffusers. A single-transformer folder refuses it.
    """
    if scale_2 is None:
        return scale
    if pipe.config.get("boundary_ratio") is None:
        raise _single_transformer(scale_2, f"this {type(pipe).__name__}")
    return lambda t: scale if expert(pipe, t) is pipe.transformer else scale_2


def guided(velocity_at: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], text: torch.Tensor,
           negative: torch.Tensor | None, scale: Scale) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``velocity_at(z, t, text)`` with classifier-free guidance, as ``pipe(...)`` combines it:
    ``v_neg + scale * (v - v_neg)``; ``scale == 1`` (or no ``negative``) is one plain call.
    ``scale`` may depend on the timestep (``guidance_scale_at``)."""
    if negative is None or scale == 1.0:
        return lambda z, t: velocity_at(z, t, text)

    def call(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_neg = velocity_at(z, t, negative)
        s = scale(t) if callable(scale) else scale
        return v_neg + s * (velocity_at(z, t, text) - v_neg)

    return call


def sample_latents(
    transformer_at: Callable[[torch.Tensor], WanTransformer3DModel],
    noise: torch.Tensor,
    condition: FrameCondition,
    text: torch.Tensor,
    scheduler: SchedulerMixin,
    steps: int,
    negative: torch.Tensor | None = None,
    guidance_scale: Scale = 1.0,
) -> torch.Tensor:
    """Sample clean latents from ``noise`` with the scheduler's solver (no graph); the condition
    put back in TI2V. The flow starts at ``condition.source(noise)``.

    ``transformer_at(t)`` is the transformer for timestep ``t`` (one model, or ``expert``);
    ``negative`` text embeddings with ``guidance_scale > 1`` add classifier-free guidance
    (a scale per timestep: ``guidance_scale_at``).
    """
    def at(z: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return velocity(transformer_at(t), z, condition, t, c)

    return condition.finish(solve(guided(at, text, negative, guidance_scale), condition.source(noise), scheduler, steps))


@torch.no_grad()
def encode_first_frames(vae: AutoencoderKLWan, images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 first frames -> normalised one-frame latents (B, C, 1, h, w), as the pipeline encodes them."""
    x = torch.stack([frames_to_tensor(im[None]) for im in images]).to(vae.device, vae.dtype)
    return encode_videos(vae, x)


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
    guidance_scale: float = 1.0,
    negative_prompt: str = "",
    guidance_scale_2: float | None = None,
    first_frame_prior: float = 0.0,
) -> list[np.ndarray]:
    """Sample videos with ``steps`` solver steps and decode them with the VAE; (T, H, W, 3) uint8 each.

    Same arithmetic as ``pipe(...)``, batched over items; ``guidance_scale > 1`` adds
    classifier-free guidance against ``negative_prompt`` (two transformer calls per step),
    ``guidance_scale_2`` that of a two-expert folder's low-noise expert.
    ``transformer`` overrides the pipeline's (e.g. to compare an undistilled one); otherwise each
    step uses the pipeline's ``expert`` for its timestep. ``first_frame_prior``: the folder's
    (``first_frame_prior(path)``); 0 starts from pure noise, as ``pipe(...)``.
    """
    h, w = first_frames[0].shape[:2]
    shape = latent_shape(pipe, n_frames, h, w)
    videos: list[np.ndarray] = []
    for i in range(0, len(prompts), batch):
        cond = encode_conditions(pipe, first_frames[i : i + batch], n_frames, first_frame_prior)
        text = encode_prompts(pipe, prompts[i : i + batch])
        negative = encode_prompts(pipe, [negative_prompt] * len(text)) if guidance_scale != 1.0 else None
        noise = torch.stack([item_noise(shape, s) for s in seeds[i : i + batch]])
        pick = (lambda _t: transformer) if transformer is not None else (lambda t: expert(pipe, t))
        z = sample_latents(pick, noise, cond, text, pipe.scheduler, steps, negative,
                           guidance_scale_at(pipe, guidance_scale, guidance_scale_2))
        videos += [tensor_to_frames(v) for v in decode_latents(pipe.vae, z)]
    return videos
