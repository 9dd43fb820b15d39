"""Measurements on pixels that every synthetic scorer builds on.

Generated videos are blurry and noisy, so nothing here compares exact pixel values:
pixels are classified by their nearest palette colour within a tolerance (anything
else is "unknown"), grid cells are read by a majority vote over their central pixels,
and objects are tracked by the centroid and area of their colour mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.bench.synth.palette import RGB
from core.bench.synth.scene import SPRITE_SIZE

#: A pixel belongs to a palette colour when it is within this RGB distance of it.
COLOUR_TOLERANCE = 60.0
UNKNOWN = -1


def classify(frames: np.ndarray, tolerance: float = COLOUR_TOLERANCE) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) int8 palette ids, UNKNOWN where no colour is close."""
    px = frames.reshape(-1, 3).astype(np.float32)
    # |x - p|^2 = |x|^2 - 2 x.p + |p|^2. The product is an einsum, not ``@``: BLAS's own
    # thread pool, called from many task threads at once beside torch, was seen to spin for
    # minutes on a 2-core CPU; this product is too small to gain from BLAS anyway.
    d2 = (px * px).sum(1, keepdims=True) - 2.0 * np.einsum("nc,pc->np", px, RGB) + (RGB * RGB).sum(1)[None]
    labels = d2.argmin(1).astype(np.int8)
    labels[d2.min(1) > tolerance**2] = UNKNOWN
    return labels.reshape(frames.shape[:-1])


def cell_edges(n_px: int, grid: int) -> np.ndarray:
    return np.round(np.linspace(0, n_px, grid + 1)).astype(int)


def _inner(lo: int, hi: int, inset: float) -> tuple[int, int]:
    q = round(inset * (hi - lo))
    return lo + q, max(lo + q + 1, hi - q)


def cell_votes(labels: np.ndarray, grid: int, inset: float = 0.25, quorum: float = 0.5) -> np.ndarray:
    """(T, H, W) labels -> (T, G, G): the colour that holds ``quorum`` of each cell's centre."""
    t, h, w = labels.shape
    ys, xs = cell_edges(h, grid), cell_edges(w, grid)
    n_labels = len(RGB) + 1
    # Map every central pixel to its cell; pixels outside the central parts map to -1.
    row_cell = np.full(h, -1)
    for r in range(grid):
        y0, y1 = _inner(ys[r], ys[r + 1], inset)
        row_cell[y0:y1] = r
    col_cell = np.full(w, -1)
    for c in range(grid):
        x0, x1 = _inner(xs[c], xs[c + 1], inset)
        col_cell[x0:x1] = c
    inside = (row_cell[:, None] >= 0) & (col_cell[None, :] >= 0)
    cell = (row_cell[:, None] * grid + col_cell[None, :])[inside]  # (P,)
    lab = labels[:, inside].astype(np.int64) + 1  # (T, P)
    key = (np.arange(t)[:, None] * grid * grid + cell[None, :]) * n_labels + lab
    counts = np.bincount(key.ravel(), minlength=t * grid * grid * n_labels).reshape(t, grid * grid, n_labels)
    size = counts.sum(-1)
    best = counts.argmax(-1)
    ok = np.take_along_axis(counts, best[..., None], -1)[..., 0] >= quorum * size
    return np.where(ok, best - 1, UNKNOWN).astype(np.int8).reshape(t, grid, grid)


@dataclass
class Track:
    """Where one colour-coded object is in each frame (cell units, cell (r, c) centred at (r, c))."""

    present: np.ndarray  # (T,) bool: enough pixels of the colour
    duplicated: np.ndarray  # (T,) bool: two separate blobs, or far too many pixels
    pos: np.ndarray  # (T, 2) float centroid, NaN where absent
    mask: np.ndarray  # (T, H, W) bool


def track(labels: np.ndarray, colour: int, grid: int) -> Track:
    _, h, w = labels.shape
    mask = labels == colour
    expected = (SPRITE_SIZE * h / grid) * (SPRITE_SIZE * w / grid)
    area = mask.sum(axis=(1, 2))
    present = area >= 0.3 * expected
    ys, xs = np.mgrid[0:h, 0:w]
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (mask * (ys + 0.5)).sum(axis=(1, 2)) / area
        cx = (mask * (xs + 0.5)).sum(axis=(1, 2)) / area
    pos = np.stack([cy / (h / grid) - 0.5, cx / (w / grid) - 0.5], axis=1)
    pos[~present] = np.nan
    duplicated = area >= 1.8 * expected
    for f in np.nonzero(present)[0]:
        comp, n = ndimage.label(mask[f])
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            duplicated[f] |= int((sizes >= 0.25 * expected).sum()) >= 2
    return Track(present, duplicated, pos, mask)


def cell_mask(shape: tuple[int, int], grid: int, cells: list[tuple[int, int]], inset: float = 0.15) -> np.ndarray:
    """(H, W) bool: the inner parts of the given cells."""
    h, w = shape
    ys, xs = cell_edges(h, grid), cell_edges(w, grid)
    out = np.zeros((h, w), dtype=bool)
    for r, c in cells:
        y0, y1 = _inner(ys[r], ys[r + 1], inset)
        x0, x1 = _inner(xs[c], xs[c + 1], inset)
        out[y0:y1, x0:x1] = True
    return out


def ramp(value: float, ok: float, bad: float) -> float:
    """1 at or below ``ok``, 0 at or beyond ``bad``, linear between (also for ok > bad)."""
    if np.isnan(value):
        return 0.0
    t = (value - ok) / (bad - ok)
    return float(np.clip(1.0 - t, 0.0, 1.0))
