"""What the CLI prints: a quiet demo whose hints run as printed, tables that fit, ``vlmt sql`` that finds
the run's database and takes experiment names, and help that shows defaults (issue 29, points 2-4).

Every test but the first is fast. The first runs the real demo once (2-3 minutes on a 2-core CPU),
with its output to a pipe as ``make demo | less`` or a CI log sees it, and checks everything it can
on that one output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from io import StringIO
from pathlib import Path

import duckdb
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
runner = CliRunner()


def _vlmt() -> list[str]:
    """The installed console script, or ``python -m cli.main`` where there is none."""
    script = BIN / "vlmt"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli.main"]


def _path_without_the_venv() -> str:
    """PATH as a shell that has not activated the virtualenv has it."""
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != BIN.resolve())


# --------------------------------------------------------------------------- the piped demo (the one slow test)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`vlmt evaluate --name demo --bench synth --per-family 1 --work <tmp>` from the repository root, the
    shipped models, stdout and stderr into one pipe, no virtualenv on PATH, no COLUMNS: the output as
    a log or `| less` sees it."""
    tmp = tmp_path_factory.mktemp("demo")
    work = tmp / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "VIRTUAL_ENV")}
    env |= {"PATH": _path_without_the_venv(), "PREFECT_HOME": str(tmp / "prefect-home")}
    for key in ("PREFECT_LOGGING_LEVEL", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK"):
        env.pop(key, None)  # the CLI's own defaults, not the test runner's
    t0 = time.perf_counter()
    r = subprocess.run([*_vlmt(), "evaluate", "--name", "demo", "--bench", "synth", "--per-family", "1", "--work", str(work)],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    return r.returncode, r.stdout, work, env, time.perf_counter() - t0


def test_the_piped_demo_is_short_quiet_and_its_hints_run_as_printed(demo):
    status, out, work, env, seconds = demo
    lines = out.splitlines()
    assert status == 0, out
    # two tables and the hints; a third (paired strict success) when some method's successes differ from vanilla's
    assert len(lines) < 50, f"{len(lines)} lines:\n{out}"
    for noise in ("Finished in state", "Beginning flow run", "temporary server", "Traceback", "telemetry", "INFO",
                  "Warning", "Loading weights", "Loading pipeline components", "it/s]", "MLflow database tables",
                  "is deprecated", "requires torchvision"):
        assert noise not in out, f"{noise!r} in the demo's output:\n{out}"
    assert "against vanilla" in out and "judge" in out and "fooled" in out  # both tables came through
    assert not [line for line in lines if len(line) > 80 and "│" in line], out  # tables fit the pipe's 80 columns

    db = work / "vlmt.duckdb"
    vlmt = shlex.join(_vlmt()) if not (BIN / "vlmt").is_file() else str((BIN / "vlmt").relative_to(ROOT)) \
        if BIN.is_relative_to(ROOT) else str(BIN / "vlmt")
    sql_hints = [line.strip().split("    (")[0] for line in lines if line.strip().startswith(f"{vlmt} sql ")]
    assert len(sql_hints) == 4, (vlmt, out)
    assert all(f"--db {db} " in hint and "--param experiment=demo-" in hint for hint in sql_hints), sql_hints
    # a printed query runs as printed, from the repository root, without the virtualenv on PATH
    r = subprocess.run(sql_hints[-1], shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "vanilla" not in r.stdout.split("┃")[0], r.stdout + r.stderr
    assert re.search(r"│ (teacher|pe|best_of_n)\s+│", r.stdout), r.stdout

    (mlflow,) = [line for line in lines if line.startswith("MLflow: ")]
    program, ui, flag, uri = shlex.split(mlflow.removeprefix("MLflow: "))
    assert (ui, flag, uri) == ("ui", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}")
    assert (ROOT / program).is_file() or program == "mlflow", mlflow
    assert (work / "mlflow.db").is_file()

    (page,) = [line.split(": ", 1)[1] for line in lines if line.startswith("report (videos side by side")]
    assert Path(page).is_file() and Path(page).is_relative_to(work)
    (rebuild,) = [line.strip().removeprefix("rebuild: ") for line in lines if line.strip().startswith("rebuild: ")]
    assert rebuild == f"{vlmt} report --experiment demo --db {db}"
    print(f"the piped demo: {len(lines)} lines in {seconds:.0f} s")


# --------------------------------------------------------------------------- quiet and offline by default


def test_offline_defaults_are_set_before_prefect_reads_them_and_a_users_setting_wins():
    probe = ("import cli.main, os\nfrom prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED as a\n"
             "print(a.value(), os.environ['DO_NOT_TRACK'])\n"
             "from prefect._internal.analytics.enabled import is_telemetry_enabled\nprint(is_telemetry_enabled())")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "CI")}

    def run(**extra: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True,
                              check=True, cwd=ROOT).stdout.split()

    assert run() == ["False", "1", "False"]  # the server's analytics and the SDK's usage events both off
    assert run(PREFECT_SERVER_ANALYTICS_ENABLED="true", DO_NOT_TRACK="0") == ["True", "0", "True"]


def test_verbosity_sets_library_logging_and_gives_back_what_it_set(monkeypatch):
    import logging

    from cli import output

    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    monkeypatch.setattr(output, "_ours", {})
    output.set_verbosity(0)
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "WARNING" and logging.getLogger("prefect").level == logging.WARNING
    output.set_verbosity(1)  # -v: Prefect's per-stage lines come back
    assert "PREFECT_LOGGING_LEVEL" not in os.environ and logging.getLogger("prefect").level == logging.INFO
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    output.set_verbosity(0)  # the user's own setting is never replaced
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "DEBUG" and logging.getLogger("prefect").level == logging.INFO
    monkeypatch.delenv("PREFECT_LOGGING_LEVEL")
    output.set_verbosity(0)  # quiet again, as every other test's commands run
    assert logging.getLogger("prefect").level == logging.WARNING


def test_known_library_notices_are_dropped_where_they_are_logged_and_others_kept():
    import logging

    import core  # noqa: F401  installs the filters

    def shown(logger: str, message: str) -> bool:
        record = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, None, None)
        return logging.getLogger(logger).filter(record)

    assert not shown("transformers.processing_utils", "`PaddleOCRVLProcessor` defines `image_processor_class = "
                     "'AutoImageProcessor'`, which is deprecated. Register the correct mapping in `AutoImageProcessor` "
                     "instead.")
    assert not shown("transformers.utils.import_utils", "Qwen2VLImageProcessorFast requires torchvision (not installed)")
    assert shown("transformers.processing_utils", "Some weights were not initialized")


