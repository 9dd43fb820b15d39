"""Transformation (ID): paint spreads from a seed until it fills a walled region."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.bench.record import Faculty, Split
from core.bench.synth.family import PaintFamily, Resample
from core.bench.synth.grid import STEPS8, Cell, bfs_layers, neighbours
from core.bench.synth.palette import BACKGROUND, cid
from core.bench.synth.scene import Scene, paint_schedule, static_cells


class FloodFill(PaintFamily):
    name = "flood_fill"
    number = 5
    faculty = Faculty.TRANSFORMATION
    split = Split.ID
    paint = "cyan"
    min_size, max_size = 6, 14

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        g = self.grid
        seed = (int(rng.integers(1, g - 1)), int(rng.integers(1, g - 1)))
        size = int(rng.integers(self.min_size, self.max_size + 1))
        region = {seed}
        while len(region) < size:
            frontier = sorted({n for cell in region for n in neighbours(cell, g) if n not in region})
            region.add(frontier[int(rng.integers(len(frontier)))])
        walls = {n for cell in region for n in neighbours(cell, g, STEPS8)} - region
        outside = {(r, c) for r in range(g) for c in range(g)} - region - walls
        if len(outside) < 4:
            raise Resample("region leaves no outside to leak into")
        if len(bfs_layers(seed, region, g)) < 3:
            raise Resample("region too shallow to show spreading")
        return {"region": sorted([list(c) for c in region]), "walls": sorted([list(c) for c in walls]), "seed": list(seed)}

    def layer(self, layout: dict[str, Any]) -> np.ndarray:
        cells = np.full((self.grid, self.grid), BACKGROUND)
        for r, c in layout["walls"]:
            cells[r, c] = cid("gray")
        cells[tuple(layout["seed"])] = cid(self.paint)
        return cells

    def solve(self, layout: dict[str, Any], n_frames: int) -> Scene:
        cells = static_cells(self.layer(layout), n_frames)
        region = {tuple(c) for c in layout["region"]}
        layers = bfs_layers(tuple(layout["seed"]), region, self.grid)[1:]  # type: ignore[arg-type]
        for layer, f in zip(layers, paint_schedule(len(layers), n_frames), strict=True):
            for r, c in layer:
                cells[f:, r, c] = cid(self.paint)
        return Scene(cells)

    def leak_cells(self, layout: dict[str, Any]) -> list[Cell]:
        """Outside cells touching the wall, nearest the seed first."""
        walls = {tuple(c) for c in layout["walls"]}
        region = {tuple(c) for c in layout["region"]}
        seed = np.asarray(layout["seed"])
        outside = {n for w in walls for n in neighbours(w, self.grid)} - walls - region  # type: ignore[arg-type]
        return sorted(outside, key=lambda c: (float(np.abs(np.asarray(c) - seed).sum()), c))

    def removable_cells(self, layout: dict[str, Any]) -> list[Cell]:
        return sorted(tuple(c) for c in layout["walls"])  # type: ignore[misc]

    def prompt(self, layout: dict[str, Any]) -> str:
        return (
            "A cyan seed cell sits inside a region enclosed by gray walls. Let the cyan paint spread "
            "from the seed to neighbouring cells, a little at a time, until the whole enclosed region "
            "is cyan. The paint never crosses or jumps over a wall, painted cells stay painted, and "
            "the walls stay unchanged."
        )

