"""The DuckDB file: tables rebuilt from the per-item Parquet files by a single writer.

Consolidation replaces each table with the union of its Parquet files, so it is idempotent
(running it twice, or after a resumed run that rewrote some files, never duplicates rows)
and needs no locking beyond DuckDB's own: only the process that calls it opens the database
for writing. Readers (``vlmt sql``) open it read-only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from core.errors import InputError
from core.storage.results import LATER_RESULT_COLUMNS, TABLES, variant_columns

#: What ``query`` reads; said when it gets something else.
WRITTEN_BY_A_RUN = "the DuckDB file of a vlmt run: `vlmt evaluate` writes WORK/vlmt.duckdb"

_MISSING_TABLE = re.compile(r"Table with name (?P<table>\S+) does not exist")

log = logging.getLogger(__name__)


def parquet_files(root: str | Path, table: str) -> list[Path]:
    """Finished files of ``table`` (temporary files of a killed writer start with '.' and are skipped)."""
    folder = Path(root) / table
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))


def consolidate(root: str | Path, db_path: str | Path) -> dict[str, int]:
    """Rebuild every table of ``db_path`` from the Parquet files under ``root``; returns row counts."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {}
    with duckdb.connect(str(db_path)) as con:
        for table in TABLES:
            files = parquet_files(root, table)
            if not files:  # nothing of this table yet: leave any earlier table as it is
                counts[table] = 0
                continue
            con.execute(f'CREATE OR REPLACE TABLE "{table}" AS SELECT * FROM read_parquet(?, union_by_name = true)',
                        [[str(f) for f in files]])
            if table == "results":  # rows written before a knob or measure existed lack its column; queries name them
                for column, sql_type in {**variant_columns(), **LATER_RESULT_COLUMNS}.items():
                    con.execute(f'ALTER TABLE results ADD COLUMN IF NOT EXISTS "{column}" {sql_type}')
            counts[table] = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        _write_t_quantiles(con)
    log.info("consolidated %s into %s", counts, db_path)
    return counts


#: ``student_t975``'s largest degrees of freedom; beyond it t(0.975) is within 0.002 of 1.96.
T_TABLE_MAX_DF = 1000


def _write_t_quantiles(con: duckdb.DuckDBPyConnection) -> None:
    """Table ``student_t975(df, t975)``: Student's t 0.975 quantiles, for the paired queries' intervals
    (DuckDB has no t distribution; ``sql/paired_vs_baseline.sql`` joins this on its degrees of freedom)."""
    from scipy.stats import t as student_t

    quantiles = student_t.ppf(0.975, range(1, T_TABLE_MAX_DF + 1))  # one vectorised call, not 1000
    rows = ", ".join(f"({k}, {float(q)!r})" for k, q in enumerate(quantiles, start=1))
    con.execute(f"CREATE OR REPLACE TABLE student_t975 AS SELECT * FROM (VALUES {rows}) AS t(df, t975)")


def has_table(db_path: str | Path, table: str) -> bool:
    """Whether ``db_path`` has ``table`` (optional tables such as ``judgements`` exist only once written)."""
    sql = "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = $t"
    return bool(query(db_path, sql, {"t": table})["n"][0])


def query(db_path: str | Path, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """Run ``sql`` read-only on ``db_path`` with DuckDB named parameters (``$name``).

    ``db_path`` ``":memory:"`` runs a query that reads only files (e.g. ``read_json_auto``).
    """
    if str(db_path) == ":memory:":
        with duckdb.connect() as con:
            return _frame(con.sql(sql, params=params or {}))
    db_path = Path(db_path)
    if not db_path.is_file():
        raise InputError(str(db_path), "is a directory" if db_path.is_dir() else "does not exist", WRITTEN_BY_A_RUN)
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:  # not a DuckDB file, a newer format, or locked by a writer
        raise InputError(str(db_path), f"cannot be opened as a DuckDB database ({_first_line(exc)})", WRITTEN_BY_A_RUN) from None
    with con:
        try:
            return _frame(con.sql(sql, params=params or {}))
        except duckdb.CatalogException as exc:
            missing = _MISSING_TABLE.search(str(exc))
            if missing is None:
                raise
            tables = [row[0] for row in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
            has = f"its tables: {', '.join(tables)}" if tables else "it holds no tables"
            raise InputError(str(db_path), f"has no table {missing['table']!r} ({has})", WRITTEN_BY_A_RUN) from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _frame(relation: duckdb.DuckDBPyRelation | None) -> pl.DataFrame:
    """A statement with no result (e.g. ``SET``) gives an empty frame."""
    return pl.DataFrame() if relation is None else relation.pl()
