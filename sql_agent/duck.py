"""A sandboxed, read-only DuckDB session: the only way sql_agent runs SQL.

Defence in depth: every statement is parsed with sqlglot and refused unless it is one
SELECT/WITH query; the database is opened read-only with external access disabled (no files,
ATTACH, INSTALL, LOAD, COPY, EXPORT) and the configuration locked (no SET/RESET/PRAGMA of
settings); memory limit and thread count are fixed at open; a timer interrupts any statement
that runs past the timeout (DuckDB has no statement timeout of its own). The connection lives in
a worker process that is killed when a statement outlives its timeout or the memory limit, as
DuckDB's own limits do not reach the constant folding it does while planning.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import duckdb
import psutil
import pyarrow as pa
import sqlglot
from sqlglot import exp

from . import sandbox_worker

DIALECT = "duckdb"
# statements refused by their first word when sqlglot cannot parse them (EXPORT DATABASE ...)
NON_QUERY_WORDS = {"ALTER", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "COMMIT", "COPY",
                   "CREATE", "DEALLOCATE", "DELETE", "DETACH", "DROP", "EXECUTE", "EXPORT",
                   "IMPORT", "INSERT", "INSTALL", "LOAD", "MERGE", "PRAGMA", "PREPARE", "RESET",
                   "ROLLBACK", "SET", "TRUNCATE", "UPDATE", "USE", "VACUUM"}
# what sqlglot parses as a statement; anything else (a bare word, an expression) is no SQL at all
STATEMENTS = (exp.Command, exp.Create, exp.Drop, exp.Insert, exp.Update, exp.Delete, exp.Merge,
              exp.Alter, exp.Set, exp.Pragma, exp.Use, exp.Copy, exp.Describe, exp.Transaction,
              exp.Commit, exp.Rollback, exp.Cache, exp.Uncache, exp.Refresh, exp.Analyze,
              exp.Attach, exp.Detach, exp.Export, exp.Install, exp.Show, exp.Summarize)
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
    except RecursionError:
        raise QueryParseError("the query nests too deeply to parse") from None
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
    words = _LEADING_COMMENTS.sub("", sql).split(None, 1)
    first = words[0].upper().rstrip(";") if words else ""
    try:
        tree = parse_one(sql)
    except QueryParseError:
        if first in NON_QUERY_WORDS:
            raise QueryRefused(f"refused: {first} statement; only SELECT/WITH queries are run") from None
        raise
    if isinstance(tree, exp.Query):
        return tree
    if first in NON_QUERY_WORDS or isinstance(tree, STATEMENTS):
        kind = statement_type(tree) if isinstance(tree, STATEMENTS) else first
        raise QueryRefused(f"refused: {kind} statement; only SELECT/WITH queries are run")
    raise QueryRefused(f"refused: {' '.join(sql.split())[:40]!r} is not a SQL statement; "
                       "give one SELECT/WITH query")


def quote_ident(name: str) -> str:
    """A DuckDB identifier, quoted by sqlglot: the only way a table or column name enters SQL text."""
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


@dataclass
class Result:
    columns: list[str]
    types: list[str]
    rows: list[tuple]
    seconds: float
    truncated: bool = False     # more rows than the cap; `rows` holds the first ones


@dataclass(frozen=True)
class SandboxConfig:
    timeout_s: float = 60.0
    memory_limit: str = "4GB"
    threads: int = 2
    max_rows: int = 200_000     # larger results are not fetched (cannot be compared cheaply)

    def __post_init__(self):
        check_timeout(self.timeout_s)
        memory_bytes(self.memory_limit)

    def settings(self) -> dict:
        return {"enable_external_access": False, "lock_configuration": True,
                "memory_limit": self.memory_limit, "threads": self.threads}


def check_timeout(seconds: float, what: str = "timeout") -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            math.isfinite(seconds) and seconds > 0):
        raise SqlError(f"{what} must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def memory_bytes(limit: str) -> int:
    """'4GB' -> 4e9, as DuckDB reads its memory_limit."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(limit))
    if not m or m.group(2).upper() not in _UNITS or float(m.group(1)) <= 0:
        raise SqlError(f"memory limit {limit!r} is not a size such as 4GB or 512MiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def open_readonly(path: str | os.PathLike, config: SandboxConfig) -> duckdb.DuckDBPyConnection:
    """The sandbox's connection settings, in this process (the worker opens its own the same way)."""
    return sandbox_worker.open_connection(str(_database_file(path)), config.settings())


def _database_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise NotADatabase(f"{path}: no such database file")
    if "\\" in str(path):  # DuckDB reads a backslash in a path as a separator
        raise NotADatabase(f"{path}: DuckDB cannot open a path holding a backslash; rename the file")
    return path


def _open_error(path: Path, message: str) -> NotADatabase:
    if "lock" in message.lower():
        return NotADatabase(f"{path}: the database is locked by another process; close it there "
                            f"or work on a copy ({message})")
    return NotADatabase(f"{path}: not a DuckDB database ({message})")


# A worker is killed above the memory limit plus this much (the interpreter and DuckDB itself).
MEMORY_HEADROOM = 256 * 2**20
GRACE_S = 2.0      # past its timeout a statement gets this long to stop before its worker is killed
POLL_S = 0.02


class Sandbox:
    """One read-only DuckDB database behind the statement check, the timeout and fixed limits.

    The connection lives in a worker process (see sandbox_worker): a statement that runs past
    its timeout or takes the worker past the memory limit, even while DuckDB plans it, ends
    with the worker killed and a fresh one started for the next statement.
    """

    def __init__(self, path: str | os.PathLike, config: SandboxConfig = SandboxConfig()):
        self.path = _database_file(path)
        self.config = config
        self._kill_above = memory_bytes(config.memory_limit) + MEMORY_HEADROOM
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.sql_agent.sandbox_worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send((str(self.path), self.config.settings()))
        status, message = self._receive(30.0, "opening the database")
        if status != "ok":
            self.close()
            raise _open_error(self.path, message)

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _receive(self, wait_s: float, what: str):
        """The worker's reply; the worker is killed if it runs out of time or memory first."""
        give_up = time.monotonic() + wait_s
        watched = psutil.Process(self._proc.pid)
        while not self._conn.poll(POLL_S):
            try:
                over_memory = watched.memory_info().rss > self._kill_above
            except psutil.NoSuchProcess:
                over_memory = False
            code = self._proc.poll()
            if code is not None:
                self._stop()
                raise QueryFailed(f"the sandbox worker died while {what} (exit code {code})")
            if over_memory:
                self._stop()
                raise QueryFailed(f"{what} went past the memory limit of {self.config.memory_limit}; "
                                  "the statement was stopped")
            if time.monotonic() > give_up:
                self._stop()
                raise QueryTimeout(f"{what} exceeded the timeout of {wait_s - GRACE_S:g}s "
                                   "and was stopped")
        try:
            return self._conn.recv()
        except EOFError:
            self._stop()
            raise QueryFailed(f"the sandbox worker died while {what}") from None

    def _request(self, op: str, sql: str, timeout_s: float | None = None, max_rows: int | None = None):
        check_query(sql)
        timeout = self.config.timeout_s if timeout_s is None else check_timeout(timeout_s)
        if self._conn is None:
            self._start()
        self._conn.send((op, sql, timeout, max_rows or self.config.max_rows))
        status, payload = self._receive(timeout + GRACE_S, "the query")
        if status == "timeout":
            raise QueryTimeout(payload)
        if status == "failed":
            raise QueryFailed(payload)
        return payload

    def query(self, sql: str, timeout_s: float | None = None, *, row_cap: int | None = None) -> Result:
        """The result. Past `max_rows` rows it is an error; with `row_cap`, the first `row_cap`
        rows come back with `truncated` set."""
        cap = row_cap or self.config.max_rows
        columns, types, rows, elapsed = self._request("query", sql, timeout_s, cap)
        if len(rows) > cap and row_cap is None:
            raise QueryFailed(f"result has more than {cap} rows; too large to compare")
        return Result(columns, types, rows[:cap], elapsed, truncated=len(rows) > cap)

    def arrow(self, sql: str, timeout_s: float | None = None) -> pa.Table:
        """The whole result as an Arrow table (for trusted queries over a bounded sample)."""
        return self._request("arrow", sql, timeout_s)

    def explain(self, sql: str) -> str:
        """The physical plan; raises QueryFailed when the query does not bind."""
        return self._request("explain", sql)

    def run_seconds(self, sql: str, timeout_s: float | None = None) -> float:
        return self._request("run", sql, timeout_s)

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
