"""Run methods over benchmark items and summarise them: the comparison behind ``vlmt compare``.

For each item: prepare the Reasoner's condition once, extract and compile the Teacher's
rules once (if any method needs them), run every method, score each video with the
benchmark's scorer and judge it with the Teacher (the judge is used for the reward-hacking
rate: the Teacher says "Yes" to every query while the strict rule-based check fails). A
failing (item, method) is recorded with its error and stage; the others go on.

``n="auto"`` for best_of_n / pass_at_n picks N after the teacher method has run, so that
best-of-N's wall time per item matches the teacher method's: N = round(median teacher seconds
per item / median seconds of one candidate, generation + judge), at least 2. Medians, because
the first generation in a process carries torch's one-off warm-up (measured 2.2 s against
0.35 s for the next ones), which a mean over a few items turns into a much smaller N.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from core.bench.record import TaskInstance
from core.bench.synth.queries import query_truths
from core.errors import InputError
from core.media import read_image
from core.method.cost import CostMeter, CostRecord
from core.method.methods import (
    CANDIDATE_METHODS,
    RUNNERS,
    USES_REASONER,
    USES_RULES,
    ItemContext,
    Method,
    MethodConfig,
)
from core.method.reasoner import ReasonerAdapter
from core.method.teacher import all_yes, compile_reward, extract_rules, judge
from core.models.teacher import Teacher
from core.scoring.synth import score_synth

log = logging.getLogger(__name__)


class ItemResult(BaseModel):
    """One (item, method) outcome."""

    instance_id: str
    family: str
    split: str | None
    faculty: str | None
    method: str
    seed: int
    score: float | None = Field(0.0, description="None: not scored here (a benchmark scored by its official toolkit).")
    success: bool | None = False
    criteria: dict[str, float] = Field(default_factory=dict)
    goal: float | None = Field(None, description="The synth scorer's goal part, before the gate (None: unscored).")
    process: float | None = Field(None, description="The synth scorer's process part (None: unscored).")
    gate: float | None = Field(None, description="The lowest process score, which multiplies the goal credit.")
    judge_p_yes: list[float] = Field(default_factory=list)
    judge_truth: list[bool | None] = Field(
        default_factory=list, description="The scorer's answer to each judged query (None: not a bank phrasing).")
    judge_all_yes: bool = False
    rules_source: str | None = None
    cost: CostRecord = CostRecord()
    info: dict = Field(default_factory=dict)
    error: str | None = None
    error_stage: str | None = None
    _video: np.ndarray | None = PrivateAttr(default=None)

    @property
    def video(self) -> np.ndarray | None:
        """The method's final video, (T, H, W, 3) uint8 (in memory only; callers save it)."""
        return self._video

    @property
    def hacked(self) -> bool | None:
        """The judge says every rule holds but the strict rule-based check fails (None: unscored)."""
        if self.error is None and self.success is None:
            return None
        return self.error is None and self.judge_all_yes and not self.success


def item_seed(instance: TaskInstance, base_seed: int) -> int:
    """A recorded, reproducible per-item seed (independent of item order)."""
    digest = hashlib.sha256(f"{instance.id}:{base_seed}".encode()).hexdigest()
    return int(digest[:8], 16)


def synth_score(instance: TaskInstance, video: np.ndarray) -> float:
    return score_synth(instance, video).score


def _error(stage: str, exc: BaseException) -> tuple[str, str]:
    log.warning("%s failed: %s", stage, exc)
    log.debug("%s", traceback.format_exc())
    return f"{type(exc).__name__}: {exc}", stage


