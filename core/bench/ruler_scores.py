"""RULER-Bench scores: label values, the judged-instance record and the official aggregation.

Why this module exists: the benchmark's numbers are the official ``eval/cal_acc.py``
arithmetic over the judge's checklist labels, and every consumer (the judge flow, the
results store, the report) must compute them the same way.

Scores (``aggregate``): Good = 2, Medium = 1, Poor = 0. Every instance is scored on its
category's dimensions (``category_dimensions``: all four, but "vision rule" has no
Instruction Following); as in the official ``eval/cal_acc.py``, a dimension of its
category that an instance's checklist lacks scores 0 for that instance and is counted in
every mean below (leaving it out would reward a short checklist).

- per instance and dimension: the mean label score of that dimension's questions, or 0;
- ``per_category[c][d]``: mean over all the instances of ``c`` of those values, times 50
  (so 0-100);
- ``category_avg[c]``: mean over the instances of ``c`` of the instance's mean over its
  category's dimensions, times 50;
- ``overall_per_dimension[d]``: mean over the categories that have ``d`` of
  ``per_category[c][d]`` (so "vision rule" does not enter Instruction Following);
- ``overall_average``: mean of the four ``overall_per_dimension`` values.

``RulerJudgement`` validates its labels and dimensions (the reply parsers of
``core.bench.ruler_replies`` build it); one built around that validation
(``model_construct``) raises in ``aggregate`` rather than being counted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.bench.record import RULER_DIMENSIONS, RulerDimension
from core.bench.ruler import CATEGORY_TASKS, INSTRUCTION_FOLLOWING, VISION_RULE, normalise_category
from core.errors import VlmtError

log = logging.getLogger(__name__)

Label = Literal["Good", "Medium", "Poor"]
LABEL_SCORES: dict[str, int] = {"Good": 2, "Medium": 1, "Poor": 0}

_DIMENSIONS_TEXT = ", ".join(repr(d) for d in RULER_DIMENSIONS)
_LABELS_TEXT = "/".join(LABEL_SCORES)


class InvalidJudgeReply(VlmtError):
    """A judge reply that cannot be scored; the caller should ask the judge again.

    Raised instead of guessing, because a mis-assigned or dropped label would change
    the score silently: by the reply parsers (``core.bench.ruler_replies``), and by
    ``aggregate`` on a label that bypassed them.
    """

    def __init__(self, problem: str, n_questions: int, reply: str):
        self.problem = problem
        self.n_questions = n_questions
        self.reply = reply
        excerpt = reply if len(reply) <= 200 else reply[:200] + "..."
        super().__init__(
            f"invalid judge reply: {problem} (expected exactly {n_questions} label(s), one per checklist question "
            f"in order, each one of {_LABELS_TEXT}); reply was {excerpt!r}"
        )


def category_dimensions(category: str) -> tuple[str, ...]:
    """The dimensions an instance of ``category`` (normalised) is scored on, in card order.

    All four, except that "vision rule" has no Instruction Following: there a missing
    Instruction Following question is not a missing dimension. An unknown category gets
    all four, as the official script scores every category but vision rule.
    """
    if category == VISION_RULE:
        return tuple(d for d in RULER_DIMENSIONS if d != INSTRUCTION_FOLLOWING)
    return RULER_DIMENSIONS


class JudgedQuestion(BaseModel):
    """One checklist question with the judge's label for it."""

    model_config = ConfigDict(frozen=True)

    dimension: RulerDimension
    question: str
    label: Label


class RulerJudgement(BaseModel):
    """The judge's labels for one instance, ready for ``aggregate``.

    ``category`` is normalised like the reader does, so that judgements built from raw
    records and from ``TaskInstance`` group together.
    """

    model_config = ConfigDict(frozen=True)

    instance_id: str
    task_name: str
    category: str
    labels: list[JudgedQuestion]

    @field_validator("category")
    @classmethod
    def _normalise_category(cls, value: str) -> str:
        category = normalise_category(value)
        if not category:
            raise ValueError("category is empty")
        return category

    @model_validator(mode="after")
    def _check(self) -> RulerJudgement:
        if not self.labels:
            raise ValueError(f"{self.instance_id}: no labels; every instance has at least one checklist question")
        if self.category == VISION_RULE and any(q.dimension == INSTRUCTION_FOLLOWING for q in self.labels):
            raise ValueError(f"{self.instance_id}: a 'vision rule' instance cannot have Instruction Following labels")
        return self


