"""``vlmt``: the user's entry point, assembled from one module per command group.

The CLI parses arguments, calls the library (``core``) or a flow (``flows``), and
prints. Errors in user input are printed as one line naming the file/field at fault
and exit with status 2; a run in which some items failed exits with status 1 after
printing every result.

- ``cli/bench.py``: ``vlmt bench make synth``, ``vlmt bench score``
- ``cli/zoo.py``: ``vlmt zoo train | surrogate | eval``
- ``cli/evaluate.py``: ``vlmt evaluate`` (the cached pipeline) and the hints it prints
- ``cli/compare.py``: ``vlmt compare`` (the methods in this process, no cache)
- ``cli/sql.py``: ``vlmt sql`` and ``vlmt report`` (reading a run's DuckDB file)
- ``cli/common.py``, ``cli/display.py``, ``cli/output.py``: errors and paths, tables and the
  progress bar, what stays quiet
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from cli import bench, compare, evaluate, sql, zoo  # importing cli sets the offline defaults first
from cli.output import set_verbosity

app = typer.Typer(help="VLMs as teachers for video reasoning: benchmarks, scoring and the test-time method.", no_args_is_help=True)
app.add_typer(bench.app, name="bench")
app.add_typer(zoo.app, name="zoo")
app.command("evaluate")(evaluate.evaluate)
app.command("compare")(compare.compare_cmd)
app.command("report")(sql.report)
app.command("sql")(sql.sql)


@app.callback()
def _main(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Show the libraries' logs too: -v "
                                               "Prefect's per-stage lines, MLflow's and the weight-loading bars; "
                                               "-vv debug logs.")] = 0) -> None:
    set_verbosity(verbose)
    logging.basicConfig(
        level=logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


def _flags_show_no_type() -> None:
    """typer >= 0.2x prints a ``<bool>`` type after every flag (``--json <bool>``, ``--help <bool>``) and
    ``<int>`` after a counted one (``-v``), which reads as if the flag took a value. A flag takes none:
    show no type for it (``--report/--no-report`` keeps its ``[default: report]``)."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - an older typer prints no type for flags
        return
    display = getattr(TyperOption, "display_type_rich", None)
    if display is None or getattr(display, "_vlmt", False):  # pragma: no cover
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else display(self, ctx)

    display_type_rich._vlmt = True
    TyperOption.display_type_rich = display_type_rich


_flags_show_no_type()


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