def test_read_only_frames_become_a_tensor_without_numpys_not_writable_warning():
    from core.models.teacher import frames_to_tensor

    frames = np.full((2, 4, 4, 3), 255, np.uint8)
    frames.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 4, 4) and float(x.max()) == 1.0


# --------------------------------------------------------------------------- hints that run as printed


def test_hints_name_this_vlmt_by_path_unless_it_is_the_one_on_path(tmp_path, monkeypatch):
    from cli.common import command

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("vlmt", "mlflow", "python"):
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(bin_dir / "vlmt"), "evaluate"])
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command() == "venv/bin/vlmt" and command("mlflow") == "venv/bin/mlflow"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")  # an activated virtualenv
    assert command() == "vlmt" and command("mlflow") == "mlflow"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command() == str(bin_dir / "vlmt")  # from outside the virtualenv's folder: the whole path


# --------------------------------------------------------------------------- tables


def _render(table, width: int) -> str:
    out = StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return out.getvalue()


def test_a_wide_table_leaves_out_the_named_columns_first_and_never_splits_a_number():
    from cli.display import fitted_table

    faculties = ["Spatiality", "Abstraction", "Knowledge", "Perception", "Transformation"]
    header = ["method", "score", "success", "ID", "OOD", *faculties, "s/item", "NFE/item", "judge fooled", "errors"]
    rows = [[m, "0.2345", "14.3%", "0.1234", "0.5678", *(["0.3333"] * 5), "10.23", "85.0", "66.7%", "0"]
            for m in ("vanilla", "best_of_n", "teacher")]
    table, dropped = fitted_table("methods", header, rows, text=("method",), drop=(*faculties[::-1], "NFE/item", "errors"),
                                  width=200)
    assert dropped == [] and len(table.columns) == len(header)
    named = [*faculties[::-1], "NFE/item", "errors"]
    for width in (100, 80, 60, 30):
        table, dropped = fitted_table("methods", header, rows, text=("method",), drop=named, width=width)
        text = _render(table, width)
        assert all(len(line) <= width for line in text.splitlines()), text
        assert dropped[:len(named)] == named[:len(dropped)]  # in the order asked, then from the right
        assert "method" not in dropped and all(m in text for m in ("vanilla", "best_of_n", "teacher")), text
        kept = [h for h in header if h not in dropped]
        for row in rows:  # every number of every kept column whole, on one line
            for h in kept:
                assert row[header.index(h)] in text, (h, text)
    assert dropped[-1] == "success" and "score" not in dropped  # at 30 columns: the first two are left


