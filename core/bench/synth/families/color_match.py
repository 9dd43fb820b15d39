"""Perception (ID): move a cursor to the tile of the colour the instruction names.

The first frame shows four tiles of different colours and nothing that singles one out: the
target colour is in the prompt alone, so a Reasoner must read its instruction (and a prompt
rewrite has something to carry). World v1 showed the target colour in a swatch cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.bench.record import Faculty, Split
from core.bench.synth.family import Resample, SpriteFamily
from core.bench.synth.grid import Cell, shortest_path
from core.bench.synth.palette import BACKGROUND, cid
from core.bench.synth.scene import Scene, Sprite, path_positions, static_cells

TILE_COLOURS = ("red", "green", "blue", "yellow", "magenta", "orange")


class ColorMatch(SpriteFamily):
    name = "color_match"
    number = 2
    faculty = Faculty.PERCEPTION
    split = Split.ID
    primary = "cursor"
    n_tiles = 4
    min_moves, max_moves = 4, 12

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        colours = [str(c) for c in rng.choice(TILE_COLOURS, size=self.n_tiles, replace=False)]
        field = [(r, c) for r in range(self.grid) for c in range(self.grid)]
        picks = rng.choice(len(field), size=self.n_tiles + 1, replace=False)
        tiles = [list(field[i]) + [colours[n]] for n, i in enumerate(picks[:-1])]
        start = field[picks[-1]]
        target_index = int(rng.integers(self.n_tiles))
        layout = {"colour": colours[target_index], "tiles": tiles, "start": list(start), "target": tiles[target_index][:2]}
        path = self._path(layout)
        if path is None or not self.min_moves <= len(path) - 1 <= self.max_moves:
            raise Resample("no clean path of the wanted length")
        return layout

    def _path(self, layout: dict[str, Any]) -> list[Cell] | None:
        return shortest_path(tuple(layout["start"]), tuple(layout["target"]), self.obstacles(layout), self.grid)

    def solution_path(self, layout: dict[str, Any]) -> list[Cell]:
        path = self._path(layout)
        assert path is not None
        return path

    def obstacles(self, layout: dict[str, Any]) -> set[Cell]:
        """The cursor must not touch the other tiles."""
        target = tuple(layout["target"])
        return {(r, c) for r, c, _ in layout["tiles"] if (r, c) != target}

    def removable_cells(self, layout: dict[str, Any]) -> list[Cell]:
        return sorted(self.obstacles(layout))

    def layer(self, layout: dict[str, Any]) -> np.ndarray:
        cells = np.full((self.grid, self.grid), BACKGROUND)
        for r, c, colour in layout["tiles"]:
            cells[r, c] = cid(colour)
        return cells

    def solve(self, layout: dict[str, Any], n_frames: int) -> Scene:
        pos = path_positions(self.solution_path(layout), n_frames, self.end_fraction)
        return Scene(static_cells(self.layer(layout), n_frames), [Sprite.on_path("cursor", cid("white"), pos)])

    def prompt(self, layout: dict[str, Any]) -> str:
        return (
            f"Move the white cursor to the {layout['colour']} tile and stop on it. The cursor moves "
            "smoothly between neighbouring cells, never touches any other tile, never jumps, "
            "disappears or splits, and all tiles stay where they are."
        )
