"""Per-item result files: one small Parquet file per (experiment, variant, item, method) and table.

Why files per item rather than rows inserted into DuckDB as they come: DuckDB allows one
writer per database file, and a run's items finish in many processes (Prefect workers,
Dask workers) and may be killed mid-way. Each finished item writes its own Parquet files
atomically (temporary name, then rename), so a killed run leaves either a complete file or
none, and a rerun overwrites the same names instead of adding rows. One step
(:func:`core.storage.warehouse.consolidate`) later builds the DuckDB tables from the files.
File names come from the row keys through :func:`file_name`, which never gives two keys one
name; :func:`prune_results` removes the rows a finished run did not write again (items that
no longer fail to load, or are no longer in the benchmark) and files named the older, lossy way.

Paths in rows (``video_path``, ``gif_path``, ``rules_path``, the items' ``first_frame``) are
relative to the work dir where they lie inside it (``write_result``'s ``base``), so a moved or
remounted work dir keeps its rows valid; readers resolve them with :func:`resolve_path` against
the work dir, which is the DuckDB file's folder (``'<work>/' || video_path`` in SQL).

Tables (one folder each under the results root):

* ``experiments``: one row per experiment (id, name, kind, config JSON, code version).
* ``items``: one row per (experiment, item): family, split, faculty, seed.
* ``results``: one row per (experiment, variant, item, method): score (VBVR-style weighted
  sum), strict success, the score's goal and process parts, gate and the earlier gated score
  (synth), judge (P(Yes) per query, and the scorer's answer to each query where it has one),
  judge-fooled counts (criteria the scorer finds broken, and those the judge called Yes:
  reward hacking query by query), optimisation summary, error and its stage, video path, and the method
  knobs as columns (lambda, gradient mode, K, steps, rank, ...) for ablation pivots.
* ``traces``: one row per optimisation step of the teacher method.
* ``costs``: one row per (experiment, variant, item, method): seconds and call counts.
* ``judgements``: one row per (experiment, variant, item, method, judge, checklist question)
  of a RULER-Bench run judged by a VLM: the question's dimension and the judge's label (NULL
  with the error where the judge gave no valid reply); ``sql/ruler_scores.sql`` aggregates them.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from pydantic import BaseModel, Field

from core.bench.ruler_scores import LABEL_SCORES
from core.io import atomic_path

if TYPE_CHECKING:  # rows are written from results; reading the tables (reports, SQL) needs no torch
    from core.bench.record import TaskInstance
    from core.bench.ruler_judge import JudgeRecord
    from core.method.compare import ItemResult

TABLES = ("experiments", "items", "results", "traces", "costs", "judgements")

#: Measures the results table gained after rows were first written (score-4): rows from older
#: work dirs get NULL in them when consolidated, so the named queries can always name them.
LATER_RESULT_COLUMNS = {"gated_score": "DOUBLE", "judge_broken": "BIGINT", "judge_fooled": "BIGINT",
                        "heldout_broken": "BIGINT", "heldout_fooled": "BIGINT", "heldout_all_yes": "BOOLEAN",
                        "heldout_p_yes_json": "VARCHAR", "heldout_error": "VARCHAR"}


#: Config fields that say where a run keeps its files, not what it computes: left out of the
#: experiment id (at any depth, so an ablation's base config loses them too), so a moved or
#: remounted work dir keeps its experiment.
LOCATION_FIELDS = frozenset({"work", "mlflow_uri"})


def _without_location(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_location(v) for k, v in obj.items() if k not in LOCATION_FIELDS}
    if isinstance(obj, list):
        return [_without_location(v) for v in obj]
    return obj


class ExperimentRecord(BaseModel):
    """What identifies an experiment; ``experiment_id`` is derived from name and config
    (without its ``LOCATION_FIELDS``)."""

    name: str
    kind: str = Field("evaluate", description="evaluate, ablate or compare.")
    config: dict[str, Any] = Field(default_factory=dict)
    code_version: str = ""

    @property
    def experiment_id(self) -> str:
        blob = json.dumps({"name": self.name, "kind": self.kind, "config": _without_location(self.config),
                           "code": self.code_version}, sort_keys=True, default=str)
        return f"{slug(self.name)}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


class VariantParams(BaseModel):
    """The method knobs a result was produced with, stored as columns for ablation queries."""

    lam: float | None = None
    grad_mode: str | None = None
    k_frames: int | None = None
    max_steps: int | None = None
    early_stop: bool | None = None
    lr: float | None = None
    lora_rank: int | None = None
    n: int | None = None
    queries: str | None = Field(None, description="'teacher' (the Teacher's task-specific rules) or 'generic'.")
    tpo_rounds: int | None = Field(None, description="VideoTPO's rounds (None: videotpo did not run).")
    grpo_steps: int | None = Field(None, description="The grpo ablation's update budget (None: grpo did not run).")
    decoder: str | None = Field(None, description="What the per-item optimisers decode latents with: 'surrogate' or "
                                                  "'vae' (None: rows written before the knob, or no optimiser ran).")


def variant_columns() -> dict[str, str]:
    """Every ``VariantParams`` field as a DuckDB column type: the knob columns every results table has."""
    sql = {float: "DOUBLE", int: "BIGINT", bool: "BOOLEAN", str: "VARCHAR"}
    return {name: sql[next(a for a in typing.get_args(f.annotation) if a is not type(None))]
            for name, f in VariantParams.model_fields.items()}


def slug(text: str) -> str:
    """``text`` reduced to file-name characters: lossy (``a/b`` and ``a_b`` give one slug); see ``file_name``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def file_name(text: str) -> str:
    """``text`` (an item id, a variant, a method) as a file or folder name that no other text gets.

    The slug where it is ``text`` itself; else the slug and a short hash of the exact text
    (``a_b`` stays, ``a/b`` becomes ``a_b-<hash>``). Never hidden (a leading '.') and never
    holding ``__``, the separator of names made of several keys (``result_file_name``).
    """
    s = slug(text)
    if s == text and "__" not in s and not s.startswith("."):
        return s
    return f"{re.sub('_{2,}', '_', s).lstrip('.') or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def result_file_name(variant: str, instance_id: str, method: str) -> str:
    """The file of one (variant, item, method)'s rows in the results, traces and costs tables."""
    return f"{file_name(variant)}__{file_name(instance_id)}__{file_name(method)}.parquet"


