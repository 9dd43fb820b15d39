"""Spatiality (ID): walk an agent through a maze of walls to the goal."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.bench.record import Faculty, Split
from core.bench.synth.family import Resample, SpriteFamily
from core.bench.synth.grid import Cell, shortest_path
from core.bench.synth.palette import BACKGROUND, cid
from core.bench.synth.scene import Scene, Sprite, path_positions, static_cells


def random_walls(rng: np.random.Generator, grid: int, density: float) -> set[Cell]:
    mask = rng.random((grid, grid)) < density
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(mask), strict=True)}


def free_cells(grid: int, blocked: set[Cell]) -> list[Cell]:
    return [(r, c) for r in range(grid) for c in range(grid) if (r, c) not in blocked]


class MazeNavigate(SpriteFamily):
    name = "maze_navigate"
    number = 1
    faculty = Faculty.SPATIALITY
    split = Split.ID
    min_moves, max_moves = 6, 14

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        walls = random_walls(rng, self.grid, density=0.32)
        free = free_cells(self.grid, walls)
        if len(free) < 10:
            raise Resample("too few free cells")
        i, j = rng.choice(len(free), size=2, replace=False)
        start, goal = free[i], free[j]
        path = shortest_path(start, goal, walls, self.grid)
        if path is None or not self.min_moves <= len(path) - 1 <= self.max_moves:
            raise Resample("no path of the wanted length")
        return {"walls": sorted([list(w) for w in walls]), "start": list(start), "goal": list(goal)}

    def solution_path(self, layout: dict[str, Any]) -> list[Cell]:
        walls = {tuple(w) for w in layout["walls"]}
        path = shortest_path(tuple(layout["start"]), tuple(layout["goal"]), walls, self.grid)
        assert path is not None
        return path

    def obstacles(self, layout: dict[str, Any]) -> set[Cell]:
        return {tuple(w) for w in layout["walls"]}  # type: ignore[misc]

    def removable_cells(self, layout: dict[str, Any]) -> list[Cell]:
        return sorted(self.obstacles(layout))

    def layer(self, layout: dict[str, Any]) -> np.ndarray:
        cells = np.full((self.grid, self.grid), BACKGROUND)
        for r, c in layout["walls"]:
            cells[r, c] = cid("gray")
        cells[tuple(layout["goal"])] = cid("green")
        return cells

    def solve(self, layout: dict[str, Any], n_frames: int) -> Scene:
        pos = path_positions(self.solution_path(layout), n_frames, self.end_fraction)
        return Scene(static_cells(self.layer(layout), n_frames), [Sprite.on_path("agent", cid("red"), pos)])

    def prompt(self, layout: dict[str, Any]) -> str:
        return (
            "The red square is an agent in a maze of gray walls. Move the agent step by step to the "
            "green goal cell along the shortest route. The agent moves smoothly from one cell to a "
            "neighbouring free cell, never passes through a gray wall, never jumps, disappears or "
            "splits, and the walls and the goal stay exactly where they are."
        )