def run_item(
    reasoner: ReasonerAdapter,
    teacher: Teacher,
    instance: TaskInstance,
    methods: Sequence[Method],
    cfg: MethodConfig,
    base_seed: int = 0,
) -> list[ItemResult]:
    """Every method on one item; errors are recorded per (item, method), never raised."""
    base = {"instance_id": instance.id, "family": instance.task_family, "split": instance.split.value if instance.split else None,
                "faculty": instance.faculty.value if instance.faculty else None, "seed": item_seed(instance, base_seed)}
    meter = CostMeter()
    reasoner.meter = meter
    try:
        with meter.phase("prepare"):
            first = read_image(instance.first_frame)
            cond = reasoner.prepare(first, instance.prompt, base["seed"], int(instance.metadata["n_frames"]))
        ctx = ItemContext(instance, first, cond, scorer=synth_score)
        prep_cost = meter.take()
        rules_cost = CostRecord()
        if USES_RULES & set(methods):
            with meter.phase("rules"):
                ctx.rules = extract_rules(teacher, first, instance.prompt, cfg.rule_attempts, seed=base["seed"],
                                          meter=meter, queries=cfg.queries)
                ctx.reward = compile_reward(teacher, ctx.rules, cond.n_frames, first.shape[:2], cfg.optim.k_frames, cfg.optim.lam)
            rules_cost = meter.take()
    except Exception as exc:  # noqa: BLE001 - recorded per item, the run goes on
        err, _stage = _error(f"{instance.id}: prepare/rules", exc)
        return [ItemResult(**base, method=m.value, error=err, error_stage="rules") for m in methods]

    out = []
    for method in methods:
        res = ItemResult(**base, method=method.value,
                         rules_source=ctx.rules.source if ctx.rules and method in USES_RULES else None)
        try:
            output = RUNNERS[method](reasoner, teacher, ctx, cfg, meter)
            cost = meter.take().merged(prep_cost) if method in USES_REASONER else meter.take()
            res.cost = cost.merged(rules_cost) if method in USES_RULES else cost
            res.info = output.info
        except Exception as exc:  # noqa: BLE001
            meter.take()
            res.error, res.error_stage = _error(f"{instance.id}: {method.value}", exc)
            out.append(res)
            continue
        try:
            result = score_synth(instance, output.video)
            res.score, res.success = result.score, result.success
            res.criteria = {c.name: c.score for c in result.criteria}
            res.goal, res.process, res.gate = result.goal, result.process, result.gate
            if ctx.reward is not None:
                start = time.perf_counter()
                res.judge_p_yes = judge(teacher, ctx.reward, output.video)
                res.info["judge_seconds"] = time.perf_counter() - start
                res.judge_all_yes = all_yes(res.judge_p_yes)
                res.judge_truth = query_truths(instance, result, [q.text for q in ctx.reward.queries])
            res._video = output.video
        except Exception as exc:  # noqa: BLE001
            res.error, res.error_stage = _error(f"{instance.id}: scoring {method.value}", exc)
        out.append(res)
    return out


# --------------------------------------------------------------------------- summaries

class PairedDifference(BaseModel):
    """A method's score minus a baseline's on the same items (the figure to quote for a gain).

    Pairing removes each item's own difficulty from the comparison; the interval is the
    normal approximation, mean +- 1.96 standard errors (as ``sql/paired_vs_baseline.sql``).
    """

    baseline: str
    n: int
    mean: float
    std_error: float
    ci95_low: float
    ci95_high: float
    wins: int
    ties: int
    losses: int


def paired_difference(results: Sequence[ItemResult], baseline: Sequence[ItemResult]) -> PairedDifference | None:
    """``results`` minus ``baseline`` on the items both scored without error; None under two such items."""
    base = {r.instance_id: r.score for r in baseline if r.error is None and r.score is not None}
    diffs = np.array([r.score - base[r.instance_id] for r in results
                      if r.error is None and r.score is not None and r.instance_id in base])
    if len(diffs) < 2:
        return None
    mean, se = float(diffs.mean()), float(diffs.std(ddof=1) / np.sqrt(len(diffs)))
    return PairedDifference(baseline=baseline[0].method, n=len(diffs), mean=mean, std_error=se,
                            ci95_low=mean - 1.96 * se, ci95_high=mean + 1.96 * se, wins=int((diffs > 1e-9).sum()),
                            ties=int((np.abs(diffs) <= 1e-9).sum()), losses=int((diffs < -1e-9).sum()))


class MethodSummary(BaseModel):
    method: str
    n: int
    n_errors: int
    mean_score: float
    success_rate: float
    by_split: dict[str, float]
    by_faculty: dict[str, float]
    seconds_per_item: float
    nfe_per_item: float
    teacher_calls_per_item: float
    hacking_rate: float = Field(description="Judge says Yes to every query while the strict check fails.")
    vs_vanilla: PairedDifference | None = Field(None, description="Score minus vanilla's on the same items.")
    extra: dict = Field(default_factory=dict)


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return float(np.mean(xs)) if xs else float("nan")


