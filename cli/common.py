"""What every command shares: the console, the one-line error, option parsers, and where things are.

``command()`` and ``find_database()`` make the hints a command prints agree with what the user
can run: ``.venv/bin/vlmt sql ... --db runs/demo/vlmt.duckdb`` from the repository root without
an activated virtualenv, and plain ``vlmt`` where the running one is the one on PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from core.errors import InputError, VlmtError

console = Console()
#: Notes beside the output (which database a command read, which experiment a name meant): stderr,
#: so that what stdout carries stays the result.
notes = Console(stderr=True)


def fail(exc: Exception) -> None:
    """Print ``exc`` as one line (a library's multi-line message joined) and exit with status 2."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def invalid_options(exc: ValidationError) -> VlmtError:
    """A config built from options failed validation: one line per field, no traceback."""
    def one(e: dict) -> str:
        where = ".".join(str(x) for x in e["loc"]) or "config"
        got = "" if isinstance(e.get("input"), dict | list) else f" (got {e.get('input')!r})"
        return f"{where}: {e['msg']}{got}"

    return VlmtError(f"invalid options: {'; '.join(one(e) for e in exc.errors())}")


@contextmanager
def refusing_bad_input() -> Iterator[None]:
    """Bad options, files or configs inside end the command with one line and status 2 (``fail``)."""
    try:
        yield
    except VlmtError as exc:
        fail(exc)
    except ValidationError as exc:
        fail(invalid_options(exc))


def parse_size(size: str | None) -> dict[str, int]:
    """'WIDTHxHEIGHT' -> {"width", "height"}; None -> {}."""
    if size is None:
        return {}
    parts = size.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise VlmtError(f"--size: {size!r} (expected WIDTHxHEIGHT in pixels, e.g. 704x704)")
    return {"width": int(parts[0]), "height": int(parts[1])}


def parse_n(value: str) -> int | str:
    """``--n``: a positive integer, or 'auto' (best-of-N's wall time matched to the teacher method's)."""
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise VlmtError(f"--n: {value!r} (expected a positive integer or 'auto')")
    return int(value)


# --------------------------------------------------------------------------- how to run things, as printed


def shown_path(path: Path) -> str:
    """``path`` as a user would type it here: relative to the working directory when it lies under it."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _as_typed(executable: Path, name: str) -> str:
    """``name`` when the one on PATH is ``executable``, else ``executable``'s path (e.g. ``.venv/bin/vlmt``)."""
    on_path = shutil.which(name)
    if on_path and os.path.realpath(on_path) == os.path.realpath(executable):
        return name
    return shown_path(executable)


def command(tool: str = "vlmt") -> str:
    """How to run ``tool`` (``vlmt``, or a tool installed beside it such as ``mlflow``) from here.

    ``vlmt`` is the running one: the console script (``sys.argv[0]``) or, for ``python -m cli.main``
    and test runners, the script beside this Python; another tool is the one beside this Python.
    """
    beside = Path(sys.executable).with_name(tool)
    if tool == "vlmt" and Path(sys.argv[0]).name == "vlmt" and Path(sys.argv[0]).is_file():
        return _as_typed(Path(sys.argv[0]), tool)
    if beside.is_file():
        return _as_typed(beside, tool)
    if tool == "vlmt":
        return f"{_as_typed(Path(sys.executable), Path(sys.executable).name)} -m cli.main"
    return tool


# --------------------------------------------------------------------------- which database

#: Where ``find_database`` looks when neither --db nor --work is given (``vlmt evaluate``'s default work
#: dir and the folders under it, e.g. the demo's runs/demo/).
RUNS = Path("runs")
DATABASE = "vlmt.duckdb"


def find_database(db: str | Path | None, work: Path | None) -> tuple[str, str | None]:
    """The DuckDB file a reading command uses, and a note saying how it was chosen (None when given).

    ``--db`` wins, then ``--work DIR`` (its ``DIR/vlmt.duckdb``, where ``vlmt evaluate --work DIR``
    writes it), else the newest ``vlmt.duckdb`` in ``runs/`` or one or two folders below it.
    """
    if db is not None and work is not None:
        raise InputError("--db and --work", "are both given", "one of them: --work DIR reads DIR/vlmt.duckdb")
    if db is not None:
        return str(db), None
    if work is not None:
        return str(work / DATABASE), None
    found = [p for pattern in (DATABASE, f"*/{DATABASE}", f"*/*/{DATABASE}") for p in RUNS.glob(pattern) if p.is_file()]
    if not found:
        raise InputError("--db", f"is not given and no {RUNS}/**/{DATABASE} exists here ({Path.cwd()})",
                         "--db FILE, or --work DIR of a `vlmt evaluate --work DIR` run")
    newest = max(found, key=lambda p: p.stat().st_mtime)
    others = len(found) - 1
    return str(newest), (f"database: {newest} (the newest of {len(found)} under {RUNS}/; --db FILE or --work DIR "
                         "picks another)" if others else f"database: {newest} (the only one under {RUNS}/)")
