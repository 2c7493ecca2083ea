"""Do two query results agree? Bag semantics, ORDER BY respected with ties free, float tolerance.

The order a result must have comes from the original query's top-level ORDER BY:
- no ORDER BY: the two results must be equal as bags (multisets) of rows;
- ORDER BY keys that are all output columns: the sequence of key values must match position
  by position, and rows may reorder only within a run of equal keys (ties);
- ORDER BY keys that are not output columns (cannot see the ties): the rows must match in
  exactly the same order. That is stricter than needed and may turn down a correct rewrite,
  never accept a wrong one.
Floats (DOUBLE/FLOAT/REAL) compare within a relative and absolute tolerance; NULL equals NULL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlglot import exp

from .duck import Result

FLOAT_TYPES = {"DOUBLE", "FLOAT", "REAL"}
STRICT_ORDER = "strict"  # order spec when the ORDER BY keys are not all output columns


@dataclass(frozen=True)
class Verdict:
    equal: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.equal


def order_spec(tree: exp.Expression, columns: list[str]) -> list[int] | str | None:
    """Output column indexes of the top-level ORDER BY keys; None without ORDER BY;
    STRICT_ORDER when some key is not an output column."""
    order = tree.args.get("order")
    if not order:
        return None
    projections = tree.selects if isinstance(tree, exp.Select) else []
    names = [c.lower() for c in columns]
    keys = []
    for ordered in order.expressions:
        key = ordered.this
        index = None
        if isinstance(key, exp.Literal) and key.is_int:
            index = int(key.this) - 1
        elif isinstance(key, exp.Column) and key.name.lower() in names and (
                not key.table or not projections):
            index = names.index(key.name.lower())
        else:
            for i, p in enumerate(projections):
                if (p.unalias() if isinstance(p, exp.Alias) else p) == key:
                    index = i
                    break
            if index is None and isinstance(key, exp.Column):
                # ORDER BY t.c where the output column is c (unqualified) or t.c
                index = next((i for i, p in enumerate(projections) if isinstance(p, exp.Column)
                              and p.name.lower() == key.name.lower()
                              and p.table in ("", key.table)), None)
        if index is None or not 0 <= index < len(columns):
            return STRICT_ORDER
        keys.append(index)
    return keys


def _float_columns(types: list[str]) -> set[int]:
    return {i for i, t in enumerate(types) if t.upper() in FLOAT_TYPES}


def _values_equal(a, b, is_float: bool, rel_tol: float, abs_tol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if is_float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
    return a == b


def _sortable(v):
    if v is None:
        return (0, 0)
    if isinstance(v, float) and math.isnan(v):
        return (2, 0)
    if isinstance(v, (list, dict, tuple)):
        return (3, repr(v))
    return (1, v)


def _bag_key(floats: set[int]):
    # exact columns first so that float noise only orders rows that are otherwise identical
    def key(row):
        exact = tuple(_sortable(v) for i, v in enumerate(row) if i not in floats)
        approx = tuple(_sortable(v) for i, v in enumerate(row) if i in floats)
        return exact + approx
    return key


def _rows_equal(a: tuple, b: tuple, floats: set[int], rel_tol, abs_tol) -> bool:
    return all(_values_equal(x, y, i in floats, rel_tol, abs_tol)
               for i, (x, y) in enumerate(zip(a, b)))


def _bags_equal(a: list[tuple], b: list[tuple], floats: set[int], rel_tol, abs_tol) -> int | None:
    """None when equal as bags, else the position (in sorted order) of the first difference."""
    key = _bag_key(floats)
    for i, (x, y) in enumerate(zip(sorted(a, key=key), sorted(b, key=key))):
        if not _rows_equal(x, y, floats, rel_tol, abs_tol):
            return i
    return None


def compare(expected: Result, actual: Result, order: list[int] | str | None = None,
            rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> Verdict:
    """Does `actual` (the candidate's result) agree with `expected` (the original's)?"""
    if [c.lower() for c in actual.columns] != [c.lower() for c in expected.columns]:
        return Verdict(False, f"output columns differ: {actual.columns} vs {expected.columns}")
    if actual.types != expected.types:
        return Verdict(False, f"output types differ: {actual.types} vs {expected.types}")
    if len(actual.rows) != len(expected.rows):
        return Verdict(False, f"row counts differ: {len(actual.rows)} vs {len(expected.rows)}")
    floats = _float_columns(expected.types)
    if order is None:
        where = _bags_equal(expected.rows, actual.rows, floats, rel_tol, abs_tol)
        return Verdict(True) if where is None else Verdict(False, "different rows (as bags)")
    if order == STRICT_ORDER:
        for i, (x, y) in enumerate(zip(expected.rows, actual.rows)):
            if not _rows_equal(x, y, floats, rel_tol, abs_tol):
                return Verdict(False, f"row {i + 1} differs (order compared exactly)")
        return Verdict(True)
    start = 0
    n = len(expected.rows)
    while start < n:
        keys = [expected.rows[start][k] for k in order]
        end = start + 1
        while end < n and all(_values_equal(expected.rows[end][k], v, k in floats, rel_tol, abs_tol)
                              for k, v in zip(order, keys)):
            end += 1
        for i in range(start, end):
            if not all(_values_equal(actual.rows[i][k], v, k in floats, rel_tol, abs_tol)
                       for k, v in zip(order, keys)):
                return Verdict(False, f"row {i + 1} is out of order")
        if _bags_equal(expected.rows[start:end], actual.rows[start:end], floats,
                       rel_tol, abs_tol) is not None:
            return Verdict(False, f"rows {start + 1}-{end} differ")
        start = end
    return Verdict(True)
