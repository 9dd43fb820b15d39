"""Building a tiny random Teacher folder: its architecture config, tokenizer, image processor.

The folder is a standard transformers folder, so the loading code (``loading.load_teacher``)
serves it and a real Qwen2.5-VL / Qwen3-VL checkpoint alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from pydantic import Field
from transformers import PreTrainedModel, Qwen2_5_VLConfig, Qwen3VLConfig

from core.config import StrictConfig
from core.errors import InputError
from core.io import write_json_atomic, write_text_atomic
from core.models.teacher.spec import (
    ANSWER_INSTRUCTION,
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IMAGE_PAD,
    MODEL_CLASSES,
    NO,
    QUERY_INSTRUCTION,
    QWEN_SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    YES,
    TeacherFamily,
)
from core.models.tokenizer import build_bpe_tokenizer

log = logging.getLogger(__name__)


class TeacherArchConfig(StrictConfig):
    """Sizes of a tiny Qwen2.5-VL Teacher. Defaults are the shipped zoo's."""

    vocab_size: int = Field(1024, description="Target BPE vocabulary (bytes + specials + merges).")
    text_hidden: int = 160
    text_layers: int = 3
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 384
    vision_depth: int = 2
    vision_hidden: int = 80
    vision_heads: int = 4
    vision_intermediate: int = 160
    patch_size: int = 8
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    window_size: int = Field(64, description="Window attention size in pixels; 64 makes a 64x64 frame one window.")
    tokens_per_second: int = Field(4, description="Temporal rope step per second; 4 with 8 fps and 2-frame patches gives 1 per patch.")
    image_size: int = Field(64, description="Frames are resized (smart_resize) to about this many pixels per side.")
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    family: TeacherFamily = Field("qwen2_5_vl", description="Architecture: Qwen2.5-VL or Qwen3-VL.")

    @classmethod
    def micro(cls, family: TeacherFamily = "qwen2_5_vl") -> TeacherArchConfig:
        """The smallest sensible Teacher: for tests."""
        return cls(vocab_size=512, text_hidden=64, text_layers=1, text_heads=2, text_kv_heads=1, text_intermediate=128,
                   vision_depth=1, vision_hidden=32, vision_heads=2, vision_intermediate=64, family=family)

    @property
    def head_dim(self) -> int:
        return self.text_hidden // self.text_heads

    def mrope_section(self) -> list[int]:
        """Split head_dim/2 rotary frequencies over (time, height, width), Qwen's 1/4, 3/8, 3/8."""
        half = self.head_dim // 2
        t = max(1, half // 4)
        h = (half - t) // 2
        return [t, h, half - t - h]


def teacher_config(arch: TeacherArchConfig, tokenizer) -> Qwen2_5_VLConfig | Qwen3VLConfig:
    """The ``Qwen2_5_VLConfig`` or ``Qwen3VLConfig`` (transformers 5 style) for ``arch`` and a built tokenizer."""
    if arch.text_hidden % arch.text_heads or arch.head_dim % 2:
        raise InputError("TeacherArchConfig.text_heads", f"{arch.text_heads} does not give an even head size for {arch.text_hidden}",
                         "text_hidden divisible by text_heads with an even quotient")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    if arch.family == "qwen3_vl":
        return _qwen3_config(arch, tokenizer, ids)
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": arch.text_hidden,
            "intermediate_size": arch.text_intermediate,
            "num_hidden_layers": arch.text_layers,
            "num_attention_heads": arch.text_heads,
            "num_key_value_heads": arch.text_kv_heads,
            "max_position_embeddings": arch.max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": arch.mrope_section()},
            "bos_token_id": ids[ENDOFTEXT],
            "eos_token_id": ids[IM_END],
            "pad_token_id": ids[ENDOFTEXT],
            "tie_word_embeddings": arch.tie_word_embeddings,
        },
        vision_config={
            "depth": arch.vision_depth,
            "hidden_size": arch.vision_hidden,
            "intermediate_size": arch.vision_intermediate,
            "num_heads": arch.vision_heads,
            "patch_size": arch.patch_size,
            "spatial_merge_size": arch.spatial_merge_size,
            "temporal_patch_size": arch.temporal_patch_size,
            "tokens_per_second": arch.tokens_per_second,
            "window_size": arch.window_size,
            "out_hidden_size": arch.text_hidden,
            "fullatt_block_indexes": [arch.vision_depth - 1],
        },
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=arch.tie_word_embeddings,
    )


