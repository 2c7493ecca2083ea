"""The prompts of the Text-to-SQL stages and the parsing of their answers, as plain functions.

Every prompt starts with the same text for one database (instructions and schema), then the
question, so all stages of a question, and all questions on a database, share one prefix in
the engine's cache. A parser never trusts the answer: it takes what it can use and says why
when there is nothing.
"""

from __future__ import annotations

import json
import re

from jinja2 import Environment, PackageLoader, StrictUndefined

from ..rewrite.llm import extract_sql
from ..rewrite.prompts import describe
from ..schema import DatabaseProfile

_ENV = Environment(loader=PackageLoader("sluice.sql_agent.text2sql", "templates"),
                   undefined=StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
                   lstrip_blocks=True)
_ENV.filters["describe"] = describe

CANDIDATE_STYLES = ("divide", "plan")


def render(template: str, **context) -> str:
    context.setdefault("previous", [])
    context.setdefault("hint", None)
    context.setdefault("values", [])
    context.setdefault("omitted", [])
    return _ENV.get_template(f"{template}.j2").render(**context)


def _json_in(text: str):
    """The first JSON list or object in `text`, or None."""
    for m in re.finditer(r"[\[{]", text):
        try:
            return json.JSONDecoder().raw_decode(text[m.start():])[0]
        except ValueError:
            continue
    return None


def parse_keywords(text: str) -> list[str]:
    """A JSON list of strings, else comma or line separated words; at most 20, deduplicated."""
    data = _json_in(text)
    if isinstance(data, list):
        words = [str(w) for w in data if isinstance(w, (str, int, float))]
    else:
        words = re.split(r"[,\n;]", text)
    words = [w.strip().strip("\"'`*-. ") for w in words]
    return list(dict.fromkeys(w for w in words if 0 < len(w) <= 60))[:20]


def parse_schema_selection(text: str, profile: DatabaseProfile) -> dict[str, list[str]]:
    """{table: [columns]} named in the answer that exist in the database (by any case)."""
    data = _json_in(text)
    chosen: dict[str, list[str]] = {}
    if isinstance(data, dict):
        pairs = [(str(t), c) for t, cols in data.items() if isinstance(cols, list)
                 for c in cols if isinstance(c, str)]
    else:
        pairs = re.findall(r"\b(\w+)\.(\w+)\b", text)
    for table, column in pairs:
        t = profile.table(table)
        col = t.column(column) if t else None
        if col is not None and col.name not in chosen.setdefault(t.name, []):
            chosen[t.name].append(col.name)
    return {t: cols for t, cols in chosen.items() if cols}


def parse_sql(text: str) -> str:
    return extract_sql(text)


def parse_unit_tests(text: str, limit: int) -> list[str]:
    """Numbered (or bulleted) lines; at most `limit`."""
    tests = [m.group(1).strip() for m in re.finditer(r"^\s*(?:\d+[.)]|[-*])\s*(.+)$", text, re.M)]
    return [t for t in tests if t][:limit]


def parse_verdicts(text: str, tests: int) -> list[bool]:
    """pass/fail per test, by number; a test the answer does not judge fails."""
    verdicts = [False] * tests
    for m in re.finditer(r"^\s*(\d+)[.):]?\s*(pass|passed|fail|failed|yes|no)\b", text, re.M | re.I):
        i = int(m.group(1)) - 1
        if 0 <= i < tests:
            verdicts[i] = m.group(2).lower() in ("pass", "passed", "yes")
    return verdicts
