"""Loading any Teacher folder by path (ours or a real Qwen2.5-VL / Qwen3-VL checkpoint) into a ``Teacher``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from core.checks import naming_bad_weights, read_json
from core.errors import InputError
from core.models.teacher.pixels import VisionPreprocess, n_vision_tokens
from core.models.teacher.spec import MODEL_CLASSES, NO, VIDEO_PAD, VISION_END, VISION_START, YES

log = logging.getLogger(__name__)


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
