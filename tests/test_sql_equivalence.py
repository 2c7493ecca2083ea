"""The result comparison that decides whether a rewrite keeps the original's answer."""

from decimal import Decimal

import pytest

from sluice.sql_agent.duck import Result, check_query
from sluice.sql_agent.equivalence import STRICT_ORDER, compare, order_spec


def res(rows, columns=("k", "v"), types=("INTEGER", "DOUBLE")):
    return Result(list(columns), list(types), [tuple(r) for r in rows], 0.0)


def test_equal_bags_in_any_order():
    assert compare(res([(1, 1.0), (2, 2.0), (2, 2.0)]), res([(2, 2.0), (1, 1.0), (2, 2.0)]))


def test_unequal_values_and_multiplicities():
    v = compare(res([(1, 1.0), (2, 2.0)]), res([(1, 1.0), (3, 2.0)]))
    assert not v and "different rows" in v.reason
    # same set, different multiplicities: bag semantics tells them apart
    assert not compare(res([(1, 1.0), (1, 1.0), (2, 2.0)]), res([(1, 1.0), (2, 2.0), (2, 2.0)]))
    assert "row counts" in compare(res([(1, 1.0)]), res([(1, 1.0), (1, 1.0)])).reason


def test_floats_within_tolerance_decimals_exact():
    assert compare(res([(1, 0.1 + 0.2)]), res([(1, 0.3)]))
    assert not compare(res([(1, 0.3)]), res([(1, 0.3001)]))
    dec = ("k", "d"), ("INTEGER", "DECIMAL(10,2)")
    assert not compare(res([(1, Decimal("0.30"))], *dec), res([(1, Decimal("0.31"))], *dec))


def test_nulls_match_only_nulls():
    assert compare(res([(None, None), (1, 2.0)]), res([(1, 2.0), (None, None)]))
    assert not compare(res([(None, 1.0)]), res([(0, 1.0)]))
    assert not compare(res([(1, None)]), res([(1, 0.0)]))


def test_columns_and_types_must_match():
    assert "columns differ" in compare(res([(1, 1.0)]), res([(1, 1.0)], ("k", "w"))).reason
    assert "types differ" in compare(res([(1, 1.0)]),
                                     res([(1, 1.0)], types=("BIGINT", "DOUBLE"))).reason


def test_ordered_results_respect_order_and_allow_ties():
    expected = res([(1, 5.0), (2, 4.0), (2, 3.0), (3, 1.0)])
    by_k = [0]
    ties_swapped = res([(1, 5.0), (2, 3.0), (2, 4.0), (3, 1.0)])
    assert compare(expected, ties_swapped, by_k)
    out_of_order = res([(2, 4.0), (1, 5.0), (2, 3.0), (3, 1.0)])
    v = compare(expected, out_of_order, by_k)
    assert not v and "out of order" in v.reason
    assert compare(expected, out_of_order)  # same bag: fine without ORDER BY
    # a wrong row inside a run of ties is still caught
    assert not compare(expected, res([(1, 5.0), (2, 4.0), (2, 9.0), (3, 1.0)]), by_k)
    # keys the result does not show: the order is compared exactly, ties included
    assert not compare(expected, ties_swapped, STRICT_ORDER)
    assert compare(expected, expected, STRICT_ORDER)


@pytest.mark.parametrize("sql,spec", [
    ("SELECT a, b FROM t", None),
    ("SELECT a, b FROM t ORDER BY b DESC, a", [1, 0]),
    ("SELECT a AS x, sum(b) FROM t GROUP BY a ORDER BY 2", [1]),
    ("SELECT a AS x, sum(b) AS s FROM t GROUP BY a ORDER BY sum(b)", [1]),
    ("SELECT t.a, b FROM t ORDER BY t.a", [0]),
    ("SELECT a FROM t ORDER BY b", STRICT_ORDER),
    ("SELECT a FROM t UNION ALL SELECT a FROM u ORDER BY a", [0]),
])
def test_order_spec_from_the_original_query(sql, spec):
    tree = check_query(sql)
    names = [p.alias_or_name for p in tree.selects]
    assert order_spec(tree, names) == spec
