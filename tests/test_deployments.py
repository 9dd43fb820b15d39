"""prefect.yaml against a real Prefect server: create the pool, deploy every deployment, run the
nightly evaluation through a process worker, and find its results in DuckDB."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import yaml

from core.bench.record import Purpose
from core.bench.synth.generate import make_synth_benchmark
from tests.method_helpers import build_micro_reasoner, build_micro_teacher

ROOT = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_LOGGING_LEVEL": "WARNING", "COLUMNS": "250"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"Prefect server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    yield env
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def run(cmd: list[str], env: dict, timeout: int = 300) -> str:
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_every_deployment_registers_and_the_nightly_evaluation_runs_through_a_worker(server, tmp_path):
    env = server
    declared = {d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert {"evaluate-nightly", "ablate-weekly"} <= declared
    run([*PREFECT, "work-pool", "create", "vlmt-process", "--type", "process"], env)
    run([*PREFECT, "--no-prompt", "deploy", "--all"], env)
    listed = run([*PREFECT, "deployment", "ls"], env)
    for name in declared:
        assert name in listed, listed

    bench = make_synth_benchmark(tmp_path / "bench", per_family=1, seed=3, purpose=Purpose.TEST,
                                 families=["maze_navigate"])
    reasoner, surrogate = build_micro_reasoner(bench, tmp_path)
    teacher = build_micro_teacher(bench, tmp_path)
    work = tmp_path / "work"
    config = {"name": "deployed", "bench": str(tmp_path / "bench"), "work": str(work), "methods": ["vanilla", "teacher"],
              "models": {"reasoner": str(reasoner), "surrogate": str(surrogate), "teacher": str(teacher)},
              "method": {"n": 2, "optim": {"max_steps": 2, "k_frames": 4, "sampler_steps": 2}}}
    run([*PREFECT, "deployment", "run", "evaluate/evaluate-nightly", "--params", json.dumps({"config": config})], env)
    run([*PREFECT, "worker", "start", "--pool", "vlmt-process", "--run-once"], env, timeout=600)

    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT method, error FROM results ORDER BY method").fetchall()
    assert [m for m, _ in rows] == ["teacher", "vanilla"]
    assert all(e is None for _, e in rows)
