"""The Prefect layer runs the same core code (ephemeral Prefect API, no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_synth_sanity_flow_scores_ground_truth_perfectly(prefect_harness, tmp_path):
    from flows.bench import synth_sanity

    summary = synth_sanity(out=str(tmp_path / "bench"), per_family=1, seed=4)
    assert summary["overall"]["n"] == 7
    assert summary["overall"]["mean_score"] == pytest.approx(1.0)
    assert summary["overall"]["success_rate"] == 1.0


def test_task_bodies_call_core(tmp_path):
    from tasks.bench import generate_synth_benchmark, score_benchmark_videos

    bench_dir = generate_synth_benchmark.fn(str(tmp_path / "b"), 1, 0, "OOD", "test")
    summary = score_benchmark_videos.fn(bench_dir)
    assert set(summary["by_split"]) == {"OOD"} and summary["overall"]["mean_score"] == pytest.approx(1.0)


def test_core_never_imports_prefect():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "core"
    offenders = [p for p in root.rglob("*.py") if re.search(r"^\s*(import|from)\s+prefect\b", p.read_text(), re.MULTILINE)]
    assert not offenders


def test_a_stage_folders_identity_is_its_weights_not_its_wall_time(tmp_path):
    from tasks.caching import build_into, dir_digest

    def build(tmp):
        (tmp / "weights.bin").write_bytes(b"\x01\x02")

    first = build_into(tmp_path / "a", "k", build)
    second = build_into(tmp_path / "b", "k", build)
    (tmp_path / "b" / "stage.json").write_text('{"key": "k", "seconds": 999.0}')  # trained at another speed
    assert (tmp_path / "a" / "stage.json").exists() and first["path"] != second["path"]
    assert dir_digest(first["path"]) == dir_digest(second["path"])
    (tmp_path / "b" / "weights.bin").write_bytes(b"\x01\x03")
    assert dir_digest(first["path"]) != dir_digest(second["path"])


def test_a_models_identity_is_its_weights_and_configs_not_its_card(tmp_path):
    """Editing a model card (README.md) keeps every cached stage that used the model; any other file moves it."""
    from tasks.models import model_identity

    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    (folder / "README.md").write_text("# card\naccuracy 0.70\n")
    memo = tmp_path / "model-ids.json"
    first = model_identity(folder, memo)
    (folder / "README.md").write_text("# card\naccuracy 0.70\n\n| criterion | accuracy |\n")
    assert model_identity(folder, memo) == model_identity(folder) == first
    (folder / "README.md").unlink()
    assert model_identity(folder, memo) == first
    # a Reasoner's recommended learning rate reaches the keys through the resolved config, not the identity
    (folder / "optim_defaults.json").write_text('{"lr": 0.02}')
    assert model_identity(folder, memo) == model_identity(folder) == first
    (folder / "optim_defaults.json").unlink()
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    assert model_identity(folder, memo) != first
    (folder / "chat_template.jinja").unlink()
    (folder / "config.json").write_text('{"hidden_size": 16}')
    assert model_identity(folder, memo) != first


MODELS = Path(__file__).resolve().parents[1] / "models"


class _Planted:
    """What a pickled cache record can do when Prefect loads it: here, touch a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_stage_caches_are_json_and_a_planted_pickle_is_never_loaded_while_the_resume_reuses_every_stage(
        prefect_harness, tmp_path, monkeypatch):
    """Resuming a shared work dir must not run code left in its cache (``tasks.caching.given_key``)."""
    from prefect.results import ResultRecord
    from prefect.serializers import PickleSerializer

    from core.bench.record import Purpose
    from core.bench.synth.generate import make_synth_benchmark
    from core.method.methods import Method, MethodConfig
    from core.method.optimise import OptimConfig
    from flows.evaluate import EvaluateConfig, ModelPaths, evaluate
    from tasks import stages
    from tasks.caching import RESULTS_DIR, UnsafeCacheRecord, check_json_record

    make_synth_benchmark(tmp_path / "bench", per_family=1, seed=7, purpose=Purpose.TEST,
                         families=["maze_navigate", "gravity_fall"])
    work = tmp_path / "work"
    cfg = EvaluateConfig(name="json-cache", bench=str(tmp_path / "bench"), work=str(work), mlflow_uri="",
                         methods=[Method.VANILLA, Method.STILL],
                         models=ModelPaths(reasoner=str(MODELS / "reasoner"), surrogate=str(MODELS / "surrogate-decoder"),
                                           teacher=str(MODELS / "teacher")),
                         method=MethodConfig(optim=OptimConfig(sampler_steps=2)))
    first = evaluate(config=cfg, inline=True)
    records = sorted((work / RESULTS_DIR).iterdir())
    # per item: the vanilla video, the still video and their two scores
    assert sorted({next(t for t in ("generate-video-", "score-video-", "still-video-") if p.name.startswith(t))
                   for p in records}) == ["generate-video-", "score-video-", "still-video-"]
    assert len(records) == 2 * 4
    for path in records:
        record = json.loads(check_json_record(path.read_bytes(), str(path)))
        assert record["metadata"]["serializer"]["type"] == "json"
        assert isinstance(json.loads(record["result"]), dict)  # a plain record of paths and numbers
    finished = {p: p.stat().st_mtime_ns for p in (work / "items").glob("*/*/record.json")}
    assert len(finished) == 2 * 4

    # someone with write access to the work dir swaps a cache record for a pickle
    marker = tmp_path / "pickle-ran"
    planted = next(p for p in records if p.name.startswith("score-video-"))
    record = json.loads(planted.read_text())
    record["metadata"]["serializer"] = PickleSerializer().model_dump(mode="json")
    record["result"] = PickleSerializer().dumps(_Planted(marker)).decode()
    planted.write_text(json.dumps(record))
    ResultRecord.deserialize(planted.read_bytes())  # Prefect itself would run it...
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeCacheRecord, match="serializer"):  # ...the stage storage refuses it
        check_json_record(planted.read_bytes())

    bodies = []  # a stage body that runs answers from its record.json (tasks.stages.resumable)

    class Spy:
        def __getattr__(self, name):
            return getattr(json, name)

        def loads(self, text, *args, **kwargs):
            bodies.append(text)
            return json.loads(text, *args, **kwargs)

    monkeypatch.setattr(stages, "json", Spy())
    # inline, a finished stage is its record.json, read without a task run: no cache record is opened at all
    assert evaluate(config=cfg, inline=True)["summary"] == first["summary"]
    assert not marker.exists() and len(bodies) == len(finished)
    bodies.clear()
    again = evaluate(config=cfg)  # through the task runner, which reads Prefect's cache records
    assert not marker.exists()
    assert len(bodies) == 1  # only the refused record's stage ran (from its record.json); the rest were cache hits
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # nothing recomputed
    check_json_record(planted.read_bytes())  # rewritten as JSON
    assert again["summary"] == first["summary"]


@pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs")  # tasks called outside a flow
def test_a_stage_retries_a_transient_fault_but_not_bad_input(prefect_harness, tmp_path):
    import torch
    from prefect import task

    from core.errors import InputError, VlmtError
    from tasks import stages
    from tasks.caching import is_transient, transient_only

    calls: list[str] = []

    @task(name="flaky-stage", **{**stages._cached, "retry_delay_seconds": 0})
    def flaky(error: str, key: str) -> dict:
        calls.append(error)
        if len(calls) == 1 or error == "bad input":
            raise {"bad input": InputError("items/x.json", "is not JSON"), "lost worker": ConnectionResetError("peer"),
                   "cuda": torch.OutOfMemoryError("CUDA out of memory")}[error]
        return {"ok": True}

    def run(error: str):
        calls.clear()
        stage = flaky.with_options(refresh_cache=True, result_storage=tmp_path)
        return stage(error, key=error, return_state=True), list(calls)

    state, ran = run("bad input")
    assert state.is_failed() and ran == ["bad input"]  # not retried: it would fail the same way
    for transient in ("lost worker", "cuda"):
        state, ran = run(transient)
        assert state.is_completed() and state.result() == {"ok": True} and ran == [transient] * 2

    assert not is_transient(VlmtError("corrupt")) and not is_transient(json.JSONDecodeError("x", "doc", 0))
    assert not is_transient(FileNotFoundError("gone")) and not is_transient(KeyError("k"))
    assert is_transient(OSError("I/O error")) and is_transient(RuntimeError("CUDA error: device-side assert"))
    stage_tasks = [t for t in vars(stages).values() if hasattr(t, "retry_condition_fn") and hasattr(t, "fn")]
    assert len(stage_tasks) == 11  # every stage task in tasks.stages, the oracle reward's optimiser and the held-out judge included
    assert all(t.retry_condition_fn is transient_only and t.retries == 1 and t.result_serializer == "json"
               for t in stage_tasks)


def test_a_local_dask_cluster_listens_on_localhost_only():
    """`--runner dask` without an address: scheduler, workers and dashboard on 127.0.0.1, not 0.0.0.0."""
    from distributed import LocalCluster

    from flows.evaluate import LOCAL_DASK_CLUSTER, task_runner

    kwargs = task_runner("dask").cluster_kwargs
    assert kwargs == LOCAL_DASK_CLUSTER
    assert kwargs["host"] == "127.0.0.1" and kwargs["dashboard_address"].startswith("127.0.0.1:")
    with LocalCluster(**{**kwargs, "n_workers": 1}) as cluster:  # started briefly: where does it listen?
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        cluster.wait_for_workers(1, timeout=60)
        workers = list(cluster.scheduler_info["workers"])
        assert len(workers) == 1 and workers[0].startswith("tcp://127.0.0.1:")
        if cluster.dashboard_link:  # only with bokeh installed
            assert "127.0.0.1" in cluster.dashboard_link or "localhost" in cluster.dashboard_link


def test_only_plain_json_cache_records_are_left_for_prefect_to_load(tmp_path):
    import pickle

    from prefect.serializers import JSONSerializer

    from tasks.caching import UnsafeCacheRecord, check_json_record, discard_unsafe_record

    def record(result: object = None, **serializer) -> bytes:
        meta = {"storage_key": "k", "expiration": None, "prefect_version": "3", "storage_block_id": None,
                "serializer": {**JSONSerializer().model_dump(mode="json"), **serializer}}
        return json.dumps({"metadata": meta, "result": json.dumps(result or {"path": "items/a/video-1", "seconds": 1.5})}).encode()

    check_json_record(record())
    refused = {
        "a pickle": pickle.dumps({"path": "x"}),
        "another json library": record(jsonlib="pickle"),  # Prefect imports and calls whatever these name
        "another decoder hook": record(object_decoder="os.system"),
        "an encoded object": record({"path": {"__class__": "pathlib.PosixPath", "data": "/x"}}),
        "a legacy result blob": json.dumps({"serializer": {"type": "pickle"}, "data": "gAR9lC4="}).encode(),
    }
    for what, content in refused.items():
        with pytest.raises(UnsafeCacheRecord):
            check_json_record(content, what)
        (tmp_path / "r").write_bytes(content)
        assert discard_unsafe_record(tmp_path / "r") and not (tmp_path / "r").exists(), what
    (tmp_path / "r").write_bytes(record())
    assert not discard_unsafe_record(tmp_path / "r") and (tmp_path / "r").exists()
    assert not discard_unsafe_record(tmp_path / "missing")
