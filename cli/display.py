"""How commands show results: tables that fit the terminal, and the one progress bar.

A number is never split across lines or cut: numeric columns do not wrap. When a table is wider
than the console, ``fitted_table`` first lets text cells wrap and multi-word headers stack, then
leaves out whole columns in the order the caller names (the least important first, e.g. the
per-faculty columns), and ``print_table`` says which ones it left out.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import console

#: Box drawing around each column (a space either side and one border) and the table's last border.
_PER_COLUMN, _EDGE = 3, 1


def _words(text: str) -> int:
    return max((len(w) for w in text.split()), default=0)


def fitted_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str] | None], *, text: Sequence[str] = (),
                 drop: Sequence[str] = (), width: int | None = None) -> tuple[Table, list[str]]:
    """A rich table of ``rows`` (already formatted) that fits ``width`` (default: the console's).

    ``text`` names the columns that may wrap (left-aligned); every other column is numeric:
    right-aligned, never wrapped. A row None starts a new section. Returns the table and the
    columns left out to fit, in ``drop``'s order (which names the least important first).
    """
    width = width or console.width
    index = {h: i for i, h in enumerate(header)}

    def cells(h: str) -> list[str]:
        return [r[index[h]] for r in rows if r is not None]

    def need(h: str, squeeze: bool) -> int:
        """Columns ``h`` takes: its widest cell, and its header whole or (squeezed) one word a line."""
        head = _words(h) if squeeze else len(h)
        if h in text and squeeze:  # text wraps between words
            return max([head, *(_words(c) for c in cells(h))])
        return max([head, *(len(c) for c in cells(h))])

    def total(cols: list[str], squeeze: bool) -> int:
        return sum(need(h, squeeze) + _PER_COLUMN for h in cols) + _EDGE

    cols, squeeze, dropped = list(header), False, []
    if total(cols, False) > width:
        squeeze = True
        # the caller's order, then from the right: never the first column (what each row is)
        for h in [*drop, *reversed(header[1:])]:
            if total(cols, True) <= width:
                break
            if h in cols and h != header[0]:
                cols.remove(h)
                dropped.append(h)
    table = Table(title=title)
    for h in cols:
        label = "\n".join(h.split()) if squeeze and h not in text and len(h) > need(h, True) else h
        if h in text:  # wraps between words, a word never split
            table.add_column(label, justify="left", overflow="fold", min_width=need(h, True))
        else:
            table.add_column(label, justify="right", no_wrap=True)
    for r in rows:
        if r is None:
            table.add_section()
        else:
            table.add_row(*(r[index[h]] for h in cols))
    return table, dropped


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str] | None], *, text: Sequence[str] = (),
                drop: Sequence[str] = (), more: str = "") -> None:
    """``fitted_table`` printed, then one line naming the columns left out (and ``more``: how to see them)."""
    table, dropped = fitted_table(title, header, rows, text=text, drop=drop)
    console.print(table)
    if dropped:
        console.print(f"(left out to fit {console.width} columns: {', '.join(dropped)}; a wider terminal shows "
                      f"them{more})", highlight=False, soft_wrap=True)


def print_frame(df, title: str, labels: dict[str, str] | None = None, drop: Sequence[str] | None = None,
                more: str = "") -> None:
    """A polars frame as a fitted table: floats to 4 significant digits, strings as text.

    ``drop`` names (labelled) columns to leave out first when it is too wide; by default the
    rightmost ones, never the first.
    """
    labels = labels or {}
    header = [labels.get(c, c) for c in df.columns]
    text = [labels.get(c, c) for c, t in df.schema.items() if not t.is_numeric()]
    rows = [["" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in df.iter_rows()]
    if drop is None:
        drop = header[:0:-1]
    print_table(title, header, rows, text=text, drop=drop, more=more)


def rate(value: float | None, signed: bool = False) -> str:
    """A share as a percentage; '-' where it could not be measured (no broken rule was judged)."""
    if value is None:
        return "-"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


# --------------------------------------------------------------------------- progress


def progress() -> Progress:
    """The command's one progress bar: on stderr, only on a terminal, gone when done."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty(),
    )


def with_progress(run, path: Path):
    """Run ``run()`` while the bar follows the flow's progress file ((item, method) results done)."""
    import threading

    done = threading.Event()
    path.unlink(missing_ok=True)

    def follow(bar, task) -> None:
        while not done.wait(0.5):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            bar.update(task, completed=state["done"], total=state["total"])

    with progress() as bar:
        task = bar.add_task("(item, method) results", total=None)
        watcher = threading.Thread(target=follow, args=(bar, task), daemon=True)
        watcher.start()
        try:
            return run()
        finally:
            done.set()
            watcher.join()