def summarise_methods(results: Sequence[ItemResult]) -> dict[str, MethodSummary]:
    by_method: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        by_method[r.method].append(r)
    out = {}
    for method, rs in by_method.items():
        ok = [r for r in rs if r.error is None]
        split: dict[str, list[float]] = defaultdict(list)
        faculty: dict[str, list[float]] = defaultdict(list)
        for r in ok:
            if r.score is not None:
                split[r.split or "-"].append(r.score)
                faculty[r.faculty or "-"].append(r.score)
        extra: dict = {}
        if method in (Method.TEACHER.value, Method.GRPO.value) and ok:
            steps = [r.info["optim"]["steps_run"] for r in ok if "optim" in r.info]
            extra = {"mean_steps": _mean(steps),
                     "stop_reasons": dict(sorted(_count(r.info["optim"]["stop_reason"] for r in ok if "optim" in r.info).items()))}
        if method in (Method.BEST_OF_N.value, Method.PASS_AT_N.value) and ok:
            extra = {"n": ok[0].info.get("n")}
        out[method] = MethodSummary(
            method=method, n=len(rs), n_errors=len(rs) - len(ok),
            mean_score=_mean(r.score for r in rs if r.score is not None),
            success_rate=_mean(float(r.success) for r in rs if r.success is not None),
            by_split={k: _mean(v) for k, v in sorted(split.items())},
            by_faculty={k: _mean(v) for k, v in sorted(faculty.items())},
            seconds_per_item=_mean(r.cost.total_seconds for r in ok), nfe_per_item=_mean(r.cost.reasoner_nfe for r in ok),
            teacher_calls_per_item=_mean(r.cost.counts.get("teacher_forward", 0) + r.cost.counts.get("teacher_backward", 0)
                                         + r.cost.counts.get("teacher_generate", 0) for r in ok),
            hacking_rate=_mean(float(r.hacked) for r in ok if r.hacked is not None), extra=extra,
            vs_vanilla=paired_difference(rs, by_method[Method.VANILLA.value])
            if method != Method.VANILLA.value and by_method.get(Method.VANILLA.value) else None,
        )
    return out


def _count(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[v] += 1
    return counts


def auto_n(results: Sequence[ItemResult]) -> int:
    """N for best-of-N matching the teacher method's wall time per item (see module doc)."""
    teacher = [r.cost.total_seconds for r in results if r.method == Method.TEACHER.value and r.error is None]
    vanilla = [r for r in results if r.method == Method.VANILLA.value and r.error is None]
    if not teacher or not vanilla:
        raise ValueError("n='auto' needs the teacher and vanilla methods in the same run")
    per_candidate = float(np.median([r.cost.seconds.get("generate", 0.0) + r.info.get("judge_seconds", 0.0) for r in vanilla]))
    return max(2, round(float(np.median(teacher)) / max(per_candidate, 1e-6)))


def compare(
    reasoner: ReasonerAdapter,
    teacher: Teacher,
    instances: Sequence[TaskInstance],
    methods: Sequence[Method],
    cfg: MethodConfig,
    n: int | str = "auto",
    base_seed: int = 0,
    on_result: Callable[[ItemResult], None] | None = None,
) -> list[ItemResult]:
    """Run ``methods`` on ``instances``; with ``n='auto'`` the N-candidate baselines run last."""
    methods = list(dict.fromkeys(Method(m) for m in methods))
    if Method.SHARED in methods:
        raise InputError("methods: shared", "trains one adapter on every item's reward before any item's video",
                         "the pipeline, which runs it as its own stage: vlmt evaluate --methods vanilla,teacher,shared")
    n_methods = [m for m in methods if m in CANDIDATE_METHODS]
    first = [m for m in methods if m not in n_methods] if n == "auto" else methods
    if n == "auto" and n_methods:
        first = list(dict.fromkeys([Method.VANILLA, Method.TEACHER, *first]))
    results: list[ItemResult] = []

    def keep(rs: list[ItemResult]) -> None:
        for r in rs:
            results.append(r)
            if on_result:
                on_result(r)

    cfg1 = cfg if n == "auto" else cfg.model_copy(update={"n": int(n)})
    for inst in instances:
        keep(run_item(reasoner, teacher, inst, first, cfg1, base_seed))
    if n == "auto" and n_methods:
        chosen = auto_n(results)
        log.info("best-of-N matched to the teacher method's wall time: N = %d", chosen)
        cfg2 = cfg.model_copy(update={"n": chosen})
        for inst in instances:
            keep(run_item(reasoner, teacher, inst, n_methods, cfg2, base_seed))
    keep_only = {m.value for m in methods}
    return [r for r in results if r.method in keep_only]