class RulerReport(BaseModel):
    """RULER-Bench scores on the 0-100 scale (see the module docstring for the formulas)."""

    per_category: dict[str, dict[str, float]] = Field(description="category -> dimension -> score")
    category_avg: dict[str, float] = Field(description="category -> mean over instances of the per-instance dimension mean")
    overall_per_dimension: dict[str, float] = Field(description="dimension -> mean over the categories that have it")
    overall_average: float = Field(description="mean of the overall per-dimension scores")
    n_instances: dict[str, int] = Field(description="category -> number of judged instances")
    n_missing: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="category -> dimension -> instances whose checklist lacks it (scored 0, the official rule); "
        "only non-zero counts",
    )


def _mean(values: Iterable[Fraction]) -> Fraction:
    values = list(values)
    return sum(values, Fraction(0)) / len(values)


def _category_order(categories: Iterable[str]) -> list[str]:
    """Card order for the known categories, then unknown ones alphabetically: stable reports."""
    known = list(CATEGORY_TASKS)
    return sorted(set(categories), key=lambda c: (known.index(c) if c in known else len(known), c))


def instance_dim_means(judgement: RulerJudgement) -> dict[str, Fraction]:
    """One instance's mean label score per dimension of its category; 0 for one its checklist lacks.

    The 0 is the official ``cal_acc.py`` rule. Raises on a label or dimension that
    bypassed validation (``model_construct``): either would bias the score without a trace.
    """
    by_dim: dict[str, list[int]] = defaultdict(list)
    for q in judgement.labels:
        if q.label not in LABEL_SCORES:  # guards judgements built with model_construct
            raise InvalidJudgeReply(
                f"{judgement.instance_id}: label {q.label!r} is not a known label", len(judgement.labels), str(q.label)
            )
        if q.dimension not in RULER_DIMENSIONS:
            raise ValueError(f"{judgement.instance_id}: unknown dimension {q.dimension!r} (expected one of {_DIMENSIONS_TEXT})")
        by_dim[q.dimension].append(LABEL_SCORES[q.label])
    if not by_dim:
        raise ValueError(f"{judgement.instance_id}: no labels")
    dims = category_dimensions(judgement.category)
    if not by_dim.keys() <= set(dims):
        raise ValueError(f"{judgement.instance_id}: a 'vision rule' instance cannot have Instruction Following labels")
    return {d: Fraction(sum(by_dim[d]), len(by_dim[d])) if d in by_dim else Fraction(0) for d in dims}


def aggregate(judgements: Iterable[RulerJudgement]) -> RulerReport:
    """Official RULER-Bench scores from per-instance judgements.

    Computed with exact fractions and converted to float at the end, so that scores do
    not depend on the order of instances. An invalid label or a repeated instance id
    raises instead of being counted: both would bias the score without a trace.
    """
    per_cat_dim: dict[str, dict[str, list[Fraction]]] = defaultdict(lambda: defaultdict(list))
    per_cat_inst: dict[str, list[Fraction]] = defaultdict(list)
    missing: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seen: set[str] = set()
    for judgement in judgements:
        if judgement.instance_id in seen:
            raise ValueError(f"instance {judgement.instance_id!r} judged twice; pass one judgement per instance")
        seen.add(judgement.instance_id)
        dim_means = instance_dim_means(judgement)
        present = {q.dimension for q in judgement.labels}
        for d, m in dim_means.items():
            per_cat_dim[judgement.category][d].append(m)
            if d not in present:
                missing[judgement.category][d] += 1
        per_cat_inst[judgement.category].append(_mean(dim_means.values()))
    if not seen:
        raise ValueError("no judgements to aggregate")

    categories = _category_order(per_cat_inst)
    per_category: dict[str, dict[str, Fraction]] = {
        c: {d: _mean(per_cat_dim[c][d]) * 50 for d in category_dimensions(c)} for c in categories
    }
    overall: dict[str, Fraction] = {}
    for d in RULER_DIMENSIONS:
        values = [per_category[c][d] for c in categories if d in per_category[c]]
        if values:
            overall[d] = _mean(values)
    absent = [d for d in RULER_DIMENSIONS if d not in overall]
    if absent:
        log.warning("no judged category has dimension(s) %s; the overall average uses the other dimensions", ", ".join(absent))
    return RulerReport(
        per_category={c: {d: float(v) for d, v in dims.items()} for c, dims in per_category.items()},
        category_avg={c: float(_mean(per_cat_inst[c]) * 50) for c in categories},
        overall_per_dimension={d: float(v) for d, v in overall.items()},
        overall_average=float(_mean(overall.values())),
        n_instances={c: len(per_cat_inst[c]) for c in categories},
        n_missing={c: dict(missing[c]) for c in categories if missing[c]},
    )
