"""What a report shows, read from the DuckDB results of one experiment.

The report reads only the database and the files its rows point at (videos, first frames),
so it can be rebuilt at any time after a run, on any machine that has the work directory.
Rows name files inside the work dir relative to it (``core.storage.results.resolve_path``):
the work dir is the database's folder, wherever it was moved or mounted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
from pydantic import BaseModel, Field

from core.bench.layout import synth_bench_dir
from core.bench.vbvr import GROUND_TRUTH
from core.errors import InputError
from core.storage.results import resolve_path
from core.storage.warehouse import has_table, query

#: The paper's headline numbers on VBVR-Bench (docs/paper.md), keyed by our method names, shown
#: beside ours for orientation only: a 5B Reasoner and a 4B Teacher on real tasks.
PAPER_VBVR: dict[str, dict[str, float]] = {
    "vanilla": {"score": 0.666, "seconds_per_item": 14},
    "pass_at_n": {"score": 0.683, "seconds_per_item": 70},
    "videotpo": {"score": 0.634, "seconds_per_item": 57},
    "teacher": {"score": 0.781, "seconds_per_item": 69},
    "shared": {"score": 0.688},  # the paper's "shared post-training" ablation; no cost given
    "grpo": {"score": 0.681},  # the paper's "non-differentiable reward with GRPO" ablation; no cost given
}

#: How the report heads the paper's figures, wherever it shows them.
PAPER_LABEL = "paper (Wan2.2-5B + Qwen3-VL-4B on VBVR-Bench)"

#: Methods that see the answer key (the benchmark's scorer picks the video, or its ground truth is the
#: reward): upper bounds, not deployable methods; marked "oracle" in every table, caption and plot
#: legend. The same set as ``core.method.methods.ORACLES`` (not imported: the report loads no torch).
ORACLE_METHODS = frozenset({"pass_at_n", "oracle_reward"})

#: One line per method for the report's legend (core/method/methods.py has the full story).
METHOD_NOTES: dict[str, str] = {
    "vanilla": "the Reasoner once, from the item's seed; no test-time work.",
    "best_of_n": "N videos from N seeds; the Teacher's judge picks one (sees only what a user would have).",
    "best_of_n_heldout": "the same N videos; the held-out judge (a second Teacher nothing optimised against) picks "
                         "one. Its held-out-judge column is not independent: that judge chose the video.",
    "pass_at_n": "oracle: the same N videos, but the benchmark's own scorer picks the best one. It uses the answer "
                 "key, so it is an upper bound on picking among N videos, not a method one could deploy.",
    "pe": "prompt engineering: the Teacher's rules appended to the instruction, then the Reasoner once.",
    "videotpo": "VideoTPO: rounds of two videos, the Teacher's critique appended to the prompt; the judge keeps the best.",
    "teacher": "the paper's method: a fresh LoRA optimised on this item by the Teacher's differentiable reward, "
               "then the final video from the same noise.",
    "shared": "ablation: one LoRA trained with the same reward over all items, then used for each.",
    "grpo": "ablation: the teacher method's LoRA and reward, optimised as a black box by GRPO.",
    "oracle_reward": "oracle: the teacher method's optimisation with a differentiable relaxation of the benchmark's "
                     "own scorer, read from the item's ground truth, in place of the Teacher's reward. An upper bound "
                     "on what the Reasoner and its decoders allow, not a method one could deploy.",
    "still": "reference, not a method: the first frame held for the whole video (no model call). A method shows "
             "reasoning only above its score.",
}

#: Display order of the methods (others follow alphabetically).
METHOD_ORDER = ["vanilla", "best_of_n", "best_of_n_heldout", "pass_at_n", "pe", "videotpo", "teacher", "shared", "grpo", "oracle_reward",
                "still"]

#: Teacher-minus-vanilla score change that counts as "improved" / "worsened" in the filters.
SCORE_DELTA = 0.05


class MethodOutcome(BaseModel):
    """One method's result on one item."""

    method: str
    score: float | None = None
    success: bool = False
    criteria: dict[str, float] = Field(default_factory=dict)
    video: str | None = None
    error: str | None = None
    error_stage: str | None = None
    judge_all_yes: bool | None = None
    ruler_labels: list[dict] = Field(default_factory=list, description="RULER-Bench: the judge's label per checklist question.")


