"""Rewrite prompts, rendered with jinja2: an ensemble of basic prompts and database-sensitive
prompts that carry the schema and statistics of the tables the query reads.

Every prompt for one query starts with the same text (instructions, schema, query) and ends
with its hint, so the engine's prefix grouping serves the shared part once.
"""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlglot import exp

from ..schema import DatabaseProfile

HINTS = {
    "redundancy": "Remove redundant work: DISTINCT that cannot change the rows, joins whose "
                  "columns are unused, ORDER BY inside subqueries, subqueries written twice.",
    "predicates": "Filter as early as possible: move or copy selective predicates across "
                  "equi-joins and into subqueries.",
    "aggregation": "Aggregate before joining where the grouping keys allow it, and replace "
                   "correlated subqueries with joins on pre-aggregated results.",
    "disjunction": "Split OR conditions over different selective predicates into UNION ALL "
                   "branches that each use one predicate.",
}

_ENV = Environment(loader=PackageLoader("sluice.sql_agent.rewrite", "templates"),
                   undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                   lstrip_blocks=True)


def describe(t) -> str:
    """One table's schema and statistics, a line per column."""
    head = f"Table {t.name} ({t.rows:,} rows"
    if t.primary_key:
        head += f"; primary key {', '.join(t.primary_key)}"
    for fk in t.foreign_keys:
        head += f"; {', '.join(fk['columns'])} references {fk['table']}({', '.join(fk['references'])})"
    lines = [head + ")"]
    for c in t.columns:
        line = f"  {c.name} {c.type}{'' if c.nullable else ' NOT NULL'}: ~{c.distinct:,} distinct"
        if c.null_fraction:
            line += f", {100 * c.null_fraction:.0f}% null"
        if c.samples:
            line += f", e.g. {', '.join(c.samples)}"
        lines.append(line)
    return "\n".join(lines)


_ENV.filters["describe"] = describe


def tables_read(tree: exp.Expression, profile: DatabaseProfile):
    names = dict.fromkeys(t.name.lower() for t in tree.find_all(exp.Table))
    return [profile.table(n) for n in names if profile.table(n) is not None]


def render(kind: str, sql: str, hint: str, tables=()) -> str:
    return _ENV.get_template(f"{kind}.j2").render(sql=sql.strip(), hint=hint, tables=tables)


def ensemble(sql: str, tree: exp.Expression, profile: DatabaseProfile,
             kinds: tuple[str, ...] = ("basic", "db_aware")) -> list[tuple[str, str]]:
    """[(name, prompt)]: every kind with every hint."""
    tables = tables_read(tree, profile)
    return [(f"{kind}/{name}", render(kind, sql, hint, tables))
            for kind in kinds for name, hint in HINTS.items()]
