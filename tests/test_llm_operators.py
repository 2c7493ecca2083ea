"""LLM operators: prompts, parsing and rejects with a stand-in engine where a specific answer is
needed; real vLLM (tiny dummy-weight model) for generation, structured output and the recipe
run end to end through Ray Data."""

import json
import os
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sluice.engine import Completion
from sluice.operators import Pipeline, param, register
from sluice.operators.base import REJECT_COLUMN, ParamError
from sluice.operators.llm import PROMPT_COLUMN, ROUTE_COLUMN, llm_classify, llm_filter, llm_generate, llm_score
from sluice.operators.recipe import load_recipe

pytest_plugins = ["engine_fixtures"]


class ScriptedEngine:
    """Stand-in engine: answers each prompt with `answer(prompt)`; records what it was sent."""

    def __init__(self, answer):
        self.answer, self.seen = answer, []

    def generate(self, prompts, params):
        self.seen.extend(prompts)
        return [Completion(text=self.answer(p), prompt_tokens=1, output_tokens=1) for p in prompts]


def run(op, rows, engine, analyze=False):
    return op.run_batch(op.render(pa.Table.from_pylist(rows)), engine, analyze=analyze).to_pylist()


def test_score_parses_the_number_and_rejects_unparseable_answers_with_the_raw_output(tiny_model):
    op = llm_score(model=tiny_model, prompt="{{ text }}", constrained=False)
    answers = {"a": "4", "b": "Score: 2.5 because", "c": "great!", "d": "9"}
    out = run(op, [{"text": k} for k in answers], ScriptedEngine(lambda p: answers[p]))
    assert [r["llm_score"] for r in out] == [4.0, 2.5, None, None]
    assert [r[REJECT_COLUMN] for r in out[:2]] == [None, None]
    assert out[2][REJECT_COLUMN] == "llm_score: unparseable answer: 'great!'"
    assert out[3][REJECT_COLUMN] == "llm_score: unparseable answer: '9'"


def test_filter_drops_rows_below_threshold_and_keeps_rejects_for_the_pipeline(tiny_model):
    op = llm_filter(model=tiny_model, prompt="{{ text }}", min_score=3, constrained=False)
    answers = {"good": "5", "fair": "3", "poor": "1", "odd": "none"}
    out = run(op, [{"text": k} for k in answers], ScriptedEngine(lambda p: answers[p]))
    assert [(r["text"], r["stats.llm_score"]) for r in out] == [("good", 5.0), ("fair", 3.0), ("odd", None)]
    assert out[2][REJECT_COLUMN].startswith("llm_filter: unparseable answer")
    assert PROMPT_COLUMN not in out[0] and ROUTE_COLUMN not in out[0]


def test_filter_in_an_analyze_only_run_scores_every_row_and_drops_none(tiny_model):
    op = llm_filter(model=tiny_model, prompt="{{ text }}", min_score=3, constrained=False)
    answers = {"good": "5", "poor": "1", "odd": "none"}
    out = run(op, [{"text": k} for k in answers], ScriptedEngine(lambda p: answers[p]), analyze=True)
    assert [(r["text"], r["stats.llm_score"]) for r in out] == [("good", 5.0), ("poor", 1.0), ("odd", None)]
    assert [r[REJECT_COLUMN] is None for r in out] == [True, True, False]


def test_template_missing_field_or_empty_prompt_rejects_that_row_and_the_rest_complete(tiny_model):
    op = llm_generate(model=tiny_model, prompt="{{ title }}{{ body }}", system_prompt="Be brief.")
    engine = ScriptedEngine(lambda p: "ok")
    rows = [{"title": "T1", "body": " b1"}, {"title": " ", "body": ""}, {"title": "T3", "body": None},
            {"title": "T4", "body": " b4"}]
    out = run(op, rows, engine)
    assert engine.seen == ["Be brief.\n\nT1 b1", "Be brief.\n\nT4 b4"]
    assert [r["llm_output"] for r in out] == ["ok", None, None, "ok"]
    assert [r[REJECT_COLUMN] for r in out] == [
        None, "empty prompt", "prompt template: 'body' is undefined (missing or null in this row)", None]


