"""The Teacher's model family: a transformers Qwen2.5-VL vision-language model.

One specification object for the family, in the finetrainers spirit: how to build a tiny
random one (``build_teacher``), how to load any one by path (``load_teacher``: our shipped
tiny checkpoint, or a real Qwen2.5-VL folder on a GPU machine), and the model-level
operations the method needs:

* ``video_to_pixels``: a differentiable torch version of the library's image processor
  (resize, normalise, pad to the temporal patch, patchify), so that the gradient of the
  Teacher's "Yes" log-probability reaches the video pixels;
* ``render_chat`` / ``video_qa_batch``: the prompt built with the folder's own chat
  template, with the single ``<|video_pad|>`` expanded to one token per merged patch, as
  Qwen2.5-VL's processor does;
* ``answer_logprob``: log P("Yes") and log P("No") at the answer position;
* ``generate_queries``: rule extraction (first frame + instruction -> JSON rule set);
* ``generate_reply``: free generation for a user turn of text, images and videos in any
  order (``ImagePart``, ``VideoPart``), which the RULER-Bench judge uses.

**Loading without torchvision.** transformers' ``Qwen2_5_VLProcessor`` always loads a
``Qwen2VLVideoProcessor``, which needs torchvision; without torchvision neither
``AutoProcessor`` nor even the processor's constructor works. Our folder therefore
names ``PaddleOCRVLProcessor`` as its processor class in ``processor_config.json``: a
library processor with exactly the parts we need and nothing more (an image processor
and a tokenizer, no video processor), whose image path is Qwen2.5-VL's own (it expands
``<|image_pad|>`` to ``grid_t*grid_h*grid_w/merge^2`` tokens and returns
``mm_token_type_ids``). The image processor is the library's ``Qwen2VLImageProcessor``
(the PIL backend is picked automatically where torchvision is missing). Videos never go
through a library processor: ``video_to_pixels`` builds them in torch, which the method
needs anyway for gradients. So ``AutoProcessor.from_pretrained(dir)`` works offline with
or without torchvision, and ``Qwen2_5_VLForConditionalGeneration.from_pretrained(dir)``
loads the model.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import (
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from core.checks import naming_bad_weights, read_json
from core.config import StrictConfig
from core.errors import InputError
from core.io import write_json_atomic, write_text_atomic
from core.models.tokenizer import build_bpe_tokenizer

log = logging.getLogger(__name__)

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
QWEN_SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]
YES, NO = "Yes", "No"

#: The Qwen-VL families the Teacher code supports, by ``config.json`` model_type.
MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
}
TeacherFamily = Literal["qwen2_5_vl", "qwen3_vl"]

#: What the Teacher is asked after the instruction when it writes the rules (stage 1).
QUERY_INSTRUCTION = (
    "Write the rules of this task as yes/no questions about the video, each answered Yes when the rule "
    'holds, as JSON: {"goal": "<one final-goal question>", "process": ["<1 to 3 process questions>"]}'
)
#: What follows each rule question when the Teacher judges a video (stage 3).
ANSWER_INSTRUCTION = "Answer Yes or No."

#: Qwen2.5-VL's chat template in spirit: ChatML turns (a system turn only when given: the
#: tiny Teacher saves the tokens of Qwen's default one), image and
#: video content parts as vision_start + one pad token + vision_end (the pad is expanded
#: to the number of merged patches after rendering), and the assistant generation prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


# --------------------------------------------------------------------------- architecture

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
    ``AutoProcessor`` load it offline (see the module docstring for the processor class).
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


# --------------------------------------------------------------------------- loading

@dataclass
class VisionPreprocess:
    """The numbers of the library image processor that ``video_to_pixels`` reproduces."""

    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    video_rule: Literal["image", "qwen3_video"] = "image"

    @classmethod
    def from_video_config(cls, cfg: dict, where: str) -> VisionPreprocess:
        """From a ``video_preprocessor_config.json`` (real Qwen3-VL folders): its own pixel bounds."""
        try:
            size = cfg["size"]
            return cls(int(cfg["patch_size"]), int(cfg["merge_size"]), int(cfg["temporal_patch_size"]), int(size["shortest_edge"]),
                       int(size["longest_edge"]), tuple(float(x) for x in cfg["image_mean"]),
                       tuple(float(x) for x in cfg["image_std"]),
                       "qwen3_video" if "Qwen3VL" in str(cfg.get("video_processor_type", "")) else "image")
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(where, f"lacks or has a bad field ({exc!r})",
                             "patch_size, merge_size, temporal_patch_size, size.{shortest,longest}_edge, image_mean/std") from exc

    @classmethod
    def from_image_processor(cls, ip: Any) -> VisionPreprocess:
        size = ip.size
        get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k))
        return cls(int(ip.patch_size), int(ip.merge_size), int(ip.temporal_patch_size), int(get("shortest_edge")),
                   int(get("longest_edge")), tuple(float(x) for x in ip.image_mean), tuple(float(x) for x in ip.image_std))

    def target_size(self, height: int, width: int, n_frames: int = 1) -> tuple[int, int]:
        factor = self.patch_size * self.merge_size
        if self.video_rule == "qwen3_video":
            return smart_resize_video(n_frames, height, width, self.temporal_patch_size, factor, self.min_pixels, self.max_pixels)
        return smart_resize(height, width, factor, self.min_pixels, self.max_pixels)


@dataclass
class Teacher:
    """A loaded Teacher: model, processor, tokenizer and the ids the reward reads."""

    model: PreTrainedModel
    processor: Any
    tokenizer: Any
    vision: VisionPreprocess
    yes_id: int
    no_id: int
    video_fps: float = 8.0
    image_vision: VisionPreprocess | None = None  # when images are preprocessed unlike videos (real Qwen3-VL)

    @property
    def family(self) -> str:
        return str(self.model.config.model_type)

    def video_text(self, grid: torch.Tensor, frame_indices: Sequence[int], fps: float | None = None) -> str:
        """What the chat template's single ``<|video_pad|>`` becomes, as the family's processor writes it.

        Qwen2.5-VL: one pad per merged patch. Qwen3-VL: per temporal patch a timestamp
        ``<t seconds>`` (the mean time of the frames it merges) and that patch's pads between
        vision start/end tokens (``Qwen3VLProcessor.replace_video_token``).
        """
        n = n_vision_tokens(grid, self.vision.merge_size)
        if self.family != "qwen3_vl":
            return VIDEO_PAD * n
        fps = fps or self.video_fps
        gt = int(grid[0, 0])
        tps = self.vision.temporal_patch_size
        idx = list(frame_indices)
        idx += [idx[-1]] * (-len(idx) % tps)
        times = [(idx[i] + idx[i + tps - 1]) / 2 / fps for i in range(0, len(idx), tps)]
        per = n // gt
        return "".join(f"<{times[t]:.1f} seconds>{VISION_START}{VIDEO_PAD * per}{VISION_END}" for t in range(gt))

    def video_kwargs(self, n_videos: int, fps: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
        """Family-specific extra inputs for ``n_videos`` videos (Qwen2.5-VL's seconds per temporal patch).

        ``fps``: each video's frame rate (the rate its frames were sampled at); default ``video_fps``.
        """
        if self.family == "qwen3_vl":
            return {}
        rates = [self.video_fps] * n_videos if fps is None else list(fps)
        if len(rates) != n_videos:
            raise InputError("fps", f"{len(rates)} frame rates for {n_videos} videos", "one per video")
        return {"second_per_grid_ts": torch.tensor([self.vision.temporal_patch_size / r for r in rates])}

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)


def answer_token_id(tokenizer, word: str, where: str) -> int:
    """The single token id of ``word`` at the start of an assistant turn; a clear error otherwise."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise InputError(where, f"the answer {word!r} tokenises into {len(ids)} tokens {pieces}",
                         f"{word!r} to be a single token (the reward reads one token's log-probability)")
    return int(ids[0])


