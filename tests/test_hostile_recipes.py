"""Hostile recipes: templates that try to run code, --set values that try to become recipe
text, and YAML that tries to exhaust memory. Each case fails without its fix."""

import pytest

from sluice.operators.recipe import MAX_RECIPE_BYTES, RecipeError, load_recipe
from sluice.serving.cli import main

ESCAPES = [
    "{{ cycler.__init__.__globals__.os.popen('touch MARK').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum.__globals__['os'].system('touch MARK') }}",
    "{{ env.__class__.__init__.__globals__ }}",
    "{{ namespace() }}",
    "{{ range(10) | list }}",
    "{{ 'x' | attr('__class__') }}",
]


def _recipe(folder, input_line: str, extra: str = "") -> str:
    path = folder / "r.yaml"
    path.write_text(f'name: r\ninput: "{input_line}"\noutput: {{{{ output | default(\'out\') }}}}\n'
                    f"seed: {{{{ seed | default(1) }}}}\n{extra}")
    return str(path)


@pytest.mark.parametrize("template", ESCAPES)
def test_a_template_cannot_reach_python(tmp_path, monkeypatch, capsys, template):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", _recipe(tmp_path, template)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "template" in err, err
    assert not (tmp_path / "MARK").exists()


def test_llm_prompt_templates_are_sandboxed_too():
    import pyarrow as pa

    from sluice.operators.llm import llm_generate

    op = llm_generate(model="org/name", prompt="{{ text.__class__.__mro__[1].__subclasses__() }}")
    out = op.render(pa.Table.from_pylist([{"text": "a"}]))
    assert "a prompt may read row fields only" in str(out.to_pylist())


@pytest.mark.parametrize("value", [
    "out/x\nmodules: [evil.py]",
    "out/x\nprocess: [{text_length_filter: {min_len: 1}}]",
    "out/x\n  format: jsonl",
    "{path: out/x, format: jsonl}",
    "[a, b]",
    "&anchor out",
    "!!python/object/apply:os.system ['touch MARK']",
])
def test_a_set_value_is_a_value_never_recipe_text(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.py").write_text("open('MARK', 'w').close()\n")
    recipe = load_recipe(_recipe(tmp_path, "in.jsonl"), {"output": value})
    assert recipe.output == value and recipe.modules == [] and recipe.pipeline.ops == []
    assert recipe.output_format == "parquet" and not (tmp_path / "MARK").exists()


def test_a_set_value_keeps_its_scalar_type(tmp_path):
    assert load_recipe(_recipe(tmp_path, "in.jsonl"), {"seed": "9"}).seed == 9
    with pytest.raises(RecipeError, match="'seed'.*must be int, got str"):
        load_recipe(_recipe(tmp_path, "in.jsonl"), {"seed": "9\nname: other"})
    recipe = load_recipe(_recipe(tmp_path, "{{ d }}/in.jsonl"), {"d": "a: b, c"})
    assert recipe.sources[0].path == "a: b, c/in.jsonl"


def test_validate_says_modules_run_code(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "my_ops.py").write_text("X = 1\n")
    assert main(["validate", _recipe(tmp_path, "in.jsonl", "modules: [my_ops.py]")]) == 0
    assert "my_ops.py is Python code" in capsys.readouterr().out


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + "\n".join(lines) + "\n")
    with pytest.raises(RecipeError, match="more than 100,000 YAML nodes"):
        load_recipe(str(path))


def test_a_huge_recipe_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: huge\n" + "# padding\n" * (MAX_RECIPE_BYTES // 10 + 1))
    with pytest.raises(RecipeError, match="the limit is 1,048,576"):
        load_recipe(str(path))


def test_a_recipe_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(RecipeError, match="not UTF-8 text"):
        load_recipe(str(path))
