"""Each DuckDB rewrite rule fires where it is safe, keeps the result, and stays off where not."""

import pytest

from sluice.sql_agent.duck import Sandbox, check_query
from sluice.sql_agent.equivalence import compare, order_spec
from sluice.sql_agent.rewrite.rules import apply_rule
from sluice.sql_agent.schema import profile
from sluice.sql_agent.testing import make_shop_db


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rules")
    with Sandbox(make_shop_db(folder / "shop.duckdb")) as sb:
        yield sb, profile(sb, folder)


FIRES = [
    ("distinct_redundant", "SELECT DISTINCT region, count(*) AS n FROM customers GROUP BY region",
     "SELECT DISTINCT", False),
    ("distinct_redundant", "SELECT DISTINCT c_id, name FROM customers WHERE region = 'north'",
     "SELECT DISTINCT", False),
    ("unused_join", "SELECT o.o_id, o.status FROM orders o LEFT JOIN customers c ON c.c_id = o.c_id",
     "JOIN", False),
    ("order_in_subquery", "SELECT count(*) FROM (SELECT o_id FROM orders ORDER BY o_date) s",
     "ORDER BY", False),
    ("repeated_subquery_to_cte",
     "SELECT c_id FROM customers WHERE c_id IN (SELECT c_id FROM orders WHERE status = 'open') "
     "OR c_id + 1 IN (SELECT c_id FROM orders WHERE status = 'open')", "AS MATERIALIZED", True),
    ("predicate_transfer",
     "SELECT count(*) FROM orders o JOIN items i ON o.o_id = i.o_id WHERE o.o_id < 100",
     "i.o_id < 100", True),
    ("preaggregate",
     "SELECT p.category, sum(i.amount) AS total, count(*) AS n, avg(i.qty) AS q, max(i.discount) AS d "
     "FROM items i JOIN products p ON i.p_id = p.p_id WHERE i.qty > 1 GROUP BY p.category "
     "ORDER BY total DESC", "GROUP BY p_id", True),
    ("or_to_union",
     "SELECT o.o_id, c.name FROM orders o JOIN customers c ON o.c_id = c.c_id "
     "WHERE (o.o_id < 50 OR o.o_date = DATE '2024-03-01' OR o.status = 'open') AND c.region = 'north'",
     "UNION ALL", True),
    ("or_implied_filters",
     "SELECT o.o_id FROM orders o JOIN customers c ON o.c_id = c.c_id "
     "WHERE (o.status = 'open' AND c.region = 'north') OR (o.status = 'returned' AND c.segment = 'retail')",
     "AND ((o.status = 'open') OR (o.status = 'returned'))", True),
]


@pytest.mark.parametrize("rule,sql,marker,added", FIRES)
def test_rule_fires_and_keeps_the_result(shop, rule, sql, marker, added):
    sb, prof = shop
    tree = check_query(sql)
    out = apply_rule(rule, tree, prof)
    assert out is not None
    new_sql = out.sql("duckdb")
    assert (marker in new_sql) == added, new_sql
    expected = sb.query(sql)
    assert compare(expected, sb.query(new_sql), order_spec(tree, expected.columns)), new_sql


NO_FIRE = [
    # DISTINCT over a non-key column can drop rows
    ("distinct_redundant", "SELECT DISTINCT region FROM customers"),
    # GROUP BY key not selected: DISTINCT may still merge rows
    ("distinct_redundant", "SELECT DISTINCT count(*) FROM orders GROUP BY c_id"),
    # the joined table's column is read
    ("unused_join", "SELECT o.o_id, c.name FROM orders o LEFT JOIN customers c ON c.c_id = o.c_id"),
    # not on a unique key: the join can repeat rows
    ("unused_join", "SELECT c.c_id FROM customers c LEFT JOIN orders o ON o.c_id = c.c_id"),
    # an inner join filters rows
    ("unused_join", "SELECT o.o_id FROM orders o JOIN customers c ON c.c_id = o.c_id"),
    # ORDER BY with LIMIT decides which rows come out
    ("order_in_subquery", "SELECT * FROM (SELECT o_id FROM orders ORDER BY o_date LIMIT 5) s"),
    # correlated: cannot be computed once
    ("repeated_subquery_to_cte",
     "SELECT c_id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.c_id = c.c_id) "
     "AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.c_id = c.c_id)"),
    # outer join: a filter on one side does not carry over
    ("predicate_transfer",
     "SELECT count(*) FROM orders o LEFT JOIN items i ON o.o_id = i.o_id WHERE o.o_id < 100"),
    # COUNT(DISTINCT) does not decompose
    ("preaggregate",
     "SELECT p.category, count(DISTINCT i.o_id) FROM items i JOIN products p ON i.p_id = p.p_id "
     "GROUP BY p.category"),
    # the OR spans two tables
    ("or_to_union",
     "SELECT o.o_id FROM orders o JOIN customers c ON o.c_id = c.c_id "
     "WHERE o.o_id < 50 OR c.region = 'north'"),
    # no table is filtered in every branch: nothing is implied
    ("or_implied_filters",
     "SELECT o.o_id FROM orders o JOIN customers c ON o.c_id = c.c_id "
     "WHERE (o.status = 'open' AND o.o_id < 5) OR c.region = 'north'"),
]


@pytest.mark.parametrize("rule,sql", NO_FIRE)
def test_rule_stays_off_where_it_could_change_the_result(shop, rule, sql):
    assert apply_rule(rule, check_query(sql), shop[1]) is None
