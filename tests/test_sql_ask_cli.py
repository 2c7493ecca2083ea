"""`sluice sql ask` end to end: on the tiny dummy-weight model through the real online engine
(random text, so every candidate must fail for a stated reason), and its input errors."""

import json

import pytest

from sluice.serving.cli import main
from sluice.sql_agent.testing import make_shop_db

pytest_plugins = ["engine_fixtures"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return make_shop_db(tmp_path_factory.mktemp("ask") / "shop.duckdb")


@pytest.mark.vllm
def test_ask_on_the_tiny_model_says_no_valid_sql_with_reasons(db, tiny_model, tmp_path, capsys):
    code = main(["sql", "ask", "--db", db, "--model", tiny_model, "--dummy-weights", "--json",
                 "--candidates", "2", "--revisions", "1", "--cache-dir", str(tmp_path),
                 "How many orders shipped to the north region?"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 1 and answer["status"] == "no valid SQL" and answer["sql"] is None
    assert len(answer["candidates"]) == 2
    assert all(c["status"] in {"parse_error", "refused", "failed", "empty"} and c["error"]
               for c in answer["candidates"])
    assert all(c["revisions"] == 1 for c in answer["candidates"])
    assert {"orders.status=shipped", "customers.region=north"} <= {
        f"{v['table']}.{v['column']}={v['value']}" for v in answer["values"]}
    stages = answer["stages"]
    assert [s for s in stages] == ["keywords", "schema", "candidates", "revise"]
    # later stages reuse the schema prefix that the first call put in vLLM's cache
    assert stages["candidates"]["cached_tokens"] > 0.5 * stages["candidates"]["prompt_tokens"]


@pytest.mark.parametrize("argv, message", [
    (["--db", "{notdb}", "q?"], "not a DuckDB database"),
    (["--db", "{db}", "  "], "question is empty"),
    (["--db", "{db}", "--slo", "nan", "q?"], "--slo must be a positive number"),
    (["--db", "{db}", "--model", "no/such/model/dir", "q?"], "does not exist"),
])
def test_input_errors_are_one_line_and_exit_2(db, tmp_path, capsys, argv, message):
    notdb = tmp_path / "notes.duckdb"
    notdb.write_text("not a database\n")
    argv = [a.format(db=db, notdb=notdb) for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(tmp_path)]
    assert main(["sql", "ask", "--cache-dir", str(tmp_path / "c"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
