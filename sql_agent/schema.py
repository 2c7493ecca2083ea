"""Schema and statistics of a database, for prompts and rules; computed once per database version.

Tables, columns, types, declared keys (primary, unique, foreign), row counts and per column an
approximate distinct count, the null fraction and a few sample values. Cached in memory and
as JSON in the cache folder, keyed by the file's fingerprint (path, size, mtime).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .duck import Sandbox, fingerprint, quote_ident
from .perturb import cache_folder

SAMPLES = 3


@dataclass
class ColumnStats:
    name: str
    type: str
    nullable: bool
    distinct: int
    null_fraction: float
    samples: list[str]


@dataclass
class TableStats:
    name: str
    rows: int
    columns: list[ColumnStats]
    primary_key: list[str] = field(default_factory=list)
    unique: list[list[str]] = field(default_factory=list)
    foreign_keys: list[dict] = field(default_factory=list)  # {columns, table, references}

    def column(self, name: str) -> ColumnStats | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)

    def unique_keys(self) -> list[set[str]]:
        keys = ([self.primary_key] if self.primary_key else []) + self.unique
        return [{c.lower() for c in k} for k in keys]


@dataclass
class DatabaseProfile:
    tables: dict[str, TableStats]

    def table(self, name: str) -> TableStats | None:
        return self.tables.get(name.lower())

    def sqlglot_schema(self) -> dict[str, dict[str, str]]:
        return {t.name: {c.name: c.type for c in t.columns} for t in self.tables.values()}

    def to_json(self) -> str:
        return json.dumps({k: asdict(v) for k, v in self.tables.items()})

    @classmethod
    def from_json(cls, text: str) -> "DatabaseProfile":
        tables = {}
        for key, t in json.loads(text).items():
            t["columns"] = [ColumnStats(**c) for c in t["columns"]]
            tables[key] = TableStats(**t)
        return cls(tables)


_MEMORY: dict[str, DatabaseProfile] = {}


def _compute(sb: Sandbox) -> DatabaseProfile:
    tables: dict[str, TableStats] = {}
    names = [r[0] for r in sb.query(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT temporary "
        "AND database_name = current_database() ORDER BY 1").rows]
    columns_of: dict[str, list[tuple]] = {name: [] for name in names}
    for table, *column in sb.query(
            "SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() WHERE "
            "schema_name = 'main' AND database_name = current_database() ORDER BY column_index").rows:
        if table in columns_of:
            columns_of[table].append(tuple(column))
    for table in names:
        cols = columns_of[table]
        aggs = ", ".join(f"approx_count_distinct({quote_ident(c)}), count({quote_ident(c)})" for c, _, _ in cols)
        counts = sb.query(f"SELECT count(*), {aggs} FROM {quote_ident(table)}").rows[0]
        sample = sb.query(f"SELECT * FROM {quote_ident(table)} LIMIT 20").rows
        rows = counts[0]
        columns = []
        for i, (name, typ, nullable) in enumerate(cols):
            seen = list(dict.fromkeys(str(r[i]) for r in sample if r[i] is not None))[:SAMPLES]
            columns.append(ColumnStats(name, typ, bool(nullable), int(counts[1 + 2 * i]),
                                       (1 - counts[2 + 2 * i] / rows) if rows else 0.0,
                                       [s[:40] for s in seen]))
        tables[table.lower()] = TableStats(table, rows, columns)
    for typ, table, cols, ref_table, ref_cols in sb.query(
            "SELECT constraint_type, table_name, constraint_column_names, referenced_table, "
            "referenced_column_names FROM duckdb_constraints() WHERE schema_name = 'main' "
            "AND database_name = current_database()").rows:
        t = tables.get(table.lower())
        if t is None:
            continue
        if typ == "PRIMARY KEY":
            t.primary_key = list(cols)
        elif typ == "UNIQUE":
            t.unique.append(list(cols))
        elif typ == "FOREIGN KEY":
            t.foreign_keys.append({"columns": list(cols), "table": ref_table,
                                   "references": list(ref_cols)})
    return DatabaseProfile(tables)


def profile(sb: Sandbox, cache_dir: str | Path | None = None) -> DatabaseProfile:
    """The profile of the sandbox's database, computed on first use per database version."""
    key = fingerprint(sb.path)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_folder(cache_dir) / f"profile-{key}.json"
    if path.exists():
        prof = DatabaseProfile.from_json(path.read_text())
    else:
        prof = _compute(sb)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        tmp.write_text(prof.to_json())
        tmp.rename(path)
    _MEMORY[key] = prof
    return prof
