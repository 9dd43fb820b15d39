"""Score a whole benchmark's videos and aggregate them the way VBVR does.

A failure on one item (missing or unreadable video, too few frames) is recorded on that
item with its error and counted as score 0 / not successful, so one bad file never
loses the other items' results and never silently inflates a mean.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from core.bench.layout import Benchmark
from core.bench.record import TaskInstance
from core.errors import VlmtError
from core.scoring.result import ScoreResult
from core.scoring.synth import score_synth

log = logging.getLogger(__name__)


class ItemScore(BaseModel):
    """One item's outcome: a score, or the error that prevented scoring."""

    instance_id: str
    family: str
    faculty: str | None
    split: str | None
    video: str
    score: float = 0.0
    success: bool = False
    error: str | None = None
    result: ScoreResult | None = None


class GroupStats(BaseModel):
    n: int
    mean_score: float
    success_rate: float
    n_errors: int


class ScoreSummary(BaseModel):
    """Means overall (sample-weighted over ID and OOD, as VBVR), and per family/faculty/split."""

    overall: GroupStats
    by_split: dict[str, GroupStats] = Field(default_factory=dict)
    by_faculty: dict[str, GroupStats] = Field(default_factory=dict)
    by_family: dict[str, GroupStats] = Field(default_factory=dict)


def score_item(instance: TaskInstance, video: Path) -> ItemScore:
    """Score one synth video; any input error becomes the item's recorded error."""
    base = dict(
        instance_id=instance.id,
        family=instance.task_family,
        faculty=instance.faculty.value if instance.faculty else None,
        split=instance.split.value if instance.split else None,
        video=str(video),
    )
    try:
        result = score_synth(instance, video)
    except VlmtError as exc:
        log.warning("could not score %s: %s", instance.id, exc)
        return ItemScore(**base, error=str(exc))
    return ItemScore(**base, score=result.score, success=result.success, result=result)


def score_benchmark(
    bench: Benchmark,
    videos: Path | None = None,
    *,
    ground_truth: bool = False,
    on_item: Callable[[ItemScore], None] | None = None,
) -> list[ItemScore]:
    """Score every instance's video: its ground truth, or ``videos/{split}/{task}/{index}.mp4``."""
    if bench.kind != "synth":
        raise VlmtError(
            f"{bench.root}: only synth benchmarks are scored by vlmt's own scorers; score official VBVR-Bench "
            "output with core.bench.vbvr_official.score_with_official_toolkit (needs the vbvr_bench package)"
        )
    if ground_truth == (videos is not None):
        raise ValueError("give exactly one of videos= or ground_truth=True")
    items = []
    for inst in bench.instances:
        path = inst.ground_truth if ground_truth else bench.output_path(videos, inst)  # type: ignore[arg-type]
        item = score_item(inst, Path(path))  # type: ignore[arg-type]
        items.append(item)
        if on_item:
            on_item(item)
    return items


def _stats(items: list[ItemScore]) -> GroupStats:
    n = len(items)
    return GroupStats(
        n=n,
        mean_score=sum(i.score for i in items) / n if n else 0.0,
        success_rate=sum(i.success for i in items) / n if n else 0.0,
        n_errors=sum(i.error is not None for i in items),
    )


def summarise(items: Iterable[ItemScore]) -> ScoreSummary:
    items = list(items)
    groups: dict[str, dict[str, list[ItemScore]]] = {"split": defaultdict(list), "faculty": defaultdict(list), "family": defaultdict(list)}
    for item in items:
        groups["split"][item.split or "-"].append(item)
        groups["faculty"][item.faculty or "-"].append(item)
        groups["family"][item.family].append(item)
    return ScoreSummary(
        overall=_stats(items),
        by_split={k: _stats(v) for k, v in sorted(groups["split"].items())},
        by_faculty={k: _stats(v) for k, v in sorted(groups["faculty"].items())},
        by_family={k: _stats(v) for k, v in sorted(groups["family"].items())},
    )