def test_a_narrow_console_says_which_columns_it_left_out(monkeypatch):
    import polars as pl

    from cli import display

    out = StringIO()
    monkeypatch.setattr(display, "console", Console(file=out, width=50, color_system=None))
    display.print_frame(pl.DataFrame({"method": ["teacher"], "mean_score": [0.123456], "a_long_column_name": [1.5],
                                      "another_long_column": [2.25], "yet_another_column": [3.0]}),
                        "t", drop=("yet_another_column", "another_long_column"), more="; --out FILE.csv keeps them")
    text = out.getvalue()
    assert "0.1235" in text and "left out to fit 50 columns: yet_another_column" in " ".join(text.split()), text


# --------------------------------------------------------------------------- vlmt sql: which database, which experiment


EXPERIMENTS = [("demo-aaaa000001", "demo", "2026-01-01 10:00:00"), ("demo-bbbb000002", "demo", "2026-01-02 10:00:00"),
               ("other-cccc000003", "other", "2026-01-03 10:00:00")]


def _database(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE experiments (experiment_id VARCHAR, name VARCHAR, kind VARCHAR, config_json VARCHAR, "
                    "code_version VARCHAR, created_at TIMESTAMP)")
        for e in EXPERIMENTS:
            con.execute("INSERT INTO experiments VALUES (?, ?, 'evaluate', '{}', '', ?)", list(e))
    return path


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """runs/old/vlmt.duckdb and the newer runs/demo/vlmt.duckdb, and a query file taking an experiment."""
    monkeypatch.chdir(tmp_path)
    old, new = _database(Path("runs/old/vlmt.duckdb")), _database(Path("runs/demo/vlmt.duckdb"))
    os.utime(old, (time.time() - 60, time.time() - 60))
    query = tmp_path / "ids.sql"
    query.write_text("-- The experiments a pattern matches. A second sentence.\n"
                     "-- param experiment = %: experiment id (SQL LIKE pattern)\n"
                     "SELECT experiment_id FROM experiments WHERE experiment_id LIKE $experiment ORDER BY 1\n")
    return tmp_path, query


def _ids(output: str) -> list[str]:
    return re.findall(r"│ (\S+-\w{10}) +│", output)


def test_sql_reads_the_newest_run_database_and_says_which(runs):
    _, query = runs
    r = runner.invoke(app, ["sql", "-q", "SELECT count(*) AS n FROM experiments"])
    assert r.exit_code == 0, r.output
    assert "database: runs/demo/vlmt.duckdb (the newest of 2 under runs/" in " ".join(r.output.split()), r.output
    r = runner.invoke(app, ["sql", "-q", "SELECT 1 AS one", "--work", "runs/old"])
    assert r.exit_code == 0 and "database:" not in r.output, r.output
    r = runner.invoke(app, ["sql", "-q", "SELECT 1 AS one", "--work", "runs/nope"])
    assert r.exit_code == 2 and r.output.strip() == (
        "error: runs/nope/vlmt.duckdb: does not exist (expected the DuckDB file of a vlmt run: `vlmt evaluate` "
        "writes WORK/vlmt.duckdb)"), r.output
    r = runner.invoke(app, ["sql", "-q", "SELECT 1 AS one", "--work", "runs/old", "--db", "runs/old/vlmt.duckdb"])
    assert r.exit_code == 2 and "--db and --work: are both given" in r.output


def test_report_finds_the_database_the_same_way(runs):
    r = runner.invoke(app, ["report", "--work", "runs/old"])
    assert r.exit_code == 2 and r.output.startswith("error: runs/old/vlmt.duckdb: has no table 'results'"), r.output
    r = runner.invoke(app, ["report"])
    assert r.exit_code == 2 and "error: runs/demo/vlmt.duckdb: has no table 'results'" in r.output, r.output


def test_sql_takes_an_experiment_name_or_id_prefix_where_it_takes_an_id(runs):
    _, query = runs
    r = runner.invoke(app, ["sql", str(query), "--work", "runs/demo", "-p", "experiment=demo"])
    assert r.exit_code == 0 and _ids(r.output) == ["demo-bbbb000002"], r.output  # the newest run of that name
    assert ("--param experiment=demo: demo-bbbb000002 (the newest of 2 experiments named 'demo'"
            in " ".join(r.output.split())), r.output
    r = runner.invoke(app, ["sql", str(query), "--work", "runs/demo", "-p", "experiment=demo-aaaa"])
    assert r.exit_code == 0 and _ids(r.output) == ["demo-aaaa000001"], r.output
    r = runner.invoke(app, ["sql", str(query), "--work", "runs/demo", "-p", "experiment=other-cccc000003"])
    assert r.exit_code == 0 and _ids(r.output) == ["other-cccc000003"] and "--param" not in r.output, r.output
    r = runner.invoke(app, ["sql", str(query), "--work", "runs/demo", "-p", "experiment=demo-%"])
    assert r.exit_code == 0 and _ids(r.output) == ["demo-aaaa000001", "demo-bbbb000002"], r.output
    r = runner.invoke(app, ["sql", str(query), "--work", "runs/demo"])  # the default pattern: every experiment
    assert r.exit_code == 0 and len(_ids(r.output)) == 3, r.output
    r = runner.invoke(app, ["sql", str(query), "--work", "runs/demo", "-p", "experiment=dmeo"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output  # not silently no rows
    assert "--param experiment=dmeo: matches no experiment in runs/demo/vlmt.duckdb" in r.output
    assert "['demo', 'other']" in r.output
    from core.report.data import pick_experiment  # vlmt report --experiment reads a name the same way

    assert pick_experiment(Path("runs/demo/vlmt.duckdb"), "demo")["experiment_id"] == "demo-bbbb000002"


# --------------------------------------------------------------------------- --list and --help


def test_sql_list_shows_each_descriptions_whole_first_sentence(tmp_path):
    from core.storage.named import load_queries, parse_query

    r = runner.invoke(app, ["sql", "--list"])
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    for q in load_queries().values():
        assert q.summary.endswith(".") and q.summary in flat, q.name
    # the description's second line, cut off before
    assert ("Ablation pivot: mean score of each method (columns) per combination of the method's knobs (rows), over "
            "the variants of an ablation experiment.") in flat
    f = tmp_path / "q.sql"
    f.write_text("-- Judge versus scorer, i.e. reward hacking (e.g. a Yes on a\n-- broken rule). Then more.\nSELECT 1\n")
    assert parse_query(f).summary == "Judge versus scorer, i.e. reward hacking (e.g. a Yes on a broken rule)."


def _help(*command: str) -> str:
    r = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_help_shows_every_options_default_and_no_type_for_a_flag(command):
    import typer

    text = _help(command)
    assert "<bool>" not in text and "<int>" not in _help()  # not for --json, --help, --report, or the counted -v
    assert "--report --no-report" in " ".join(_help("evaluate").replace("│", " ").split())
    cmd = typer.main.get_command(app).commands[command]
    for param in cmd.params:
        if param.param_type_name != "option" or param.is_flag:
            continue
        shown = param.default is not None or "default" in (param.help or "")
        assert shown, f"vlmt {command} {param.opts[0]} shows no default"


@pytest.mark.parametrize("command", ["sql", "report"])
def test_reading_commands_say_which_database_they_read_by_default(command):
    flat = " ".join(_help(command).replace("│", " ").split())
    assert "(default: WORK/vlmt.duckdb with --work, else the newest runs/**/vlmt.duckdb)" in flat, flat
    assert "<bool>" not in flat


def test_evaluate_help_defaults_are_the_configs():
    from core.bench.ruler_judge import JudgeConfig
    from flows.evaluate import EvaluateConfig

    cfg = EvaluateConfig()
    flat = " ".join(_help("evaluate").replace("│", " ").split())
    for option, value in (("--bench", cfg.bench), ("--per-family", cfg.per_family), ("--name", cfg.name),
                          ("--work", cfg.work), ("--n", cfg.method.n), ("--max-steps", cfg.method.optim.max_steps),
                          ("--guidance", f"{cfg.method.optim.guidance.scale:g}"),
                          ("--judge-tokens", JudgeConfig().max_new_tokens),
                          ("--methods", ",".join(m.value for m in cfg.methods))):
        assert f"(default: {value}" in flat, option