class ItemView(BaseModel):
    """One item with every method's outcome, for the per-item section and its filters."""

    instance_id: str
    family: str
    split: str | None
    faculty: str | None
    prompt: str | None
    first_frame: str | None
    ground_truth: str | None = Field(
        None, description="The benchmark's reference solution video (ground_truth.mp4), where it has one.")
    queries: list[dict] = Field(default_factory=list)
    outcomes: dict[str, MethodOutcome]

    @property
    def outcome(self) -> str:
        """How the teacher method changed this item against vanilla (for the outcome filter)."""
        v, t = self.outcomes.get("vanilla"), self.outcomes.get("teacher")
        if v is None or t is None or v.score is None or t.score is None:
            return "n/a"
        if t.success and not v.success:
            return "fixed"
        if v.success and not t.success:
            return "broken"
        if t.score - v.score >= SCORE_DELTA:
            return "improved"
        if v.score - t.score >= SCORE_DELTA:
            return "worsened"
        return "unchanged"


def method_label(method: str) -> str:
    """A method's name as tables, captions and plot legends show it: the oracle marked as such."""
    return f"{method} (oracle)" if method in ORACLE_METHODS else method


def _natural(text: str) -> tuple:
    """Sort key reading digit runs as numbers, so 'x/9' comes before 'x/10'."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def item_order(items: list[ItemView]) -> list[ItemView]:
    """Items by family, then id (digit runs compared as numbers): the order of the report's item section."""
    return sorted(items, key=lambda i: (_natural(i.family), _natural(i.instance_id)))


class ReportData(BaseModel):
    experiment_id: str
    name: str
    kind: str
    created_at: str
    variant: str
    methods: list[str]
    summary: list[dict]
    by_group: list[dict]
    costs: list[dict]
    traces: list[dict]
    items: list[ItemView]
    ruler: list[dict] = Field(default_factory=list, description="RULER-Bench scores per method and judge (ruler_scores).")
    parts: list[dict] = Field(default_factory=list, description="Synth score's goal part, gate and process part (goal_vs_process).")
    judge_queries: list[dict] = Field(
        default_factory=list, description="The judge against the scorer query by query (judge_per_query).")
    media_roots: list[str] = Field(
        default_factory=list, description="Folders the report may copy first frames and videos from (media_roots).")
    setup: dict[str, str] = Field(
        default_factory=dict, description="What this run ran on (run_setup): bench, reasoner and teacher as configured.")


def media_roots(db: Path, config_json: str | None) -> list[str]:
    """The folders whose files the report may copy beside itself: the work directory and the benchmark's.

    Why: rows name files (a RULER first frame is whatever path its record gave), and the report
    copies what they name into a folder meant to be shared, so it copies nothing from elsewhere.
    The work directory is the database's folder (generated videos, a synth benchmark); the
    benchmark directory is the one the experiment's ``bench`` names (a record file's folder),
    as seen from the current directory when it is relative.
    """
    roots = [str(db.parent)]
    bench = _config(config_json).get("bench")
    if isinstance(bench, str) and bench and bench != "synth":
        path = Path(bench)
        roots.append(str(path if path.is_dir() else path.parent))
    return roots


def _config(config_json: str | None) -> dict:
    """An experiment's evaluate config as a dict: an ablation's ``base``, else the config itself ({} if unreadable)."""
    try:
        config = json.loads(config_json or "{}")
    except json.JSONDecodeError:
        return {}
    if not isinstance(config, dict):
        return {}
    return config["base"] if isinstance(config.get("base"), dict) else config


#: Where ``vlmt evaluate`` puts the synth benchmark it generates, inside the work directory.


def bench_dirs(db: Path, config: dict) -> list[Path]:
    """Benchmark folders an item's ``{instance id}/ground_truth.mp4`` may lie under (VBVR layout, synth too).

    The configured ``bench`` (a directory, or a record file's folder), or for ``bench: synth``
    the folder ``vlmt evaluate`` generates inside the work directory (the database's folder).
    """
    bench = config.get("bench", "synth")
    if bench == "synth":
        per_family, seed = config.get("per_family"), config.get("bench_seed", 0)
        return [synth_bench_dir(db.parent, seed, per_family)] if per_family else []
    if isinstance(bench, str) and bench:
        path = Path(bench)
        return [path if path.is_dir() else path.parent]
    return []


def find_ground_truth(instance_id: str, first_frame: str | None, benches: list[Path]) -> str | None:
    """The item's ground-truth video: ``ground_truth.mp4`` beside its first frame (synth and VBVR
    layouts keep both in the instance folder), else under a benchmark folder at ``{instance id}/``.

    None where there is none (RULER-Bench ships none; an official VBVR folder may lack it).
    Whether the report may copy the file is decided where it copies (``media._media_source``).
    """
    candidates = [Path(first_frame).parent / GROUND_TRUTH] if first_frame else []
    candidates += [root / instance_id / GROUND_TRUTH for root in benches]
    return next((str(c) for c in candidates if c.is_file()), None)


