"""Knowledge (ID): blocks fall under gravity onto the first support beneath them."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.bench.record import Faculty, Split
from core.bench.synth.family import Resample, SpriteFamily
from core.bench.synth.grid import Cell
from core.bench.synth.palette import BACKGROUND, cid
from core.bench.synth.scene import Scene, Sprite, static_cells

BLOCK_COLOURS = ("red", "yellow", "magenta")
#: Fraction of the video at which the longest fall lands (the rest shows blocks at rest).
LAND_FRACTION = 13 / 16


class GravityFall(SpriteFamily):
    name = "gravity_fall"
    number = 3
    faculty = Faculty.KNOWLEDGE
    split = Split.ID

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        g = self.grid
        platforms: set[Cell] = set()
        for _ in range(int(rng.integers(1, 3))):
            row, length = int(rng.integers(3, g - 2)), int(rng.integers(2, 5))
            col = int(rng.integers(0, g - length + 1))
            platforms |= {(row, c) for c in range(col, col + length)}
        solid = platforms | {(g - 1, c) for c in range(g)}
        n_blocks = int(rng.integers(2, 4))
        cols = rng.choice(g, size=n_blocks, replace=False)
        blocks = []
        for colour, col in zip(BLOCK_COLOURS, cols, strict=False):
            col = int(col)
            row = int(rng.integers(0, 3))
            if (row, col) in solid:
                raise Resample("block inside a platform")
            rest = min(r for r in range(row + 1, g) if (r, col) in solid) - 1
            if rest <= row:
                raise Resample("block already resting")
            blocks.append({"colour": colour, "start": [row, col], "rest": [rest, col]})
        falls = [b["rest"][0] - b["start"][0] for b in blocks]
        if max(falls) < 3:
            raise Resample("no long fall")
        return {"platforms": sorted([list(p) for p in platforms]), "blocks": blocks}

    def _solid(self, layout: dict[str, Any]) -> set[Cell]:
        return {tuple(p) for p in layout["platforms"]} | {(self.grid - 1, c) for c in range(self.grid)}  # type: ignore[misc]

    def _gravity(self, layout: dict[str, Any]) -> float:
        """Acceleration in cells per (video length)^2, so the longest fall lands at LAND_FRACTION."""
        d_max = max(b["rest"][0] - b["start"][0] for b in layout["blocks"])
        return 2 * d_max / LAND_FRACTION**2

    def _fall(self, layout: dict[str, Any], start: Cell, rest_row: int, n_frames: int) -> np.ndarray:
        tau = np.arange(n_frames) / (n_frames - 1)
        drop = np.minimum(rest_row - start[0], 0.5 * self._gravity(layout) * tau**2)
        return np.stack([start[0] + drop, np.full(n_frames, float(start[1]))], axis=1)

    def primary_of(self, layout: dict[str, Any]) -> str:
        """The block with the longest fall (the one whose rules perturbations break)."""
        block = max(layout["blocks"], key=lambda b: b["rest"][0] - b["start"][0])
        return f"block_{block['colour']}"

    def _primary_block(self, layout: dict[str, Any]) -> dict[str, Any]:
        name = self.primary_of(layout)
        return next(b for b in layout["blocks"] if f"block_{b['colour']}" == name)

    def solution_path(self, layout: dict[str, Any]) -> list[Cell]:
        b = self._primary_block(layout)
        return [(r, b["start"][1]) for r in range(b["start"][0], b["rest"][0] + 1)]

    def targets(self, layout: dict[str, Any]) -> dict[str, Cell]:
        return {f"block_{b['colour']}": tuple(b["rest"]) for b in layout["blocks"]}  # type: ignore[misc]

    def positions_for(self, layout: dict[str, Any], path: list[Cell], n_frames: int) -> np.ndarray:
        return self._fall(layout, path[0], path[-1][0], n_frames)

    def illegal_paths(self, layout: dict[str, Any]) -> list[list[Cell]]:
        """Fall straight through the supporting platform down to the floor."""
        b = self._primary_block(layout)
        col = b["start"][1]
        return [[(r, col) for r in range(b["start"][0], self.grid - 1)]]

    def obstacles(self, layout: dict[str, Any]) -> set[Cell]:
        return self._solid(layout)

    def removable_cells(self, layout: dict[str, Any]) -> list[Cell]:
        """Platform cells under no block, so that removing one changes no landing."""
        block_cols = {b["start"][1] for b in layout["blocks"]}
        return sorted(tuple(p) for p in layout["platforms"] if p[1] not in block_cols)  # type: ignore[misc]

    def layer(self, layout: dict[str, Any]) -> np.ndarray:
        cells = np.full((self.grid, self.grid), BACKGROUND)
        for r, c in self._solid(layout):
            cells[r, c] = cid("gray")
        return cells

    def solve(self, layout: dict[str, Any], n_frames: int) -> Scene:
        sprites = [
            Sprite.on_path(f"block_{b['colour']}", cid(b["colour"]), self._fall(layout, tuple(b["start"]), b["rest"][0], n_frames))
            for b in layout["blocks"]
        ]
        return Scene(static_cells(self.layer(layout), n_frames), sprites)

    def prompt(self, layout: dict[str, Any]) -> str:
        names = ", ".join(b["colour"] for b in layout["blocks"])
        return (
            f"Coloured blocks ({names}) hang in the air above gray platforms and the gray floor. "
            "Release them at the same moment: gravity pulls every block straight down, faster and "
            "faster, until it lands on the first platform or the floor beneath it and stays there. "
            "Blocks never drift sideways, never pass through a platform, never disappear or split, "
            "and the platforms and floor do not move."
        )
