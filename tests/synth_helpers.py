"""Shared helpers for the synth tests: build instances in memory without touching disk."""

from __future__ import annotations

import numpy as np

from core.bench.record import Purpose, TaskInstance
from core.bench.synth.family import SynthFamily
from core.bench.synth.generate import RenderConfig, build_meta, sample_layout
from core.bench.synth.scene import Scene, render


def make_instance(family: SynthFamily, index: int, cfg: RenderConfig | None = None, seed: int = 0):
    """(instance, layout, scene, ground-truth frames) for the index-th test layout."""
    cfg = cfg or RenderConfig()
    layout = sample_layout(family, Purpose.TEST, seed, index)
    scene = family.solve(layout, cfg.n_frames)
    meta = build_meta(family, layout, scene, cfg, Purpose.TEST, seed, index)
    inst = TaskInstance(
        id=f"mem/{family.task_id}/{index:05d}", benchmark="synth", split=family.split, task_family=family.name,
        task_id=family.task_id, index=f"{index:05d}", faculty=family.faculty, prompt=family.prompt(layout), metadata=meta,
    )
    return inst, layout, scene, render(scene, cfg.width, cfg.height)


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(frames.astype(np.float64), sigma=(0, sigma, sigma, 0))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def add_noise(frames: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noisy = frames + np.random.default_rng(seed).normal(0.0, sigma, frames.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


__all__ = ["Scene", "add_noise", "gaussian_blur", "make_instance"]
