"""Video and image pixels for the Teacher, in torch: Qwen-VL's image processor made differentiable.

The reward's gradient must reach the Reasoner's video, so videos never go through a library
processor: ``video_to_pixels`` reproduces it step by step (resize, normalise, temporal pad,
patchify) from the numbers a ``VisionPreprocess`` reads off the folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import InputError


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



def image_to_pixels(image: torch.Tensor, cfg: VisionPreprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) in [0, 1] -> (pixel_values, image_grid_thw): one frame repeated over the temporal patch."""
    return video_to_pixels(image[None].expand(cfg.temporal_patch_size, -1, -1, -1), cfg)
