"""Run methods over benchmark items and summarise them: the comparison behind ``vlmt compare``.

For each item: prepare the Reasoner's condition once, extract and compile the Teacher's
rules once (if any method needs them), run every method, score each video with the
benchmark's scorer and judge it with the Teacher. The judge measures reward hacking query by
query: of the rules the scorer finds broken in a video, the share the Teacher still calls
satisfied ("judge fooled", ``judge_fooled_rate``). A failing (item, method) is recorded with
its error and stage; the others go on.

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
    ORACLES,
    PER_ITEM_OPTIMISERS,
    RUNNERS,
    USES_REASONER,
    USES_RULES,
    ItemContext,
    Method,
    MethodConfig,
)
from core.method.oracle import require_oracle_items
from core.method.reasoner import ReasonerAdapter
from core.method.teacher import YES_THRESHOLD, all_yes, compile_reward, extract_rules, judge
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
    gate: float | None = Field(None, description="The lowest process score.")
    gated: float | None = Field(None, description="The earlier gated score (goal credit x gate + process), not the headline.")
    judge_p_yes: list[float] = Field(default_factory=list)
    judge_truth: list[bool | None] = Field(
        default_factory=list, description="The scorer's answer to each judged query (None: not a bank phrasing).")
    judge_all_yes: bool = False
    heldout_p_yes: list[float] = Field(default_factory=list, description=(
        "The held-out judge's P(Yes) on the same queries as ``judge_p_yes`` (empty: no held-out judge), "
        "``core.pipeline.heldout``; the scorer's answers are ``judge_truth``."))
    heldout_all_yes: bool | None = None
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
    def judge_broken(self) -> int:
        """Judged queries whose criterion the scorer finds broken (0: no judge, or no scorer truth)."""
        return judge_fooled_counts(self.judge_p_yes, self.judge_truth)[0] if self.error is None else 0

    @property
    def judge_fooled(self) -> int:
        """Of ``judge_broken``, the queries the judge still answered Yes (P(Yes) > 0.5)."""
        return judge_fooled_counts(self.judge_p_yes, self.judge_truth)[1] if self.error is None else 0

    @property
    def heldout_broken(self) -> int:
        """As ``judge_broken``, for the held-out judge's queries."""
        return judge_fooled_counts(self.heldout_p_yes, self.judge_truth)[0] if self.error is None else 0

    @property
    def heldout_fooled(self) -> int:
        """Of ``heldout_broken``, the queries the held-out judge still answered Yes."""
        return judge_fooled_counts(self.heldout_p_yes, self.judge_truth)[1] if self.error is None else 0