def teacher_model_type(path: str | Path) -> str:
    """The ``model_type`` of a Qwen-VL folder, or a clear error if it is not one we can load (checked before loading)."""
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise InputError(path, "is not a Qwen-VL model folder (no config.json)",
                         "a Qwen2.5-VL or Qwen3-VL folder (ours or a real checkpoint)")
    model_type = read_json(cfg_path, "a Qwen-VL config.json").get("model_type")
    if model_type not in MODEL_CLASSES:
        raise InputError(f"{cfg_path}:model_type", f"is {model_type!r}", f"one of {sorted(MODEL_CLASSES)}")
    return model_type


def teacher_placement(device: str | None = None, dtype: str | None = None) -> tuple[str, str | None]:
    """Where and in what precision a Teacher runs unless told: ``cuda`` when a GPU is visible,
    else ``cpu``; ``bfloat16`` weights on GPUs (a frozen model: half the memory of float32, the
    precision the Reasoner's autocast computes in), float32 (None) on the CPU."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return device, dtype or ("bfloat16" if on_gpu else None)


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Recompute each vision block's and decoder layer's activations in the backward pass.

    The reward backpropagates through the whole Teacher to the pixels, for every query at
    once; a real Teacher keeps every layer's activations for all of them (M queries x
    ~10^4 video tokens at full resolution), far more than its weights. With checkpointing only
    each layer's input is kept, for one more forward pass per step. transformers checkpoints a
    layer only while that layer is in training mode, and the Teacher runs in eval mode, so
    only the checkpointed layers' own flags are set: every submodule (attention, whose dropout
    reads its own flag) stays in eval mode, so the loss and its gradient are unchanged.
    """
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module.training = True


