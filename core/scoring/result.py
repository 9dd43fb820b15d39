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

    ``score`` = sum(goal weights * goal scores) * gate + sum(process weights * process
    scores), where ``gate`` = the lowest process score: a goal reached by breaking a rule
    (walking through a wall, teleporting) earns no goal credit, as the method's
    definition Success = goal AND all process constraints implies. ``success`` is the
    strict flag: every goal criterion met and no process rule broken at all.
    """

    instance_id: str
    family: str
    score: float = Field(ge=0.0, le=1.0)
    success: bool
    goal: float = Field(description="Weighted mean of the goal criteria, before the gate.")
    process: float = Field(description="Weighted mean of the process criteria.")
    gate: float
    criteria: list[CriterionScore]

    @classmethod
    def combine(cls, instance_id: str, family: str, criteria: list[CriterionScore]) -> ScoreResult:
        goal = [c for c in criteria if c.kind == "goal"]
        process = [c for c in criteria if c.kind == "process"]
        total_w = sum(c.weight for c in criteria)
        gate = min((c.score for c in process), default=1.0)
        score = (sum(c.weight * c.score for c in goal) * gate + sum(c.weight * c.score for c in process)) / total_w
        success = all(c.score >= 0.999 for c in goal) and all(c.score >= 1.0 for c in process)
        return cls(
            instance_id=instance_id,
            family=family,
            score=round(float(min(1.0, max(0.0, score))), 9),
            success=success,
            goal=_weighted(goal),
            process=_weighted(process),
            gate=gate,
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