def item_file_name(instance_id: str) -> str:
    """The file of one item's row in the items table."""
    return f"{file_name(instance_id)}.parquet"


def judgement_file_name(variant: str, instance_id: str, method: str, judge: str) -> str:
    """The file of one judged (variant, item, method)'s rows in the judgements table."""
    judge_tag = f"{file_name(Path(judge).name)}-{hashlib.sha256(judge.encode()).hexdigest()[:8]}"
    return f"{file_name(variant)}__{file_name(instance_id)}__{file_name(method)}__{judge_tag}.parquet"


def relative_path(path: str | Path | None, base: str | Path | None) -> str | None:
    """``path`` relative to ``base`` (the work dir) where it lies inside it, else as given."""
    if path is None or base is None:
        return None if path is None else str(path)
    path, base = Path(path), Path(base)
    for p, b in ((path, base), (path.absolute(), base.absolute()), (path.resolve(), base.resolve())):
        if p.is_relative_to(b):
            return p.relative_to(b).as_posix()
    return str(path)


def resolve_path(path: str | None, base: str | Path) -> str | None:
    """A path read from a row: relative ones lie in ``base`` (the work dir: the DuckDB file's folder).

    Rows written before paths were kept relative hold absolute paths, or paths relative to the
    directory the run was started in; those are returned as they are.
    """
    if not path or Path(path).is_absolute():
        return path
    inside = Path(base) / path
    return str(inside) if inside.exists() or not Path(path).exists() else path


