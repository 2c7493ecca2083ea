"""The DuckDB sandbox: forbidden statements and file access are refused, limits hold."""

import duckdb
import pytest

from sluice.sql_agent.duck import (NotADatabase, QueryFailed, QueryParseError, QueryRefused,
                                   QueryTimeout, Sandbox, SandboxConfig, check_query,
                                   open_readonly)
from sluice.sql_agent.perturb import perturbed_copies
from sluice.sql_agent.schema import profile
from sluice.sql_agent.testing import make_shop_db


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return make_shop_db(tmp_path_factory.mktemp("sql") / "shop.duckdb")


@pytest.fixture()
def sb(db):
    with Sandbox(db, SandboxConfig(timeout_s=5)) as s:
        yield s


REFUSED = [
    "DELETE FROM orders",
    "UPDATE orders SET status = 'x'",
    "INSERT INTO products VALUES (1000, 'x', 1.0)",
    "DROP TABLE orders",
    "CREATE TABLE t AS SELECT 1",
    "ATTACH 'other.duckdb' AS other",
    "DETACH other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "COPY orders TO 'out.csv'",
    "EXPORT DATABASE 'dump'",
    "SET enable_external_access = true",
    "RESET threads",
    "PRAGMA threads=8",
    "SELECT 1; DROP TABLE orders",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_non_queries_are_refused_before_running(sb, sql):
    with pytest.raises(QueryRefused, match="refused"):
        sb.query(sql)
    assert sb.query("SELECT count(*) FROM orders").rows == [(4000,)]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('{f}')",
    "SELECT * FROM read_text('{f}')",
    "SELECT * FROM read_parquet('{f}')",
    "SELECT * FROM '{f}'",
    "SELECT * FROM glob('{d}/*')",
])
def test_file_access_from_a_query_is_refused(sb, tmp_path, sql):
    f = tmp_path / "secret.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(QueryFailed):
        sb.query(sql.format(f=f, d=tmp_path))


def test_configuration_and_writes_are_locked_even_past_the_parser(sb, db):
    # The statement check runs first; these go straight to a connection opened as the
    # sandbox's worker opens it, to show the second wall.
    con = open_readonly(db, SandboxConfig())
    for sql in ["SET threads = 8", "SET enable_external_access = true",
                "ATTACH ':memory:' AS m", "CREATE TABLE t (a INT)", "LOAD tpch"]:
        with pytest.raises(duckdb.Error):
            con.execute(sql)
    assert sb.query("SELECT current_setting('threads')").rows == [(2,)]


def test_timeout_interrupts_a_long_query(sb):
    with pytest.raises(QueryTimeout, match="timeout of 0.3s"):
        sb.query("SELECT count(*) FROM range(100000000000) a", timeout_s=0.3)
    assert sb.query("SELECT 1").rows == [(1,)]  # the connection is still usable


def test_parse_error_has_line_and_column():
    with pytest.raises(QueryParseError, match="line 2, column 16"):
        check_query("SELECT *\nFROM t WHERE = = 3")
    with pytest.raises(QueryParseError):  # a typo is a parse error, not a refused statement
        check_query("SELEC o_id FROM orders")
    with pytest.raises(QueryRefused, match="EXPORT"):  # sqlglot cannot parse it; still refused
        check_query("-- dump\nEXPORT DATABASE 'x'")


def test_not_a_database(tmp_path):
    bad = tmp_path / "notes.duckdb"
    bad.write_text("just text\n" * 100)
    with pytest.raises(NotADatabase, match="not a DuckDB database"):
        Sandbox(bad)
    with pytest.raises(NotADatabase, match="no such database file"):
        Sandbox(tmp_path / "missing.duckdb")


def test_result_types_and_timing(sb):
    res = sb.query("SELECT c_id, price FROM customers, products WHERE c_id = p_id ORDER BY 1 LIMIT 2")
    assert res.columns == ["c_id", "price"] and res.types == ["INTEGER", "DOUBLE"]
    assert len(res.rows) == 2
    quick, slow = sb.time_pair("SELECT 1", "SELECT sum(i * i) FROM range(20000000) t(i)", runs=3)
    assert 0 < quick < slow  # the timer measures the query it is given
    assert "SEQ_SCAN" in sb.explain("SELECT * FROM items").upper().replace(" ", "_")


def test_schema_profile_has_keys_and_stats(sb, tmp_path):
    prof = profile(sb, tmp_path)
    orders = prof.table("orders")
    assert orders.rows == 4000 and orders.primary_key == ["o_id"]
    assert orders.foreign_keys == [{"columns": ["c_id"], "table": "customers", "references": ["c_id"]}]
    region = prof.table("customers").column("region")
    assert 0.1 < region.null_fraction < 0.3 and 3 <= region.distinct <= 5
    assert prof.table("items").primary_key == ["o_id", "line"]
    assert profile(sb, tmp_path) is prof  # cached


def test_perturbed_copies(db, tmp_path):
    copies = perturbed_copies(db, tmp_path)
    counts = {}
    for name, path in copies.items():
        with Sandbox(path) as s:
            counts[name] = s.query(
                "SELECT (SELECT count(*) FROM customers), (SELECT count(region) FROM customers), "
                "(SELECT count(c_id) FROM customers), (SELECT count(*) FROM events), "
                "(SELECT count(*) FROM (SELECT DISTINCT * FROM events))").rows[0]
    assert counts["empty"] == (0, 0, 0, 0, 0)
    customers, regions, ids, events, distinct_events = counts["nulls"]
    assert customers == ids == 500 and regions < 380  # key kept; region (400 set in the original) nulled
    customers, _, _, events, distinct_events = counts["duplicates"]
    assert customers == 500 and events > distinct_events  # keyed table kept, log duplicated
    assert counts["subsample"][0] < 500
    assert perturbed_copies(db, tmp_path) == copies


def test_table_and_column_names_that_need_quoting(tmp_path):
    """Names holding a double quote, a space or a keyword reach SQL only through quote_ident."""
    path = tmp_path / "odd.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute('CREATE TABLE "my ""odd"" table" ("select" INTEGER, "two words" VARCHAR)')
        con.execute("INSERT INTO \"my \"\"odd\"\" table\" VALUES (1, 'a'), (2, NULL)")
    with Sandbox(path) as sb:
        table = profile(sb, tmp_path / "cache").table('my "odd" table')
        assert table.rows == 2 and table.column("two words").null_fraction == 0.5
    with Sandbox(perturbed_copies(path, tmp_path / "cache")["nulls"]) as sb:
        assert sb.query('SELECT count(*) FROM "my ""odd"" table"').rows == [(2,)]