def vision_tower(model: PreTrainedModel) -> torch.nn.Module | None:
    """The vision encoder of a Qwen-VL model (``model.model.visual`` in transformers 4.57 and 5)."""
    inner = getattr(model, "model", None)
    return getattr(inner, "visual", None) or getattr(model, "visual", None)


class _NotPerToken(Exception):
    """A vision-tower output that is not one row per video token (so it cannot be repeated)."""


def _repeat_tokens(out: Any, copies: int, lengths: set[int]) -> Any:
    """``out`` (a tensor, or a tuple, list or ModelOutput of them) with every tensor's rows repeated
    ``copies`` times; raises ``_NotPerToken`` for anything whose rows are not one copy's tokens."""
    if out is None:
        return None
    if isinstance(out, torch.Tensor):
        if out.ndim == 0 or out.shape[0] not in lengths:
            raise _NotPerToken(tuple(out.shape))
        return out.repeat(copies, *[1] * (out.ndim - 1))
    if isinstance(out, ModelOutput):
        return type(out)(**{k: _repeat_tokens(v, copies, lengths) for k, v in out.items()})
    if isinstance(out, (tuple, list)):
        items = [_repeat_tokens(v, copies, lengths) for v in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)  # a namedtuple takes fields
    raise _NotPerToken(type(out).__name__)


