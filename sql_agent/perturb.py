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
import stat
import tempfile
from pathlib import Path

import duckdb

from .duck import Sandbox, SandboxConfig, SqlError, fingerprint, quote_ident

VARIANTS = ("empty", "nulls", "duplicates", "subsample")


def default_cache_dir() -> Path:
    """A folder only this user can read and write: $XDG_CACHE_HOME/sluice/sql, else ~/.cache/...,
    else a per-user folder in the temp dir. Refused if someone else owns it or may write to it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "sluice" / "sql"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        folder = Path(tempfile.gettempdir()) / f"sluice-sql-cache-{os.getuid()}"
        folder.mkdir(exist_ok=True, mode=0o700)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise SqlError(f"cache folder {folder} is not a private folder of this user; remove it "
                       "or pass --cache-dir")
    return folder


def cache_folder(cache_dir: str | os.PathLike | None) -> Path:
    """The cache folder to use, created if missing; a path that is a file is an error."""
    if cache_dir is None:
        return default_cache_dir()
    folder = Path(cache_dir)
    if folder.exists() and not folder.is_dir():
        raise SqlError(f"--cache-dir {folder} is a file; give a folder for the cache")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _select(variant: str, src: str, columns: list[str], not_null: set[str], keyed: bool,
            rows: int, cap: int) -> str:
    step = max(1, math.ceil(rows / cap))
    if variant == "subsample":
        step = max(2, step)
    keep = f"hash(rowid, 7) % {step} = 0"
    cols = ", ".join(quote_ident(c) for c in columns)
    if variant == "empty":
        return f"SELECT {cols} FROM {src} LIMIT 0"
    if variant == "nulls":
        nulled = ", ".join(quote_ident(c) if c in not_null else
                           f"CASE WHEN hash(rowid, {i}) % 8 = 0 THEN NULL ELSE {quote_ident(c)} END "
                           f"AS {quote_ident(c)}" for i, c in enumerate(columns))
        return f"SELECT {nulled} FROM {src} WHERE {keep}"
    if variant == "duplicates" and not keyed:
        return (f"SELECT {cols} FROM {src} WHERE {keep} UNION ALL "
                f"SELECT {cols} FROM {src} WHERE {keep} AND hash(rowid, 3) % 4 = 0")
    return f"SELECT {cols} FROM {src} WHERE {keep}"


def perturbed_copies(db_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                     cap: int = 50_000, config: SandboxConfig = SandboxConfig()) -> dict[str, Path]:
    """{variant: path of a DuckDB file}, built on first use and reused while the source is unchanged.

    The source is read only through a sandbox; each copy is written from the Arrow rows it
    returns, on a connection with external access disabled, so no path or name becomes SQL."""
    folder = cache_folder(cache_dir) / f"perturbed-v3-{fingerprint(db_path)}-{cap}"
    paths = {v: folder / f"{v}.duckdb" for v in VARIANTS}
    if all(p.exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    with Sandbox(db_path, config) as source:
        tables = source.query("SELECT schema_name, table_name FROM duckdb_tables() "
                              "WHERE database_name = current_database() ORDER BY 1, 2").rows
        columns = {(s, t): [] for s, t in tables}
        for s, t, c, not_null in source.query(
                "SELECT schema_name, table_name, column_name, NOT is_nullable FROM duckdb_columns() "
                "WHERE database_name = current_database() ORDER BY column_index").rows:
            columns[(s, t)].append((c, not_null))
        keyed = set(source.query(
            "SELECT DISTINCT schema_name, table_name FROM duckdb_constraints() WHERE "
            "database_name = current_database() AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')").rows)
        counts = {(s, t): source.query(f"SELECT count(*) FROM {quote_ident(s)}.{quote_ident(t)}").rows[0][0]
                  for s, t in tables}
        for variant, path in paths.items():
            if not path.exists():
                _write_copy(source, variant, path, tables, columns, keyed, counts, cap, config)
    return paths


def _write_copy(source: Sandbox, variant: str, path: Path, tables, columns, keyed, counts,
                cap: int, config: SandboxConfig) -> None:
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    con = duckdb.connect(str(partial), config={"enable_external_access": False,
                                               "memory_limit": config.memory_limit,
                                               "threads": config.threads})
    try:
        for schema, table in tables:
            name = f"{quote_ident(schema)}.{quote_ident(table)}"
            cols = columns[(schema, table)]
            body = _select(variant, name, [c for c, _ in cols], {c for c, nn in cols if nn},
                           (schema, table) in keyed, counts[(schema, table)], cap)
            rows = source.arrow(body)
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
            con.register("sluice_copy_rows", rows)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM sluice_copy_rows")
            con.unregister("sluice_copy_rows")
    finally:
        con.close()
    partial.rename(path)
