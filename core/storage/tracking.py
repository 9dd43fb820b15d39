"""MLflow tracking: a parent run per experiment, a child run per (item, method).

Runs are found again by a tag holding their key (experiment id, variant, item, method), so a
resumed or repeated experiment logs into the runs it already has instead of adding
duplicates: a finished child run is left as it is (its stages were cached, its results are
the same), an unfinished one (the process died while logging) is replaced. Logging happens
in the flow after the stages, never inside cached tasks (a cached task does not run its
body, so it could not log on resume).

The explicit ``MlflowClient`` API is used throughout: it is thread-safe and needs no
"active run", which is thread-local in MLflow's fluent API.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from core.method.compare import ItemResult

log = logging.getLogger(__name__)

KEY_TAG = "vlmt.key"
EXPERIMENT_TAG = "vlmt.experiment_id"


def default_tracking_uri(work: str | Path) -> str:
    """SQLite in the run's working directory (``runs/mlflow.db`` by default)."""
    return f"sqlite:///{Path(work).resolve() / 'mlflow.db'}"


def create_sqlite_store(tracking_uri: str, artifact_root: str | Path | None = None) -> None:
    """Create a missing SQLite store beside its final path, then move it into place.

    Creating MLflow's schema takes seconds (dozens of migrations); a run killed meanwhile
    would leave a half-migrated ``mlflow.db`` that every later run fails to open. Built
    aside and renamed, the store is either absent or complete.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return
    path = Path(tracking_uri[len(prefix):])
    if path.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    store = SqlAlchemyStore(f"{prefix}{partial}", _location(artifact_root) or str(path.parent / "mlartifacts"))
    store.engine.dispose()
    try:  # no-clobber: a store another process put in place meanwhile is kept, never replaced
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink(missing_ok=True)


def _location(artifact_root: str | Path | None) -> str | None:
    return Path(artifact_root).resolve().as_uri() if artifact_root else None


class Tracker:
    """Logs an experiment's results to one MLflow experiment (named after the vlmt experiment name)."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_root: str | Path | None = None) -> None:
        from mlflow.tracking import MlflowClient

        create_sqlite_store(tracking_uri, artifact_root)
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment_name)
        if found is not None:
            self.mlflow_experiment_id = found.experiment_id
        else:
            self.mlflow_experiment_id = self.client.create_experiment(experiment_name,
                                                                      artifact_location=_location(artifact_root))

    def _find(self, key: str):
        runs = self.client.search_runs([self.mlflow_experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                       max_results=10)
        return runs

    def parent(self, experiment_id: str, config: dict[str, Any]) -> str:
        """The experiment's parent run (created once, reused on every rerun)."""
        key = f"{experiment_id}"
        runs = self._find(key)
        if runs:
            return runs[0].info.run_id
        from mlflow.entities import Param

        run = self.client.create_run(self.mlflow_experiment_id, run_name=experiment_id,
                                     tags={KEY_TAG: key, EXPERIMENT_TAG: experiment_id})
        flat = _flatten(config)
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:500]) for k, v in sorted(flat.items())])
        return run.info.run_id

    def finish_parent(self, run_id: str, summary: dict[str, dict], failed: bool) -> None:
        """Log the experiment's summary metrics on its parent run and close it.

        A rerun logs only the metrics whose value changed (at step 0, so the newest point is the
        current value): an unchanged rerun leaves one point per metric, not one per run.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        logged = self.client.get_run(run_id).data.metrics
        metrics = [Metric(key, value, now, 0) for method, s in summary.items() for name, raw in s.items()
                   if isinstance(raw, int | float) and math.isfinite(raw)
                   for key, value in [(f"{method}.{name}", float(raw))] if logged.get(key) != value]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def log_result(self, parent_run_id: str, experiment_id: str, variant: str, result: ItemResult,
                   params: dict[str, Any], artifacts: dict[str, str | None]) -> str:
        """The (item, method) child run: params, metrics, the optimisation curve, artifacts."""
        from mlflow.entities import Metric, Param

        key = f"{experiment_id}/{variant}/{result.instance_id}/{result.method}"
        for run in self._find(key):
            if run.info.status == "FINISHED":
                return run.info.run_id
            self.client.delete_run(run.info.run_id)  # died while logging: log it again
        run = self.client.create_run(
            self.mlflow_experiment_id, run_name=f"{result.method} {result.instance_id}",
            tags={KEY_TAG: key, EXPERIMENT_TAG: experiment_id, "mlflow.parentRunId": parent_run_id,
                  "method": result.method, "family": result.family, "split": result.split or "",
                  "variant": variant, **({"error_stage": result.error_stage} if result.error_stage else {}),
                  **({"oracle": "true"} if result.info.get("oracle") else {})},  # it read the answer key
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        p = {"method": result.method, "instance_id": result.instance_id, "seed": result.seed, "variant": variant,
             **{k: v for k, v in params.items() if v is not None}}
        metrics = {"score": result.score, "success": result.success, "goal_score": result.goal,
                   "process_score": result.process, "gate": result.gate, "gated_score": result.gated,
                   "judge_all_yes": float(result.judge_all_yes), "judge_broken": result.judge_broken,
                   "judge_fooled": result.judge_fooled, "seconds": result.cost.total_seconds,
                   "reasoner_nfe": float(result.cost.reasoner_nfe)}
        if result.heldout_p_yes:
            metrics |= {"heldout_broken": result.heldout_broken, "heldout_fooled": result.heldout_fooled}
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}  # unscored benchmarks log no score
        for i, p_yes in enumerate(result.judge_p_yes):
            metrics[f"judge_p_yes_{i}"] = p_yes
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        trace = (result.info.get("optim") or {}).get("trace", [])
        for t in trace:
            batch.append(Metric("optim_loss", float(t["loss"]), now, int(t["step"])))
            for i, p_yes in enumerate(t.get("p_yes") or []):
                batch.append(Metric(f"optim_p_yes_{i}", float(p_yes), now, int(t["step"])))
        self.client.log_batch(run_id, metrics=batch, params=[Param(k, str(v)[:500]) for k, v in sorted(p.items())])
        if result.error:
            self.client.set_tag(run_id, "error", result.error[:5000])
        for name, path in artifacts.items():
            if path and Path(path).exists():
                if Path(path).is_dir():
                    self.client.log_artifacts(run_id, path, artifact_path=name)
                else:
                    self.client.log_artifact(run_id, path)
        self.client.set_terminated(run_id, status="FAILED" if result.error else "FINISHED")
        return run_id


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list) and obj and isinstance(obj[0], dict | list):
        return {prefix.rstrip("."): json.dumps(obj)}
    return {prefix.rstrip("."): obj}