@contextmanager
def shared_video_encoding(model: PreTrainedModel, copies: int) -> Iterator[None]:
    """Within this context, a video the batch carries ``copies`` times is encoded once.

    The reward asks M questions about one video in one batch, so the vision tower receives M
    identical copies of its patches (the model checks that the video tokens of every sequence
    have their features). Here a pre-hook hands the tower the first copy only and a post-hook
    repeats each per-token output (the merged embeddings, Qwen3-VL's deepstack features, the
    unmerged states where a version returns them) M times: the language model receives what M
    encodings give, for 1/M of the tower's compute and activations, and the pixels' gradient is
    the same sum. Hooks (public ``nn.Module`` API) rather than calling the tower ourselves,
    because what the tower returns differs across the supported transformers versions.

    The caller guarantees the copies are equal (``query_logprobs`` repeats one video). Inputs
    that are not ``copies`` equal grids pass through untouched; an output that is not per token
    (a future version) is recomputed from the whole input, with a warning, so the result is
    always the library's own. Only calls from the thread that entered act, so a Teacher shared
    by threads is safe.
    """
    tower = vision_tower(model)
    if tower is None or copies <= 1:
        yield
        return
    owner = threading.get_ident()
    merge = int(getattr(tower, "spatial_merge_size", 1))
    pending: dict[str, Any] = {}

    def before(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if threading.get_ident() != owner:
            return None  # another thread's call, possibly while ours is between the two hooks
        pending.clear()
        grid = kwargs.get("grid_thw")
        if not args or not isinstance(args[0], torch.Tensor) or grid is None:
            return None
        hidden = args[0]
        rows = grid.shape[0] // copies
        if hidden.shape[0] % copies or grid.shape[0] % copies or not torch.equal(grid, grid[:rows].repeat(copies, 1)):
            return None
        if any(isinstance(v, torch.Tensor) for k, v in kwargs.items() if k != "grid_thw"):
            return None  # precomputed per-token inputs (positions, sequence lengths) would need slicing too
        n = hidden.shape[0] // copies
        pending.update(args=args, kwargs=kwargs, lengths={n, n // merge**2})
        return (hidden[:n], *args[1:]), {**kwargs, "grid_thw": grid[:rows]}

    def after(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if threading.get_ident() != owner or not pending:
            return None
        whole_args, whole_kwargs, lengths = pending.pop("args"), pending.pop("kwargs"), pending.pop("lengths")
        try:
            return _repeat_tokens(output, copies, lengths)
        except _NotPerToken as exc:
            log.warning("vision tower output %s is not per video token; encoding the %d copies instead", exc, copies)
            return module.forward(*whole_args, **whole_kwargs)

    handles = [tower.register_forward_pre_hook(before, with_kwargs=True),
               tower.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def load_teacher(path: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
                 activation_checkpointing: bool | None = None) -> Teacher:
    """Load a Teacher folder offline, in eval mode: ours, or a real Qwen2.5-VL / Qwen3-VL one.

    Unset, ``device`` and ``dtype`` follow ``teacher_placement`` (cuda and bfloat16 on a GPU
    machine, cpu and float32 otherwise), and ``activation_checkpointing`` is on for GPUs
    (``enable_activation_checkpointing``). ``device="auto"`` spreads the layers over the visible
    GPUs (``device_map="auto"``), for models larger than one GPU such as a 72B RULER-Bench
    judge; inputs go to the first one.

    The processor comes from ``AutoProcessor``; where that cannot be built (Qwen's video
    processors need torchvision), from ``AutoTokenizer`` + ``AutoImageProcessor``, which is
    all the method needs since videos are preprocessed in torch. Video pixel bounds come from
    ``video_preprocessor_config.json`` when the folder has one, else from the image processor.
    """
    device, default_dtype = teacher_placement(str(device) if device is not None else None)
    dtype = getattr(torch, dtype or default_dtype or "float32") if not isinstance(dtype, torch.dtype) else dtype
    path = Path(path)
    model_type = teacher_model_type(path)
    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        tokenizer, image_processor = processor.tokenizer, processor.image_processor
    except (ImportError, ValueError, TypeError, OSError) as exc:
        log.info("%s: AutoProcessor unavailable (%s); using AutoTokenizer + AutoImageProcessor", path, exc)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True, backend="pil")
        processor = None
    video_cfg = path / "video_preprocessor_config.json"
    vision = (VisionPreprocess.from_video_config(json.loads(video_cfg.read_text()), str(video_cfg)) if video_cfg.is_file()
              else VisionPreprocess.from_image_processor(image_processor))
    cls = MODEL_CLASSES[model_type]
    with naming_bad_weights(path):
        if str(device) == "auto":  # spread over every visible GPU (accelerate), e.g. a 72B judge
            model = cls.from_pretrained(path, dtype=dtype, device_map="auto", local_files_only=True).eval()
        else:
            model = cls.from_pretrained(path, dtype=dtype, local_files_only=True).to(device).eval()
    if activation_checkpointing if activation_checkpointing is not None else model.device.type == "cuda":
        enable_activation_checkpointing(model)
    yes_id = answer_token_id(tokenizer, YES, f"{path}:tokenizer")
    no_id = answer_token_id(tokenizer, NO, f"{path}:tokenizer")
    return Teacher(model, processor, tokenizer, vision, yes_id, no_id,
                   image_vision=VisionPreprocess.from_image_processor(image_processor))


# --------------------------------------------------------------------------- pixels

def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The size Qwen-VL's processors resize to: multiples of ``factor``, area within bounds, aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise InputError("frames", f"aspect ratio {max(height, width) / min(height, width):.0f} is too extreme", "at most 200")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def smart_resize_video(num_frames: int, height: int, width: int, temporal_factor: int, factor: int, min_pixels: int,
                       max_pixels: int) -> tuple[int, int]:
    """Qwen3-VL's video resize: like ``smart_resize`` but the pixel bounds apply to frames x area."""
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    h, w = round(height / factor) * factor, round(width / factor) * factor
    t = max(temporal_factor, round(num_frames / temporal_factor) * temporal_factor)
    if t * h * w > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def video_to_pixels(frames: torch.Tensor, cfg: VisionPreprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 3, H, W) frames in [0, 1] -> (pixel_values_videos, video_grid_thw), differentiably.

    Mirrors the library processor step by step: resize to the smart_resize size (bicubic,
    skipped when the size already fits), normalise with the processor's mean/std, repeat
    the last frame up to a multiple of the temporal patch, then cut (gt, tps, C, gh/m, m,
    p, gw/m, m, p) patches and order them merge-window-major as Qwen-VL expects.
    A batch of videos is the concatenation of their outputs (and of their grid rows).
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise InputError("frames", f"has shape {tuple(frames.shape)}", "(K, 3, H, W) in [0, 1]")
    k, c, h, w = frames.shape
    th, tw = cfg.target_size(h, w, k)
    x = frames
    if (th, tw) != (h, w):
        x = F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(cfg.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    tps, p, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
    if k % tps:
        x = torch.cat([x, x[-1:].expand(tps - k % tps, -1, -1, -1)], dim=0)
    gt, gh, gw = x.shape[0] // tps, th // p, tw // p
    x = x.reshape(gt, tps, c, gh // m, m, p, gw // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixels = x.reshape(gt * gh * gw, c * tps * p * p)
    grid = torch.tensor([[gt, gh, gw]], dtype=torch.long, device=frames.device)
    return pixels, grid


def frames_to_tensor(video: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float in [0, 1]."""
    video = np.ascontiguousarray(video)
    if not video.flags.writeable:  # frames decoded into a read-only buffer: torch warns on those, so copy
        video = video.copy()
    return torch.from_numpy(video).permute(0, 3, 1, 2).float().div(255.0)


def n_vision_tokens(grid_thw: torch.Tensor, merge_size: int) -> int:
    return int(grid_thw.prod().item()) // (merge_size * merge_size)


# --------------------------------------------------------------------------- prompts

def render_chat(tokenizer, messages: list[dict], *, add_generation_prompt: bool, n_image_tokens: int = 0,
                n_video_tokens: int = 0, video_text: str | None = None) -> str:
    """Render ``messages`` with the tokenizer's chat template and expand the vision placeholders.

    Each image/video content part renders as one pad token; like the Qwen-VL processors we
    replace it with ``n`` copies (``grid_t*grid_h*grid_w/merge^2``), or the video's pad with
    ``video_text`` (``Teacher.video_text``: Qwen3-VL adds per-patch timestamps). One image
    and/or one video per conversation, which is all the method uses.
    """
    if video_text is None:
        video_text = VIDEO_PAD * n_video_tokens
    kinds = [part["type"] for m in messages if not isinstance(m["content"], str) for part in m["content"]
             if part["type"] in ("image", "video")]
    given = {"image": IMAGE_PAD * n_image_tokens, "video": video_text}
    if len(kinds) != len(set(kinds)) or any(given[k] and k not in kinds for k in given):
        raise InputError("messages", f"has image/video parts {kinds} for {sorted(k for k in given if given[k])}",
                         "one placeholder per given image/video")
    return render_chat_in_order(tokenizer, messages, [given[k] for k in kinds], add_generation_prompt=add_generation_prompt)


_PLACEHOLDER = re.compile(f"({re.escape(IMAGE_PAD)}|{re.escape(VIDEO_PAD)})")


def render_chat_in_order(tokenizer, messages: list[dict], expansions: Sequence[str], *, add_generation_prompt: bool) -> str:
    """``render_chat`` for any number of images and videos: the i-th placeholder becomes ``expansions[i]``.

    Placeholders are matched in the order the chat template writes them (the order of the
    content parts), as the Qwen-VL processors consume their image and video grids; each
    expansion must be of its placeholder's kind (image pads for an image, a video's text
    for a video), so a mix-up is an error rather than a silently misaligned prompt.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    pieces = _PLACEHOLDER.split(text)
    pads = pieces[1::2]
    if len(pads) != len(expansions):
        raise InputError("messages", f"has {len(pads)} image/video placeholders for {len(expansions)} expansions",
                         "one expansion per image/video content part")
    for i, (pad, expansion) in enumerate(zip(pads, expansions, strict=True)):
        if pad not in expansion:
            raise InputError(f"expansions[{i}]", f"does not expand the {pad} placeholder it replaces",
                             "image pads for an image part, the video's text for a video part")
        pieces[2 * i + 1] = expansion
    return "".join(pieces)


def qa_messages(question: str) -> list[dict]:
    """The judging prompt: the question first, then the video, then the answer format.

    Question-first lets a causal Teacher read the video *with the question in mind*: every
    video token can attend to the question, so a small model learns question-specific
    checks in a few hundred steps instead of squeezing them into the last few tokens.
    """
    return [{"role": "user", "content": [{"type": "text", "text": question}, {"type": "video"},
                                         {"type": "text", "text": ANSWER_INSTRUCTION}]}]


def query_text(prompt: str) -> str:
    """The text after the first frame when the Teacher writes an instance's rules."""
    return f"{prompt.strip()}\n{QUERY_INSTRUCTION}"


def query_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query_text(prompt)}]}]


def mm_token_types(input_ids: torch.Tensor, image_token_id: int, video_token_id: int) -> torch.Tensor:
    """Qwen's modality ids per token: 0 text, 1 image, 2 video (needed for the 3D rope)."""
    types = torch.zeros_like(input_ids)
    types[input_ids == image_token_id] = 1
    types[input_ids == video_token_id] = 2
    return types


def _pad(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (ids, attention_mask)."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


@dataclass
class VideoQABatch:
    """Model inputs for B (video, question) pairs and where each answer is read.

    ``answer_pos[i]`` is the position whose logits predict the answer token of row i (the
    last prompt token); it lies before any padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor
    answer_pos: torch.Tensor
    extra: dict[str, torch.Tensor]

    def model_inputs(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        inputs = {
            "input_ids": self.input_ids, "attention_mask": self.attention_mask, "mm_token_type_ids": self.mm_token_type_ids,
            "pixel_values_videos": self.pixel_values_videos, "video_grid_thw": self.video_grid_thw, **self.extra,
        }
        return {k: v.to(device) for k, v in inputs.items()}


def video_qa_batch(teacher: Teacher, videos: Sequence[torch.Tensor] | torch.Tensor, questions: Sequence[str]) -> VideoQABatch:
    """Batch (K, 3, H, W) videos in [0, 1] with one question each; pixels stay differentiable."""
    if len(videos) != len(questions):
        raise InputError("video_qa_batch", f"{len(videos)} videos for {len(questions)} questions", "one question per video")
    pixels, grids, seqs = [], [], []
    for frames, question in zip(videos, questions, strict=True):
        px, grid = video_to_pixels(frames, teacher.vision)
        pixels.append(px)
        grids.append(grid)
        text = render_chat(teacher.tokenizer, qa_messages(question), add_generation_prompt=True,
                           video_text=teacher.video_text(grid, range(len(frames))))
        seqs.append(teacher.tokenizer(text, add_special_tokens=False)["input_ids"])
    ids, mask = _pad(seqs, teacher.tokenizer.pad_token_id)
    return VideoQABatch(
        input_ids=ids, attention_mask=mask, mm_token_type_ids=mm_token_types(ids, teacher.image_token_id, teacher.video_token_id),
        pixel_values_videos=torch.cat(pixels), video_grid_thw=torch.cat(grids),
        answer_pos=torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long), extra=teacher.video_kwargs(len(seqs)),
    )


def answer_logits(teacher: Teacher, batch: VideoQABatch) -> torch.Tensor:
    """(B, vocab) next-token logits at each row's answer position.

    Runs the backbone, then the LM head on the answer positions only (the head over every
    position would cost as much as a transformer layer and is never read).
    """
    hidden = teacher.model.model(**batch.model_inputs(teacher.model.device), use_cache=False).last_hidden_state
    rows = torch.arange(batch.input_ids.shape[0], device=hidden.device)
    return teacher.model.lm_head(hidden[rows, batch.answer_pos.to(hidden.device)]).float()


def answer_logprob(teacher: Teacher, batch: VideoQABatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P("Yes"), log P("No")) at each row's answer position, each of shape (B,).

    Differentiable with respect to ``batch.pixel_values_videos``; the reward is -log P("Yes").
    """
    logp = torch.log_softmax(answer_logits(teacher, batch), dim=-1)
    return logp[:, teacher.yes_id], logp[:, teacher.no_id]


@torch.no_grad()
def p_yes(teacher: Teacher, video: np.ndarray, question: str) -> float:
    """P("Yes") for one (T, H, W, 3) uint8 video: a convenience for scripts and tests."""
    yes, _ = answer_logprob(teacher, video_qa_batch(teacher, [frames_to_tensor(video)], [question]))
    return float(yes.exp()[0])


# --------------------------------------------------------------------------- free generation

@dataclass(frozen=True)
class ImagePart:
    """An image in a user turn: (H, W, 3) uint8."""

    pixels: np.ndarray


@dataclass(frozen=True)
class VideoPart:
    """A video in a user turn: (T, H, W, 3) uint8 frames, sampled at ``fps`` frames per second.

    The rate matters to the model: Qwen2.5-VL reads seconds per temporal patch, Qwen3-VL
    writes each patch's timestamp into the prompt.
    """

    frames: np.ndarray
    fps: float


ChatPart = str | ImagePart | VideoPart


@dataclass
class ChatInputs:
    """Model inputs for one user turn of text, images and videos, ready for ``generate``."""

    input_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    vision: dict[str, torch.Tensor]

    def model_inputs(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        vision = {k: v.to(device, dtype) if k.startswith("pixel_values") else v.to(device) for k, v in self.vision.items()}
        return {"input_ids": self.input_ids.to(device), "attention_mask": torch.ones_like(self.input_ids).to(device),
                "mm_token_type_ids": self.mm_token_type_ids.to(device), **vision}


def chat_inputs(teacher: Teacher, parts: Sequence[ChatPart]) -> ChatInputs:
    """One user turn of ``parts`` in order, with the assistant generation prompt after it.

    Images go through the image preprocessing, videos through the video preprocessing
    (``video_to_pixels``), each placeholder expanded as the family's processor does.
    """
    content: list[dict] = []
    expansions: list[str] = []
    pixels: dict[str, list[torch.Tensor]] = {"image": [], "video": []}
    grids: dict[str, list[torch.Tensor]] = {"image": [], "video": []}
    rates: list[float] = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
        elif isinstance(part, ImagePart):
            cfg = teacher.image_vision or teacher.vision
            px, grid = image_to_pixels(frames_to_tensor(part.pixels[None])[0], cfg)
            content.append({"type": "image"})
            expansions.append(IMAGE_PAD * n_vision_tokens(grid, cfg.merge_size))
            pixels["image"].append(px)
            grids["image"].append(grid)
        elif isinstance(part, VideoPart):
            if part.fps <= 0:
                raise InputError(f"parts[{i}].fps", f"is {part.fps}", "a positive frame rate")
            px, grid = video_to_pixels(frames_to_tensor(part.frames), teacher.vision)
            content.append({"type": "video"})
            expansions.append(teacher.video_text(grid, range(len(part.frames)), part.fps))
            pixels["video"].append(px)
            grids["video"].append(grid)
            rates.append(part.fps)
        else:
            raise InputError(f"parts[{i}]", f"is a {type(part).__name__}", "text, an ImagePart or a VideoPart")
    text = render_chat_in_order(teacher.tokenizer, [{"role": "user", "content": content}], expansions,
                                add_generation_prompt=True)
    ids = torch.tensor([teacher.tokenizer(text, add_special_tokens=False)["input_ids"]], dtype=torch.long)
    vision: dict[str, torch.Tensor] = {}
    if pixels["image"]:
        vision |= {"pixel_values": torch.cat(pixels["image"]), "image_grid_thw": torch.cat(grids["image"])}
    if pixels["video"]:
        vision |= {"pixel_values_videos": torch.cat(pixels["video"]), "video_grid_thw": torch.cat(grids["video"]),
                   **teacher.video_kwargs(len(rates), rates)}
    return ChatInputs(ids, mm_token_types(ids, teacher.image_token_id, teacher.video_token_id), vision)


@torch.no_grad()
def generate_reply(teacher: Teacher, parts: Sequence[ChatPart], max_new_tokens: int = 160, sample: bool = False,
                   temperature: float = 0.8) -> str:
    """The Teacher's reply to one user turn of text, images and videos (greedy unless ``sample``).

    ``sample=True`` draws from the torch RNG (seed it for reproducibility). Generation stops
    at the end of the assistant turn; the reply is returned without special tokens.
    """
    inputs = chat_inputs(teacher, parts)
    out = teacher.model.generate(
        **inputs.model_inputs(teacher.model.device, teacher.model.dtype), max_new_tokens=max_new_tokens, do_sample=sample,
        **({"temperature": temperature, "top_k": 0, "top_p": 1.0} if sample else {}),
        eos_token_id=teacher.tokenizer.convert_tokens_to_ids(IM_END), pad_token_id=teacher.tokenizer.pad_token_id,
    )
    return teacher.tokenizer.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True).strip()


# --------------------------------------------------------------------------- rule extraction

def image_to_pixels(image: torch.Tensor, cfg: VisionPreprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) in [0, 1] -> (pixel_values, image_grid_thw): one frame repeated over the temporal patch."""
    return video_to_pixels(image[None].expand(cfg.temporal_patch_size, -1, -1, -1), cfg)


def query_prompt_ids(teacher: Teacher, grid: torch.Tensor, prompt: str) -> list[int]:
    text = render_chat(teacher.tokenizer, query_messages(prompt), add_generation_prompt=True,
                       n_image_tokens=n_vision_tokens(grid, teacher.vision.merge_size))
    return teacher.tokenizer(text, add_special_tokens=False)["input_ids"]


def generate_queries(teacher: Teacher, first_frame: np.ndarray, prompt: str, max_new_tokens: int = 160,
                     sample: bool = False, temperature: float = 0.8) -> str:
    """Rule extraction: decode the Teacher's JSON rule set for a first frame and instruction.

    Greedy by default; ``sample=True`` draws from the torch RNG (seed it for reproducibility).
    Returns the raw text (validate with ``RuleQueries.parse``).
    """
    return generate_reply(teacher, [ImagePart(first_frame), query_text(prompt)], max_new_tokens, sample, temperature)
