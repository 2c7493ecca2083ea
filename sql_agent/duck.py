"""A sandboxed, read-only DuckDB session: the only way sql_agent runs SQL.

Defence in depth: every statement is parsed with sqlglot and refused unless it is one
SELECT/WITH query; the database is opened read-only with external access disabled (no files,
ATTACH, INSTALL, LOAD, COPY, EXPORT) and the configuration locked (no SET/RESET/PRAGMA of
settings); memory limit and thread count are fixed at open; a timer interrupts any statement
that runs past the timeout (DuckDB has no statement timeout of its own).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

DIALECT = "duckdb"
# statements refused by their first word when sqlglot cannot parse them (EXPORT DATABASE ...)
NON_QUERY_WORDS = {"ALTER", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "COMMIT", "COPY",
                   "CREATE", "DEALLOCATE", "DELETE", "DETACH", "DROP", "EXECUTE", "EXPORT",
                   "IMPORT", "INSERT", "INSTALL", "LOAD", "MERGE", "PRAGMA", "PREPARE", "RESET",
                   "ROLLBACK", "SET", "TRUNCATE", "UPDATE", "USE", "VACUUM"}
_LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*(\n|$)|/\*.*?\*/)*", re.S)


class SqlError(Exception):
    """A problem the user can fix; its message is one line."""


class QueryParseError(SqlError):
    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        where = f"line {line}, column {col}: " if line is not None else ""
        super().__init__(f"query does not parse: {where}{message}")
        self.line, self.col = line, col


class QueryRefused(SqlError):
    """The statement is not a single read-only query; it was never run."""


class QueryTimeout(SqlError):
    pass


class NotADatabase(SqlError):
    pass


class QueryFailed(SqlError):
    """DuckDB could not bind or run the query."""


def parse_one(sql: str) -> exp.Expression:
    """Parse exactly one statement; errors carry line and column."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except sqlglot.errors.ParseError as e:
        first = e.errors[0] if e.errors else {}
        desc = re.sub(r"<class '(?:\w+\.)*(\w+)'>", r"\1", str(first.get("description", e)).split("\n")[0])
        if first.get("highlight"):
            desc += f" near '{first['highlight']}'"
        raise QueryParseError(desc, first.get("line"), first.get("col")) from None
    except sqlglot.errors.TokenError as e:
        raise QueryParseError(str(e).split("\n")[0]) from None
    if not statements:
        raise QueryParseError("empty query")
    if len(statements) > 1:
        raise QueryRefused(f"refused: {len(statements)} statements given; exactly one query is run")
    return statements[0]


def statement_type(tree: exp.Expression) -> str:
    if isinstance(tree, exp.Select):
        return "SELECT"
    if isinstance(tree, exp.SetOperation):
        return type(tree).__name__.upper()
    if isinstance(tree, exp.Command):
        return str(tree.this).upper()
    return type(tree).__name__.upper()


def check_query(sql: str) -> exp.Expression:
    """Parse `sql` and refuse anything but one SELECT/WITH query (set operations included)."""
    try:
        tree = parse_one(sql)
    except QueryParseError:
        words = _LEADING_COMMENTS.sub("", sql).split(None, 1)
        if words and words[0].upper() in NON_QUERY_WORDS:
            raise QueryRefused(f"refused: {words[0].upper()} statement; "
                               "only SELECT/WITH queries are run") from None
        raise
    if not isinstance(tree, exp.Query):
        raise QueryRefused(f"refused: {statement_type(tree)} statement; only SELECT/WITH queries are run")
    return tree


@dataclass
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple]
    seconds: float


@dataclass(frozen=True)
class SandboxConfig:
    timeout_s: float = 60.0
    memory_limit: str = "4GB"
    threads: int = 2
    max_rows: int = 200_000     # larger results are not fetched (cannot be compared cheaply)


def open_readonly(path: str | os.PathLike, config: SandboxConfig) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    if not path.is_file():
        raise NotADatabase(f"{path}: no such database file")
    settings = {"enable_external_access": False, "lock_configuration": True,
                "memory_limit": config.memory_limit, "threads": config.threads}
    try:
        return duckdb.connect(str(path), read_only=True, config=settings)
    except duckdb.Error as e:
        raise NotADatabase(f"{path}: not a DuckDB database ({str(e).splitlines()[0]})") from None


class Sandbox:
    """One read-only DuckDB database behind the statement check, the timeout and fixed limits."""

    def __init__(self, path: str | os.PathLike, config: SandboxConfig = SandboxConfig()):
        self.path = Path(path)
        self.config = config
        self._con = open_readonly(self.path, config)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, sql: str, timeout_s: float | None, fetch: bool):
        check_query(sql)
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        timer = threading.Timer(timeout, self._con.interrupt)
        timer.start()
        start = time.perf_counter()
        try:
            cur = self._con.execute(sql)
            rows = cur.fetchmany(self.config.max_rows + 1) if fetch else cur.fetchall()
            elapsed = time.perf_counter() - start
        except duckdb.InterruptException:
            raise QueryTimeout(f"query exceeded the timeout of {timeout:g}s") from None
        except duckdb.Error as e:
            raise QueryFailed(" ".join(str(e).split())) from None
        finally:
            timer.cancel()
        return cur, rows, elapsed

    def query(self, sql: str, timeout_s: float | None = None) -> Result:
        cur, rows, elapsed = self._run(sql, timeout_s, fetch=True)
        if len(rows) > self.config.max_rows:
            raise QueryFailed(f"result has more than {self.config.max_rows} rows; too large to compare")
        return Result([d[0] for d in cur.description], [str(d[1]) for d in cur.description],
                      rows, elapsed)

    def explain(self, sql: str) -> str:
        """The physical plan; raises QueryFailed when the query does not bind."""
        check_query(sql)
        try:
            rows = self._con.execute("EXPLAIN " + sql).fetchall()
        except duckdb.Error as e:
            raise QueryFailed(" ".join(str(e).split())) from None
        return "\n".join(r[1] for r in rows)

    def run_seconds(self, sql: str, timeout_s: float | None = None) -> float:
        return self._run(sql, timeout_s, fetch=False)[2]

    def time_pair(self, original: str, candidate: str, runs: int = 5,
                  timeout_s: float | None = None, min_sample_s: float = 0.1) -> tuple[float, float]:
        """Median seconds of (original, candidate): one warm-up each, then `runs` alternated.
        A query faster than `min_sample_s` is repeated within each sample (the mean counts),
        so a millisecond query is not judged on a few scheduler ticks."""
        warm = max(self.run_seconds(original, timeout_s), self.run_seconds(candidate, timeout_s))
        reps = max(1, min(100, math.ceil(min_sample_s / max(warm, 1e-4))))
        a, b = [], []
        for _ in range(runs):
            a.append(sum(self.run_seconds(original, timeout_s) for _ in range(reps)) / reps)
            b.append(sum(self.run_seconds(candidate, timeout_s) for _ in range(reps)) / reps)
        return statistics.median(a), statistics.median(b)


def fingerprint(path: str | os.PathLike) -> str:
    """Identifies one version of a database file (path, size, modification time)."""
    p = Path(path).resolve()
    st = p.stat()
    return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
