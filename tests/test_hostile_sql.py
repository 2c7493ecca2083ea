"""Hostile input to the SQL tools: names that try to become SQL, statements that try to outrun
the sandbox's limits, and inputs that used to crash a batch. Each case fails without its fix."""

import os
import time
from pathlib import Path

import pytest

from sluice.serving.cli import main
from sluice.sql_agent.duck import (NotADatabase, QueryFailed, QueryRefused, QueryTimeout, Sandbox,
                                   SandboxConfig, SqlError, check_query)
from sluice.sql_agent.perturb import default_cache_dir, perturbed_copies
from sluice.sql_agent.testing import make_shop_db

HOSTILE_NAMES = [
    "o'brien.duckdb",
    "x' AS src; COPY (SELECT 42) TO 'pwned.csv'; --.duckdb",
    'a "quoted" name; DROP TABLE orders.duckdb',
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return make_shop_db(tmp_path_factory.mktemp("hostile") / "shop.duckdb")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_database_file_name_never_becomes_sql(tmp_path, shop, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pwned.csv"
    db = tmp_path / name
    db.write_bytes(Path(shop).read_bytes())
    copies = perturbed_copies(db, tmp_path / "cache")
    assert not out.exists()
    with Sandbox(copies["nulls"]) as sb:
        assert sb.query("SELECT count(*) FROM customers").rows == [(500,)]
    assert main(["sql", "rewrite", "--db", str(db), "--runs", "1", "--cache-dir",
                 str(tmp_path / "cache"), str(_query_file(tmp_path))]) == 0
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cache", db.name, "q.sql"])


def _query_file(folder: Path, sql: str = "SELECT count(*) FROM orders") -> Path:
    q = folder / "q.sql"
    q.write_text(sql)
    return q


@pytest.mark.parametrize("method, sql, error", [
    # DuckDB folds these constants while planning, where neither interrupt() nor its memory
    # limit reaches: the worker process is killed instead
    ("explain", "SELECT length(repeat('x', 2000000000))", (QueryFailed, QueryTimeout)),
    ("query", "SELECT list_sum(range(300000000))", (QueryFailed, QueryTimeout)),
    ("query", "SELECT count(*) FROM range(100000000000)", QueryTimeout),
    ("query", "SELECT max(length(repeat(i::VARCHAR, 100000))) FROM range(100000) t(i)",
     (QueryFailed, QueryTimeout)),
])
def test_every_statement_is_under_the_timer_and_the_memory_limit(shop, method, sql, error):
    with Sandbox(shop, SandboxConfig(timeout_s=1.0, memory_limit="300MB")) as sb:
        start = time.monotonic()
        with pytest.raises(error):
            getattr(sb, method)(sql)
        assert time.monotonic() - start < 8
        assert sb.query("SELECT count(*) FROM orders").rows == [(4000,)]  # a fresh worker


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0, -1, True])
def test_a_timeout_is_a_positive_finite_number(shop, timeout):
    with pytest.raises(SqlError, match="positive number"):
        SandboxConfig(timeout_s=timeout)
    with Sandbox(shop) as sb, pytest.raises(SqlError, match="positive number"):
        sb.query("SELECT 1", timeout_s=timeout)


@pytest.mark.parametrize("value", ["nan", "inf", "-3"])
def test_cli_refuses_a_timeout_that_is_not_positive_and_finite(tmp_path, shop, capsys, value):
    assert main(["sql", "rewrite", "--db", shop, "--timeout", value, str(_query_file(tmp_path))]) == 2
    assert "--timeout must be a positive number" in capsys.readouterr().err


def test_default_cache_is_private_to_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = default_cache_dir()
    assert folder.is_relative_to(tmp_path / "xdg") and folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)  # as if another user could plant copies or statistics there
    with pytest.raises(SqlError, match="not a private folder"):
        default_cache_dir()


@pytest.mark.parametrize("sql, message", [
    ("hello world", "'hello world' is not a SQL statement"),
    ("orders", "is not a SQL statement"),
    ("CHECKPOINT", "CHECKPOINT statement"),
    ("VACUUM", "VACUUM statement"),
    ("SHOW TABLES", "SHOW statement"),
])
def test_refusals_name_what_was_given(sql, message):
    with pytest.raises(QueryRefused, match=message):
        check_query(sql)


def test_a_deeply_nested_query_is_that_querys_error_in_a_batch(tmp_path, shop, capsys):
    folder = tmp_path / "queries"
    folder.mkdir()
    (folder / "a_deep.sql").write_text("SELECT " + "(" * 3000 + "1" + ")" * 3000)
    (folder / "b_fine.sql").write_text("SELECT count(*) FROM orders")
    (folder / "c_binary.sql").write_bytes(b"SELECT '\xff'")
    report = tmp_path / "report"
    assert main(["sql", "rewrite", "--db", shop, "--runs", "1", "--cache-dir", str(tmp_path / "c"),
                 "--report", str(report), str(folder / "a_deep.sql"), str(folder / "b_fine.sql")]) == 1
    out = capsys.readouterr().out
    assert "a_deep.sql: error query does not parse: the query nests too deeply" in out
    assert "b_fine.sql: kept" in out and (report / "report.html").is_file()
    assert main(["sql", "rewrite", "--db", shop, str(folder / "c_binary.sql")]) == 2
    assert "not UTF-8 text (byte 8)" in capsys.readouterr().err


def test_report_and_cache_dir_that_are_files(tmp_path, shop, capsys):
    a, b = _query_file(tmp_path), tmp_path / "b.sql"
    b.write_text("SELECT 1")
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert main(["sql", "rewrite", "--db", shop, "--report", str(taken), str(a), str(b)]) == 2
    assert "--report" in capsys.readouterr().err and taken.read_text() == "mine"
    assert main(["sql", "rewrite", "--db", shop, "--cache-dir", str(taken), str(a)]) == 2
    assert "--cache-dir" in capsys.readouterr().err and taken.read_text() == "mine"


def test_a_backslash_in_a_database_name_is_a_clear_error(tmp_path, shop):
    db = tmp_path / "back\\slash.duckdb"
    db.write_bytes(Path(shop).read_bytes())
    with pytest.raises(NotADatabase, match="holding a backslash; rename the file"):
        Sandbox(db)


def test_a_locked_database_is_reported_as_locked(tmp_path, shop):
    import duckdb

    db = tmp_path / "busy.duckdb"
    db.write_bytes(Path(shop).read_bytes())
    writer = duckdb.connect(str(db))  # another process's write lock, as the worker sees it
    try:
        with pytest.raises(NotADatabase, match="locked by another process"):
            Sandbox(db)
    finally:
        writer.close()
    assert os.path.exists(db)
