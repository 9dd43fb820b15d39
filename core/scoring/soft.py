"""A differentiable relaxation of the synthetic benchmark's rule-based scorer: the
``oracle_reward`` method's reward (``core.method.oracle``).

The scorer (``core.scoring.synth``) classifies every pixel to its nearest palette colour,
votes each grid cell's colour, tracks each object by the centroid of its colour mask and
checks the family's goal and process rules on those, with thresholds. Every step here is
its soft counterpart, differentiable with respect to the pixels:

* **soft palette assignment**: per pixel, a softmax over the negative squared RGB distances
  to the palette colours (``core.bench.synth.palette``), at ``temperature`` (a Gaussian of
  that width in RGB units) instead of the nearest colour;
* **soft cell votes**: per frame and cell, the mean assignment over the cell's central pixels
  (``cell_votes``' inset), the share of each colour rather than the majority's name;
* **soft tracks**: an object's colour mass per frame (present when it holds 0.3 of a sprite's
  area, split beyond 1.8, as ``track``) and the centroid of that mass;
* **soft rules**: each family's criteria as the scorer names and weighs them (goal 0.7,
  process 0.3), measured on those quantities and passed through the scorer's own linear
  ramps (``ramp``), with the scorer's aggregations (the weakest object sets the goal, the
  worst frame sets a rule). Counts of bad frames become sums of per-frame badness.

What is not relaxed: the scorer's connected-component test for a split object (the mass
bound stands in for it), and its "unknown" colour (a pixel far from every palette colour
goes to the nearest ones here). It tracks the hard scorer in direction, not exactly
(``scripts/soft_reward_agreement.py`` and ``tests/test_oracle_reward.py`` measure both). A
change here that changes what it rewards bumps ``flows.keys.ORACLE_REWARD_VERSION``.

The reward reads the item's ground-truth metadata (``meta.json``'s ``scoring`` spec, its
targets and obstacles): it is an oracle, an upper bound on what the Reasoner and its decoder
allow, not a method one could deploy. ``SoftSynthReward`` is its ReNO-style wrapper (a name,
a weight, and ``__call__`` from the decoder's video to a loss).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import torch

from core.bench.synth.palette import RGB
from core.bench.synth.scene import SPRITE_SIZE
from core.errors import InputError
from core.scoring.observe import _inner, cell_edges, cell_mask
from core.scoring.synth import GOAL_WEIGHT, MOVED_CELLS, PROCESS_WEIGHT, SCORERS

#: Width of the soft palette assignment in RGB units. The closest palette pair (yellow and
#: orange) lies 83 apart: a pure colour keeps 0.9998 of its own class at 20, and a pixel moving
#: between two colours hands its mass over within about +-20 of the midpoint.
TEMPERATURE = 20.0
#: An object counts as present from 0.3 of a sprite's area (``track``); its soft presence rises
#: linearly over this band around it.
PRESENT_BAND = (0.15, 0.45)
#: ... and as split (a second copy, or a wash of its colour) from 1.8 times the area.
SPLIT_BAND = (1.5, 2.1)
#: A cell's colour share beyond which it no longer shows its colour (the vote's quorum, 0.5).
CHANGED_BAND = (0.35, 0.65)
#: The goals' long reach: a share of each goal (``REACH_WEIGHT``) is how close, in RGB, the pixels
#: of the goal's cells come to the colour they should end with (1 / (1 + (d / ``REACH``)^2)). The
#: soft assignment's gradient vanishes deep inside a colour (a background pixel's share of the
#: paint is e^-100 at the default temperature), so without it a video far from solving the task
#: would get no direction towards the goal; it gives a held first frame a few hundredths of a goal.
REACH, REACH_WEIGHT = 100.0, 0.1
#: Below this mass (pixels) a centroid is not computed from noise.
_EPS = 1e-3


class SoftCriterion(NamedTuple):
    """One relaxed sub-criterion: the scorer's name, kind and weight, and a value in [0, 1]."""

    name: str
    kind: str
    weight: float
    value: torch.Tensor


# --------------------------------------------------------------------------- measurements

def ramp(x: torch.Tensor, ok: float, bad: float) -> torch.Tensor:
    """The scorer's ramp on tensors: 1 at or below ``ok``, 0 at or beyond ``bad``, linear between."""
    return (1.0 - (x - ok) / (bad - ok)).clamp(0.0, 1.0)


