"""Score records: VBVR-style named, weighted sub-criteria split into goal and process."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class CriterionScore(BaseModel):
    """One sub-criterion in [0, 1]; ``detail`` holds the measured quantity behind it."""

    name: str
    kind: Literal["goal", "process"]
    weight: float
    score: float = Field(ge=0.0, le=1.0)
    detail: dict[str, Any] = Field(default_factory=dict)


class ScoreResult(BaseModel):
    """The score of one video for one task instance.

    ``score`` is VBVR-Bench's own aggregate: the weighted sum of every sub-criterion (goal
    weights 0.7, process rules 0.3), so one glitch in an otherwise solved video costs that
    rule's weight, not the whole solution. ``success`` is the paper's strict, binary figure:
    every goal criterion met and no process rule broken at all (Success = goal AND all
    rules). ``gated`` is this project's earlier headline, kept as a named column for
    comparison: the goal credit multiplied by the lowest process score (``gate``), which
    zeroes a solution for one glitch and so ranked degenerate videos above nearly solved ones.
    """

    instance_id: str
    family: str
    score: float = Field(ge=0.0, le=1.0, description="Weighted sum of the sub-criteria (VBVR-style, no gate).")
    success: bool
    goal: float = Field(description="Weighted mean of the goal criteria.")
    process: float = Field(description="Weighted mean of the process criteria.")
    gate: float = Field(description="The lowest process score.")
    gated: float = Field(0.0, ge=0.0, le=1.0, description="Goal credit times the gate plus process credit (not the headline).")
    criteria: list[CriterionScore]

    @classmethod
    def combine(cls, instance_id: str, family: str, criteria: list[CriterionScore]) -> ScoreResult:
        goal = [c for c in criteria if c.kind == "goal"]
        process = [c for c in criteria if c.kind == "process"]
        total_w = sum(c.weight for c in criteria)
        gate = min((c.score for c in process), default=1.0)
        goal_credit = sum(c.weight * c.score for c in goal)
        process_credit = sum(c.weight * c.score for c in process)
        score = (goal_credit + process_credit) / total_w
        gated = (goal_credit * gate + process_credit) / total_w
        success = all(c.score >= 0.999 for c in goal) and all(c.score >= 1.0 for c in process)
        return cls(
            instance_id=instance_id,
            family=family,
            score=_unit(score),
            success=success,
            goal=_weighted(goal),
            process=_weighted(process),
            gate=gate,
            gated=_unit(gated),
            criteria=criteria,
        )

    def criterion(self, name: str) -> CriterionScore:
        for c in self.criteria:
            if c.name == name:
                return c
        raise KeyError(f"no criterion {name!r}; have {[c.name for c in self.criteria]}")


def _weighted(criteria: list[CriterionScore]) -> float:
    w = sum(c.weight for c in criteria)
    return sum(c.weight * c.score for c in criteria) / w if w else 1.0


def _unit(x: float) -> float:
    return round(float(min(1.0, max(0.0, x))), 9)
