"""Recipes: validation errors point at file:line:column; templating; Data-Juicer configs; user ops."""

import json
import textwrap

import pytest

from sluice.operators.recipe import RecipeError, builtin_recipes, load_recipe


def recipe_file(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


GOOD = """
name: t
input: data.jsonl
output: out
process:
  - whitespace_normalization_mapper: {}
  - text_length_filter: {min_len: 10, max_len: 1000}
"""


TEMPLATED = """
name: t
{# a comment
   over three lines #}
input: data.jsonl
output: out
process:
{% for words in [3, 5,
                 7] %}
  - words_num_filter: {min_num: {{ words }}}
{% endfor %}
  - text_length_filter: {min_len: 10, max_len: 1000}
"""


@pytest.mark.parametrize("text, where, message", [
    (GOOD.replace("input:", "inptu:"), "2:1", "unknown key 'inptu'; did you mean 'input'?"),
    (GOOD.replace("text_length_filter", "text_lenght_filter"), "6:5",
     "unknown operator 'text_lenght_filter'; did you mean 'text_length_filter'?"),
    (GOOD.replace("min_len: 10", "min_len: ten"), "6:35", "text_length_filter.min_len: expected int, got str 'ten'"),
    (GOOD.replace("min_len: 10", "min_len: -3"), "6:35", "text_length_filter.min_len: -3 is below the minimum 0"),
    (GOOD.replace("min_len: 10", "min_lem: 10"), "6:26", "unknown parameter 'min_lem'; did you mean 'min_len'?"),
    (GOOD.replace("output: out", "output: {path: out, format: csv}"), "3:29",
     "output format 'csv' is not one of parquet, jsonl"),
    (GOOD.replace("process:", "process: 3\nx:"), "4:10", "'process' (operators in order: - op_name: {params}) must be list"),
    (GOOD.replace("- whitespace_normalization_mapper: {}", "- [not, a, step]"), "5:5",
     "each process step is one `- op_name: {params}` mapping"),
    (GOOD.replace("name: t", "name: t\n  bad: indent"), "2:6", "invalid YAML"),
    # a templated recipe names the file's line, not the rendered text's: the bad key in the loop
    # body (line 9), rendered once per loop pass
    (TEMPLATED.replace("min_num: {{ words }}", "min_num: {{ words }}, max_nun: 9"), "9:36",
     "unknown parameter 'max_nun'; did you mean 'max_num'?"),
    # after the loop, which wrote its body three times: line 11 of the file
    (TEMPLATED.replace("min_len: 10", "min_len: ten"), "11:35", "text_length_filter.min_len: expected int"),
    # below the comment: line 4 of the file, line 3 of the rendered text
    (TEMPLATED.replace("input:", "inptu:"), "4:1", "unknown key 'inptu'; did you mean 'input'?"),
    (TEMPLATED.replace("output: out", "output: [out"), "6:8", "invalid YAML"),  # seen at `process:`
])
def test_validation_errors_name_file_line_column_and_the_fix(tmp_path, text, where, message):
    path = recipe_file(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}:{where}: "), str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_templates_take_set_variables_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_MIN", "77")
    path = recipe_file(tmp_path, """
        name: t
        input: "{{ data | default('in.jsonl') }}"
        output: "{{ output }}"
        process:
          - text_length_filter: {min_len: {{ env.SLUICE_TEST_MIN }}}
    """)
    recipe = load_recipe(path, {"output": "elsewhere"})
    assert recipe.output == "elsewhere" and recipe.sources[0].path == "in.jsonl"
    assert recipe.pipeline.ops[0].min_len == 77
    with pytest.raises(RecipeError, match=r"r.yaml:3:1: template variable 'output' is undefined; pass --set output="):
        load_recipe(path)


def test_global_text_key_reaches_every_text_operator(tmp_path):
    path = recipe_file(tmp_path, GOOD.replace("process:", "text_key: content\nprocess:"))
    recipe = load_recipe(path)
    assert [op.text_key for op in recipe.pipeline.ops] == ["content", "content"]
    assert recipe.pipeline.text_key == "content"


def test_weighted_inputs_add_a_mixer(tmp_path):
    path = recipe_file(tmp_path, """
        name: mix
        inputs:
          - {path: a.jsonl, name: a, weight: 2}
          - {path: b.jsonl, name: b, weight: 1}
        output: out
        process: []
    """)
    recipe = load_recipe(path)
    assert [s.weight for s in recipe.sources] == [2.0, 1.0]
    assert [op.name for op in recipe.pipeline.ops] == ["source_mixer"]


def test_a_data_juicer_config_runs_as_it_is(tmp_path):
    path = recipe_file(tmp_path, """
        # Process config example for dataset
        project_name: 'demo-process'
        dataset_path: './demos/data/demo-dataset.jsonl'
        np: 2
        text_keys: 'text'
        export_path: './outputs/demo-process/demo-processed.jsonl'
        open_tracer: false
        process:
          - language_id_score_filter:
              lang: 'en'
              min_score: 0.5
          - words_num_filter:
              min_num: 5
          - document_deduplicator:
              lowercase: true
    """)
    recipe = load_recipe(path)
    assert recipe.name == "demo-process" and recipe.num_cpus == 2
    assert recipe.export.path.as_posix() == "outputs/demo-process/demo-processed.jsonl"
    assert recipe.export.format == "jsonl" and recipe.output == "outputs/demo-process/demo-processed_sluice"
    assert [op.name for op in recipe.pipeline.ops] == ["language_id_score_filter", "words_num_filter",
                                                       "document_deduplicator"]


def test_a_recipe_loads_operators_from_a_user_module(tmp_path, ray_session):
    (tmp_path / "my_ops.py").write_text(textwrap.dedent('''
        import pyarrow.compute as pc
        from sluice.operators import Mapper, param, register

        @register
        class reverse_words_mapper(Mapper):
            """Reverses the order of words in the text."""
            text_key: str = param("text", doc="field to change")

            def process(self, table):
                words = pc.utf8_split_whitespace(table.column(self.text_key))
                reversed_ = [" ".join(reversed(w)) for w in words.to_pylist()]
                return table.set_column(table.column_names.index(self.text_key), self.text_key,
                                        pc.cast(reversed_, "string"))
    '''))
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "one two three"}) + "\n")
    path = recipe_file(tmp_path, f"""
        name: user
        input: {tmp_path / 'in.jsonl'}
        output: {tmp_path / 'out'}
        modules: [my_ops.py]
        process:
          - reverse_words_mapper: {{}}
    """)
    result = load_recipe(path).run(quiet=True)
    assert result.table().column("text").to_pylist() == ["three two one"]


def test_builtin_recipes_validate(tmp_path):
    from sluice.engine.testing import build_tiny_model

    names = builtin_recipes()
    assert {"webtext_clean", "sft_clean", "mixing", "llm_score"} <= set(names)
    # LLM recipes check their model path before anything runs: give them the tiny test model.
    model = {"model": str(build_tiny_model(tmp_path / "tiny")), "load_format": "dummy"}
    for name in names:
        recipe = load_recipe(name, model if name.startswith("llm") else {})
        assert recipe.pipeline.ops, name