def test_chat_mode_sends_system_and_user_messages(tiny_model):
    op = llm_classify(model=tiny_model, labels=["yes", "no"], prompt="Is {{ text }} a fruit?",
                      chat=True, system_prompt="Answer yes or no.")
    engine = ScriptedEngine(lambda m: "yes" if "apple" in m[-1]["content"] else "maybe")
    out = run(op, [{"text": "apple"}, {"text": "stone"}], engine)
    assert engine.seen[0] == [{"role": "system", "content": "Answer yes or no."},
                              {"role": "user", "content": "Is apple a fruit?"}]
    assert out[0]["llm_label"] == "yes" and out[0][REJECT_COLUMN] is None
    assert out[1]["llm_label"] is None and out[1][REJECT_COLUMN] == "llm_classify: unparseable answer: 'maybe'"


def test_rows_sharing_a_prompt_prefix_are_routed_together(tiny_model):
    op = llm_generate(model=tiny_model, prompt="{{ doc }} Q: {{ q }}", prefix_key_chars=40,
                      num_actors=2, buckets_per_actor=8)
    docs = [f"document {k} " * 10 for k in range(6)]
    rows = [{"doc": docs[k], "q": f"question {j}"} for j in range(5) for k in range(6)]
    routes = op.render(pa.Table.from_pylist(rows)).column(ROUTE_COLUMN).to_pylist()
    by_doc = {}
    for row, route in zip(rows, routes):
        by_doc.setdefault(row["doc"], set()).add(route)
    assert all(len(r) == 1 for r in by_doc.values())
    assert len({min(r) for r in by_doc.values()}) > 1       # and different prefixes spread out


def test_bad_settings_fail_at_construction_before_any_data_is_read(tmp_path, tiny_model):
    with pytest.raises(ParamError, match="model path .* does not exist"):
        llm_generate(model=str(tmp_path / "missing-model"))
    with pytest.raises(ParamError, match="prompt: template syntax error"):
        llm_generate(model=tiny_model, prompt="{{ text ")
    with pytest.raises(ParamError, match="labels"):
        llm_classify(model=tiny_model, labels=["only"])


@pytest.mark.vllm
def test_generate_on_vllm_with_logprobs_and_a_too_long_prompt(engine, tiny_model):
    op = llm_generate(model=tiny_model, prompt="{{ text }}", max_tokens=4, ignore_eos=True,
                      logprobs=True, max_model_len=512)
    rows = [{"text": "short row"}, {"text": "data " * 2000}, {"text": "another row"}]
    out = run(op, rows, engine)
    assert out[1][REJECT_COLUMN].startswith("prompt is ") and "max_model_len 512" in out[1][REJECT_COLUMN]
    for r in (out[0], out[2]):
        assert r[REJECT_COLUMN] is None and r["llm_output"]
        assert len(r["llm_output_logprobs"]) == 4 and all(lp <= 0 for lp in r["llm_output_logprobs"])


@pytest.mark.vllm
def test_classify_on_vllm_answers_only_with_the_labels(engine, tiny_model):
    labels = ["news", "code", "spam"]
    op = llm_classify(model=tiny_model, labels=labels, temperature=1.0, seed=5)
    out = run(op, [{"text": f"row {i} text"} for i in range(8)], engine)
    assert all(r["llm_label"] in labels and r[REJECT_COLUMN] is None for r in out)


TOO_LONG = "too long " + "model data row text score " * 800


