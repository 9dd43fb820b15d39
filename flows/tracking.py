"""MLflow for the evaluate flow: open the store beside the stages, log the experiment at the end.

Its own module because tracking is a side channel beside the flow: the results are safe in
Parquet and DuckDB before ``track`` logs them, and ``mlflow_uri=''`` turns it off altogether.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from core.method.compare import ItemResult
from core.storage.results import ExperimentRecord
from core.storage.tracking import Tracker, default_tracking_uri

if TYPE_CHECKING:
    from flows.config import EvaluateConfig


def open_tracker(cfg: EvaluateConfig) -> Future[Tracker] | None:
    """Open the MLflow store in the background (None where tracking is off).

    Importing MLflow and creating its SQLite store take ~8 s on a small CPU; done beside the
    stages, that is off the critical path. ``track`` waits for it.
    """
    if cfg.mlflow_uri == "":
        return None
    work = Path(cfg.work)
    uri = cfg.mlflow_uri or default_tracking_uri(work)
    pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow-open")
    opened = pool.submit(Tracker, uri, cfg.name, work / "mlartifacts")
    pool.shutdown(wait=False)  # the one job still runs to its end
    return opened


def track(tracker: Tracker, cfg: EvaluateConfig, experiment: ExperimentRecord, results: list[ItemResult], summary: dict,
          failed: bool, judged: dict[str, dict] | None = None) -> dict:
    """Log the experiment to MLflow (after the results are safe in Parquet and DuckDB).

    ``judged`` (RULER-Bench runs with a judge): per method the judge's overall score and
    counts, logged on the parent run as ``<method>.ruler_overall_average`` etc.
    """
    parent = tracker.parent(experiment.experiment_id, cfg.model_dump(mode="json"))
    params = cfg.params().model_dump()
    for res in results:
        artifacts = {name: res.info.get(name) for name in ("video", "gif", "rules", "adapter")}
        tracker.log_result(parent, experiment.experiment_id, cfg.variant, res, params, artifacts)
    metrics = {m: {k: v for k, v in s.items() if k in ("mean_score", "success_rate", "mean_gated", "seconds_per_item",
                                                       "nfe_per_item", "judge_fooled_rate", "judge_fooled_vs_vanilla")
                   and v is not None}
               for m, s in summary.items()}
    for method, counts in (judged or {}).items():
        metrics.setdefault(method, {}).update({f"ruler_{k}": v for k, v in counts.items() if v is not None})
    tracker.finish_parent(parent, metrics, failed)
    return {"tracking_uri": tracker.tracking_uri, "parent_run_id": parent}
