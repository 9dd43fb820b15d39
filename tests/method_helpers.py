"""Tiny random-weight models of the real architectures, for the method's tests (seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import torch

from core.bench.source import Benchmark
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


def build_micro_reasoner(bench: Benchmark, out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Save a random micro Wan TI2V pipeline and a random surrogate for its VAE; (reasoner, surrogate) dirs."""
    torch.manual_seed(seed)
    arch = WanReasonerArch.micro()
    tok = build_bpe_tokenizer([i.prompt for i in bench.instances], 300, ["<pad>", "</s>", "<unk>"],
                              pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    vae = build_vae(arch)
    pipe = assemble_pipeline(tok, build_text_encoder(arch, len(tok)), vae, build_transformer(arch), build_scheduler(arch))
    pipe.save_pretrained(out / "reasoner")
    sur = SurrogateDecoder(z_dim=arch.vae_z_dim, scale_factor_spatial=vae.config.scale_factor_spatial,
                           scale_factor_temporal=vae.config.scale_factor_temporal, hidden=16, num_res_blocks=1)
    sur.save_pretrained(out / "surrogate")
    return out / "reasoner", out / "surrogate"


def build_micro_teacher(bench: Benchmark, out: Path, seed: int = 0, family: str = "qwen2_5_vl") -> Path:
    """A random micro Teacher of either Qwen-VL family (the timestamp tokens are in its vocabulary)."""
    corpus = [i.prompt for i in bench.instances] * 3 + [f"<{t / 10:.1f} seconds>" for t in range(40)]
    return build_teacher(out / f"teacher-{family}", corpus, TeacherArchConfig.micro(family), seed=seed)
