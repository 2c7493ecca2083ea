"""Text-to-SQL stages with a scripted stand-in engine (exact answers per stage), the sandbox
refusing forbidden candidates, the row cap and timeout, and value retrieval by spelling."""

import asyncio
import json
import time

import pytest

from sluice.engine.types import Completion
from sluice.sql_agent.duck import SqlError
from sluice.sql_agent.testing import make_shop_db
from sluice.sql_agent.text2sql import stages
from sluice.sql_agent.text2sql.agent import Text2SQL, Text2SQLConfig, Turn


class ScriptedEngine:
    """Answers each stage from a script: {stage kind: [answers, cycled] or callable(prompt)}."""

    def __init__(self, script: dict):
        self.script, self.calls, self.prompts = script, [], []

    async def call(self, prompt, params, *, workflow, stage):
        workflow.check_call(stage, time.monotonic())  # the stage must be in the declared plan
        kind = workflow.plan.get(stage).kind
        self.calls.append(stage)
        self.prompts.append(prompt)
        answer = self.script.get(kind, "")
        if callable(answer):
            answer = answer(prompt)
        elif isinstance(answer, list):
            answer = answer[sum(1 for s in self.calls if workflow.plan.get(s).kind == kind) - 1]
        await asyncio.sleep(0)
        return Completion(answer, prompt_tokens=len(prompt) // 4, output_tokens=len(answer) // 4)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return make_shop_db(tmp_path_factory.mktemp("t2s") / "shop.duckdb")


def ask(db, tmp_path, script, question="How many orders have shipped?", **config):
    engine = ScriptedEngine(script)
    cfg = Text2SQLConfig(cache_dir=str(tmp_path / "cache"), **{"candidates": 2, **config})
    with Text2SQL(db, engine, cfg) as agent:
        return agent.ask(question), engine


SHIPPED = "```sql\nSELECT count(*) FROM orders WHERE status = 'shipped'\n```"


def test_one_cluster_answers_without_unit_tests(db, tmp_path):
    answer, engine = ask(db, tmp_path, {"keywords": '["orders", "shiped"]',
                                        "schema": '{"orders": ["status", "nope"]}',
                                        "candidates": SHIPPED})
    assert answer.ok and answer.sql == "SELECT count(*) FROM orders WHERE status = 'shipped'"
    assert answer.rows[0][0] > 0 and answer.keywords == ["orders", "shiped"]
    assert answer.schema == {"orders": ["status"]}             # unknown column dropped
    assert ("orders", "status", "shipped") in {(v.table, v.column, v.value) for v in answer.values}
    assert engine.calls == ["keywords", "schema", "candidates", "candidates"]
    assert answer.clusters == [[0, 1]] and answer.stages["candidates"].calls == 2
    # every prompt of the question starts with the same schema text (one cached prefix)
    head = engine.prompts[0].split("Question:")[0]
    assert all(p.startswith(head) for p in engine.prompts) and "Table orders" in head


def test_revision_gets_the_error_and_fixes_the_candidate(db, tmp_path):
    answer, engine = ask(db, tmp_path, {
        "candidates": ["SELECT count(*) FROM order_table", SHIPPED],
        "revise": lambda p: SHIPPED if "order_table" in p and "does not exist" in p else "nothing"},
        schema_selection=False)
    first = answer.candidates[0]
    assert first.revisions == 1 and first.status == "ok" and answer.ok
    assert engine.calls == ["keywords", "candidates", "candidates", "revise-1"]


def test_disagreeing_clusters_go_to_unit_tests_and_the_most_passes_wins(db, tmp_path):
    all_orders = "SELECT count(*) FROM orders"
    script = {"candidates": [all_orders, all_orders, SHIPPED],
              "unit_tests": "1. the count counts only shipped orders\n2. one row\n",
              "judge": lambda p: "1. pass\n2. pass" if "WHERE status" in p else "1. fail\n2. pass"}
    answer, engine = ask(db, tmp_path, script, candidates=3, schema_selection=False)
    assert len(answer.clusters) == 2 and answer.clusters[0] == [0, 1]   # larger cluster first
    assert answer.sql.endswith("status = 'shipped'")                    # ...but fewer passes lost
    assert answer.tests == ["the count counts only shipped orders", "one row"]
    assert [c.passes for c in answer.candidates] == [1, 1, 2]
    assert engine.calls.count("judge") == 2


def test_ties_go_to_the_largest_cluster(db, tmp_path):
    all_orders = "SELECT count(*) FROM orders"
    script = {"candidates": [SHIPPED, all_orders, all_orders],
              "unit_tests": "1. one row", "judge": "1. pass"}
    answer, _ = ask(db, tmp_path, script, candidates=3, schema_selection=False)
    assert answer.sql == all_orders


FORBIDDEN = [f"```sql\n{sql}\n```" for sql in [
    "DELETE FROM orders", "ATTACH 'x.duckdb' AS x", "COPY orders TO 'leak.csv'",
    "SELECT * FROM read_csv('/etc/passwd')", "DROP TABLE orders; SELECT 1", "not sql at all"]]


def test_forbidden_candidates_are_refused_and_counted(db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    answer, _ = ask(db, tmp_path, {"candidates": FORBIDDEN, "revise": "no idea"},
                    candidates=len(FORBIDDEN), revisions=1, schema_selection=False)
    assert not answer.ok and answer.sql is None
    statuses = [c.status for c in answer.candidates]
    assert set(statuses) <= {"refused", "failed", "parse_error"} and "refused" in statuses
    assert answer.reason.startswith("no candidate ran:")
    assert not (tmp_path / "leak.csv").exists()


def test_row_cap_and_timeout_are_candidate_statuses(db, tmp_path):
    script = {"candidates": ["SELECT * FROM range(10000000)",
                             "SELECT count(*) FROM range(100000000000) a"]}
    answer, _ = ask(db, tmp_path, script, revisions=0, row_cap=50, timeout_s=0.5, schema_selection=False)
    big, slow = answer.candidates
    assert big.status == "ok" and big.truncated and big.rows == 50
    assert slow.status == "timeout" and "timeout" in slow.error
    assert answer.ok and answer.truncated and len(answer.rows) == 50


def test_follow_up_questions_carry_the_previous_turn(db, tmp_path):
    engine = ScriptedEngine({"candidates": SHIPPED})
    cfg = Text2SQLConfig(cache_dir=str(tmp_path / "c"), candidates=1, schema_selection=False)
    with Text2SQL(db, engine, cfg) as agent:
        agent.ask("And how many of those in the north?",
                  previous=[Turn("How many orders shipped?", "SELECT count(*) FROM orders")])
    assert all("Earlier question: How many orders shipped?" in p for p in engine.prompts)


def test_bad_questions_and_databases(db, tmp_path):
    with Text2SQL(db, ScriptedEngine({}), Text2SQLConfig(cache_dir=str(tmp_path))) as agent:
        with pytest.raises(SqlError, match="question is empty"):
            agent.ask("   ")
    import duckdb
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(SqlError, match="no tables"):
        Text2SQL(empty, ScriptedEngine({}), Text2SQLConfig(cache_dir=str(tmp_path)))


def test_a_schema_too_large_is_narrowed_by_retrieval(tmp_path):
    import duckdb
    path = tmp_path / "wide.duckdb"
    con = duckdb.connect(str(path))
    for i in range(1000):
        con.execute(f"CREATE TABLE t{i} (id INTEGER, label VARCHAR)")
    con.execute("CREATE TABLE shipments (id INTEGER, carrier VARCHAR)")
    con.execute("INSERT INTO shipments VALUES (1, 'Speedy Freight'), (2, 'Slow Boat')")
    con.close()
    engine = ScriptedEngine({"keywords": '["shipments", "Speedy Freight"]',
                             "candidates": "SELECT count(*) FROM shipments WHERE carrier = 'Speedy Freight'"})
    cfg = Text2SQLConfig(cache_dir=str(tmp_path / "c"), candidates=1, schema_selection=False,
                         schema_chars=2000, timeout_s=60)
    with Text2SQL(path, engine, cfg) as agent:
        answer = agent.ask("How many shipments did Speedy Fraight carry?")
    assert answer.tables_shown[0] == "shipments" and len(answer.tables_shown) < 1001
    assert "more tables are not shown" in engine.prompts[0]
    assert answer.ok and answer.rows == [(1,)]


@pytest.mark.parametrize("typo, value", [
    ("shiped", "shipped"), ("SHIPPED", "shipped"), ("custmer 42", "customer 42"),
    ("Gamez", "games"), ("toolz", "tools"),
])
def test_value_retrieval_finds_misspelled_values(db, tmp_path, typo, value):
    with Text2SQL(db, ScriptedEngine({}), Text2SQLConfig(cache_dir=str(tmp_path))) as agent:
        found = [m.value for m in agent.index.search(typo)]
    assert value in found[:10], found


def test_answer_parsers():
    assert stages.parse_keywords('Sure: ["a", "b", "a"]') == ["a", "b"]
    assert stages.parse_keywords("alpha, beta\ngamma") == ["alpha", "beta", "gamma"]
    assert stages.parse_unit_tests("1. x\n2) y\n- z\nnoise", 2) == ["x", "y"]
    assert stages.parse_verdicts("1. pass\n3: fail\n2 yes", 4) == [True, True, False, False]
    assert json.loads(json.dumps(stages.parse_keywords("garbage ###"))) == ["garbage ###"]


def test_cli_text_output_shows_sql_result_table_and_evidence(db, tmp_path, capsys):
    import argparse

    from sluice.serving.sql_ask_cli import _print

    answer, _ = ask(db, tmp_path, {"candidates": SHIPPED, "keywords": '["shipped"]'},
                    schema_selection=False)
    _print(answer, argparse.Namespace(json=False, explain=True, rows=20))
    out = capsys.readouterr().out
    assert out.startswith("SELECT count(*) FROM orders WHERE status = 'shipped';\n")
    assert "count_star()" in out and f"{answer.rows[0][0]}" in out
    assert "-- candidate 0 (divide, 0 revisions, cluster 0): ok" in out
    assert "-- values: orders.status = 'shipped'" in out and "-- stage candidates: 2 calls" in out
