"""Kill-and-resume: SIGKILL `vlmt evaluate` mid-run, rerun the same command, and get exactly the
uninterrupted run's results, with the stages that had finished reused (not recomputed) and
no duplicated result rows or MLflow runs — even under another Prefect home, because the
cache records live in the work directory."""

from __future__ import annotations

import os
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
from tests.method_helpers import build_micro_reasoner, build_micro_teacher

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    bench = make_synth_benchmark(root / "bench", per_family=1, seed=4, purpose=Purpose.TEST,
                                 families=["maze_navigate", "gravity_fall", "color_match"])
    reasoner, surrogate = build_micro_reasoner(bench, root)
    teacher = build_micro_teacher(bench, root)
    paths = {}
    for name in ("straight", "killed"):
        cfg = {"name": "resume", "bench": str(root / "bench"), "work": str(root / name), "methods": ["vanilla", "teacher"],
               "models": {"reasoner": str(reasoner), "surrogate": str(surrogate), "teacher": str(teacher)},
               "method": {"n": 2, "optim": {"max_steps": 6, "early_stop": False, "k_frames": 4, "sampler_steps": 2}}}
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(cfg))
    return root, paths


def _env(root: Path, home: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_HOME": str(root / home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING", "COLUMNS": "200"}


def _evaluate(root: Path, config: Path, home: str = "prefect-home", **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "evaluate", "--config", str(config), "--threads", "1"],
                            cwd=ROOT, env=_env(root, home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def _finished(work: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(work)): p.stat().st_mtime_ns for p in (work / "items").glob("*/*/record.json")}


def _rows(work: Path) -> list[tuple]:
    with duckdb.connect(str(work / "vlmt.duckdb"), read_only=True) as con:
        return con.execute("SELECT instance_id, method, score, success, final_loss, steps_run, error "
                           "FROM results ORDER BY 1, 2").fetchall()


def test_sigkill_then_rerun_recomputes_only_what_was_unfinished(configs):
    root, paths = configs
    straight = _evaluate(root, paths["straight"])
    out, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, out[-3000:]

    work = root / "killed"
    proc = _evaluate(root, paths["killed"])
    deadline = time.time() + 300
    while not any("optimise-" in k for k in _finished(work)):  # kill once an optimisation has finished
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no stage finished in time"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its flow and its ephemeral Prefect server
    proc.wait(timeout=30)
    before = _finished(work)
    assert not (work / "vlmt.duckdb").exists() or len(_rows(work)) < 6, "the kill came too late to test anything"

    # Another Prefect home (a fresh machine, a wiped ~/.prefect): the work dir alone must resume.
    rerun = _evaluate(root, paths["killed"], home="another-prefect-home")
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:]
    after = _finished(work)
    assert all(after[k] == before[k] for k in before), "a stage that had finished was recomputed"
    assert len(after) > len(before)
    assert _rows(work) == _rows(root / "straight")  # identical to the uninterrupted run, no duplicates

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("resume")
    assert len(client.search_runs([exp.experiment_id])) == 1 + 3 * 2
