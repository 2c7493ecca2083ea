"""The rewrite pipeline's safeguards: every wrong candidate is rejected for its own reason,
including rewrites that agree with the original on the full database only by chance.
LLM answers come from a deterministic stand-in engine (the answers are the test's input)."""

import pytest

from sluice.engine.types import Completion
from sluice.sql_agent.duck import QueryFailed, QueryRefused, QueryTimeout
from sluice.sql_agent.rewrite.candidates import Candidate, RuleGenerator, SqlglotGenerator
from sluice.sql_agent.rewrite.llm import LLMGenerator, extract_sql
from sluice.sql_agent.rewrite.mcts import MCTSGenerator
from sluice.sql_agent.rewrite.pipeline import RewriteConfig, Rewriter
from sluice.sql_agent.rewrite.rules import RULES
from sluice.sql_agent.testing import make_shop_db


class StandInEngine:
    """Answers the i-th prompt of every call with answers[i % len(answers)]."""

    def __init__(self, answers, logprob=-0.5):
        self.answers, self.logprob, self.prompts = answers, logprob, []

    def generate(self, prompts, params):
        self.prompts += list(prompts)
        return [Completion(text=self.answers[i % len(self.answers)], prompt_tokens=len(p) // 4,
                           output_tokens=3, token_logprobs=[self.logprob] * 3)
                for i, p in enumerate(prompts)]


class Fixed:
    """A generator proposing the given SQL texts."""

    name = "fixed"

    def __init__(self, *sqls):
        self.sqls = sqls

    def propose(self, ctx):
        return [Candidate(s, f"fixed/{i}") for i, s in enumerate(self.sqls)]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rewrite")
    return make_shop_db(folder / "shop.duckdb"), str(folder / "cache")


def rewriter(db, gens, **cfg):
    path, cache = db
    return Rewriter(path, gens, RewriteConfig(runs=2, cache_dir=cache, **cfg))


def reasons(result):
    return {c.source: c.reason for c in result.candidates}


def test_rule_rewrite_is_verified_everywhere_and_accepted(db):
    sql = "SELECT DISTINCT region, count(*) AS n FROM customers GROUP BY region ORDER BY n DESC"
    with rewriter(db, [RuleGenerator()], min_speedup=1e-3) as rw:
        res = rw.rewrite(sql)
    assert res.accepted and res.source == "rule:distinct_redundant"
    assert "DISTINCT" not in res.chosen and "-SELECT DISTINCT" in res.diff()
    for copy in ("empty", "nulls", "duplicates", "subsample"):
        assert any(f"{copy} copy" in check for check in res.evidence)
    assert any(check.startswith("confirmed: speedup") for check in res.evidence)


def test_original_is_kept_when_no_candidate_is_fast_enough(db):
    sql = "SELECT DISTINCT region, count(*) AS n FROM customers GROUP BY region"
    with rewriter(db, [RuleGenerator(), SqlglotGenerator()], min_speedup=1000) as rw:
        res = rw.rewrite(sql)
    assert not res.accepted and res.chosen == sql and res.speedup is None
    assert all("not fast enough" in r for r in reasons(res).values()), reasons(res)


@pytest.mark.parametrize("original,candidate,reason", [
    # agree on the full database (segment has no NULLs there), not on the NULL-injected copy
    ("SELECT count(segment) AS n FROM customers", "SELECT count(*) AS n FROM customers",
     "different result on the nulls copy"),
    # agree on the full database, not once every table is empty
    ("SELECT max(o_id) AS m FROM orders", "SELECT o_id AS m FROM orders ORDER BY o_id DESC LIMIT 1",
     "different result on the empty copy"),
    # the log's rows happen to be unique: DISTINCT changes nothing until rows are duplicated
    ("SELECT o_id, kind FROM events", "SELECT DISTINCT o_id, kind FROM events",
     "different result on the duplicates copy"),
    ("SELECT o_id, status FROM orders WHERE status = 'open'",
     "SELECT o_id, status FROM orders", "different result on the full database: row counts differ"),
    ("SELECT count(*) AS n FROM orders", "SELECT CAST(count(*) AS INTEGER) AS n FROM orders",
     "output types differ"),
    ("SELECT o_id FROM orders", "SELECT o_id AS id, status FROM orders", "output columns differ"),
    ("SELECT o_id, o_date FROM orders ORDER BY o_date, o_id",
     "SELECT o_id, o_date FROM orders ORDER BY o_id", "out of order"),
    ("SELECT o_id FROM orders", "SELECT no_such_column FROM orders", "does not bind"),
    ("SELECT o_id FROM orders", "DELETE FROM orders", "is not a query"),
    ("SELECT o_id FROM orders", "SELEC o_id FROM", "does not parse"),
    ("SELECT o_id FROM orders", "SELECT o_id FROM orders", "same as the original"),
])
def test_each_wrong_candidate_is_rejected_for_its_reason(db, original, candidate, reason):
    with rewriter(db, [Fixed(candidate)], min_speedup=1e-3) as rw:
        res = rw.rewrite(original)
        assert not res.accepted and res.chosen == original
        assert reason in reasons(res)["fixed/0"], reasons(res)
        assert rw.sandbox.query("SELECT count(*) FROM orders").rows == [(4000,)]


