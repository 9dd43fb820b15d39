"""Spatiality (OOD): pick up the key first, then walk to the goal."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.bench.record import Faculty, Split
from core.bench.synth.families.maze_navigate import free_cells, random_walls
from core.bench.synth.family import Resample, SpriteFamily
from core.bench.synth.grid import Cell, manhattan_path, shortest_path
from core.bench.synth.palette import BACKGROUND, cid
from core.bench.synth.scene import Scene, Sprite, path_positions, static_cells

#: Distance (cells) at which the agent counts as standing on the key. Objects move at
#: most one cell per frame, so the agent's centre always passes within half a cell.
PICKUP_RADIUS = 0.5


class KeyThenGoal(SpriteFamily):
    name = "key_then_goal"
    number = 6
    faculty = Faculty.SPATIALITY
    split = Split.OOD
    min_moves, max_moves = 7, 16

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        walls = random_walls(rng, self.grid, density=0.25)
        free = free_cells(self.grid, walls)
        if len(free) < 12:
            raise Resample("too few free cells")
        i, j, k = rng.choice(len(free), size=3, replace=False)
        layout = {"walls": sorted([list(w) for w in walls]), "start": list(free[i]), "key": list(free[j]), "goal": list(free[k])}
        legs = self._legs(layout)
        if legs is None:
            raise Resample("key or goal unreachable")
        to_key, to_goal = legs
        direct = shortest_path(free[i], free[k], walls, self.grid)
        if tuple(layout["goal"]) in to_key or (direct is not None and tuple(layout["key"]) in direct):
            raise Resample("the key must be a detour and the goal must not lie on the way to it")
        if not self.min_moves <= len(to_key) + len(to_goal) - 2 <= self.max_moves:
            raise Resample("path length out of range")
        return layout

    def _legs(self, layout: dict[str, Any]) -> tuple[list[Cell], list[Cell]] | None:
        walls = self.obstacles(layout)
        to_key = shortest_path(tuple(layout["start"]), tuple(layout["key"]), walls, self.grid)  # type: ignore[arg-type]
        to_goal = shortest_path(tuple(layout["key"]), tuple(layout["goal"]), walls, self.grid)  # type: ignore[arg-type]
        return None if to_key is None or to_goal is None else (to_key, to_goal)

    def solution_path(self, layout: dict[str, Any]) -> list[Cell]:
        legs = self._legs(layout)
        assert legs is not None
        return legs[0] + legs[1][1:]

    def illegal_paths(self, layout: dict[str, Any]) -> list[list[Cell]]:
        start, key, goal = (tuple(layout[k]) for k in ("start", "key", "goal"))
        return [
            manhattan_path(start, key, a)[:-1] + manhattan_path(key, goal, b)  # type: ignore[arg-type]
            for a in (True, False)
            for b in (True, False)
        ]

    def obstacles(self, layout: dict[str, Any]) -> set[Cell]:
        return {tuple(w) for w in layout["walls"]}  # type: ignore[misc]

    def removable_cells(self, layout: dict[str, Any]) -> list[Cell]:
        return sorted(self.obstacles(layout))

    def teleport_window(self, layout: dict[str, Any], scene: Scene) -> tuple[int, int]:
        """Teleport only after the key is collected, so the key rule still holds."""
        key = tuple(layout["key"])
        gone = np.nonzero(scene.cells[:, key[0], key[1]] != cid("yellow"))[0]
        return (int(gone[0]) + 1 if len(gone) else scene.n_frames), scene.n_frames - 1

    def layer(self, layout: dict[str, Any]) -> np.ndarray:
        cells = np.full((self.grid, self.grid), BACKGROUND)
        for r, c in layout["walls"]:
            cells[r, c] = cid("gray")
        cells[tuple(layout["goal"])] = cid("green")
        cells[tuple(layout["key"])] = cid("yellow")
        return cells

    def rebuild(self, layout: dict[str, Any], scene: Scene) -> Scene:
        """The key vanishes on the first frame the agent stands on it, and only then."""
        r, c = layout["key"]
        agent = scene.sprite("agent")
        on_key = np.linalg.norm(agent.pos - np.array([r, c], float), axis=1) <= PICKUP_RADIUS
        on_key &= agent.visible
        scene.cells[:, r, c] = cid("yellow")
        if on_key.any():
            scene.cells[int(np.argmax(on_key)) :, r, c] = BACKGROUND
        return scene

    def solve(self, layout: dict[str, Any], n_frames: int) -> Scene:
        pos = path_positions(self.solution_path(layout), n_frames, self.end_fraction)
        scene = Scene(static_cells(self.layer(layout), n_frames), [Sprite.on_path("agent", cid("red"), pos)])
        return self.rebuild(layout, scene)

    def scoring_spec(self, layout: dict[str, Any], scene: Scene) -> dict[str, Any]:
        spec = super().scoring_spec(layout, scene)
        spec["key"] = {"cell": layout["key"], "colour": cid("yellow")}
        return spec

    def prompt(self, layout: dict[str, Any]) -> str:
        return (
            "The red agent must first pick up the yellow key and only then walk to the green goal. "
            "The key disappears when the agent steps onto it. The agent moves smoothly between "
            "neighbouring free cells, never passes through gray walls, never reaches the goal before "
            "holding the key, never jumps, disappears or splits, and the walls stay in place."
        )
