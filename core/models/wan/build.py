"""Building a tiny random Wan TI2V Reasoner from an architecture config (``WanReasonerArch``).

The parts are diffusers' and transformers' own classes, assembled into a ``WanImageToVideoPipeline``
and saved as a standard folder, so ``loading.load_reasoner`` reads it as it reads a real one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from pydantic import Field, model_serializer, model_validator
from transformers import PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

from core.config import StrictConfig, drop_unset
from core.errors import InputError


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