def run_setup(config: dict) -> dict[str, str]:
    """What the run ran on, for the paper note: the bench and both models, defaults where the config is silent."""
    models = config.get("models") if isinstance(config.get("models"), dict) else {}
    return {"bench": str(config.get("bench", "synth")),
            "reasoner": str(models.get("reasoner") or "models/reasoner"),
            "teacher": str(models.get("teacher") or "models/teacher")}


def _rows(db: Path, sql: str, params: dict) -> list[dict]:
    return query(db, sql, params).to_dicts()


def pick_experiment(db: Path, experiment: str | None) -> dict:
    """The experiment named (by name or id prefix), else the newest one."""
    rows = _rows(db, "SELECT experiment_id, name, kind, CAST(created_at AS VARCHAR) AS created_at FROM experiments "
                     "ORDER BY created_at DESC", {})
    if not rows:
        raise InputError(str(db), "holds no experiments", "a DuckDB file written by `vlmt evaluate`")
    if experiment is None:
        return rows[0]
    chosen = [r for r in rows if r["name"] == experiment or r["experiment_id"].startswith(experiment)]
    if not chosen:
        names = sorted({r["name"] for r in rows})
        raise InputError("--experiment", f"{experiment!r} matches no experiment in {db}", f"a name among {names} or an id prefix")
    return chosen[0]


def _ordered(methods: set[str]) -> list[str]:
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