def judge_fooled_counts(p_yes: Sequence[float], truth: Sequence[bool | None]) -> tuple[int, int]:
    """(broken, fooled): queries the scorer says are broken, and those the judge called Yes anyway.

    Queries with no scorer answer (None: not one of the benchmark's phrasings) count in neither.
    """
    broken = [p for p, holds in zip(p_yes, truth, strict=False) if holds is False]
    return len(broken), sum(p > YES_THRESHOLD for p in broken)


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
            if method in ORACLES:  # it read the answer key: an upper bound, marked wherever results are shown
                res.info["oracle"] = True
        except Exception as exc:  # noqa: BLE001
            meter.take()
            res.error, res.error_stage = _error(f"{instance.id}: {method.value}", exc)
            out.append(res)
            continue
        try:
            result = score_synth(instance, output.video)
            res.score, res.success = result.score, result.success
            res.criteria = {c.name: c.score for c in result.criteria}
            res.goal, res.process, res.gate, res.gated = result.goal, result.process, result.gate, result.gated
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

    Pairing removes each item's own difficulty from the comparison. Items of one family share
    a scorer, a layout sampler and a difficulty, so their differences are not independent: the
    interval is cluster-robust over families (``clustered_interval``: the CR1 sandwich standard
    error of the mean with Student's t at G - 1 degrees of freedom, G families), as
    ``sql/paired_vs_baseline.sql`` computes it. With one family it is the plain i.i.d. interval.
    """

    baseline: str
    n: int
    clusters: int = Field(description="Families the items fall in (the interval's clusters).")
    mean: float
    std_error: float = Field(description="Family-clustered standard error of the mean (i.i.d. with one family).")
    ci95_low: float
    ci95_high: float
    wins: int
    ties: int
    losses: int


def clustered_interval(diffs: np.ndarray, groups: Sequence[str]) -> tuple[float, float, int]:
    """(standard error, half-width of the 95% interval, clusters) of ``diffs``' mean, clustered by ``groups``.

    CR1: V = G / (G - 1) * sum_g (sum_{i in g} (d_i - mean))^2 / n^2; the half-width is
    t(0.975, G - 1) * sqrt(V). Under two clusters: the i.i.d. error and t(0.975, n - 1).
    """
    from scipy.stats import t as student_t

    n = len(diffs)
    labels = np.unique(np.asarray(groups), return_inverse=True)[1]
    g = int(labels.max()) + 1
    resid = diffs - diffs.mean()
    if g < 2:
        se = float(diffs.std(ddof=1) / np.sqrt(n))
        return se, float(student_t.ppf(0.975, n - 1)) * se, g
    sums = np.bincount(labels, weights=resid, minlength=g)
    se = float(np.sqrt(g / (g - 1) * (sums**2).sum()) / n)
    return se, float(student_t.ppf(0.975, g - 1)) * se, g


def paired_difference(results: Sequence[ItemResult], baseline: Sequence[ItemResult]) -> PairedDifference | None:
    """``results`` minus ``baseline`` on the items both scored without error; None under two such items."""
    base = {r.instance_id: r.score for r in baseline if r.error is None and r.score is not None}
    pairs = [(r.score - base[r.instance_id], r.family) for r in results
             if r.error is None and r.score is not None and r.instance_id in base]
    if len(pairs) < 2:
        return None
    diffs = np.array([d for d, _ in pairs])
    mean = float(diffs.mean())
    se, half, clusters = clustered_interval(diffs, [f for _, f in pairs])
    return PairedDifference(baseline=baseline[0].method, n=len(diffs), clusters=clusters, mean=mean, std_error=se,
                            ci95_low=mean - half, ci95_high=mean + half, wins=int((diffs > 1e-9).sum()),
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
    mean_gated: float = Field(float("nan"), description="Mean of the earlier gated score (not the headline).")
    judge_broken: int = Field(0, description="Judged (video, query) pairs whose criterion the scorer finds broken.")
    judge_fooled_rate: float | None = Field(
        None, description="Share of those the judge called Yes (P(Yes) > 0.5); None where nothing judged was broken.")
    judge_fooled_vs_vanilla: float | None = Field(None, description="judge_fooled_rate minus vanilla's.")
    heldout_broken: int = Field(0, description="As judge_broken, for the held-out judge (0: none in the run).")
    heldout_fooled_rate: float | None = Field(
        None, description="Share of those the held-out judge called Yes; None where it judged nothing broken.")
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
        if method in {m.value for m in PER_ITEM_OPTIMISERS} and ok:
            steps = [r.info["optim"]["steps_run"] for r in ok if "optim" in r.info]
            extra = {"mean_steps": _mean(steps),
                     "stop_reasons": dict(sorted(_count(r.info["optim"]["stop_reason"] for r in ok if "optim" in r.info).items()))}
        if method in (Method.BEST_OF_N.value, Method.PASS_AT_N.value) and ok:
            extra = {"n": ok[0].info.get("n")}
        if method == Method.VIDEOTPO.value and ok and ok[0].info.get("n_rounds"):
            extra = {"rounds": ok[0].info["n_rounds"]}
        out[method] = MethodSummary(
            method=method, n=len(rs), n_errors=len(rs) - len(ok),
            mean_score=_mean(r.score for r in rs if r.score is not None),
            success_rate=_mean(float(r.success) for r in rs if r.success is not None),
            by_split={k: _mean(v) for k, v in sorted(split.items())},
            by_faculty={k: _mean(v) for k, v in sorted(faculty.items())},
            seconds_per_item=_mean(r.cost.total_seconds for r in ok), nfe_per_item=_mean(r.cost.reasoner_nfe for r in ok),
            teacher_calls_per_item=_mean(r.cost.counts.get("teacher_forward", 0) + r.cost.counts.get("teacher_backward", 0)
                                         + r.cost.counts.get("teacher_generate", 0) for r in ok),
            mean_gated=_mean(r.gated for r in ok if r.gated is not None),
            judge_broken=sum(r.judge_broken for r in ok), judge_fooled_rate=_fooled_rate(ok), extra=extra,
            heldout_broken=sum(r.heldout_broken for r in ok), heldout_fooled_rate=_fooled_rate(ok, heldout=True),
            vs_vanilla=paired_difference(rs, by_method[Method.VANILLA.value])
            if method != Method.VANILLA.value and by_method.get(Method.VANILLA.value) else None,
        )
    vanilla = out.get(Method.VANILLA.value)
    for summary in out.values():
        if summary.judge_fooled_rate is not None and vanilla is not None and vanilla.judge_fooled_rate is not None:
            summary.judge_fooled_vs_vanilla = summary.judge_fooled_rate - vanilla.judge_fooled_rate
    return out


def _fooled_rate(results: Sequence[ItemResult], heldout: bool = False) -> float | None:
    broken = sum(r.heldout_broken if heldout else r.judge_broken for r in results)
    fooled = sum(r.heldout_fooled if heldout else r.judge_fooled for r in results)
    return fooled / broken if broken else None


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


#: Cost phases paid once per item whatever VideoTPO's rounds (its condition and the rules).
_ONCE_PER_ITEM = ("prepare", "rules")


def auto_tpo_rounds(results: Sequence[ItemResult]) -> int:
    """VideoTPO's rounds matching the teacher method's wall time per item, from a probe run.

    Each round generates ``tpo_videos`` videos, judges them and rewrites the prompt; the item's
    condition and rules are paid once. So rounds = round((median teacher seconds - median
    once-per-item seconds) / median seconds per round), at least 1; medians, as for ``auto_n``.
    """
    teacher = [r.cost.total_seconds for r in results if r.method == Method.TEACHER.value and r.error is None]
    probes = [r for r in results if r.method == Method.VIDEOTPO.value and r.error is None and r.info.get("n_rounds")]
    if not teacher or not probes:
        raise ValueError("matching VideoTPO's rounds needs the teacher method and a VideoTPO run in the same run")
    once = [sum(r.cost.seconds.get(k, 0.0) for k in _ONCE_PER_ITEM) for r in probes]
    per_round = [(r.cost.total_seconds - o) / r.info["n_rounds"] for r, o in zip(probes, once, strict=True)]
    return max(1, round((float(np.median(teacher)) - float(np.median(once))) / max(float(np.median(per_round)), 1e-6)))


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
    """Run ``methods`` on ``instances``; with ``n='auto'`` the N-candidate baselines run last.

    ``oracle_reward`` needs synth items: any other item is refused here, before any method runs.

    ``n='auto'`` also matches VideoTPO's cost: it first runs with ``cfg.tpo_rounds`` as a probe
    (not reported), then, where the matched rounds (``auto_tpo_rounds``) differ, again with them.
    """
    methods = list(dict.fromkeys(Method(m) for m in methods))
    if Method.SHARED in methods:
        raise InputError("methods: shared", "trains one adapter on every item's reward before any item's video",
                         "the pipeline, which runs it as its own stage: vlmt evaluate --methods vanilla,teacher,shared")
    if Method.BEST_OF_N_HELDOUT in methods:
        raise InputError("methods: best_of_n_heldout", "selects with a held-out judge, which only the pipeline loads",
                         "the pipeline with a judge: vlmt evaluate --config FILE with heldout_judge set")
    if Method.ORACLE_REWARD in methods:
        require_oracle_items(instances)
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

    match_tpo = n == "auto" and Method.VIDEOTPO in methods
    if match_tpo:
        first = list(dict.fromkeys([Method.VANILLA, Method.TEACHER, *first]))
    cfg1 = cfg if n == "auto" else cfg.model_copy(update={"n": int(n)})
    probes: list[ItemResult] = []
    for inst in instances:
        item = run_item(reasoner, teacher, inst, first, cfg1, base_seed)
        probes += [r for r in item if match_tpo and r.method == Method.VIDEOTPO.value]
        keep([r for r in item if not (match_tpo and r.method == Method.VIDEOTPO.value)])
    if match_tpo:
        rounds = auto_tpo_rounds(results + probes)
        log.info("VideoTPO matched to the teacher method's wall time: %d rounds", rounds)
        if rounds == cfg.tpo_rounds:
            keep(probes)
        else:
            cfg_tpo = cfg1.model_copy(update={"tpo_rounds": rounds})
            for inst in instances:
                keep(run_item(reasoner, teacher, inst, [Method.VIDEOTPO], cfg_tpo, base_seed))
    if n == "auto" and n_methods:
        chosen = auto_n(results)
        log.info("best-of-N matched to the teacher method's wall time: N = %d", chosen)
        cfg2 = cfg.model_copy(update={"n": chosen})
        for inst in instances:
            keep(run_item(reasoner, teacher, inst, n_methods, cfg2, base_seed))
    keep_only = {m.value for m in methods}
    return [r for r in results if r.method in keep_only]