def llm_score_recipe(tmp_path, docs, model, min_score):
    """The llm_score recipe on the tiny model over `docs`, with max_model_len 512."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "web.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return load_recipe("llm_score", {
        "model": model, "load_format": "dummy", "enforce_eager": "true",
        "max_model_len": "512", "data_dir": str(data), "output": str(tmp_path / "out"),
        "min_score": str(min_score)})


@pytest.mark.vllm
def test_llm_score_recipe_runs_end_to_end_through_ray_data(ray_session, tiny_model, tmp_path):
    docs = [f"Document {i} explains how the data model stores each row of text." * 3 for i in range(10)]
    docs += [TOO_LONG, "tiny"]
    result = llm_score_recipe(tmp_path, docs, tiny_model, 3).run(quiet=True)
    s = result.summary
    assert s["rows_read"] == 12 and s["accounted"]
    assert s["dropped"].get("text_length_filter") == 1                 # "tiny"
    assert s["rejected"] == {"llm_filter": 1}                          # the too-long document
    kept = result.table()
    scores = kept.column("stats.llm_score").to_pylist()
    assert kept.num_rows == s["rows_kept"] == 10 - s["dropped"].get("llm_filter", 0)
    assert all(3 <= x <= 5 for x in scores)
    rejects = [json.loads(line) for f in result.rejects_path.rglob("*.jsonl") for line in f.read_text().splitlines()]
    assert any("max_model_len 512" in json.dumps(r) for r in rejects)
    assert pc.all(pc.is_in(kept.column("text"), pa.array(docs))).as_py()
    report = result.report_path.read_text()
    assert "llm_filter: engine batches" in report and "cached_tokens" in report


@pytest.mark.vllm
def test_llm_filter_in_an_analyze_only_run_drops_nothing_through_ray_data(ray_session, tiny_model, tmp_path):
    docs = [f"Document {i} is scored by the model but never dropped." * 3 for i in range(3)] + [TOO_LONG]
    # min_score above the scale: a run that drops would drop every scored row
    result = llm_score_recipe(tmp_path, docs, tiny_model, 6).run(analyze=True, quiet=True)
    s = result.summary
    assert s["dropped"] == {} and s["rejected"] == {"llm_filter": 1} and s["rows_kept"] == 3
    assert all(1 <= x <= 5 for x in result.table().column("stats.llm_score").to_pylist())


@register
class die_once_generate(llm_generate):
    """llm_generate whose engine actor kills its own process (SIGKILL) in its first batch unless
    the file `marker` exists (it writes it first): Ray Data starts a new actor, which loads its
    engine again and runs the batch."""

    marker: str = param(doc="file that says an actor has died already")

    def run_batch(self, table, engine, analyze=False):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run_batch(table, engine, analyze=analyze)


@pytest.mark.vllm
def test_an_engine_actor_killed_in_a_batch_changes_nothing(ray_session, tiny_model, tmp_path):
    (tmp_path / "in").mkdir()
    docs = [f"Row {i} asks the model about part {i % 3} of the data." for i in range(12)]
    (tmp_path / "in" / "rows.jsonl").write_text("".join(json.dumps({"text": d, "i": i}) + "\n" for i, d in enumerate(docs)))
    settings = dict(model=tiny_model, load_format="dummy", enforce_eager=True, max_model_len=256, max_tokens=6,
                    seed=3, num_actors=1, buckets_per_actor=2)
    marker = tmp_path / "died"
    calm = Pipeline([llm_generate(**settings)]).run(str(tmp_path / "in"), output=tmp_path / "calm", quiet=True)
    killed = Pipeline([die_once_generate(marker=str(marker), **settings)]).run(
        str(tmp_path / "in"), output=tmp_path / "killed", quiet=True)
    assert marker.exists()  # an actor did die in a batch
    by_row = lambda result: sorted(result.table().to_pylist(), key=lambda r: r["i"])  # noqa: E731
    assert by_row(killed) == by_row(calm) and len(by_row(calm)) == 12
    assert killed.summary["accounted"] and killed.summary["rejected"] == {}
