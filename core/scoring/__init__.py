"""Rule-based scoring: per-family synth scorers and benchmark-level aggregation."""

from core.scoring.benchmark import (
    ItemScore,
    ScoreSummary,
    score_benchmark,
    score_item,
    summarise,
)
from core.scoring.result import CriterionScore, ScoreResult
from core.scoring.synth import SCORERS, score_synth

__all__ = [
    "SCORERS",
    "CriterionScore",
    "ItemScore",
    "ScoreResult",
    "ScoreSummary",
    "score_benchmark",
    "score_item",
    "score_synth",
    "summarise",
]
