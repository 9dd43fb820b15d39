"""The Prefect layer runs the same core code (ephemeral Prefect API, no server needed)."""

from __future__ import annotations

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
