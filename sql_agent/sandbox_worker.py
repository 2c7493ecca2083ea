"""The process that holds a sandboxed DuckDB connection and runs the statements sent to it.

DuckDB folds constant expressions while it plans, where neither `interrupt()` nor its memory
limit reaches (`EXPLAIN SELECT length(repeat('x', 2e9))`). So the connection lives in this
child process: the parent checks every statement before sending it, and kills the child when
a statement outlives its timeout or the process outgrows the memory limit. Only duckdb and
pyarrow are imported here, so the child starts in a fraction of a second.

Protocol over one `multiprocessing.connection.Connection`: the first message is
`(path, settings)`, answered `("ok", None)` or `("error", message)`; then each request is
`(op, sql, timeout_s, max_rows)` with op one of query, run, explain, arrow, answered
`("ok", payload)`, `("timeout", message)` or `("failed", message)`.
"""

from __future__ import annotations

import sys
import threading
import time
from multiprocessing.connection import Connection

import duckdb


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def open_connection(path: str, settings: dict) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(path, read_only=True, config=settings)


def _execute(con: duckdb.DuckDBPyConnection, op: str, sql: str, max_rows: int):
    start = time.perf_counter()
    if op == "explain":
        return "\n".join(r[1] for r in con.execute("EXPLAIN " + sql).fetchall())
    if op == "arrow":
        return con.sql(sql).to_arrow_table()
    cur = con.execute(sql)
    if op == "run":
        cur.fetchall()
        return time.perf_counter() - start
    rows = cur.fetchmany(max_rows + 1)
    elapsed = time.perf_counter() - start
    return ([d[0] for d in cur.description], [str(d[1]) for d in cur.description], rows, elapsed)


def serve(conn: Connection) -> None:
    path, settings = conn.recv()
    try:
        con = open_connection(path, settings)
    except duckdb.Error as e:
        conn.send(("error", _one_line(e)))
        return
    conn.send(("ok", None))
    while True:
        try:
            op, sql, timeout_s, max_rows = conn.recv()
        except EOFError:  # the parent closed the sandbox or died
            return
        timer = threading.Timer(timeout_s, con.interrupt)
        timer.start()
        try:
            reply = ("ok", _execute(con, op, sql, max_rows))
        except duckdb.InterruptException:
            reply = ("timeout", f"query exceeded the timeout of {timeout_s:g}s")
        except (duckdb.Error, RecursionError, ValueError, OverflowError) as e:
            reply = ("failed", _one_line(e))
        finally:
            timer.cancel()
        conn.send(reply)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
