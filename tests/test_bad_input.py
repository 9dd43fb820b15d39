"""Bad input through the real CLI: one line naming the file or option and what was expected, exit 2.

Every case must fail in the CLI's pre-flight checks (``core/checks.py``), before a model loads
or Prefect's server starts, so the whole table runs in seconds. Faults of one item (an
unreadable instance, a broken video) are the exception: those items are reported and every
other item's result is kept (exit 1), which ``test_item_faults_leave_the_other_items_intact``
checks.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import prefect.main  # noqa: F401  Prefect's log handler keeps the stream it finds: here, not a CliRunner call's (closed after)
import pytest
from prefect.flows import Flow
from typer.testing import CliRunner

from cli.main import app
from core.storage.results import ExperimentRecord, write_experiment
from core.storage.warehouse import consolidate

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "models"
runner = CliRunner()


def _mirror(src: Path, dst: Path) -> Path:
    """``src``'s tree with every file a symlink (a zoo copy that costs nothing); returns ``dst``."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dst


def _replace(path: Path, data: bytes | str | None) -> None:
    """Replace a (symlinked) file by ``data``; None removes it."""
    path.unlink()
    if isinstance(data, str):
        path.write_text(data)
    elif data is not None:
        path.write_bytes(data)


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> SimpleNamespace:
    """The bad inputs, made once: files where folders belong, broken zoos, databases, benchmarks."""
    root = tmp_path_factory.mktemp("bad")
    (root / "afile").write_text("a regular file\n")
    (root / "empty").mkdir()
    (root / "dir.csv").mkdir()
    duckdb.connect(str(root / "empty.duckdb")).close()
    (root / "not.duckdb").write_bytes(b"not a database\n" * 100)
    write_experiment(root / "results", ExperimentRecord(name="exp", kind="evaluate"))
    consolidate(root / "results", root / "exp.duckdb")  # an experiment, and no results table
    (root / "latin1.sql").write_bytes("-- caf\xe9 per method\nSELECT 1\n".encode("latin-1"))
    (root / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (root / "teacher-nope.yaml").write_text(f"models: {{teacher: {root / 'nope'}}}\n")

    zoos = {}

    def zoo(name: str, path: str, data: bytes | str | None) -> None:
        zoos[name] = _mirror(ZOO, root / f"zoo-{name}")
        _replace(zoos[name] / path, data)

    weights = (ZOO / "teacher" / "model.safetensors").read_bytes()
    zoo("transformer", "reasoner/transformer/diffusion_pytorch_model.safetensors", b"garbage")
    zoo("truncated", "teacher/model.safetensors", weights[: len(weights) // 2])
    zoo("vae", "reasoner/vae/diffusion_pytorch_model.safetensors", b"\x00" * 64)
    zoo("no-surrogate-config", "surrogate-decoder/config.json", None)
    zoo("teacher-json", "teacher/config.json", '{"model_type": "qwen2_5_vl",')
    teacher_cfg = json.loads((ZOO / "teacher" / "config.json").read_text())
    zoo("teacher-type", "teacher/config.json", json.dumps({**teacher_cfg, "model_type": "llama"}))
    zoo("no-base", "reasoner-base/config.json", None)
    zoos["no-vae"] = _mirror(ZOO, root / "zoo-no-vae")
    shutil.rmtree(zoos["no-vae"] / "reasoner" / "vae")

    bench = root / "bench"  # 3 instances of one family
    r = runner.invoke(app, ["bench", "make", "synth", "--out", str(bench), "--per-family", "3", "--family", "maze_navigate"])
    assert r.exit_code == 0, r.output
    metas = sorted(bench.glob("*/*/*/meta.json"))
    broken = root / "broken-bench"  # every instance unreadable
    shutil.copytree(bench, broken)
    for meta in sorted(broken.glob("*/*/*/meta.json")):
        meta.write_text("{")
    one_broken = root / "one-broken-bench"
    shutil.copytree(bench, one_broken)
    (one_broken / metas[0].relative_to(bench)).write_text("{")
    return SimpleNamespace(root=root, zoo=zoos, bench=bench, broken=broken, one_broken=one_broken, metas=metas)


def _paths(w: SimpleNamespace) -> dict[str, Path]:
    """What the templates below may name: {root}, {bench}, {broken}, {shipped} (the zoo), {zoo_<fault>}."""
    return {"root": w.root, "bench": w.bench, "broken": w.broken, "shipped": ZOO,
            **{f"zoo_{k.replace('-', '_')}": v for k, v in w.zoo.items()}}


#: (command line, what the one line must say); {root} etc. are the fixture's paths.
CASES = [
    # evaluate: point 14's pre-flight (bench, models, work, MLflow) and the config file
    ("evaluate --bench {root}/nope", ["--bench {root}/nope: does not exist", "'synth'"]),
    ("evaluate --bench {root}/empty", ["{root}/empty", "holds no instances"]),
    ("evaluate --bench {broken}", ["{broken}: has no valid instance (3 invalid; the first: {broken}/", "meta.json"]),
    ("evaluate --bench {root}/afile", ["{root}/afile", "unknown benchmark format"]),
    ("evaluate --models {root}/nope", ["{root}/nope/reasoner: the Reasoner folder does not exist", "model_index.json"]),
    ("evaluate --models {root}/afile", ["{root}/afile/reasoner: the Reasoner folder does not exist"]),
    ("evaluate --models {zoo_transformer}", ["{zoo_transformer}/reasoner/transformer/diffusion_pytorch_model.safetensors: "
                                             "is not a readable safetensors file"]),
    ("evaluate --models {zoo_truncated}", ["{zoo_truncated}/teacher/model.safetensors: is not a readable safetensors file"]),
    ("evaluate --models {zoo_no_surrogate_config}", ["{zoo_no_surrogate_config}/surrogate-decoder/config.json: does not exist",
                                                     "the config of the surrogate decoder"]),
    ("evaluate --models {zoo_teacher_json}", ["{zoo_teacher_json}/teacher/config.json: is not readable JSON"]),
    ("evaluate --models {zoo_teacher_type}", ["{zoo_teacher_type}/teacher/config.json:model_type: is 'llama'"]),
    ("evaluate --models {zoo_no_vae}", ["{zoo_no_vae}/reasoner/vae: is missing (model_index.json lists vae"]),
    ("evaluate --work {root}/afile/runs", ["--work {root}/afile/runs: lies under {root}/afile, which is a file"]),
    ("evaluate --work {root}/afile", ["--work {root}/afile: is a file"]),
    ("evaluate --mlflow-uri bogus://x", ["--mlflow-uri bogus://x: has an unknown scheme 'bogus'", "sqlite:///PATH"]),
    ("evaluate --mlflow-uri http://", ["--mlflow-uri http://: has no host"]),
    ("evaluate --mlflow-uri sqlite:///{root}/afile/mlflow.db", ["--mlflow-uri {root}/afile/mlflow.db: lies under "
                                                                "{root}/afile, which is a file"]),
    ("evaluate --mlflow-uri sqlite://", ["--mlflow-uri sqlite://: is not a SQLite file URI"]),
    ("evaluate --judge {root}/empty", ["{root}/empty/config.json: does not exist", "the config of the judge"]),
    ("evaluate --config {root}/latin1.yaml", ["{root}/latin1.yaml: cannot be read as YAML", "utf-8"]),
    ("evaluate --config {root}/teacher-nope.yaml", ["{root}/nope: the Teacher folder does not exist"]),
    ("evaluate --runner bogus", ["--runner: 'bogus' is not a task runner"]),
    # compare
    ("compare --models {root}/nope", ["{root}/nope/reasoner: the Reasoner folder does not exist"]),
    ("compare --teacher {zoo_truncated}/teacher", ["{zoo_truncated}/teacher/model.safetensors: is not a readable safetensors"]),
    ("compare --out {root}/afile/out.json", ["--out {root}/afile/out.json: lies under {root}/afile, which is a file"]),
    ("compare --bench {root}/nope", ["{root}/nope: benchmark path not found"]),
    # sql
    ("sql method_comparison --db {root}/empty.duckdb -p experiment=x", ["{root}/empty.duckdb: has no table 'results' "
                                                                         "(it holds no tables)", "vlmt evaluate"]),
    ("sql --db {root}/empty.duckdb -q 'SELECT * FROM results'", ["{root}/empty.duckdb: has no table 'results'"]),
    ("sql --db {root}/not.duckdb -q 'SELECT 1'", ["{root}/not.duckdb: cannot be opened as a DuckDB database"]),
    ("sql --db {root}/empty -q 'SELECT 1'", ["{root}/empty: is a directory"]),
    ("sql --db {root}/nope.duckdb -q 'SELECT 1'", ["{root}/nope.duckdb: does not exist"]),
    ("sql {root}/latin1.sql --db :memory:", ["{root}/latin1.sql: is not UTF-8 text (byte 0xe9 at offset 6)"]),
    ("sql {root}/nope.sql", ["{root}/nope.sql: does not exist", "a .sql file"]),
    ("sql nope", ["query 'nope': is not in", "method_comparison"]),
    ("sql method_comparison -p experiment", ["--param 'experiment': expected k=v"]),
    ("sql method_comparison --out {root}/afile/x.csv", ["--out {root}/afile/x.csv: lies under {root}/afile"]),
    ("sql method_comparison --out {root}/dir.csv", ["--out {root}/dir.csv: is a directory"]),
    # report
    ("report --db {root}/empty.duckdb", ["{root}/empty.duckdb: has no table 'experiments' (it holds no tables)"]),
    ("report --db {root}/exp.duckdb", ["{root}/exp.duckdb: has no table 'results' (its tables: experiments, "]),
    ("report --db {root}/exp.duckdb --experiment nope", ["--experiment: 'nope' matches no experiment"]),
    ("report --db {root}/not.duckdb", ["{root}/not.duckdb: cannot be opened as a DuckDB database"]),
    ("report --db {root}/nope.duckdb", ["{root}/nope.duckdb: does not exist"]),
    ("report --db {root}/exp.duckdb --out {root}/afile/report", ["--out {root}/afile/report: lies under {root}/afile"]),
    # bench make / score
    ("bench make synth --out {root}/afile/bench", ["--out {root}/afile/bench: lies under {root}/afile, which is a file"]),
    ("bench make synth --out {root}/x --family nope", ["unknown synth family"]),
    ("bench score --bench {bench} --videos {root}/nope", ["--videos {root}/nope: does not exist", "the model's videos"]),
    ("bench score --bench {bench} --videos {root}/afile", ["--videos {root}/afile: is a file, not a folder"]),
    ("bench score --bench {broken} --ground-truth", ["meta.json"]),
    ("bench score --bench {root}/nope --ground-truth", ["{root}/nope: benchmark path not found"]),
    ("bench score --bench {bench} --ground-truth --details {root}/afile/d.json", ["--details {root}/afile/d.json: lies under"]),
    ("bench score --bench {bench} --videos {root}/empty --judge {root}/nope", ["{root}/nope: the judge folder does not exist"]),
    # zoo
    ("zoo eval --models {root}/nope", ["{root}/nope/reasoner: the Reasoner folder does not exist"]),
    ("zoo eval --models {zoo_no_base}", ["{zoo_no_base}/reasoner-base/config.json: does not exist"]),
    ("zoo eval --work {root}/afile/w", ["--work {root}/afile/w: lies under {root}/afile"]),
    ("zoo train --preset micro --out {root}/afile/m", ["--out {root}/afile/m: lies under {root}/afile"]),
    ("zoo train --preset micro --work {root}/afile/w", ["--work {root}/afile/w: lies under {root}/afile"]),
    ("zoo surrogate --vae {root}/empty --bench {bench} --out {root}/s", ["{root}/empty: is not a VAE folder"]),
    ("zoo surrogate --vae {zoo_vae}/reasoner --bench {bench} --out {root}/s",
     ["{zoo_vae}/reasoner/vae/diffusion_pytorch_model.safetensors: is not a readable safetensors file"]),
    ("zoo surrogate --vae {shipped}/reasoner --bench {root}/nope --out {root}/s", ["--bench {root}/nope: does not exist"]),
    ("zoo surrogate --vae {shipped}/reasoner --bench {bench} --out {root}/afile/s", ["--out {root}/afile/s: lies under"]),
]


def one_line_error(result) -> str:
    """The output is exactly one ``error:`` line, the exit status 2, and no traceback anywhere."""
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


@pytest.fixture
def nothing_heavy_starts(monkeypatch):
    """A case that reaches a flow (and so Prefect's server) or a model loader fails loudly."""
    from core.method.reasoner import ReasonerAdapter
    from core.models import teacher

    def started(*args, **kwargs):
        raise AssertionError("a flow started or a model loaded before the input was checked")

    monkeypatch.setattr(Flow, "__call__", started)
    monkeypatch.setattr(ReasonerAdapter, "from_paths", started)
    monkeypatch.setattr(teacher, "load_teacher", started)


@pytest.mark.parametrize(("command", "says"), CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(w, nothing_heavy_starts, command, says):
    paths = _paths(w)
    line = one_line_error(runner.invoke(app, [part.format(**paths) for part in shlex.split(command)]))
    for expected in says:
        assert expected.format(**paths) in line, line


def test_there_are_at_least_30_cases_over_every_command_that_takes_paths():
    assert len(CASES) >= 30
    assert {c.split()[0] for c, _ in CASES} >= {"evaluate", "compare", "sql", "report", "bench", "zoo"}


def test_item_faults_leave_the_other_items_intact(w, tmp_path):
    """One unreadable instance, one broken video: those items are reported, the others scored (exit 1)."""
    r = runner.invoke(app, ["bench", "score", "--bench", str(w.one_broken), "--ground-truth", "--skip-invalid", "--json"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["n_invalid"] == 1 and summary["overall"]["n"] == 2 and summary["overall"]["mean_score"] == 1.0
    assert "invalid instance" in r.output and "meta.json" in r.output

    videos = tmp_path / "videos"
    gts = sorted(w.bench.glob("*/*/*/ground_truth.mp4"))
    for gt in gts:
        split, task, index = gt.parts[-4:-1]
        (videos / split / task).mkdir(parents=True, exist_ok=True)
        shutil.copy(gt, videos / split / task / f"{index}.mp4")
    broken = videos.joinpath(*gts[0].parts[-4:-2], f"{gts[0].parts[-2]}.mp4")
    broken.write_bytes(b"not a video")
    r = runner.invoke(app, ["bench", "score", "--bench", str(w.bench), "--videos", str(videos), "--json"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["overall"]["n"] == 3 and summary["overall"]["n_errors"] == 1
    assert summary["overall"]["mean_score"] == pytest.approx(2 / 3)  # the two intact videos score 1.0
    failed = [line for line in r.output.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and gts[0].parts[-3] in failed[0], r.output


def test_a_corrupt_weights_file_is_named_by_the_loaders_too(w):
    """Where no pre-flight ran (a deployment's flow run), loading names the file instead of failing every item vaguely."""
    from core.errors import InputError
    from core.models.surrogate import SurrogateDecoder
    from core.models.teacher import load_teacher

    zoo = w.root / "zoo-bad-surrogate"
    _mirror(ZOO / "surrogate-decoder", zoo)
    _replace(zoo / "diffusion_pytorch_model.safetensors", b"\x01" * 16)
    with pytest.raises(InputError, match="diffusion_pytorch_model.safetensors: is not a readable safetensors file"):
        SurrogateDecoder.from_pretrained(zoo)
    with pytest.raises(InputError, match="teacher/model.safetensors: is not a readable safetensors file"):
        load_teacher(w.zoo["truncated"] / "teacher", device="cpu")


def test_the_shipped_zoo_is_found_from_any_directory(tmp_path, monkeypatch):
    """The default models are the repository's, wherever vlmt runs; from the repository root the
    config reads 'models/...' as before (so experiment ids made there are unchanged)."""
    from flows.evaluate import ModelPaths

    monkeypatch.chdir(ROOT)
    assert ModelPaths().model_dump() == {"reasoner": "models/reasoner", "surrogate": "models/surrogate-decoder",
                                         "teacher": "models/teacher"}
    monkeypatch.chdir(tmp_path)
    assert ModelPaths().reasoner == str(ZOO / "reasoner") and ModelPaths(teacher="mine").teacher == "mine"
    # the default models pass the pre-flight from here: the first fault is the benchmark
    line = one_line_error(runner.invoke(app, ["evaluate", "--bench", "nope"]))
    assert "--bench nope: does not exist" in line


def _vlmt(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, list[str], list[str], float]:
    """The installed console script (``python -m cli.main`` where there is none): status, stdout and stderr lines, seconds."""
    vlmt = Path(sys.executable).with_name("vlmt")
    command = [str(vlmt)] if vlmt.is_file() else [sys.executable, "-m", "cli.main"]
    t0 = time.perf_counter()
    r = subprocess.run([*command, *args], cwd=cwd, env={**os.environ, "COLUMNS": "1000", **env}, capture_output=True,
                       text=True, timeout=120)
    return r.returncode, r.stdout.strip().splitlines(), r.stderr.strip().splitlines(), time.perf_counter() - t0


def test_the_installed_command_fails_fast_without_starting_prefect(w, tmp_path):
    """The console script itself, from another directory: one line, exit 2, in seconds, Prefect never started."""
    home = tmp_path / "prefect-home"  # a server start would create its database here
    status, out, err, seconds = _vlmt("evaluate", "--work", str(w.root / "afile" / "runs"), cwd=tmp_path,
                                      env={"PREFECT_HOME": str(home)})
    assert status == 2 and err == [] and out == [
        f"error: --work {w.root / 'afile' / 'runs'}: lies under {w.root / 'afile'}, which is a file "
        "(expected a path whose parents are directories)"], out + err
    assert not (home / "prefect.db").exists() and seconds < 60, seconds


def test_skip_invalid_reports_each_entry_then_one_error_when_none_is_left(w, tmp_path):
    """--skip-invalid asks for a report per unreadable instance; with none left, one error line follows (exit 2),
    not an empty score table."""
    status, out, err, _ = _vlmt("bench", "score", "--bench", str(w.broken), "--ground-truth", "--skip-invalid",
                                cwd=tmp_path, env={})
    assert status == 2 and not any("Traceback" in line for line in out + err), out + err
    assert len(out) == 1 and out[0].startswith(f"error: {w.broken}: has no valid instance (3 invalid; the first: "), out
    assert sum("skipping invalid entry" in line for line in err) == 3, err
