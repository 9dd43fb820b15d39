"""Judging prompts and the reward's read-out: (video, question) batches and log P("Yes") / log P("No").

The prompt is built with the folder's own chat template and its single vision placeholder
expanded as the family's processor does (``Teacher.video_text``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.errors import InputError
from core.models.teacher.loading import Teacher
from core.models.teacher.pixels import frames_to_tensor, video_to_pixels
from core.models.teacher.spec import ANSWER_INSTRUCTION, IMAGE_PAD, QUERY_INSTRUCTION, VIDEO_PAD


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
