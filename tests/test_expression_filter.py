"""field_expression_filter: expressions over flat, dotted and nested fields, null handling,
and one-line errors for everything outside the supported subset."""

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sluice.operators.base import ParamError, create_operator
from sluice.operators.expression import compile_expression

ROWS = pa.table({
    "text": ["a long English text", None, "kurz", "moyen texte"],
    "stats.text_len": pa.array([19, None, 4, 11], pa.int64()),
    "stats.alnum_ratio": [0.9, 0.5, 1.0, 0.8],
    "meta": [{"lang": "en", "score": 3}, {"lang": "de", "score": 1}, None, {"lang": "fr", "score": 2}],
    "meta.source": ["web", "books", "web", "wiki"],
})


def keep(expression, table=ROWS):
    return create_operator("field_expression_filter", {"expression": expression}).keep(table).to_pylist()


@pytest.mark.parametrize("expression, expected", [
    ("stats.text_len > 10 and meta.lang == 'en'", [True, False, False, False]),
    ("stats.text_len > 10 or meta.source == 'books'", [True, True, False, True]),
    ("not stats.text_len > 10", [False, False, True, False]),
    ("meta.lang in ['de', 'fr']", [False, True, False, True]),
    ("meta.lang not in ('de', 'fr')", [True, False, True, False]),
    ("text is None", [False, True, False, False]),
    ("meta is not None and meta.score >= 2", [True, False, False, True]),
    ("5 < stats.text_len <= 19", [True, False, False, True]),
    ("stats.text_len / 4 > 2.5", [True, False, False, True]),  # true division, not integer
    ("stats.text_len * stats.alnum_ratio - 1 > 7", [True, False, False, True]),
    ("-stats.text_len < -10", [True, False, False, True]),
    ("meta.source == 'web' and stats.alnum_ratio == 1", [False, False, True, False]),
    ("True", [True, True, True, True]),
])
def test_expressions_select_rows(expression, expected):
    assert keep(expression) == expected


def test_dotted_column_wins_over_struct_field():
    table = pa.table({"meta": [{"lang": "en"}], "meta.lang": ["de"]})
    assert keep("meta.lang == 'de'", table) == [True]


def test_compiles_to_arrow_expression():
    expression = compile_expression("stats.text_len > 10 and meta.lang == 'en'").to_arrow(ROWS.schema)
    assert isinstance(expression, pc.Expression)
    text = str(expression)
    assert "(stats.text_len > 10) and" in text and "FieldRef.Name(meta) FieldRef.Name(lang)" in text


def test_empty_table():
    assert keep("stats.text_len > 1", ROWS.slice(0, 0)) == []


@pytest.mark.parametrize("expression, message", [
    ("len(text) > 3", "unsupported construct function call at column 1"),
    ("text[0] == 'a'", "unsupported construct subscript at column 1"),
    ("stats.text_len % 2 == 0", "unsupported construct operator '%' at column 1"),
    ("stats.text_len ** 2 > 4", "unsupported construct operator '\\*\\*'"),
    ("text == None", "unsupported construct comparison with None \\(use 'is None'\\)"),
    ("text is 'a'", "unsupported construct 'is' with anything but None"),
    ("meta.lang in other", "unsupported construct 'in' with anything but a literal list"),
    ("meta.lang in [text]", "unsupported construct list item other than a number, string or boolean"),
    ("[x for x in y]", "unsupported construct list comprehension"),
    ("lambda: 1", "unsupported construct lambda"),
    ("__import__('os').system('true')", "unsupported construct function call"),
    ("(x := 1)", "unsupported construct ':='"),
    ("a if b else c", "unsupported construct conditional expression"),
    ("stats.text_len >", "invalid syntax at column"),
])
def test_unsupported_constructs_fail_at_construction(expression, message):
    with pytest.raises(ParamError, match="field_expression_filter.expression: " + message) as e:
        create_operator("field_expression_filter", {"expression": expression})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("expression, message", [
    ("stats.word_count > 3", "field 'stats.word_count' is not in the data; fields: text, stats.text_len"),
    ("meta.country == 'en'", "field 'meta.country' is not in the data"),
    ("meta.lang", "'meta.lang' gives string values, not true/false"),
    ("text > 3", "cannot evaluate 'text > 3': Function 'greater' has no kernel"),
])
def test_errors_against_the_data(expression, message):
    op = create_operator("field_expression_filter", {"expression": expression})
    with pytest.raises(ParamError, match=message) as e:
        op.keep(ROWS)
    assert "\n" not in str(e.value)
