"""Free generation: the Teacher's reply to a user turn of text, images and videos, and rule extraction.

Rule extraction (stage 1) is a reply to the first frame and the instruction; the RULER-Bench
judge uses the same call with several images and videos in one turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import InputError
from core.models.teacher.loading import Teacher
from core.models.teacher.pixels import frames_to_tensor, image_to_pixels, n_vision_tokens, video_to_pixels
from core.models.teacher.prompts import mm_token_types, query_messages, query_text, render_chat, render_chat_in_order
from core.models.teacher.spec import IM_END, IMAGE_PAD


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