def _qwen3_config(arch: TeacherArchConfig, tokenizer, ids: dict[str, int]) -> Qwen3VLConfig:
    """Qwen3-VL: interleaved M-RoPE, learned (interpolated) vision position embeddings, DeepStack."""
    grid = max(1, arch.image_size // arch.patch_size)
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": arch.text_hidden, "intermediate_size": arch.text_intermediate,
            "num_hidden_layers": arch.text_layers, "num_attention_heads": arch.text_heads,
            "num_key_value_heads": arch.text_kv_heads, "head_dim": arch.head_dim,
            "max_position_embeddings": arch.max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": arch.mrope_section(),
                                "mrope_interleaved": True},
            "bos_token_id": ids[ENDOFTEXT], "eos_token_id": ids[IM_END], "pad_token_id": ids[ENDOFTEXT],
        },
        vision_config={
            "depth": arch.vision_depth, "hidden_size": arch.vision_hidden, "intermediate_size": arch.vision_intermediate,
            "num_heads": arch.vision_heads, "patch_size": arch.patch_size, "spatial_merge_size": arch.spatial_merge_size,
            "temporal_patch_size": arch.temporal_patch_size, "out_hidden_size": arch.text_hidden,
            "num_position_embeddings": grid * grid, "deepstack_visual_indexes": [arch.vision_depth - 1],
        },
        image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD], vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END], tie_word_embeddings=arch.tie_word_embeddings,
    )


def build_teacher_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Byte-level BPE over the Teacher's texts, with Qwen's chat and vision special tokens.

    "Yes" and "No" are added to the corpus often enough to become single tokens, which the
    reward needs (the answer is read as one token's log-probability).
    """
    texts = list(corpus) + [YES, NO] * 50 + [QUERY_INSTRUCTION, ANSWER_INSTRUCTION] * 5
    tok = build_bpe_tokenizer(texts, vocab_size, QWEN_SPECIAL_TOKENS, pad_token=ENDOFTEXT, eos_token=IM_END,
                              model_max_length=4096)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_image_processor(arch: TeacherArchConfig):
    """Qwen2-VL image processor for patch 8 / merge 2 whose pixel bounds keep image_size^2 unchanged."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    factor = arch.patch_size * arch.spatial_merge_size
    side = max(factor, round(arch.image_size / factor) * factor)
    return Qwen2VLImageProcessorPil(
        patch_size=arch.patch_size, merge_size=arch.spatial_merge_size, temporal_patch_size=arch.temporal_patch_size,
        min_pixels=factor * factor, max_pixels=side * side,
    )


def build_teacher(out_dir: str | Path, tokenizer_corpus: Iterable[str], arch: TeacherArchConfig, seed: int = 0) -> Path:
    """Build a randomly initialised tiny Teacher folder: model, tokenizer, chat template, processor.

    The folder is a standard transformers folder: ``Qwen2_5_VLForConditionalGeneration`` and
    ``AutoProcessor`` load it offline (the package docstring, "Loading without torchvision", says which processor class).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_teacher_tokenizer(tokenizer_corpus, arch.vocab_size)
    torch.manual_seed(seed)
    model = MODEL_CLASSES[arch.family](teacher_config(arch, tokenizer)).eval()
    save_teacher(out, model, tokenizer, build_image_processor(arch))
    log.info("built a %.2fM-parameter Teacher in %s", sum(p.numel() for p in model.parameters()) / 1e6, out)
    return out


def save_teacher(out: Path, model: PreTrainedModel, tokenizer, image_processor) -> None:
    """Write model (safetensors), tokenizer, image processor, chat template and processor config."""
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    write_text_atomic(out / "chat_template.jinja", CHAT_TEMPLATE)
    write_json_atomic(out / "processor_config.json", {"processor_class": "PaddleOCRVLProcessor"})
    # PaddleOCRVLProcessor reads the placeholder names from the tokenizer (tokenizer.image_token).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    extra = cfg.get("extra_special_tokens") or []
    if isinstance(extra, list):
        cfg["extra_special_tokens"] = {"image_token": IMAGE_PAD, "video_token": VIDEO_PAD}
        cfg["additional_special_tokens"] = extra
    write_json_atomic(cfg_path, cfg)
