"""``vlmt sql`` and ``vlmt report``: read a run's DuckDB file.

Both find the database the same way (``--db FILE``, else ``--work DIR``'s ``vlmt.duckdb``, else
the newest ``vlmt.duckdb`` under ``runs/``; ``cli.common.find_database``) and say which file they
read when they chose it. Both take an experiment's name where they take its id: ``vlmt report
--experiment demo``, ``vlmt sql method_comparison -p experiment=demo`` (the newest experiment of
that name; ``core.storage.named.resolve_experiments``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.padding import Padding
from rich.text import Text

from cli.common import console, fail, find_database, notes
from cli.display import print_frame
from core.checks import check_creatable
from core.errors import VlmtError

DB_HELP = ("DuckDB file (':memory:' for queries that only read files) (default: WORK/vlmt.duckdb with --work, else "
           "the newest runs/**/vlmt.duckdb).")
WORK_HELP = "The work dir of a `vlmt evaluate --work DIR` run: read DIR/vlmt.duckdb."


def _note(text: str | None) -> None:
    if text:
        notes.print(text, highlight=False, soft_wrap=True, style="dim")


def list_queries() -> None:
    """Each named query: its name, parameters and the first sentence of its description (wrapped, never cut)."""
    from core.storage.named import load_queries

    try:
        queries = load_queries()
    except VlmtError as exc:
        fail(exc)
    for q in queries.values():
        params = ", ".join(f"{p.name}={p.default}" if p.default is not None else p.name for p in q.params)
        console.print(f"[bold]{q.name}[/] ({params or 'no parameters'})", highlight=False, soft_wrap=True)
        console.print(Padding(Text(q.summary), (0, 0, 0, 4), expand=False))


def sql(
    name: Annotated[str | None, typer.Argument(help="A named query from sql/ (see --list), or a .sql file in their "
                                                    "format.")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Ad-hoc SQL instead of a named query.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="k=v for a named query's $k; an experiment "
                                                                          "parameter takes an experiment's name (its "
                                                                          "newest run), an id or id prefix.")] = None,
    db: Annotated[str | None, typer.Option(help=DB_HELP)] = None,
    work: Annotated[Path | None, typer.Option(help=WORK_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="Write the result to this .csv or .parquet file instead of printing.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the named queries and their parameters.")] = False,
) -> None:
    """Query the results database: a named query from sql/ or --query "SELECT ..."."""
    import duckdb

    from core.io import atomic_path
    from core.storage.named import get_query, resolve_experiments
    from core.storage.warehouse import query as run_query

    if list_:
        list_queries()
        return
    try:
        given = {}
        for item in param or []:
            if "=" not in item:
                raise VlmtError(f"--param {item!r}: expected k=v")
            k, v = item.split("=", 1)
            given[k.strip()] = v
        if (name is None) == (query is None):
            raise VlmtError("give exactly one of a query NAME or --query (see --list)")
        named = get_query(name) if query is None else None
        if out is not None:
            if out.suffix not in (".csv", ".parquet"):
                raise VlmtError(f"--out {out}: expected a .csv or .parquet file")
            check_creatable(out, "--out", file=True)
        path, chosen = find_database(db, work)
        if named is None:
            sql_text, values, meant = query, given, []
        else:
            named.bind(given)  # unknown or missing parameters first, before the database is read
            given, meant = resolve_experiments(path, given)  # what the user gave, never a default pattern
            sql_text, values = named.sql, named.bind(given)
        df = run_query(path, sql_text, values)
    except VlmtError as exc:
        fail(exc)
    except duckdb.Error as exc:  # the SQL or the database is at fault
        fail(VlmtError(f"query failed: {exc}"))
    _note(chosen)
    for line in meant:
        _note(f"--param {line}")
    if out is not None:
        with atomic_path(out) as tmp:
            df.write_csv(tmp) if out.suffix == ".csv" else df.write_parquet(tmp)
        console.print(f"wrote {df.height} rows to {out}")
        return
    print_frame(df, name or "query", more="; --out FILE.csv keeps every column")


def report(
    experiment: Annotated[str | None, typer.Option(help="Experiment name (its newest run) or id prefix (default: the "
                                                        "newest experiment).")] = None,
    db: Annotated[Path | None, typer.Option(help="The DuckDB file of a run (default: WORK/vlmt.duckdb with --work, "
                                                 "else the newest runs/**/vlmt.duckdb).")] = None,
    work: Annotated[Path | None, typer.Option(help=WORK_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder (default: <db folder>/report/<experiment name>).")] = None,
    variant: Annotated[str | None, typer.Option(help="Ablation variant to show (default: the first).")] = None,
) -> None:
    """Write a static HTML report: method tables beside the paper's, plots, every item's videos side by side."""
    import duckdb

    from core.errors import InputError
    from core.report.build import build_report
    from core.storage.warehouse import WRITTEN_BY_A_RUN

    t0 = time.perf_counter()
    path = db
    try:
        if out is not None:
            check_creatable(out, "--out")
        path, chosen = find_database(db, work)
        page = build_report(path, out, experiment=experiment, variant=variant)
    except InputError as exc:
        fail(exc)
    except duckdb.Error as exc:  # tables of another shape: another tool's file, or one from an older vlmt
        fail(InputError(path, f"does not hold the tables the report reads ({exc})", WRITTEN_BY_A_RUN))
    _note(chosen)
    console.print(f"report in {time.perf_counter() - t0:.1f} s: {page}", highlight=False, soft_wrap=True)
