"""Abstraction (ID): grow the next bar of a sequence whose heights follow a rule."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.bench.record import Faculty, Split
from core.bench.synth.family import PaintFamily, Resample
from core.bench.synth.grid import Cell
from core.bench.synth.palette import BACKGROUND, cid
from core.bench.synth.scene import Scene, paint_schedule, static_cells

FIRST_COLUMN, N_BARS = 1, 4
RULES = ("constant", "plus_one", "minus_one", "alternate")


class PatternGrow(PaintFamily):
    name = "pattern_grow"
    number = 4
    faculty = Faculty.ABSTRACTION
    split = Split.ID
    paint = "orange"

    @property
    def max_height(self) -> int:
        return self.grid - 2  # the bottom row is the floor; keep the top row free

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        rule = str(rng.choice(RULES))
        top = self.max_height
        if rule == "constant":
            h = int(rng.integers(1, top + 1))
            heights = [h] * (N_BARS + 1)
        elif rule == "plus_one":
            h = int(rng.integers(1, top - N_BARS + 1))
            heights = [h + i for i in range(N_BARS + 1)]
        elif rule == "minus_one":
            h = int(rng.integers(N_BARS + 1, top + 1))
            heights = [h - i for i in range(N_BARS + 1)]
        else:
            a, b = (int(x) for x in rng.choice(np.arange(1, top + 1), size=2, replace=False))
            heights = [a, b] * 3
        if heights[N_BARS] < 2:
            raise Resample("answer too short to show growth")
        return {"rule": rule, "heights": heights[:N_BARS], "answer": heights[N_BARS], "column": FIRST_COLUMN + N_BARS}

    def _bar(self, column: int, height: int) -> list[Cell]:
        floor = self.grid - 1
        return [(floor - 1 - i, column) for i in range(height)]

    def layer(self, layout: dict[str, Any]) -> np.ndarray:
        cells = np.full((self.grid, self.grid), BACKGROUND)
        cells[self.grid - 1, :] = cid("gray")
        for i, h in enumerate(layout["heights"]):
            for r, c in self._bar(FIRST_COLUMN + i, h):
                cells[r, c] = cid("blue")
        return cells

    def solve(self, layout: dict[str, Any], n_frames: int) -> Scene:
        cells = static_cells(self.layer(layout), n_frames)
        new_bar = self._bar(layout["column"], layout["answer"])
        for (r, c), f in zip(new_bar, paint_schedule(len(new_bar), n_frames), strict=True):
            cells[f:, r, c] = cid(self.paint)
        return Scene(cells)

    def leak_cells(self, layout: dict[str, Any]) -> list[Cell]:
        return self._bar(layout["column"] + 1, 2)

    def removable_cells(self, layout: dict[str, Any]) -> list[Cell]:
        return [self._bar(FIRST_COLUMN + i, h)[-1] for i, h in enumerate(layout["heights"])]

    def prompt(self, layout: dict[str, Any]) -> str:
        return (
            "Four blue bars stand on the gray floor; from left to right their heights follow a simple "
            "rule. In the empty column just right of them, grow an orange bar from the floor upwards, "
            "one cell at a time, and stop when its height continues the rule. Paint nothing else, never "
            "erase a painted cell, and leave the blue bars and the floor unchanged."
        )