def rise(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """0 at or below ``lo``, 1 at or beyond ``hi``, linear between (a soft threshold at their midpoint)."""
    return 1.0 - ramp(x, lo, hi)


def soft_assign(frames: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """(T, H, W, 3) RGB in [0, 255] -> (T, H, W, K): each pixel's soft palette colour (sums to 1)."""
    palette = torch.as_tensor(RGB, dtype=frames.dtype, device=frames.device)
    # |x - p|^2 = |x|^2 - 2 x.p + |p|^2: one (T, H, W, K) tensor, never (T, H, W, K, 3)
    d2 = (frames * frames).sum(-1, keepdim=True) - 2.0 * frames @ palette.T + (palette * palette).sum(-1)
    return torch.softmax(-d2 / (2.0 * temperature**2), dim=-1)


@lru_cache(maxsize=32)
def _cell_weights(n_px: int, grid: int, inset: float) -> np.ndarray:
    """(G, n_px): row g averages the central pixels of cell g along one axis (``cell_votes``' cells)."""
    edges = cell_edges(n_px, grid)
    out = np.zeros((grid, n_px), np.float32)
    for g in range(grid):
        lo, hi = _inner(edges[g], edges[g + 1], inset)
        out[g, lo:hi] = 1.0 / (hi - lo)
    return out


def _cell_mean(values: torch.Tensor, grid: int, cells: list[tuple[int, int]], inset: float = 0.25) -> torch.Tensor:
    """(H, W) values -> their mean over the central pixels of ``cells`` (``cell_votes``' centres)."""
    h, w = values.shape
    rows = torch.as_tensor(_cell_weights(h, grid, inset), dtype=values.dtype, device=values.device)
    cols = torch.as_tensor(_cell_weights(w, grid, inset), dtype=values.dtype, device=values.device)
    return torch.stack([rows[r] @ values @ cols[c] for r, c in cells]).mean()


def reach(frame: torch.Tensor, colour: int, grid: int, cells: list[tuple[int, int]]) -> torch.Tensor:
    """How close (1 / (1 + (d / REACH)^2)) one (H, W, 3) frame's pixels in ``cells`` come to ``colour``."""
    target = torch.as_tensor(RGB[colour], dtype=frame.dtype, device=frame.device)
    d2 = (frame - target).pow(2).sum(-1)
    return _cell_mean(1.0 / (1.0 + d2 / REACH**2), grid, cells)


def cell_shares(assign: torch.Tensor, grid: int, inset: float = 0.25) -> torch.Tensor:
    """(T, H, W, K) soft assignment -> (T, G, G, K): each cell's share of each colour over its centre."""
    _, h, w, _ = assign.shape
    rows = torch.as_tensor(_cell_weights(h, grid, inset), dtype=assign.dtype, device=assign.device)
    cols = torch.as_tensor(_cell_weights(w, grid, inset), dtype=assign.dtype, device=assign.device)
    return torch.einsum("gh,thwk,cw->tgck", rows, assign, cols)


class SoftTrack(NamedTuple):
    """One colour-coded object per frame, softly (``observe.track``'s counterpart)."""

    share: torch.Tensor  # (T, H, W) the pixels' share of the object's colour
    mass: torch.Tensor  # (T,) pixels of the colour
    present: torch.Tensor  # (T,) in [0, 1]
    split: torch.Tensor  # (T,) in [0, 1]: far too much of the colour
    pos: torch.Tensor  # (T, 2) centroid in cell units (meaningless where not present)


def soft_track(assign: torch.Tensor, colour: int, grid: int) -> SoftTrack:
    _, h, w, _ = assign.shape
    share = assign[..., colour]
    expected = (SPRITE_SIZE * h / grid) * (SPRITE_SIZE * w / grid)
    mass = share.sum(dim=(1, 2))
    ys = (torch.arange(h, dtype=share.dtype, device=share.device) + 0.5) / (h / grid) - 0.5
    xs = (torch.arange(w, dtype=share.dtype, device=share.device) + 0.5) / (w / grid) - 0.5
    denom = mass + _EPS
    pos = torch.stack([(share.sum(2) * ys).sum(1) / denom, (share.sum(1) * xs).sum(1) / denom], dim=1)
    ratio = mass / expected
    return SoftTrack(share, mass, rise(ratio, *PRESENT_BAND), rise(ratio, *SPLIT_BAND), pos)


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance over the last axis, with a finite gradient at 0."""
    return ((a - b).pow(2).sum(-1) + 1e-8).sqrt()


def _missing(t: SoftTrack) -> torch.Tensor:
    """Soft count of the frames where the object is not found."""
    return (1.0 - t.present).sum()


def _moved(t: SoftTrack) -> torch.Tensor:
    """Soft ``_moved``: the centroid got ``MOVED_CELLS`` from where it was in the first frame."""
    away = (_dist(t.pos, t.pos[:1]) * t.present * t.present[0]).amax()
    return rise(away, MOVED_CELLS / 2, 1.5 * MOVED_CELLS)


def _static_changed(votes: torch.Tensor, static: list[list[int]], occluders: list[SoftTrack]) -> torch.Tensor:
    """(T,) per frame, how clearly some static cell stopped showing its colour, except where an object
    covers it (its centroid within a cell of the cell's centre on both axes, as the scorer's exception)."""
    if not static:
        return votes.new_zeros(votes.shape[0])
    r, c, colour = (torch.as_tensor(x, device=votes.device) for x in zip(*static, strict=True))
    changed = rise(1.0 - votes[:, r, c, colour], *CHANGED_BAND)  # (T, S)
    cells = torch.stack([r, c], dim=1).to(votes.dtype)  # (S, 2)
    for t in occluders:
        apart = (t.pos[:, None, :] - cells[None]).abs().amax(-1)  # (T, S): Chebyshev distance in cells
        changed = changed * (1.0 - t.present[:, None] * ramp(apart, 0.8, 1.2))
    return changed.amax(dim=1)


def _preserved(votes: torch.Tensor, static: list[list[int]], occluders: list[SoftTrack]) -> torch.Tensor:
    return ramp(_static_changed(votes, static, occluders).sum(), 0, 2)


# --------------------------------------------------------------------------- the families

def _sprite_criteria(frames: torch.Tensor, assign: torch.Tensor, meta: dict[str, Any]) -> list[SoftCriterion]:
    spec, grid, family = meta["scoring"], meta["grid"], meta["family"]
    names = SCORERS[family].names
    votes = cell_shares(assign, grid)
    sprites = spec["sprites"]
    tracks = {s["name"]: soft_track(assign, s["colour"], grid) for s in sprites}

    def about_objects(value: torch.Tensor, which: list[dict] = sprites) -> torch.Tensor:
        miss = torch.stack([_missing(tracks[s["name"]]) for s in which]).amax()
        return torch.minimum(value, ramp(miss, 0, 2))

    def about_motion(value: torch.Tensor, which: list[dict] = sprites) -> torch.Tensor:
        value = about_objects(value, which)
        for s in which:
            if s["max_speed"] > 0:
                value = value * _moved(tracks[s["name"]])
        return value

    # goal: every object ends near its target (the weakest sets it), credited only for getting nearer;
    # and, for the long reach, its colour in the target cell
    reached = []
    for s in sprites:
        t = tracks[s["name"]]
        target = torch.as_tensor(s["target"], dtype=t.pos.dtype, device=t.pos.device)
        end, start = _dist(t.pos[-1], target), _dist(t.pos[0], target)
        near = 0.8 * ramp(end, 0.5, 1.5) + 0.2 / (1.0 + (end / 2.0) ** 2)  # the scorer's ramp, and a tail
        nearer = torch.maximum(ramp(end, 0.5, 0.75), rise(start - end, 0.0, 0.5))
        there = reach(frames[-1], s["colour"], grid, [tuple(s["target"])])
        reached.append((1 - REACH_WEIGHT) * near * nearer * t.present[-1] + REACH_WEIGHT * there)
    goal = [SoftCriterion(names["goal"], "goal", GOAL_WEIGHT, torch.stack(reached).amin())]

    # obstacles: the share of the object's colour on obstacle cells, its worst frame
    blocked = torch.as_tensor(cell_mask(assign.shape[1:3], grid, [tuple(c) for c in spec["obstacles"]]),
                              dtype=assign.dtype, device=assign.device)
    overlap = torch.stack([((t.share * blocked).sum(dim=(1, 2)) / (t.mass + _EPS) * t.present).amax()
                           for t in tracks.values()]).amax()
    obstacles = about_objects(ramp(overlap, 0.25, 0.5))

    # continuity: no jump between neighbouring frames beyond the object's own speed
    speed_scale = (spec["n_frames"] - 1) / (frames.shape[0] - 1)
    continuity = []
    for s in sprites:
        t = tracks[s["name"]]
        whole = t.present * (1.0 - t.split)
        jump = (_dist(t.pos[1:], t.pos[:-1]) * whole[1:] * whole[:-1]).amax()
        allowed = 0.6 + s["max_speed"] * speed_scale
        continuity.append(ramp(jump, allowed, allowed + 1.0))
    continuous = about_motion(torch.stack(continuity).amin())

    # integrity: frames where an object is missing or split
    broken = torch.stack([(1.0 - t.present * (1.0 - t.split)).sum() for t in tracks.values()]).amax()
    intact = ramp(broken, 0, 2)

    preserved = _preserved(votes, spec["static"], list(tracks.values()))
    process = [SoftCriterion(names["obstacles"], "process", 0, obstacles),
               SoftCriterion(names["continuity"], "process", 0, continuous),
               SoftCriterion(names["integrity"], "process", 0, intact),
               SoftCriterion(names["preserved"], "process", 0, preserved)]

    if family == "gravity_fall":  # falls straight down: no sideways drift, never upwards
        drift = []
        for s in sprites:
            t = tracks[s["name"]]
            sideways = ((t.pos[:, 1] - t.pos[0, 1]).abs() * t.present * t.present[0]).amax()
            upward = ((t.pos[:-1, 0] - t.pos[1:, 0]).clamp(min=0) * t.present[1:] * t.present[:-1]).amax()
            drift.append(torch.maximum(sideways, upward))
        process.insert(0, SoftCriterion("falls_straight_down", "process", 0,
                                        about_motion(ramp(torch.stack(drift).amax(), 0.3, 0.8))))
    if family == "key_then_goal":  # the key: collected (a second goal), and before the goal is reached
        collected, rule = _key_criteria(votes, spec, tracks)
        goal = [goal[0]._replace(weight=0.45), collected]
        primary = [s for s in sprites if s["name"] == spec["primary"]]
        process.insert(0, rule._replace(value=about_motion(rule.value, primary)))
    weight = PROCESS_WEIGHT / len(process)
    return goal + [c._replace(weight=weight) for c in process]


def _key_criteria(votes: torch.Tensor, spec: dict, tracks: dict[str, SoftTrack]) -> tuple[SoftCriterion, SoftCriterion]:
    """key_then_goal's key: collected by the end (goal), and taken by the agent before it reaches the goal (process)."""
    (kr, kc), key_colour = spec["key"]["cell"], spec["key"]["colour"]
    shown = votes[:, kr, kc, key_colour]  # (T,)
    agent = tracks[spec["primary"]]
    key = torch.as_tensor([kr, kc], dtype=agent.pos.dtype, device=agent.pos.device)
    goal = torch.as_tensor(spec["sprites"][0]["target"], dtype=agent.pos.dtype, device=agent.pos.device)
    collected = SoftCriterion("key_collected", "goal", 0.25, 1.0 - shown[-1])
    # the key vanishing while the agent is not on it (0.75 cells, as the scorer), or the agent at the goal while it is still there
    far = 1.0 - agent.present * ramp(_dist(agent.pos, key), 0.5, 1.0)
    vanished_away = ((shown[:-1] - shown[1:]).clamp(min=0) * far[1:]).amax()
    at_goal = agent.present * ramp(_dist(agent.pos, goal), 0.25, 0.75)
    goal_first = (shown * at_goal).amax()
    rule = SoftCriterion("key_before_goal", "process", 0, 1.0 - torch.maximum(vanished_away, goal_first).clamp(max=1.0))
    return collected, rule


def _paint_criteria(frames: torch.Tensor, assign: torch.Tensor, meta: dict[str, Any]) -> list[SoftCriterion]:
    spec, grid = meta["scoring"], meta["grid"]
    names = SCORERS[meta["family"]].names
    votes = cell_shares(assign, grid)
    painted = votes[..., spec["paint_colour"]]  # (T, G, G): each cell's share of paint
    target = torch.zeros(grid, grid, dtype=assign.dtype, device=assign.device)
    target[tuple(torch.as_tensor(spec["target"]).T)] = 1.0
    initial = torch.zeros_like(target)
    if spec["initial"]:
        initial[tuple(torch.as_tensor(spec["initial"]).T)] = 1.0
    to_paint = target * (1.0 - initial)

    recall = (painted[-1] * to_paint).sum() / to_paint.sum().clamp(min=1.0)
    cells = [(int(r), int(c)) for r, c in to_paint.nonzero().tolist()]
    if cells:  # the long reach: how near the cells to paint come to the paint colour at the end
        recall = (1 - REACH_WEIGHT) * recall + REACH_WEIGHT * reach(frames[-1], spec["paint_colour"], grid, cells)
    stray = (painted * (1.0 - target)).sum(dim=(1, 2)).amax()
    new = (painted[1:] - painted[:-1]).clamp(min=0).sum(dim=(1, 2)).amax()
    erased = (painted[:-1] - painted[1:]).clamp(min=0).sum()
    allowed = int(np.ceil(spec["max_rate"] * (spec["n_frames"] - 1) / (frames.shape[0] - 1))) + 1
    # the paint's rules hold nothing where the task paints cells and the video never painted one
    grew = rise((painted[1:] - painted[:1]).clamp(min=0).sum(dim=(1, 2)).amax(), 0.25, 0.75)
    gate = grew if bool(to_paint.any()) else torch.ones_like(grew)
    weight = PROCESS_WEIGHT / 4
    return [
        SoftCriterion(names["goal"], "goal", GOAL_WEIGHT, recall),
        SoftCriterion(names["inside"], "process", weight, ramp(stray, 0, 2) * gate),
        SoftCriterion(names["gradual"], "process", weight, ramp(new, allowed, allowed + 2) * gate),
        SoftCriterion(names["persists"], "process", weight, ramp(erased, 0, 2) * gate),
        SoftCriterion(names["preserved"], "process", weight, _preserved(votes, spec["static"], [])),
    ]


# --------------------------------------------------------------------------- entry points

def soft_criteria(frames: torch.Tensor, meta: dict[str, Any], temperature: float = TEMPERATURE) -> list[SoftCriterion]:
    """(T, H, W, 3) RGB in [0, 255] (any float dtype, any size) -> the family's relaxed criteria."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError("video", f"has shape {tuple(frames.shape)}", "(T, H, W, 3)")
    if frames.shape[0] < 2:
        raise InputError("video", f"has {frames.shape[0]} frames", "at least 2")
    kind = meta.get("scoring", {}).get("kind")
    if meta.get("family") not in SCORERS or kind not in ("sprites", "paint"):
        raise InputError("meta.family", f"is {meta.get('family')!r} (scoring kind {kind!r})",
                         f"a synth family, one of {sorted(SCORERS)}")
    frames = frames.float()
    build = _sprite_criteria if kind == "sprites" else _paint_criteria
    return build(frames, soft_assign(frames, temperature), meta)


def soft_score(frames: torch.Tensor, meta: dict[str, Any], temperature: float = TEMPERATURE) -> torch.Tensor:
    """The relaxed score in [0, 1]: the criteria's weighted sum, as ``ScoreResult.combine``."""
    criteria = soft_criteria(frames, meta, temperature)
    total = sum(c.weight for c in criteria)
    return sum(c.weight * c.value for c in criteria) / total


def decoded_to_rgb(video: torch.Tensor) -> torch.Tensor:
    """A decoder's (3, T, H, W) video in [-1, 1] -> (T, H, W, 3) in [0, 255] (unclipped, to keep gradients)."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise InputError("video", f"has shape {tuple(video.shape)}", "(3, T, H, W)")
    return ((video + 1.0) * 127.5).permute(1, 2, 3, 0)


class SoftSynthReward:
    """The oracle reward, ReNO style: ``name``, ``weight``, and ``__call__(video) -> loss``.

    ``video`` is what the Reasoner's decoder returns for one item, (3, T, H, W) in [-1, 1];
    the loss is ``weight * (1 - soft_score)``, in [0, weight].
    """

    name = "soft_synth"

    def __init__(self, meta: dict[str, Any], weight: float = 1.0, temperature: float = TEMPERATURE) -> None:
        if meta.get("family") not in SCORERS or "scoring" not in meta:
            raise InputError("meta", f"has family {meta.get('family')!r} and {'a' if 'scoring' in meta else 'no'} "
                                     "scoring spec", "a synth instance's meta.json")
        self.meta, self.weight, self.temperature = meta, weight, temperature

    def score(self, frames: torch.Tensor) -> torch.Tensor:
        """The soft score of (T, H, W, 3) RGB frames in [0, 255]."""
        return soft_score(frames, self.meta, self.temperature)

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return self.weight * (1.0 - self.score(decoded_to_rgb(video)))
