"""Tiny random-weight models of the real architectures, for the method's tests (seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from core.bench.layout import Benchmark
from core.io import write_json_atomic
from core.method.reasoner import OPTIM_DEFAULTS_FILE
from core.models.surrogate import SurrogateDecoder
from core.models.teacher import TeacherArchConfig, build_teacher
from core.models.tokenizer import build_bpe_tokenizer
from core.models.wan import (
    WanReasonerArch,
    assemble_pipeline,
    build_scheduler,
    build_text_encoder,
    build_transformer,
    build_vae,
)
from core.zoo import ZOO_OPTIM_DEFAULTS


def wan22_5b_vae(z_dim: int) -> AutoencoderKLWan:
    """Wan2.2-TI2V-5B's VAE layout at micro width: pixels patchified 2x2 into 12 channels, residual
    blocks, three downsamples with the first spatial only, a wider decoder: 16x spatial, 4x temporal."""
    return AutoencoderKLWan(base_dim=4, decoder_base_dim=8, z_dim=z_dim, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                            temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
                            out_channels=12, scale_factor_spatial=16, scale_factor_temporal=4,
                            latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)


def build_micro_reasoner(bench: Benchmark, out: Path, seed: int = 0, layout: str = "ti2v") -> tuple[Path, Path]:
    """Save a random micro Wan I2V pipeline and a random surrogate for its VAE; (reasoner, surrogate) dirs.

    ``layout="ti2v"``: the Wan2.2 TI2V layout of the shipped zoo, with its ``optim_defaults.json``.
    The real checkpoints' layouts come without that file: ``"wan22_5b"``, the TI2V layout with
    Wan2.2-TI2V-5B's own VAE layout (``wan22_5b_vae``) and solver (UniPC on flow sigmas, shift 5);
    ``"wan21"``, the Wan2.1 I2V layout (``expand_timesteps=False``, mask + condition latents
    concatenated on the channel axis, a CLIP image encoder feeding the transformer's image projection).
    """
    if layout not in ("ti2v", "wan22_5b", "wan21"):
        raise ValueError(f"unknown layout {layout!r}")
    torch.manual_seed(seed)
    arch = WanReasonerArch.micro()
    tok = build_bpe_tokenizer([i.prompt for i in bench.instances], 300, ["<pad>", "</s>", "<unk>"],
                              pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    vae = wan22_5b_vae(arch.vae_z_dim) if layout == "wan22_5b" else build_vae(arch)
    scheduler = build_scheduler(arch)
    if layout == "wan22_5b":
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipe = assemble_pipeline(tok, build_text_encoder(arch, len(tok)), vae, build_transformer(arch), scheduler)
    if layout == "wan21":
        clip = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                image_size=32, patch_size=8, projection_dim=16)
        inner = arch.dit_heads * arch.dit_head_dim
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=arch.dit_heads, attention_head_dim=arch.dit_head_dim,
            in_channels=2 * arch.vae_z_dim + vae.config.scale_factor_temporal, out_channels=arch.vae_z_dim,
            text_dim=arch.text_dim, freq_dim=arch.dit_freq_dim, ffn_dim=arch.dit_ffn_dim, num_layers=arch.dit_layers,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=clip.hidden_size,
            added_kv_proj_dim=inner, rope_max_seq_len=256)
        pipe = WanImageToVideoPipeline(
            tokenizer=tok, text_encoder=pipe.text_encoder, vae=vae, scheduler=pipe.scheduler, transformer=transformer,
            image_encoder=CLIPVisionModel(clip).eval(),
            image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
            expand_timesteps=False)
    pipe.save_pretrained(out / "reasoner")
    if layout == "ti2v":  # the zoo's layout carries the zoo's recommended learning rate, as `vlmt zoo train` writes it
        write_json_atomic(out / "reasoner" / OPTIM_DEFAULTS_FILE, ZOO_OPTIM_DEFAULTS.model_dump(mode="json"))
    sur = SurrogateDecoder(z_dim=arch.vae_z_dim, scale_factor_spatial=vae.config.scale_factor_spatial,
                           scale_factor_temporal=vae.config.scale_factor_temporal, hidden=16, num_res_blocks=1)
    sur.save_pretrained(out / "surrogate")
    return out / "reasoner", out / "surrogate"


def build_micro_teacher(bench: Benchmark, out: Path, seed: int = 0, family: str = "qwen2_5_vl") -> Path:
    """A random micro Teacher of either Qwen-VL family (the timestamp tokens are in its vocabulary)."""
    corpus = [i.prompt for i in bench.instances] * 3 + [f"<{t / 10:.1f} seconds>" for t in range(40)]
    return build_teacher(out / f"teacher-{family}", corpus, TeacherArchConfig.micro(family), seed=seed)
