"""The ``vlmt bench`` commands, run through typer's test runner."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_make_and_score_ground_truth_json(tmp_path):
    out = tmp_path / "bench"
    r = runner.invoke(app, ["bench", "make", "synth", "--out", str(out), "--per-family", "1", "--seed", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["bench", "score", "--bench", str(out), "--ground-truth", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["overall"]["mean_score"] == 1.0 and summary["overall"]["n"] == 7
    assert set(summary["by_split"]) == {"ID", "OOD"} and len(summary["by_faculty"]) == 5


def test_score_model_videos_and_report_missing_ones(tmp_path):
    out = tmp_path / "bench"
    runner.invoke(app, ["bench", "make", "synth", "--out", str(out), "--per-family", "1", "--split", "OOD"])
    videos = tmp_path / "videos"
    for gt in sorted(out.glob("*/*/*/ground_truth.mp4"))[:1]:
        split, task, index = gt.parts[-4:-1]
        (videos / split / task).mkdir(parents=True)
        shutil.copy(gt, videos / split / task / f"{index}.mp4")
    r = runner.invoke(app, ["bench", "score", "--bench", str(out), "--videos", str(videos), "--json"])
    assert r.exit_code == 1
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["overall"]["n"] == 2 and summary["overall"]["n_errors"] == 1
    assert summary["overall"]["mean_score"] == 0.5
    assert "not found" in r.output


def test_bad_input_is_one_clear_line(tmp_path):
    r = runner.invoke(app, ["bench", "score", "--bench", str(tmp_path / "nope"), "--ground-truth"])
    assert r.exit_code == 2 and "benchmark path not found" in r.output
    r = runner.invoke(app, ["bench", "make", "synth", "--out", str(tmp_path / "x"), "--width", "63"])
    assert r.exit_code == 2 and "even" in r.output
    r = runner.invoke(app, ["bench", "make", "synth", "--out", str(tmp_path / "y"), "--family", "nope"])
    assert r.exit_code == 2 and "unknown synth family" in r.output


def test_official_vbvr_layout_needs_the_official_toolkit(tmp_path):
    """A non-synth VBVR directory is never scored by our synth scorers."""
    out = tmp_path / "bench"
    runner.invoke(app, ["bench", "make", "synth", "--out", str(out), "--per-family", "1", "--family", "maze_navigate"])
    for meta in out.glob("*/*/*/meta.json"):
        meta.unlink()  # now it is an official-layout directory without our metadata
    (out / "VBVR-Bench.json").unlink()
    r = runner.invoke(app, ["bench", "score", "--bench", str(out), "--videos", str(tmp_path / "v")])
    assert r.exit_code == 2 and "vbvr_bench" in r.output


def test_the_cli_gives_prefects_ephemeral_server_time_to_start_unless_told_otherwise():
    """Prefect's 20 s default was missed beside another job (a crash before any work); a user's setting wins."""
    import os
    import subprocess
    import sys

    probe = ("import cli.main\nfrom prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s\n"
             "print(s.value())")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}

    def timeout(**extra: str) -> str:
        return subprocess.run([sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True,
                              check=True).stdout.split()[-1]

    assert timeout() == "120"
    assert timeout(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="45") == "45"
