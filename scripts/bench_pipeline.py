"""Benchmark (not a test): the pipeline's overhead and the cost of rerunning a finished experiment.

    .venv/bin/python scripts/bench_pipeline.py [--models models] [--per-family 1] [--methods vanilla,teacher]
                                               [--max-steps 10] [--threads 2] [--runner inline] [--no-mlflow]
                                               [--repeats 1]

Runs the same items and methods three ways and prints wall seconds:

1. core directly (``core.method.compare.compare``: no Prefect, no files, no MLflow, no DuckDB);
2. the evaluate flow from scratch (Prefect tasks, video/rules/adapter files, Parquet, DuckDB,
   MLflow), each time in a fresh work dir; the start of Prefect's ephemeral API server (when
   no ``PREFECT_API_URL`` is set) is timed on its own first, as a fixed cost per process that
   a deployment's worker, talking to a running server, does not pay;
3. the last flow again (every stage cached).

Core and flow alternate, core first and last (``--repeats R``: R flows between R + 1 core
runs), and the means are compared: identical runs on a small shared VM differ by up to ~15%
and drift, so one run on each side would bias the comparison.

Targets: (2) at most 10% slower than (1); (3) at most 20 s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="models")
    parser.add_argument("--per-family", type=int, default=1)
    parser.add_argument("--methods", default="vanilla,teacher")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--n", type=int, default=4, help="Candidates for best_of_n / pass_at_n.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-mlflow", action="store_true", help="Turn MLflow tracking off (to see its share).")
    parser.add_argument("--runner", default="inline", help="inline, thread[=N], process[=N], dask[=ADDRESS].")
    parser.add_argument("--repeats", type=int, default=1, help="Flow runs, alternating with core runs.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from core.bench.record import Purpose
    from core.bench.synth.generate import make_synth_benchmark
    from core.method.compare import compare
    from core.method.methods import Method, MethodConfig
    from core.method.optimise import OptimConfig
    from core.method.reasoner import ReasonerAdapter
    from core.models.teacher import load_teacher
    from flows.evaluate import EvaluateConfig, ModelPaths, run_evaluate
    from tasks import models as task_models

    models = Path(args.models)
    methods = [Method(m) for m in args.methods.split(",")]
    method_cfg = MethodConfig(optim=OptimConfig(max_steps=args.max_steps), n=args.n)
    with tempfile.TemporaryDirectory() as tmp:
        bench = make_synth_benchmark(Path(tmp) / "bench", args.per_family, seed=11, purpose=Purpose.TEST)

        def core_directly() -> float:
            t0 = time.perf_counter()
            reasoner = ReasonerAdapter.from_paths(models / "reasoner", models / "surrogate-decoder")
            teacher = load_teacher(models / "teacher")
            compare(reasoner, teacher, bench.instances, methods, method_cfg, n=args.n)
            return time.perf_counter() - t0

        def flow_config(k: int) -> EvaluateConfig:
            return EvaluateConfig(
                name="bench-pipeline", bench=str(Path(tmp) / "bench"), methods=methods, method=method_cfg,
                models=ModelPaths(reasoner=str(models / "reasoner"), surrogate=str(models / "surrogate-decoder"),
                                  teacher=str(models / "teacher")),
                work=str(Path(tmp) / f"work{k}"), mlflow_uri="" if args.no_mlflow else None)

        t0 = time.perf_counter()
        _noop_flow()  # starts the ephemeral API server if there is no PREFECT_API_URL
        server = time.perf_counter() - t0
        cores, flows = [core_directly()], []
        for k in range(args.repeats):
            task_models.forget()  # each flow loads its models, as each core run does
            t0 = time.perf_counter()
            run_evaluate(flow_config(k), args.runner)
            flows.append(time.perf_counter() - t0)
            cores.append(core_directly())
        t0 = time.perf_counter()
        run_evaluate(flow_config(args.repeats - 1), args.runner)
        rerun = time.perf_counter() - t0
    direct, pipeline = sum(cores) / len(cores), sum(flows) / len(flows)
    figures = {"runner": args.runner, "mlflow": not args.no_mlflow, "items": len(bench.instances),
               "methods": [m.value for m in methods], "max_steps": args.max_steps, "core_direct_s": round(direct, 1),
               "core_direct_runs_s": [round(x, 1) for x in cores], "pipeline_runs_s": [round(x, 1) for x in flows],
               "server_start_s": round(server, 1), "pipeline_s": round(pipeline, 1),
               "overhead_pct": round(100 * (pipeline - direct) / direct, 1),
               "overhead_with_server_start_pct": round(100 * (pipeline + server - direct) / direct, 1), "rerun_s": round(rerun, 1)}
    print(f"core directly          : {direct:7.1f} s  (mean of {', '.join(f'{x:.1f}' for x in cores)})")
    print(f"Prefect API server start: {server:7.1f} s  (ephemeral server, once per process)")
    print(f"evaluate flow          : {pipeline:7.1f} s  (mean of {', '.join(f'{x:.1f}' for x in flows)}; "
          f"{figures['overhead_pct']:+.1f}% vs core; target <= +10%; "
          f"{figures['overhead_with_server_start_pct']:+.1f}% with the server start)")
    print(f"rerun (all cached)     : {rerun:7.1f} s  (target <= 20 s)")
    print(json.dumps(figures))


def _noop_flow() -> None:
    from prefect import flow

    flow(name="bench-pipeline-warmup")(lambda: None)()


if __name__ == "__main__":
    main()