def load_report_data(db: str | Path, experiment: str | None = None, variant: str | None = None) -> ReportData:
    """Everything the report shows for one experiment (and one variant: the first, unless named)."""
    db = Path(db)
    exp = pick_experiment(db, experiment)
    config_rows = _rows(db, "SELECT config_json FROM experiments WHERE experiment_id = $e", {"e": exp["experiment_id"]})
    config_json = config_rows[0]["config_json"] if config_rows else None
    config = _config(config_json)
    eid = exp["experiment_id"]
    variants = [r["variant"] for r in _rows(db, "SELECT DISTINCT variant FROM results WHERE experiment_id = $e ORDER BY 1",
                                            {"e": eid})]
    if not variants:
        raise InputError(str(db), f"has no results for experiment {eid}", "a finished or partly finished run")
    if variant is not None and variant not in variants:
        raise InputError("--variant", f"{variant!r} is not a variant of {exp['name']}", f"one of {variants}")
    variant = variant or variants[0]
    p = {"e": eid, "v": variant}
    item_cols = set(query(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'items'", {})["column_name"])
    # runs written before items carried the prompt and first frame still build a report
    prompt, first = (f"i.{c}" if c in item_cols else f"NULL AS {c}" for c in ("prompt", "first_frame"))
    results = query(db, f"""
        SELECT r.*, c.total_seconds, c.reasoner_nfe, {prompt}, {first}
        FROM results r
        LEFT JOIN costs c USING (experiment_id, variant, instance_id, method)
        LEFT JOIN (SELECT DISTINCT ON (instance_id) * FROM items WHERE experiment_id = $e) i USING (instance_id)
        WHERE r.experiment_id = $e AND r.variant = $v
        ORDER BY r.family, r.instance_id, r.method""", p)
    methods = _ordered(set(results["method"].to_list()))
    ok = results.filter(pl.col("error").is_null())
    summary = (results.group_by("method").agg(
        n=pl.len(), errors=pl.col("error").is_not_null().sum(),
        mean_score=pl.col("score").filter(pl.col("error").is_null()).mean(),
        success_rate=pl.col("success").filter(pl.col("error").is_null()).cast(pl.Float64).mean(),
        seconds_per_item=pl.col("total_seconds").filter(pl.col("error").is_null()).mean(),
        nfe_per_item=pl.col("reasoner_nfe").filter(pl.col("error").is_null()).mean(),
        judge_broken=pl.col("judge_broken").filter(pl.col("error").is_null()).sum(),
        judge_fooled=pl.col("judge_fooled").filter(pl.col("error").is_null()).sum(),
        heldout_broken=_column_sum(results, "heldout_broken"), heldout_fooled=_column_sum(results, "heldout_fooled"),
    ).with_columns(
        # reward hacking query by query: of the rules the scorer finds broken, those the judge called Yes
        judge_fooled_rate=pl.when(pl.col("judge_broken") > 0)
        .then(pl.col("judge_fooled") / pl.col("judge_broken")).otherwise(None),
        # the same by the held-out judge (None where the run had none)
        heldout_fooled_rate=pl.when(pl.col("heldout_broken") > 0)
        .then(pl.col("heldout_fooled") / pl.col("heldout_broken")).otherwise(None),
    ))
    by_group = ok.group_by("faculty", "split", "method").agg(n=pl.len(), mean_score=pl.col("score").mean())
    traces = query(db, "SELECT instance_id, step, loss, p_yes_json FROM traces WHERE experiment_id = $e AND variant = $v "
                       "AND method = 'teacher' ORDER BY instance_id, step", p)
    items = item_order(_items(results, db.parent))
    benches = bench_dirs(db, config)
    for item in items:
        item.ground_truth = find_ground_truth(item.instance_id, item.first_frame, benches)
    ruler = _ruler(db, p, items)
    # in the report's method order; runs written before these columns existed have no such tables
    parts, judge_queries = (sorted(_named(db, name, p), key=lambda r: methods.index(r["method"]))
                            if needs in results.columns else []
                            for name, needs in (("goal_vs_process", "goal_score"), ("judge_per_query", "judge_truth_json")))
    return ReportData(
        experiment_id=eid, name=exp["name"], kind=exp["kind"], created_at=exp["created_at"], variant=variant,
        methods=methods, summary=sorted(summary.to_dicts(), key=lambda r: methods.index(r["method"])),
        by_group=by_group.to_dicts(),
        costs=ok.select("instance_id", "method", "score", "total_seconds", "reasoner_nfe", "steps_run", "stop_reason",
                        "judge_all_yes", "success", "judge_goal_p_yes").to_dicts(),
        traces=traces.to_dicts(), items=items, ruler=ruler, parts=parts, judge_queries=judge_queries,
        media_roots=media_roots(db, config_json), setup=run_setup(config),
    )


def _named(db: Path, name: str, p: dict) -> list[dict]:
    """The rows of named query ``name`` (``sql/``) for this experiment and variant."""
    from core.storage.named import get_query

    q = get_query(name)
    return query(db, q.sql, q.bind({"experiment": p["e"], "variant": p["v"]})).to_dicts()


def _ruler(db: Path, p: dict, items: list[ItemView]) -> list[dict]:
    """A judged RULER-Bench run: attach each outcome's labels; return the ``ruler_scores`` rows (else nothing)."""
    if not has_table(db, "judgements"):
        return []
    labels = _rows(db, "SELECT instance_id, method, judge, question_index, dimension, question, label, error "
                       "FROM judgements WHERE experiment_id = $e AND variant = $v "
                       "ORDER BY instance_id, method, judge, question_index", p)
    outcomes = {(i.instance_id, m): o for i in items for m, o in i.outcomes.items()}
    for row in labels:
        outcome = outcomes.get((row.pop("instance_id"), row.pop("method")))
        if outcome is not None:
            outcome.ruler_labels.append(row)
    return _named(db, "ruler_scores", p) if labels else []


def _items(results: pl.DataFrame, work: Path) -> list[ItemView]:
    """One view per item; file paths resolved against ``work`` (the database's folder)."""
    items: dict[str, ItemView] = {}
    for r in results.to_dicts():
        view = items.get(r["instance_id"])
        if view is None:
            view = items[r["instance_id"]] = ItemView(
                instance_id=r["instance_id"], family=r["family"], split=r["split"], faculty=r["faculty"],
                prompt=r.get("prompt"), first_frame=resolve_path(r.get("first_frame"), work), outcomes={})
        if not view.queries and r.get("queries_json"):
            view.queries = json.loads(r["queries_json"])
        failed = r["error"] is not None
        view.outcomes[r["method"]] = MethodOutcome(
            method=r["method"], score=None if failed else r["score"], success=bool(r["success"]) and not failed,
            criteria=json.loads(r["criteria_json"]) if r.get("criteria_json") else {},
            video=resolve_path(r.get("video_path"), work), error=r["error"], error_stage=r["error_stage"],
            judge_all_yes=r["judge_all_yes"])
    return list(items.values())


def _column_sum(results: pl.DataFrame, column: str) -> pl.Expr:
    """Sum of ``column`` over rows without error; 0 where the run's tables predate the column."""
    if column not in results.columns:
        return pl.lit(0, dtype=pl.Int64)
    return pl.col(column).filter(pl.col("error").is_null()).cast(pl.Int64).sum()
