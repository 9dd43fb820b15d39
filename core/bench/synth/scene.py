"""A symbolic video: a grid of coloured cells per frame plus moving sprites.

Every synthetic family's solver produces a ``Scene``; the renderer turns it into
pixels at any resolution and frame count, and perturbations edit it to break exactly
one rule. Coordinates are in cell units with cell (r, c) centred at (r, c).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.bench.synth.palette import RGB

#: Sprites are drawn as squares of this fraction of a cell, so they read as "objects"
#: distinct from the full-cell static layer and never touch a neighbouring cell when
#: moving between two free cells.
SPRITE_SIZE = 0.75


@dataclass
class Sprite:
    """One moving object: a colour, a position and a visibility flag per frame."""

    name: str
    colour: np.ndarray  # (F,) int colour id
    pos: np.ndarray  # (F, 2) float (row, col) in cell units
    visible: np.ndarray  # (F,) bool

    @classmethod
    def on_path(cls, name: str, colour: int, pos: np.ndarray) -> Sprite:
        n = len(pos)
        return cls(name, np.full(n, colour, dtype=np.int64), np.asarray(pos, dtype=np.float64), np.ones(n, dtype=bool))

    def copy(self) -> Sprite:
        return Sprite(self.name, self.colour.copy(), self.pos.copy(), self.visible.copy())


@dataclass
class Scene:
    """cells: (F, G, G) colour ids of the static/painted layer; sprites drawn on top."""

    cells: np.ndarray
    sprites: list[Sprite] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.cells.shape[0])

    @property
    def grid(self) -> int:
        return int(self.cells.shape[1])

    def sprite(self, name: str) -> Sprite:
        for s in self.sprites:
            if s.name == name:
                return s
        raise KeyError(name)

    def copy(self) -> Scene:
        return Scene(self.cells.copy(), [s.copy() for s in self.sprites])

    def to_json(self) -> dict:
        """Compact machine-readable trajectory for meta.json (positions rounded to 1e-3)."""
        return {
            "cells": self.cells.tolist(),
            "sprites": [
                {
                    "name": s.name,
                    "colour": s.colour.tolist(),
                    "pos": np.round(s.pos, 3).tolist(),
                    "visible": s.visible.tolist(),
                }
                for s in self.sprites
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> Scene:
        return cls(
            np.asarray(data["cells"], dtype=np.int64),
            [
                Sprite(s["name"], np.asarray(s["colour"]), np.asarray(s["pos"], float), np.asarray(s["visible"], bool))
                for s in data["sprites"]
            ],
        )


def static_cells(grid_layer: np.ndarray, n_frames: int) -> np.ndarray:
    """Repeat one (G, G) layer over ``n_frames``."""
    return np.repeat(np.asarray(grid_layer, dtype=np.int64)[None], n_frames, axis=0)


def path_positions(path: list[tuple[int, int]] | np.ndarray, n_frames: int, end_fraction: float = 1.0) -> np.ndarray:
    """Positions along a cell path at constant speed, arriving at ``end_fraction`` of the video.

    The object starts at path[0] on frame 0 and reaches path[-1] at frame
    round(end_fraction * (F - 1)), then stays.
    """
    path = np.asarray(path, dtype=np.float64)
    n_moves = len(path) - 1
    if n_moves == 0:
        return np.repeat(path[:1], n_frames, axis=0)
    end = max(1.0, end_fraction * (n_frames - 1))
    s = np.clip(np.arange(n_frames) / end, 0.0, 1.0) * n_moves
    lo = np.floor(s).astype(int)
    hi = np.minimum(lo + 1, n_moves)
    frac = (s - lo)[:, None]
    return path[lo] * (1 - frac) + path[hi] * frac


def paint_schedule(n_cells: int, n_frames: int) -> np.ndarray:
    """Frame at which the i-th of ``n_cells`` steps happens: evenly over frames 1..F-2.

    The last step lands one frame before the end, so the finished state is shown.
    """
    return np.maximum(1, np.round((np.arange(n_cells) + 1) * (n_frames - 2) / n_cells)).astype(int)


def _pixel_edges(n_px: int, grid: int) -> np.ndarray:
    return np.round(np.linspace(0, n_px, grid + 1)).astype(int)


def _coverage(n_px: int, lo: float, hi: float) -> np.ndarray:
    """Fraction of each pixel [i, i+1) covered by the interval [lo, hi)."""
    i = np.arange(n_px, dtype=np.float64)
    return np.clip(np.minimum(i + 1, hi) - np.maximum(i, lo), 0.0, 1.0)


def render(scene: Scene, width: int = 64, height: int = 64, rgb: np.ndarray | None = None) -> np.ndarray:
    """Render to (F, H, W, 3) uint8. Sprites are box-filtered (anti-aliased) squares.

    ``rgb`` (K, 3) replaces the palette's colours (default ``palette.RGB``): training data for a
    codec can show every colour id in every colour, exactly, blended edges included.
    """
    table = RGB if rgb is None else np.asarray(rgb, dtype=np.float32)
    g = scene.grid
    row_of_px = np.searchsorted(_pixel_edges(height, g), np.arange(height), side="right") - 1
    col_of_px = np.searchsorted(_pixel_edges(width, g), np.arange(width), side="right") - 1
    frames = table[scene.cells[:, row_of_px][:, :, col_of_px]]  # (F, H, W, 3) float
    ch, cw = height / g, width / g
    for sprite in scene.sprites:
        colours = table[sprite.colour]
        for f in np.nonzero(sprite.visible)[0]:
            r, c = sprite.pos[f]
            hy, hx = SPRITE_SIZE * ch / 2, SPRITE_SIZE * cw / 2
            cy, cx = (r + 0.5) * ch, (c + 0.5) * cw
            alpha = np.outer(_coverage(height, cy - hy, cy + hy), _coverage(width, cx - hx, cx + hx))[..., None]
            frames[f] = frames[f] * (1 - alpha) + colours[f] * alpha
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)
