"""One run per work directory: a second `vlmt evaluate` on a busy work dir is refused in one line
(exit 2, naming the holder's pid) and leaves the first run's results and MLflow runs intact; the
flow refuses too (deployment runs start there); a killed holder (SIGKILL) leaves no stale lock."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from core.bench.record import Purpose
from core.bench.synth.generate import make_synth_benchmark
from core.storage.lock import LOCK_FILE, WorkDirBusy, holder, work_dir_lock

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def _hold(work: Path) -> subprocess.Popen:
    """Another process holding ``work``'s lock until killed (returns once it holds it)."""
    code = ("import sys, time; from core.storage.lock import acquire; "
            f"acquire({str(work)!r}, 'a test holder'); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_busy_work_dir_names_its_holder_and_a_killed_holder_frees_it(tmp_path):
    work = tmp_path / "work"
    proc = _hold(work)
    try:
        busy = rf"work dir {re.escape(str(work))} is in use by pid {proc.pid} since \S+Z \(a test holder\)"
        with pytest.raises(WorkDirBusy, match=busy):
            with work_dir_lock(work):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the lock
        proc.wait(timeout=30)
    with work_dir_lock(work, "second") as root:
        assert root == work.resolve() and holder(work)["pid"] == os.getpid()
        with work_dir_lock(str(work)):  # re-entrant in one process: the CLI holds it, then its flow takes it
            assert holder(work)["command"] == "second"
        assert holder(work)["pid"] == os.getpid()  # still held after the inner release
    assert holder(work) == {} and (work / LOCK_FILE).is_file()  # released; the file stays (see core.storage.lock)
    proc = _hold(work)  # and another process can take it again
    proc.kill()
    proc.wait(timeout=30)


def test_the_evaluate_flow_refuses_a_busy_work_dir_before_touching_it(prefect_harness, tmp_path):
    from core.method.methods import Method, MethodConfig
    from core.method.optimise import OptimConfig
    from flows.evaluate import EvaluateConfig, evaluate

    work = tmp_path / "work"
    cfg = EvaluateConfig(work=str(work), methods=[Method.VANILLA], mlflow_uri="",
                         method=MethodConfig(optim=OptimConfig(lr=0.01)))
    proc = _hold(work)
    try:
        with pytest.raises(WorkDirBusy, match=f"in use by pid {proc.pid}"):
            evaluate(config=cfg)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert [p.name for p in work.iterdir()] == [LOCK_FILE]  # no benchmark, no results, no model ids


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrency")
    make_synth_benchmark(root / "bench", per_family=1, seed=5, purpose=Purpose.TEST, families=["maze_navigate", "gravity_fall"])
    cfg = {"name": "busy", "bench": str(root / "bench"), "work": str(root / "work"), "methods": ["vanilla", "still"],
           "models": {"reasoner": str(MODELS / "reasoner"), "surrogate": str(MODELS / "surrogate-decoder"),
                      "teacher": str(MODELS / "teacher")},
           "method": {"optim": {"sampler_steps": 2}}}
    path = root / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path


def _evaluate(root: Path, config: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "cli.main", "evaluate", "--config", str(config), "--threads", "1",
                             "--no-report"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_vlmt_evaluate_on_a_busy_work_dir_is_refused_in_one_line_and_the_first_is_intact(two_runs):
    root, config = two_runs
    work = root / "work"
    first = _evaluate(root, config)
    deadline = time.time() + 300
    while holder(work).get("pid") != first.pid:  # the first run holds the work dir
        assert first.poll() is None, f"the first run ended early:\n{first.communicate()[1][-3000:]}"
        assert time.time() < deadline, "the first run never took the work dir"
        time.sleep(0.1)

    second = _evaluate(root, config)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 2, out + err
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith(f"error: work dir {work.resolve()} is in use by pid {first.pid} since "), lines[0]
    assert "vlmt evaluate" in lines[0] and "Traceback" not in err, err[-3000:]

    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, (out + err)[-3000:]
    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT instance_id, method, error FROM results ORDER BY 1, 2").fetchall()
    assert len(rows) == 4 and all(error is None for *_, error in rows)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("busy").experiment_id])
    assert len(runs) == 1 + 4 and all(r.info.status == "FINISHED" for r in runs)
    assert holder(work) == {}  # the first run let go of the work dir
