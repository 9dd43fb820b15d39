"""Small grid helpers shared by the synthetic families (BFS paths, neighbours)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

Cell = tuple[int, int]

STEPS4: tuple[Cell, ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
STEPS8: tuple[Cell, ...] = STEPS4 + ((-1, -1), (-1, 1), (1, -1), (1, 1))


def in_grid(cell: Cell, grid: int) -> bool:
    return 0 <= cell[0] < grid and 0 <= cell[1] < grid


def neighbours(cell: Cell, grid: int, steps: Iterable[Cell] = STEPS4) -> list[Cell]:
    r, c = cell
    return [(r + dr, c + dc) for dr, dc in steps if in_grid((r + dr, c + dc), grid)]


def shortest_path(start: Cell, goal: Cell, blocked: set[Cell], grid: int) -> list[Cell] | None:
    """4-connected BFS shortest path from start to goal avoiding ``blocked`` (deterministic order)."""
    prev: dict[Cell, Cell | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            path = [cell]
            while prev[path[-1]] is not None:
                path.append(prev[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for nxt in neighbours(cell, grid):
            if nxt not in prev and nxt not in blocked:
                prev[nxt] = cell
                queue.append(nxt)
    return None


def bfs_layers(seed: Cell, region: set[Cell], grid: int) -> list[list[Cell]]:
    """Cells of ``region`` grouped by 4-connected BFS distance from ``seed``."""
    dist = {seed: 0}
    queue = deque([seed])
    while queue:
        cell = queue.popleft()
        for nxt in neighbours(cell, grid):
            if nxt in region and nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    layers: list[list[Cell]] = [[] for _ in range(max(dist.values()) + 1)]
    for cell, d in sorted(dist.items()):
        layers[d].append(cell)
    return layers


def manhattan_path(start: Cell, goal: Cell, rows_first: bool) -> list[Cell]:
    """The L-shaped path that ignores obstacles (used to make rule-breaking videos)."""
    (r0, c0), (r1, c1) = start, goal
    path = [start]
    r, c = r0, c0
    order = ("r", "c") if rows_first else ("c", "r")
    for axis in order:
        if axis == "r":
            while r != r1:
                r += 1 if r1 > r else -1
                path.append((r, c))
        else:
            while c != c1:
                c += 1 if c1 > c else -1
                path.append((r, c))
    return path
