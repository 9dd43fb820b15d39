"""Rule-based scorers for the synthetic benchmark, one per family, in VBVR's style.

Each scorer reads the instance's ``meta.json`` (layout and scoring spec written by the
generator) and a video at any resolution and frame count, and returns named, weighted
sub-criteria in [0, 1]: goal criteria (weights summing to 0.7) and process rules (0.3,
split evenly). Thresholds sit well clear of what blur (sigma 1 px), noise (sigma 5/255)
and H.264 do to a correct video, and well clear of what a broken rule does.

No rule holds vacuously. A rule about an object is judged on every frame where the object
should be (it is in every ground-truth frame): a frame where it is not found (vanished,
erased, merged into another colour) counts against the rule, just as a frame that breaks
it does, so a video without the object earns none of the object's process credit. A rule
about motion (continuous motion, falling straight, the key's order; for paint: growing
gradually, paint persisting, staying inside) earns nothing where the task needs motion and
none happened: a held first frame keeps credit only for what really holds (walls kept,
the object intact and off the obstacles), and scores 0.07-0.23 per family (0.07 where the task is to paint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from core.bench.record import TaskInstance
from core.errors import InputError
from core.media import read_video
from core.scoring.observe import Track, cell_mask, cell_votes, classify, ramp, track
from core.scoring.result import CriterionScore, ScoreResult

#: Videos shorter than this cannot show a process; they are rejected with a clear error.
MIN_FRAMES = 5
#: At most this many frames are read, spread evenly over the video (as VBVR's evaluators do).
MAX_FRAMES = 100
GOAL_WEIGHT, PROCESS_WEIGHT = 0.7, 0.3
#: An object "moved" when its centroid got at least this far (cells) from where it started.
MOVED_CELLS = 0.5


class SynthScorer:
    """Common frame handling; subclasses implement ``criteria``."""

    family: ClassVar[str]

    def score(self, instance: TaskInstance, video: np.ndarray | str | Path) -> ScoreResult:
        frames = self.load(video)
        meta = instance.metadata
        if meta.get("family") != self.family:
            raise InputError(f"{instance.id}:meta.family", f"is {meta.get('family')!r}", f"{self.family!r}")
        return ScoreResult.combine(instance.id, self.family, self.criteria(frames, meta))

    @staticmethod
    def load(video: np.ndarray | str | Path) -> np.ndarray:
        if isinstance(video, (str, Path)):
            return read_video(video, min_frames=MIN_FRAMES, max_frames=MAX_FRAMES)
        frames = np.asarray(video)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError("video", f"array of shape {frames.shape} and dtype {frames.dtype}", "(T, H, W, 3) uint8")
        if len(frames) < MIN_FRAMES:
            raise InputError("video", f"has {len(frames)} frames", f"at least {MIN_FRAMES}")
        if len(frames) > MAX_FRAMES:
            frames = frames[np.round(np.linspace(0, len(frames) - 1, MAX_FRAMES)).astype(int)]
        return frames

    def criteria(self, frames: np.ndarray, meta: dict[str, Any]) -> list[CriterionScore]:
        raise NotImplementedError

    @staticmethod
    def _preserved(votes: np.ndarray, static: list[list[int]], occluders: list[np.ndarray]) -> tuple[float, dict]:
        """Static cells keep their colour, except where a tracked object covers them."""
        bad_frames = 0
        worst: list[int] = []
        for f in range(votes.shape[0]):
            bad = []
            for r, c, colour in static:
                covered = any(
                    not np.isnan(p[f, 0]) and abs(p[f, 0] - r) < 1.0 and abs(p[f, 1] - c) < 1.0 for p in occluders
                )
                if not covered and votes[f, r, c] != colour:
                    bad.append((r, c))
            if bad:
                bad_frames += 1
                worst = worst or [list(x) for x in bad]
        return ramp(bad_frames, 0, 2), {"frames_changed": bad_frames, "first_changed_cells": worst}


class SpriteScorer(SynthScorer):
    """Objects moving over a static grid: reach the target, keep every process rule."""

    names: ClassVar[dict[str, str]] = {
        "goal": "reaches_target",
        "obstacles": "avoids_obstacles",
        "continuity": "continuous_motion",
        "integrity": "object_intact",
        "preserved": "scene_preserved",
    }

    def criteria(self, frames: np.ndarray, meta: dict[str, Any]) -> list[CriterionScore]:
        spec, grid = meta["scoring"], meta["grid"]
        labels = classify(frames)
        votes = cell_votes(labels, grid)
        tracks = {s["name"]: track(labels, s["colour"], grid) for s in spec["sprites"]}
        speed_scale = (spec["n_frames"] - 1) / (len(frames) - 1)
        goal = [self._goal(tracks, spec)]
        process = self.process_rules(frames, meta, labels, votes, tracks)
        for c in goal:
            c.weight = GOAL_WEIGHT / len(goal) if c.weight == 0 else c.weight
        process.insert(1, self._continuity(tracks, spec, speed_scale))
        for c in process:
            c.weight = PROCESS_WEIGHT / len(process)
        return self.extra_goals(goal, meta, votes, tracks) + process

    def extra_goals(self, goal, meta, votes, tracks) -> list[CriterionScore]:
        return goal

    def process_rules(self, frames, meta, labels, votes, tracks) -> list[CriterionScore]:
        spec, grid = meta["scoring"], meta["grid"]
        rules = [self._obstacles(labels, tracks, spec, grid), self._integrity(tracks), None]
        score, detail = self._preserved(votes, spec["static"], [t.pos for t in tracks.values()])
        rules[2] = CriterionScore(name=self.names["preserved"], kind="process", weight=0, score=score, detail=detail)
        return rules

    def _goal(self, tracks: dict[str, Track], spec: dict) -> CriterionScore:
        dists = []
        for s in spec["sprites"]:
            t = tracks[s["name"]]
            end, target = t.pos[-1], np.asarray(s["target"], float)
            d = float(np.linalg.norm(end - target)) if not np.isnan(end[0]) else np.inf
            # near the target is credit only for an object that got nearer: one that started a
            # cell away and never moved has reached nothing
            seen = t.pos[t.present]
            start = float(np.linalg.norm(seen[0] - target)) if len(seen) else np.inf
            dists.append(d if d <= 0.5 or d < start - 0.25 else np.inf)
        # Every object must reach its target: the weakest one sets the goal score.
        score = float(min(ramp(d, 0.5, 1.5) if np.isfinite(d) else 0.0 for d in dists))
        return CriterionScore(
            name=self.names["goal"], kind="goal", weight=0, score=score,
            detail={"final_distance_cells": [round(d, 3) if np.isfinite(d) else None for d in dists]},
        )

    def _continuity(self, tracks: dict[str, Track], spec: dict, speed_scale: float) -> CriterionScore:
        worst = 0.0
        scores = []
        for s in spec["sprites"]:
            t = tracks[s["name"]]
            idx = np.nonzero(t.present & ~t.duplicated)[0]
            jumps = np.linalg.norm(np.diff(t.pos[idx], axis=0), axis=1) / np.diff(idx) if len(idx) > 1 else np.zeros(0)
            max_jump = float(jumps.max(initial=0.0))
            allowed = 0.6 + s["max_speed"] * speed_scale
            scores.append(ramp(max_jump, allowed, allowed + 1.0))
            worst = max(worst, max_jump)
        return self._about_motion(CriterionScore(
            name=self.names["continuity"], kind="process", weight=0, score=min(scores),
            detail={"max_jump_cells": round(worst, 3)},
        ), tracks, spec)

    @staticmethod
    def _about_objects(rule: CriterionScore, tracks: dict[str, Track]) -> CriterionScore:
        """A rule about the objects fails on the frames where one of them is not found."""
        missing = max(int((~t.present).sum()) for t in tracks.values())
        rule.detail["frames_object_missing"] = missing
        rule.score = min(rule.score, ramp(missing, 0, 2))
        return rule

    @classmethod
    def _about_motion(cls, rule: CriterionScore, tracks: dict[str, Track], spec: dict) -> CriterionScore:
        """A rule about motion: judged where the objects are, and worth nothing where the task
        needs an object to move (it moves in the ground truth) and it never did."""
        still = [s["name"] for s in spec["sprites"] if s["max_speed"] > 0 and not _moved(tracks[s["name"]])]
        rule = cls._about_objects(rule, tracks)
        if still:
            rule.detail["never_moved"] = still
            rule.score = 0.0
        return rule

    def _integrity(self, tracks: dict[str, Track]) -> CriterionScore:
        bad = max(int((~t.present | t.duplicated).sum()) for t in tracks.values())
        return CriterionScore(
            name=self.names["integrity"], kind="process", weight=0, score=ramp(bad, 0, 2),
            detail={"frames_missing_or_split": bad},
        )

    def _obstacles(self, labels: np.ndarray, tracks: dict[str, Track], spec: dict, grid: int) -> CriterionScore:
        blocked = cell_mask(labels.shape[1:], grid, [tuple(c) for c in spec["obstacles"]])
        overlap = 0.0
        for t in tracks.values():
            inside = (t.mask & blocked).sum(axis=(1, 2))
            total = np.maximum(t.mask.sum(axis=(1, 2)), 1)
            frac = np.where(t.present, inside / total, 0.0)
            overlap = max(overlap, float(frac.max(initial=0.0)))
        return self._about_objects(CriterionScore(
            name=self.names["obstacles"], kind="process", weight=0, score=ramp(overlap, 0.25, 0.5),
            detail={"max_overlap_fraction": round(overlap, 3)},
        ), tracks)


class MazeScorer(SpriteScorer):
    family = "maze_navigate"
    names = {
        "goal": "reaches_goal",
        "obstacles": "no_wall_crossing",
        "continuity": "continuous_motion",
        "integrity": "agent_intact",
        "preserved": "walls_preserved",
    }


class ColorMatchScorer(SpriteScorer):
    family = "color_match"
    names = {
        "goal": "reaches_matching_tile",
        "obstacles": "avoids_other_tiles",
        "continuity": "continuous_motion",
        "integrity": "cursor_intact",
        "preserved": "tiles_preserved",
    }


class GravityScorer(SpriteScorer):
    family = "gravity_fall"
    names = {
        "goal": "blocks_land_on_support",
        "obstacles": "no_passing_through",
        "continuity": "continuous_motion",
        "integrity": "blocks_intact",
        "preserved": "supports_preserved",
    }

    def process_rules(self, frames, meta, labels, votes, tracks):
        rules = super().process_rules(frames, meta, labels, votes, tracks)
        drift = 0.0
        for s in meta["scoring"]["sprites"]:
            t = tracks[s["name"]]
            pos = t.pos[t.present & ~t.duplicated]
            if len(pos) < 2:
                continue
            sideways = float(np.abs(pos[:, 1] - pos[0, 1]).max())
            upward = float(np.maximum(0.0, -np.diff(pos[:, 0])).max(initial=0.0))
            drift = max(drift, sideways, upward)
        rules.insert(0, self._about_motion(CriterionScore(
            name="falls_straight_down", kind="process", weight=0, score=ramp(drift, 0.3, 0.8),
            detail={"max_sideways_or_upward_cells": round(drift, 3)},
        ), tracks, meta["scoring"]))
        return rules


class KeyThenGoalScorer(SpriteScorer):
    family = "key_then_goal"
    names = MazeScorer.names

    def _key_gone_from(self, votes: np.ndarray, key: dict) -> int | None:
        """First frame from which the key cell never shows the key colour again."""
        r, c = key["cell"]
        shows = votes[:, r, c] == key["colour"]
        if shows[-1]:
            return None
        return int(np.nonzero(shows)[0].max()) + 1 if shows.any() else 0

    def extra_goals(self, goal, meta, votes, tracks):
        gone = self._key_gone_from(votes, meta["scoring"]["key"])
        goal[0].weight = 0.45
        collected = CriterionScore(
            name="key_collected", kind="goal", weight=0.25, score=float(gone is not None),
            detail={"key_gone_from_frame": gone},
        )
        return goal + [collected]

    def process_rules(self, frames, meta, labels, votes, tracks):
        rules = super().process_rules(frames, meta, labels, votes, tracks)
        spec = meta["scoring"]
        agent = tracks[spec["primary"]].pos
        key = np.asarray(spec["key"]["cell"], float)
        goal = np.asarray(spec["sprites"][0]["target"], float)
        gone = self._key_gone_from(votes, spec["key"])
        at_goal = np.nonzero(np.linalg.norm(agent - goal, axis=1) <= 0.5)[0]
        problems = []
        if gone is not None and gone > 0:
            dist = float(np.linalg.norm(agent[gone] - key)) if not np.isnan(agent[gone, 0]) else np.inf
            if dist > 0.75:
                problems.append(f"key vanished at frame {gone} with the agent {dist:.2f} cells away")
        if len(at_goal) and (gone is None or at_goal[0] < gone):
            problems.append(f"agent reached the goal at frame {int(at_goal[0])} before collecting the key")
        rules.insert(0, self._about_motion(CriterionScore(
            name="key_before_goal", kind="process", weight=0, score=0.0 if problems else 1.0,
            detail={"problems": problems},
        ), {spec["primary"]: tracks[spec["primary"]]}, {"sprites": [s for s in spec["sprites"] if s["name"] == spec["primary"]]}))
        return rules


class PaintScorer(SynthScorer):
    """Cells painted over time: finish the target, never stray, grow gradually, never erase."""

    names: ClassVar[dict[str, str]] = {
        "goal": "target_painted",
        "inside": "stays_inside",
        "gradual": "grows_gradually",
        "persists": "paint_persists",
        "preserved": "scene_preserved",
    }

    def criteria(self, frames: np.ndarray, meta: dict[str, Any]) -> list[CriterionScore]:
        spec, grid = meta["scoring"], meta["grid"]
        votes = cell_votes(classify(frames), grid)
        painted = votes == spec["paint_colour"]
        target = np.zeros((grid, grid), bool)
        target[tuple(np.asarray(spec["target"]).T)] = True
        initial = np.zeros((grid, grid), bool)
        if spec["initial"]:
            initial[tuple(np.asarray(spec["initial"]).T)] = True
        to_paint = target & ~initial

        recall = float((painted[-1] & to_paint).sum() / max(1, to_paint.sum()))
        stray = (painted & ~target).sum(axis=(1, 2))
        erased = int((painted[:-1] & ~painted[1:]).sum())
        new = (painted[1:] & ~painted[:-1]).sum(axis=(1, 2))
        allowed = int(np.ceil(spec["max_rate"] * (spec["n_frames"] - 1) / (len(frames) - 1))) + 1
        preserved, pdetail = self._preserved(votes, spec["static"], [])
        # the paint is the moving object here: its rules judge paint that appeared, and hold
        # nothing where the task paints cells and the video never painted one
        grew = bool((painted[1:] & ~painted[:1]).any())
        process = [
            CriterionScore(name=self.names["inside"], kind="process", weight=0, score=ramp(float(stray.max()), 0, 2),
                           detail={"max_cells_outside": int(stray.max())}),
            CriterionScore(name=self.names["gradual"], kind="process", weight=0,
                           score=ramp(float(new.max(initial=0)), allowed, allowed + 2),
                           detail={"max_new_cells_per_frame": int(new.max(initial=0)), "allowed": allowed}),
            CriterionScore(name=self.names["persists"], kind="process", weight=0, score=ramp(erased, 0, 2),
                           detail={"erased_cell_events": erased}),
            CriterionScore(name=self.names["preserved"], kind="process", weight=0, score=preserved, detail=pdetail),
        ]
        if to_paint.any() and not grew:
            for c in process[:3]:
                c.score, c.detail["never_painted"] = 0.0, True
        for c in process:
            c.weight = PROCESS_WEIGHT / len(process)
        goal = CriterionScore(name=self.names["goal"], kind="goal", weight=GOAL_WEIGHT, score=recall,
                              detail={"painted": int((painted[-1] & to_paint).sum()), "to_paint": int(to_paint.sum())})
        return [goal] + process


class PatternScorer(PaintScorer):
    family = "pattern_grow"
    names = {
        "goal": "bar_height_correct",
        "inside": "grows_only_in_its_column",
        "gradual": "grows_gradually",
        "persists": "never_shrinks",
        "preserved": "bars_preserved",
    }


class FloodScorer(PaintScorer):
    family = "flood_fill"
    names = {
        "goal": "region_filled",
        "inside": "stays_inside_walls",
        "gradual": "spreads_gradually",
        "persists": "paint_persists",
        "preserved": "walls_preserved",
    }


class SymmetryScorer(PaintScorer):
    family = "symmetry_complete"
    names = {
        "goal": "mirror_complete",
        "inside": "paints_only_mirror_cells",
        "gradual": "paints_gradually",
        "persists": "paint_persists",
        "preserved": "shape_and_axis_preserved",
    }


def _moved(t: Track) -> bool:
    """Whether the object's centroid ever got ``MOVED_CELLS`` from its first seen position."""
    pos = t.pos[t.present]
    return len(pos) > 1 and float(np.linalg.norm(pos - pos[0], axis=1).max()) >= MOVED_CELLS


SCORERS: dict[str, SynthScorer] = {
    s.family: s
    for s in (MazeScorer(), ColorMatchScorer(), GravityScorer(), PatternScorer(), FloodScorer(), KeyThenGoalScorer(), SymmetryScorer())
}


def score_synth(instance: TaskInstance, video: np.ndarray | str | Path) -> ScoreResult:
    """Score a video for a synth instance with its family's scorer."""
    family = instance.metadata.get("family")
    if family not in SCORERS:
        raise InputError(f"{instance.id}:meta.family", f"unknown family {family!r}", f"one of {sorted(SCORERS)}")
    return SCORERS[family].score(instance, video)
