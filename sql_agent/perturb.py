"""Perturbed copies of a database, to catch rewrites that agree with the original by chance.

Built once per database version by this trusted harness (never by the SQL under test) as
separate DuckDB files in a cache folder, then opened read-only through the sandbox like the
original. Tables larger than `cap` rows are first cut to a deterministic sample of about
`cap` rows, so copies of a big database stay small.

- empty:      every table empty.
- nulls:      about 1 value in 8 of every nullable column replaced by NULL.
- duplicates: about 1 row in 4 appears twice, in tables without a primary or unique key.

Copies keep to the declared NOT NULL and key constraints, so a rewrite that relies on them
(DISTINCT over a key) is judged on databases it must work on.
- subsample:  about half of the (capped) rows, or fewer.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import duckdb

from .duck import fingerprint

VARIANTS = ("empty", "nulls", "duplicates", "subsample")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "sluice-sql-cache"


def _select(variant: str, src: str, columns: list[str], not_null: set[str], keyed: bool,
            rows: int, cap: int) -> str:
    step = max(1, math.ceil(rows / cap))
    if variant == "subsample":
        step = max(2, step)
    keep = f"hash(rowid, 7) % {step} = 0"
    cols = ", ".join(_q(c) for c in columns)
    if variant == "empty":
        return f"SELECT {cols} FROM {src} LIMIT 0"
    if variant == "nulls":
        nulled = ", ".join(_q(c) if c in not_null else
                           f"CASE WHEN hash(rowid, {i}) % 8 = 0 THEN NULL ELSE {_q(c)} END AS {_q(c)}"
                           for i, c in enumerate(columns))
        return f"SELECT {nulled} FROM {src} WHERE {keep}"
    if variant == "duplicates" and not keyed:
        return (f"SELECT {cols} FROM {src} WHERE {keep} UNION ALL "
                f"SELECT {cols} FROM {src} WHERE {keep} AND hash(rowid, 3) % 4 = 0")
    return f"SELECT {cols} FROM {src} WHERE {keep}"


def perturbed_copies(db_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                     cap: int = 50_000) -> dict[str, Path]:
    """{variant: path of a DuckDB file}, built on first use and reused while the source is unchanged."""
    folder = Path(cache_dir or default_cache_dir()) / f"perturbed-v2-{fingerprint(db_path)}-{cap}"
    paths = {v: folder / f"{v}.duckdb" for v in VARIANTS}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for variant, path in paths.items():
        if path.exists():
            continue
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        con = duckdb.connect(str(partial), config={"threads": 2})
        con.execute(f"ATTACH '{Path(db_path).resolve()}' AS src (READ_ONLY)")
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                             "WHERE database_name = 'src' ORDER BY 1, 2").fetchall()
        columns = {(s, t): con.execute(
            "SELECT column_name, NOT is_nullable FROM duckdb_columns() WHERE database_name = 'src' "
            "AND schema_name = ? AND table_name = ? ORDER BY column_index", [s, t]).fetchall()
            for s, t in tables}
        keyed = {(s, t) for s, t in con.execute(
            "SELECT DISTINCT schema_name, table_name FROM duckdb_constraints() WHERE "
            "database_name = 'src' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')").fetchall()}
        for schema, table in tables:
            if schema != "main":
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
            source = f"src.{_q(schema)}.{_q(table)}"
            rows = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
            cols = columns[(schema, table)]
            body = _select(variant, source, [c for c, _ in cols], {c for c, nn in cols if nn},
                           (schema, table) in keyed, rows, cap)
            con.execute(f"CREATE TABLE {_q(schema)}.{_q(table)} AS {body}")
        con.execute("DETACH src")
        con.close()
        partial.rename(path)
    return paths