def _write(df: pl.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return path


def write_experiment(root: str | Path, record: ExperimentRecord) -> Path:
    """Write (or overwrite) the experiment's row; returns the file."""
    row = {
        "experiment_id": record.experiment_id,
        "name": record.name,
        "kind": record.kind,
        "config_json": json.dumps(record.config, sort_keys=True, default=str),
        "code_version": record.code_version,
        "created_at": datetime.now(UTC).replace(tzinfo=None),
    }
    return _write(pl.DataFrame([row]), Path(root) / "experiments" / f"{record.experiment_id}.parquet")


def result_rows(result: ItemResult, experiment_id: str, variant: str, params: VariantParams,
                video_path: str | None = None, base: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """The rows of the items, results, traces and costs tables for one (item, method) outcome.

    With ``base`` (the work dir), paths inside it are written relative to it.
    """
    def rel(path: Any) -> str | None:
        return relative_path(path, base) if base is not None and path is not None else path

    key = {"experiment_id": experiment_id, "variant": variant, "instance_id": result.instance_id, "method": result.method}
    optim = result.info.get("optim") or {}
    p_yes = result.judge_p_yes
    results = {
        **key,
        "family": result.family, "split": result.split, "faculty": result.faculty, "seed": result.seed,
        "score": result.score, "success": result.success,
        "goal_score": result.goal, "process_score": result.process, "gate": result.gate, "gated_score": result.gated,
        "judge_all_yes": result.judge_all_yes, "judge_broken": result.judge_broken, "judge_fooled": result.judge_fooled,
        "judge_goal_p_yes": p_yes[0] if p_yes else None,
        "judge_min_p_yes": min(p_yes) if p_yes else None,
        "judge_p_yes_json": json.dumps(p_yes) if p_yes else None,
        "judge_truth_json": json.dumps(result.judge_truth) if result.judge_truth else None,
        # the held-out judge (NULL: none in the run): the same queries by a Teacher nothing optimised against
        "heldout_broken": result.heldout_broken if result.heldout_p_yes else None,
        "heldout_fooled": result.heldout_fooled if result.heldout_p_yes else None,
        "heldout_all_yes": result.heldout_all_yes,
        "heldout_p_yes_json": json.dumps(result.heldout_p_yes) if result.heldout_p_yes else None,
        "heldout_error": result.info.get("heldout_error"),  # the held-out judge failed here; the row stands
        "rules_source": result.rules_source,
        "steps_run": optim.get("steps_run"), "stop_reason": optim.get("stop_reason"),
        "initial_loss": optim.get("initial_loss"), "final_loss": optim.get("final_loss"),
        "selected": result.info.get("selected"),
        "error": result.error, "error_stage": result.error_stage, "video_path": rel(video_path),
        "gif_path": rel(result.info.get("gif")), "rules_path": rel(result.info.get("rules")),
        "criteria_json": json.dumps(result.criteria, sort_keys=True),
        "queries_json": json.dumps(result.info["queries"]) if result.info.get("queries") else None,
        **params.model_dump(),
    }
    traces = [
        {**key, "step": int(t["step"]), "loss": t.get("loss"), "p_yes_goal": (t.get("p_yes") or [None])[0],
         "p_yes_json": json.dumps(t.get("p_yes")), "grad_norm": t.get("grad_norm"), "seconds": t.get("seconds")}
        for t in optim.get("trace", [])
    ]
    counts = result.cost.counts
    costs = {
        **key,
        "total_seconds": result.cost.total_seconds, "reasoner_nfe": result.cost.reasoner_nfe,
        "reasoner_backward": counts.get("reasoner_backward", 0),
        "teacher_forward": counts.get("teacher_forward", 0), "teacher_backward": counts.get("teacher_backward", 0),
        "teacher_generate": counts.get("teacher_generate", 0), "peak_memory_mib": result.cost.peak_memory_mib,
        "seconds_json": json.dumps(result.cost.seconds, sort_keys=True),
    }
    item = {"experiment_id": experiment_id, "instance_id": result.instance_id, "family": result.family,
            "split": result.split, "faculty": result.faculty, "seed": result.seed,
            "prompt": result.info.get("prompt"), "first_frame": rel(result.info.get("first_frame"))}
    return {"items": [item], "results": [results], "traces": traces, "costs": [costs]}


_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "traces": {"experiment_id": pl.String, "variant": pl.String, "instance_id": pl.String, "method": pl.String,
               "step": pl.Int64, "loss": pl.Float64, "p_yes_goal": pl.Float64, "p_yes_json": pl.String,
               "grad_norm": pl.Float64, "seconds": pl.Float64},
    "judgements": {"experiment_id": pl.String, "variant": pl.String, "instance_id": pl.String, "method": pl.String,
                   "judge": pl.String, "task_name": pl.String, "category": pl.String, "question_index": pl.Int64,
                   "dimension": pl.String, "question": pl.String, "label": pl.String, "label_score": pl.Int64,
                   "attempts": pl.Int64, "error": pl.String},
}



def write_result(root: str | Path, result: ItemResult, experiment_id: str, variant: str = "default",
                 params: VariantParams | None = None, video_path: str | None = None,
                 base: str | Path | None = None) -> dict[str, Path]:
    """Write one (item, method) outcome's rows, one Parquet file per table; returns the files.

    The file names are the row keys (``result_file_name``), so writing the same outcome again
    replaces its rows. ``base``: the work dir, which the rows' paths are made relative to.
    """
    root = Path(root)
    rows = result_rows(result, experiment_id, variant, params or VariantParams(), video_path, base)
    name = result_file_name(variant, result.instance_id, result.method)
    written = {}
    for table, table_rows in rows.items():
        if table == "items":
            path = root / table / experiment_id / item_file_name(result.instance_id)
        else:
            path = root / table / experiment_id / name
        if not table_rows and table not in _SCHEMAS:
            continue
        df = pl.DataFrame(table_rows, schema=_SCHEMAS.get(table), infer_schema_length=None)
        written[table] = _write(df, path)
    return written


def judgement_rows(record: JudgeRecord, instance: TaskInstance, experiment_id: str, variant: str, method: str,
                   judge: str) -> list[dict[str, Any]]:
    """One row per checklist question of ``instance``: the judge's label, or NULL and the error when it gave none."""
    key = {"experiment_id": experiment_id, "variant": variant, "instance_id": instance.id, "method": method, "judge": judge,
           "task_name": instance.task_id, "category": instance.category}
    labels = [q.label for q in record.judgement.labels] if record.judgement else [None] * len(instance.checklist or [])
    return [{**key, "question_index": i, "dimension": item.dimension, "question": item.question, "label": label,
             "label_score": LABEL_SCORES.get(label) if label else None, "attempts": len(record.attempts),
             "error": record.error}
            for i, (item, label) in enumerate(zip(instance.checklist or [], labels, strict=True), start=1)]


def write_judgements(root: str | Path, record: JudgeRecord, instance: TaskInstance, experiment_id: str, variant: str,
                     method: str, judge: str) -> Path:
    """Write one judged (item, method)'s rows; a rejudge with the same judge replaces them."""
    name = judgement_file_name(variant, instance.id, method, judge)
    df = pl.DataFrame(judgement_rows(record, instance, experiment_id, variant, method, judge),
                      schema=_SCHEMAS["judgements"])
    return _write(df, Path(root) / "judgements" / experiment_id / name)


def _file_keys(folder: Path, columns: str) -> list[dict[str, Any]]:
    """``columns`` of every row of the finished Parquet files in ``folder``, with each row's ``file``."""
    import duckdb

    files = sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []
    if not files:
        return []
    with duckdb.connect() as con:
        rel = con.execute(f"SELECT DISTINCT filename AS file, {columns} FROM read_parquet(?, union_by_name = true, "
                          "filename = true)", [files])
        names = [d[0] for d in rel.description]
        return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]


