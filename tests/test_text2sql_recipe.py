"""The `text2sql` operator in a recipe, on the tiny dummy-weight model through Ray Data: every
question accounted for (dummy weights give no valid SQL, so each is a reject with its reason)."""

import json

import pytest

from sluice.operators.base import ParamError, create_operator
from sluice.operators.recipe import load_recipe
from sluice.sql_agent.testing import make_shop_db

pytest_plugins = ["engine_fixtures"]


@pytest.mark.vllm
def test_text2sql_recipe_accounts_for_every_question(ray_session, tiny_model, tmp_path):
    db = make_shop_db(tmp_path / "shop.duckdb")
    questions = [{"question": "How many orders shipped?", "db": "shop"},
                 {"question": "Which region has most customers?", "db": "shop"},
                 {"question": "What is in the warehouse?", "db": "warehouse"},
                 {"question": "", "db": "shop"}]
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (tmp_path / "recipe.yaml").write_text(f"""
name: text2sql_backfill
input: {tmp_path}/questions.jsonl
output: {tmp_path}/out
text_key: question
process:
  - text2sql:
      model: {tiny_model}
      load_format: dummy
      enforce_eager: true
      max_model_len: 2048
      kv_cache_tokens: 8192
      databases: {{shop: {db}}}
      database_key: db
      candidates: 2
      revisions: 0
      max_tokens: 32
      cache_dir: {tmp_path}/cache
""")
    result = load_recipe(str(tmp_path / "recipe.yaml")).run(quiet=True)
    s = result.summary
    assert s["rows_read"] == 4 and s["accounted"] and s["rejected"] == {"text2sql": 4}
    rejects = [json.loads(line) for f in result.rejects_path.rglob("*.jsonl")
               for line in f.read_text().splitlines()]
    reasons = sorted(r["reason"] for r in rejects)
    assert [r.split(":")[1].split(";")[0].strip() for r in reasons] == [
        "no question in field 'question'", "no valid SQL", "no valid SQL", "unknown database 'warehouse'"]
    assert all("parse_error" in r for r in reasons if "no valid SQL" in r)


def test_text2sql_settings_are_checked_before_any_data_is_read(tiny_model, tmp_path):
    with pytest.raises(ParamError, match="no such file"):
        create_operator("text2sql", {"model": tiny_model, "databases": {"x": str(tmp_path / "x.duckdb")}})
    db = make_shop_db(tmp_path / "shop.duckdb")
    with pytest.raises(ParamError, match="not one of the declared databases"):
        create_operator("text2sql", {"model": tiny_model, "databases": {"shop": db}, "database": "other"})
