"""Named SQL queries run on real outputs."""

from __future__ import annotations

from pathlib import Path

import duckdb
from typer.testing import CliRunner

from cli.main import app

SQL = Path(__file__).resolve().parents[1] / "sql"


def test_bench_by_family_query_on_score_details(tmp_path):
    runner = CliRunner()
    bench, details = tmp_path / "b", tmp_path / "details.json"
    assert runner.invoke(app, ["bench", "make", "synth", "--out", str(bench), "--per-family", "2"]).exit_code == 0
    r = runner.invoke(app, ["bench", "score", "--bench", str(bench), "--ground-truth", "--details", str(details)])
    assert r.exit_code == 0, r.output
    rows = duckdb.execute((SQL / "bench_by_family.sql").read_text(), {"details": str(details)}).fetchall()
    assert len(rows) == 7
    assert all(n == 2 and score == 1.0 and success == 1.0 and errors == 0 for _, _, n, score, success, errors in rows)
