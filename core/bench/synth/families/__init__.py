"""The synthetic task families, one module each, and the registry."""

from core.bench.synth.families.color_match import ColorMatch
from core.bench.synth.families.flood_fill import FloodFill
from core.bench.synth.families.gravity_fall import GravityFall
from core.bench.synth.families.key_then_goal import KeyThenGoal
from core.bench.synth.families.maze_navigate import MazeNavigate
from core.bench.synth.families.pattern_grow import PatternGrow
from core.bench.synth.families.symmetry_complete import SymmetryComplete
from core.bench.synth.family import SynthFamily

FAMILIES: dict[str, SynthFamily] = {
    f.name: f
    for f in (MazeNavigate(), ColorMatch(), GravityFall(), PatternGrow(), FloodFill(), KeyThenGoal(), SymmetryComplete())
}


def get_family(name: str) -> SynthFamily:
    try:
        return FAMILIES[name]
    except KeyError as exc:
        raise KeyError(f"unknown synth family {name!r}; known: {sorted(FAMILIES)}") from exc


__all__ = ["FAMILIES", "get_family"]
