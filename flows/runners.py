"""``--runner`` values -> Prefect task runners: where the evaluate flow's stages run.

Its own module because the CLI validates a ``--runner`` before it starts anything, and the
choice of engine (threads, processes, Dask, Ray) is independent of what the flow runs.
``flows.evaluate.run_evaluate`` runs the flow with the chosen one.
"""

from __future__ import annotations

from core.errors import InputError

#: ``--runner`` values; ``inline`` is not a task runner but the flow calling its tasks directly.
RUNNERS = "inline, thread[=N], process[=N], dask[=ADDRESS] or ray[=ADDRESS]"
#: ``dask`` without an address: a local cluster whose scheduler, workers and dashboard listen on
#: 127.0.0.1 only (the dashboard on a free port, which Prefect logs). A cluster others may reach
#: is one the user starts and passes as ``dask=ADDRESS``.
LOCAL_DASK_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                      "dashboard_address": "127.0.0.1:0"}


def task_runner(spec: str = "thread"):
    """A ``--runner`` value (one of ``RUNNERS``) -> a Prefect task runner, or None for ``inline``.

    Scale-out goes through these engines: ``dask`` without an address starts a local cluster
    (2 workers, reachable from this machine only: ``LOCAL_DASK_CLUSTER``); with one it joins an
    existing cluster (one worker per GPU, see the README).
    Every worker must reach the models, the work dir and the MLflow store.
    """
    kind, _, address = spec.partition("=")
    if spec == "inline":
        return None
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=int(address) if address else None)
    if kind == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=int(address) if address else None)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs=dict(LOCAL_DASK_CLUSTER))
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise InputError("--runner ray", "needs the prefect-ray package", "pip install prefect-ray") from exc
        return RayTaskRunner(address=address) if address else RayTaskRunner()
    raise InputError("--runner", f"{spec!r} is not a task runner", RUNNERS)
