"""Named SQL queries: the ``sql/*.sql`` files, with their parameters declared in a header.

A query file starts with comment lines: its description (one or more lines; ``vlmt sql --list``
shows its first sentence), and each parameter declared as ``-- param NAME = DEFAULT: what it is``
(DEFAULT may be omitted for a required parameter). The body refers to parameters as DuckDB named
parameters (``$NAME``); values arrive as text, so a query casts where it needs a number.
``vlmt sql`` also runs a query file of this format from anywhere (a NAME ending in ``.sql``).

Parameters named ``experiment`` or ``experiment_*`` take experiment ids as SQL LIKE patterns;
``resolve_experiments`` lets them take an experiment's name (or an id prefix) too, as
``vlmt report --experiment`` does.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, Field

from core.errors import InputError

#: The project's own queries.
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

#: The end of a sentence: a full stop before a space or the end, not that of "i.e." or "e.g.".
_SENTENCE_END = re.compile(r"(?<!i\.e)(?<!e\.g)\.(?=\s|$)")

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

    @property
    def summary(self) -> str:
        """The description's first sentence, whole (it may span several header lines)."""
        end = _SENTENCE_END.search(self.description)
        return self.description[:end.end()] if end else self.description

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
    description: list[str] = []
    for line in header:
        m = _PARAM.match(line)
        if m:
            default = m["default"]
            params.append(QueryParam(name=m["name"], default=default.strip().strip("'") if default is not None else None,
                                     help=m["help"].strip()))
        elif not params and line.strip("- "):  # the description: the comment lines before the first parameter
            description.append(line.lstrip("-").strip())
    return NamedQuery(name=path.stem, description=" ".join(description), params=params, sql=text, path=path)


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


#: Parameters that take experiment ids (SQL LIKE patterns).
EXPERIMENT_PARAM = re.compile(r"^experiment(_\w+)?$")


def resolve_experiments(db: str | Path, values: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``values`` with each experiment parameter's name or id prefix replaced by that experiment's newest id.

    A value that is an experiment id, or a LIKE pattern (``%`` or ``_``) that matches one, is kept as
    it is; a name (or an id prefix) becomes the newest matching experiment's id, and a note says so.
    A value that matches nothing is an error naming the experiments there are, where a query would
    have returned no rows without a word. A database without an ``experiments`` table (not a
    run's) is left to the query. Returns the values and the notes.
    """
    from core.storage.warehouse import has_table, query

    wanted = {k: v for k, v in values.items() if EXPERIMENT_PARAM.match(k)}
    if not wanted or str(db) == ":memory:" or not Path(db).is_file() or not has_table(db, "experiments"):
        return values, []
    rows = query(db, "SELECT experiment_id, name, CAST(created_at AS VARCHAR) AS created FROM experiments "
                     "ORDER BY created_at DESC").to_dicts()
    ids = [r["experiment_id"] for r in rows]
    values, notes = dict(values), []
    for key, value in wanted.items():
        if value in ids:
            continue
        by_name = [r for r in rows if r["name"] == value]
        by_prefix = [r for r in rows if r["experiment_id"].startswith(value)]
        if by_name or by_prefix:
            chosen = (by_name or by_prefix)[0]
            values[key] = chosen["experiment_id"]
            runs = by_name or by_prefix
            which = f"named {value!r}" if by_name else f"whose id starts with {value!r}"
            of = f"the newest of {len(runs)} experiments {which}" if len(runs) > 1 else f"the experiment {which}"
            notes.append(f"{key}={value}: {chosen['experiment_id']} ({of}, {chosen['created']})")
            continue
        if ("%" in value or "_" in value) and query(db, "SELECT count(*) AS n FROM experiments WHERE experiment_id LIKE $p",
                                                    {"p": value})["n"][0]:
            continue
        names = sorted({r["name"] for r in rows})
        raise InputError(f"--param {key}={value}", f"matches no experiment in {db}",
                         f"a name among {names}, an id or id prefix, or a LIKE pattern such as '%'")
    return values, notes