def test_ties_may_reorder_under_order_by(db):
    original = "SELECT status, o_id FROM orders ORDER BY status"
    candidate = "SELECT status, o_id FROM orders ORDER BY status, o_id DESC"
    with rewriter(db, [Fixed(candidate)], min_speedup=1e-3) as rw:
        assert rw.rewrite(original).accepted


def broken_rule(tree, profile):
    return tree.args["no_such_part"]  # a bug: KeyError on every query


def test_a_crashing_rule_is_its_candidates_error_and_the_others_still_run(db, monkeypatch):
    monkeypatch.setitem(RULES, "broken", broken_rule)
    sql = "SELECT DISTINCT region, count(*) AS n FROM customers GROUP BY region ORDER BY n DESC"
    gens = [RuleGenerator(["broken", "distinct_redundant"]), MCTSGenerator(iterations=2)]
    with rewriter(db, gens, min_speedup=1e-3) as rw:
        res = rw.rewrite(sql)
    r = reasons(res)
    assert r["rule:broken"] == "rule broken crashed: KeyError: 'no_such_part'"
    assert r["mcts"] == "rule broken crashed: KeyError: 'no_such_part'"  # the search meets it too
    assert res.accepted and res.source == "rule:distinct_redundant"


def test_bad_originals_raise_clear_errors(db):
    with rewriter(db, [RuleGenerator()], timeout_s=0.3) as rw:
        with pytest.raises(QueryRefused):
            rw.rewrite("DROP TABLE orders")
        with pytest.raises(QueryTimeout):
            rw.rewrite("SELECT count(*) FROM range(100000000000) t(i)")
        with pytest.raises(QueryFailed, match="no_such_column"):
            rw.rewrite("SELECT no_such_column FROM orders")


def test_llm_candidates_through_a_stand_in_engine(db):
    original = "SELECT o_id, status FROM orders WHERE status = 'open' AND o_id < 100"
    engine = StandInEngine([
        "Here you go:\n```sql\nSELECT o_id, status FROM orders WHERE o_id < 100 AND status = 'open';\n```",
        "SELECT o_id, status FROM orders WHERE o_id < 100",          # drops a filter
        "blorp fizz ```sql\nwat wat (((\n```",                          # junk
        "UPDATE orders SET status = 'x'",
    ])
    with rewriter(db, [LLMGenerator(engine)], min_speedup=1e-3) as rw:
        res = rw.rewrite(original)
    assert len(engine.prompts) == 8  # 4 hints x (basic, db_aware)
    assert all(original in p for p in engine.prompts)
    assert any("Table orders (4,000 rows; primary key o_id" in p for p in engine.prompts)
    assert res.accepted and res.source.startswith("llm:") and "o_id < 100 AND" in res.chosen
    r = reasons(res)
    assert "different result on the full database" in r["llm:basic/predicates/0"]
    assert "does not parse" in r["llm:basic/aggregation/0"]
    assert "is not a query" in r["llm:basic/disjunction/0"]
    assert all(c.verdict != "accepted" or c.sql == res.chosen for c in res.candidates)


def test_extract_sql_from_answers():
    assert extract_sql("x ```sql\nSELECT 1;\n``` y") == "SELECT 1"
    assert extract_sql("Sure. WITH a AS (SELECT 1) SELECT * FROM a;") == "WITH a AS (SELECT 1) SELECT * FROM a"
    assert extract_sql("no sql here") == "no sql here"


def test_mcts_only_returns_steps_that_kept_the_result(db):
    original = "SELECT DISTINCT c_id, name FROM customers WHERE region = 'north' ORDER BY c_id"
    wrong = "SELECT c_id, name FROM customers ORDER BY c_id"                     # high logprob
    right = "SELECT c_id, name FROM customers WHERE region = 'north' ORDER BY c_id"
    engine = StandInEngine([wrong, right], logprob=-0.1)
    search = MCTSGenerator(engine, iterations=6, llm_samples=1)
    with rewriter(db, [search], min_speedup=1e-3) as rw:
        res = rw.rewrite(original)
    assert engine.prompts, "the search asked the LLM for steps"
    assert res.candidates and all(c.source == "mcts" for c in res.candidates)
    # the rule step (DISTINCT over the key) and the right LLM step kept the result; the wrong
    # step, though the LLM was surer of it, never comes out of the search
    assert all("region = 'north'" in c.sql for c in res.candidates)
    assert res.accepted and "DISTINCT" not in res.chosen
