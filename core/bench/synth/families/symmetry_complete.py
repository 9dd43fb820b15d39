"""Transformation (OOD): paint the mirror image of a shape across a vertical axis."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.bench.record import Faculty, Split
from core.bench.synth.family import PaintFamily, Resample
from core.bench.synth.grid import Cell, neighbours
from core.bench.synth.palette import BACKGROUND, cid
from core.bench.synth.scene import Scene, paint_schedule, static_cells

AXIS = 3  # the gray axis column; the left side is columns 0..2, its mirror columns 4..6


def mirror(cell: Cell) -> Cell:
    return (cell[0], 2 * AXIS - cell[1])


class SymmetryComplete(PaintFamily):
    name = "symmetry_complete"
    number = 7
    faculty = Faculty.TRANSFORMATION
    split = Split.OOD
    paint = "magenta"

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        size = int(rng.integers(3, 7))
        start = (int(rng.integers(0, self.grid)), int(rng.integers(0, AXIS)))
        shape = {start}
        while len(shape) < size:
            frontier = sorted(
                {n for cell in shape for n in neighbours(cell, self.grid) if n not in shape and n[1] < AXIS}
            )
            shape.add(frontier[int(rng.integers(len(frontier)))])
        if all(c != AXIS - 1 for _, c in shape) and size < 4:
            raise Resample("shape too small and too far from the axis")
        return {"shape": sorted([list(c) for c in shape]), "axis_column": AXIS}

    def _mirror_order(self, layout: dict[str, Any]) -> list[Cell]:
        """Cells of the mirror image, nearest the axis first, top to bottom."""
        cells = [mirror(tuple(c)) for c in layout["shape"]]  # type: ignore[arg-type]
        return sorted(cells, key=lambda rc: (rc[1], rc[0]))

    def layer(self, layout: dict[str, Any]) -> np.ndarray:
        cells = np.full((self.grid, self.grid), BACKGROUND)
        cells[:, AXIS] = cid("gray")
        for r, c in layout["shape"]:
            cells[r, c] = cid(self.paint)
        return cells

    def solve(self, layout: dict[str, Any], n_frames: int) -> Scene:
        cells = static_cells(self.layer(layout), n_frames)
        order = self._mirror_order(layout)
        for (r, c), f in zip(order, paint_schedule(len(order), n_frames), strict=True):
            cells[f:, r, c] = cid(self.paint)
        return Scene(cells)

    def leak_cells(self, layout: dict[str, Any]) -> list[Cell]:
        target = set(self._mirror_order(layout))
        near = {n for cell in target for n in neighbours(cell, self.grid) if n[1] > AXIS}
        return sorted(near - target)

    def removable_cells(self, layout: dict[str, Any]) -> list[Cell]:
        return [(r, AXIS) for r in range(self.grid)] + [tuple(c) for c in layout["shape"]]  # type: ignore[misc]

    def prompt(self, layout: dict[str, Any]) -> str:
        return (
            "A magenta shape sits left of the vertical gray axis. Paint its mirror image on the right "
            "side of the axis, cell by cell, so that the picture becomes symmetric about the axis. "
            "Paint only the mirror cells, never erase a painted cell, and leave the original shape "
            "and the axis unchanged."
        )
