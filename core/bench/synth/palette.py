"""The synthetic benchmark's colour palette.

Colours are far apart in RGB so that a scorer can classify blurred, noisy and
H.264-compressed pixels by their nearest palette colour with a tolerance.
"""

from __future__ import annotations

import numpy as np

#: name -> RGB. Index in this table is the colour id used in scenes and metadata.
PALETTE: dict[str, tuple[int, int, int]] = {
    "background": (16, 16, 16),
    "gray": (128, 128, 128),
    "white": (240, 240, 240),
    "red": (230, 40, 40),
    "green": (40, 200, 70),
    "blue": (50, 100, 240),
    "yellow": (240, 220, 40),
    "magenta": (220, 60, 220),
    "cyan": (40, 220, 220),
    "orange": (250, 140, 20),
}

NAMES: list[str] = list(PALETTE)
RGB: np.ndarray = np.array([PALETTE[n] for n in NAMES], dtype=np.float32)
BACKGROUND = NAMES.index("background")


def cid(name: str) -> int:
    """Colour id of a palette colour name."""
    try:
        return NAMES.index(name)
    except ValueError as exc:
        raise KeyError(f"unknown colour {name!r}; palette colours are {NAMES}") from exc
