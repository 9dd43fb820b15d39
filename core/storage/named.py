"""Named SQL queries: the ``sql/*.sql`` files, with their parameters declared in a header.

A query file starts with comment lines; the first is its description, and each parameter is
declared as ``-- param NAME = DEFAULT: what it is`` (DEFAULT may be omitted for a required
parameter). The body refers to parameters as DuckDB named parameters (``$NAME``); values
arrive as text, so a query casts where it needs a number. ``vlmt sql`` also runs a query
file of this format from anywhere (a NAME ending in ``.sql``).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, Field

from core.errors import InputError

#: The project's own queries.
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

_PARAM = re.compile(r"^--\s*param\s+(?P<name>[A-Za-z_]\w*)\s*(?:=\s*(?P<default>[^:]*?))?\s*:\s*(?P<help>.*)$")


class QueryParam(BaseModel):
    name: str
    default: str | None = None
    help: str = ""


class NamedQuery(BaseModel):
    name: str
    description: str
    params: list[QueryParam] = Field(default_factory=list)
    sql: str
    path: Path

    def bind(self, given: dict[str, str]) -> dict[str, str]:
        """Values for every declared parameter: given ones, else defaults; unknown or missing ones are errors."""
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise InputError(f"--param {unknown[0]}", f"is not a parameter of query {self.name!r}",
                             f"one of {sorted(declared) or 'no parameters'}")
        values = {}
        for p in self.params:
            if p.name in given:
                values[p.name] = given[p.name]
            elif p.default is not None:
                values[p.name] = p.default
            else:
                raise InputError(f"--param {p.name}", f"is required by query {self.name!r}", p.help or "a value")
        return values


def parse_query(path: Path) -> NamedQuery:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
                         "a UTF-8 .sql file; re-save it as UTF-8") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})", "a readable .sql file") from None
    header = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        header.append(line)
    params = []
    description = ""
    for line in header:
        m = _PARAM.match(line)
        if m:
            default = m["default"]
            params.append(QueryParam(name=m["name"], default=default.strip().strip("'") if default is not None else None,
                                     help=m["help"].strip()))
        elif not description and line.strip("- "):
            description = line.lstrip("-").strip()
    return NamedQuery(name=path.stem, description=description, params=params, sql=text, path=path)


def load_queries(folder: str | Path = SQL_DIR) -> dict[str, NamedQuery]:
    return {p.stem: parse_query(p) for p in sorted(Path(folder).glob("*.sql"))}


def get_query(name: str, folder: str | Path = SQL_DIR) -> NamedQuery:
    """Query ``name`` of ``folder``, or the query file ``name`` when it ends in ``.sql`` (the same header format).

    Only that file is read, so one unreadable file in ``folder`` does not stop the others.
    """
    path = Path(name) if name.endswith(".sql") else Path(folder) / f"{name}.sql"
    if not path.is_file():
        if name.endswith(".sql"):
            raise InputError(path, "does not exist", "a .sql file, or a query name from sql/ (see --list)")
        names = sorted(p.stem for p in Path(folder).glob("*.sql"))
        raise InputError(f"query {name!r}", f"is not in {folder}", f"one of {names}, or a .sql file")
    return parse_query(path)
