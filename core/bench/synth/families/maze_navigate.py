"""Spatiality (ID): walk an agent through a maze of walls to the goal the instruction names.

Two goal cells of different colours sit in the maze; the prompt names the one to reach, so the
first frame alone does not give the answer away. The other goal is off limits (the agent's
path never crosses it). World v1 had a single green goal.
"""

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


#: The two goal colours of every maze; the instance's target is one of them, drawn per layout.
GOAL_COLOURS = ("green", "blue")


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
        i, j, k = rng.choice(len(free), size=3, replace=False)
        colour, other = GOAL_COLOURS if rng.random() < 0.5 else GOAL_COLOURS[::-1]
        layout = {"walls": sorted([list(w) for w in walls]), "start": list(free[i]), "goal": list(free[j]),
                  "colour": colour, "other_goal": list(free[k]), "other_colour": other}
        path = self._path(layout)
        if path is None or not self.min_moves <= len(path) - 1 <= self.max_moves:
            raise Resample("no path of the wanted length")
        decoy = self._path({**layout, "goal": layout["other_goal"], "other_goal": layout["goal"]})
        if decoy is None or len(decoy) - 1 < 3:
            raise Resample("the other goal is unreachable or next to the start: it would not be a real choice")
        return layout

    def _path(self, layout: dict[str, Any]) -> list[Cell] | None:
        return shortest_path(tuple(layout["start"]), tuple(layout["goal"]), self.obstacles(layout), self.grid)

    def solution_path(self, layout: dict[str, Any]) -> list[Cell]:
        path = self._path(layout)
        assert path is not None
        return path

    def obstacles(self, layout: dict[str, Any]) -> set[Cell]:
        """The walls and the goal not named: the agent must not step on either."""
        return {tuple(w) for w in layout["walls"]} | {tuple(layout["other_goal"])}  # type: ignore[misc]

    def removable_cells(self, layout: dict[str, Any]) -> list[Cell]:
        return sorted(tuple(w) for w in layout["walls"])  # type: ignore[misc]

    def layer(self, layout: dict[str, Any]) -> np.ndarray:
        cells = np.full((self.grid, self.grid), BACKGROUND)
        for r, c in layout["walls"]:
            cells[r, c] = cid("gray")
        cells[tuple(layout["goal"])] = cid(layout["colour"])
        cells[tuple(layout["other_goal"])] = cid(layout["other_colour"])
        return cells

    def solve(self, layout: dict[str, Any], n_frames: int) -> Scene:
        pos = path_positions(self.solution_path(layout), n_frames, self.end_fraction)
        return Scene(static_cells(self.layer(layout), n_frames), [Sprite.on_path("agent", cid("red"), pos)])

    def prompt(self, layout: dict[str, Any]) -> str:
        return (
            "The red square is an agent in a maze of gray walls with a green and a blue goal cell. "
            f"Move the agent step by step to the {layout['colour']} goal cell along the shortest route. "
            "The agent moves smoothly from one cell to a neighbouring free cell, never passes through "
            f"a gray wall or the {layout['other_colour']} goal, never jumps, disappears or splits, and "
            "the walls and the goals stay exactly where they are."
        )