def prune_results(root: str | Path, experiment_id: str, variant: str, keep: set[tuple[str, str]]) -> list[Path]:
    """Remove ``variant``'s rows of ``experiment_id`` that a finished run did not write again; returns the files removed.

    ``keep``: the (instance_id, method) pairs the run wrote. Everything else of the variant is
    stale: an item whose earlier failure to load was keyed otherwise, an item no longer in the
    benchmark, a file named the older, lossy way (before ``file_name``). Items rows go with the
    last results row of their item (other variants of the experiment keep theirs).
    """
    root = Path(root)
    removed: list[Path] = []

    def drop(*paths: Path) -> None:
        for path in paths:
            if path.is_file():
                path.unlink()
                removed.append(path)

    for row in _file_keys(root / "results" / experiment_id, "variant, instance_id, method"):
        file = Path(row["file"])
        if row["variant"] != variant:
            continue
        if (row["instance_id"], row["method"]) not in keep or file.name != result_file_name(variant, row["instance_id"],
                                                                                            row["method"]):
            drop(*(root / table / experiment_id / file.name for table in ("results", "traces", "costs")))
    kept_ids = {i for i, _ in keep}
    for row in _file_keys(root / "judgements" / experiment_id, "variant, instance_id, method, judge"):
        if row["variant"] == variant and (row["instance_id"] not in kept_ids or Path(row["file"]).name != judgement_file_name(
                variant, row["instance_id"], row["method"], row["judge"])):
            drop(Path(row["file"]))
    in_results = {row["instance_id"] for row in _file_keys(root / "results" / experiment_id, "instance_id")}
    for row in _file_keys(root / "items" / experiment_id, "instance_id"):
        if row["instance_id"] not in in_results or Path(row["file"]).name != item_file_name(row["instance_id"]):
            drop(Path(row["file"]))
    return removed
