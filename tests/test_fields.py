"""Dotted field paths: the selectors and the expression filter find a field by one rule."""

import pyarrow as pa
import pytest

from sluice.operators.base import ParamError, create_operator
from sluice.operators.select import FIELD_COLUMN

# 'meta.ext.score' is only reachable through the column 'meta.ext' (a name holding a dot) and
# its struct field 'score'; 'meta.lang' is both a column and a struct field (the column wins).
TABLE = pa.table({
    "meta": [{"lang": "en"}, {"lang": "de"}, {"lang": "fr"}],
    "meta.lang": ["x", "y", "z"],
    "meta.ext": [{"score": 3}, {"score": 1}, {"score": 2}],
})


def selected(key):
    op = create_operator("topk_specified_field_selector", {"field_key": key, "topk": 1})
    return op.prepare(TABLE).column(FIELD_COLUMN).to_pylist()


def filtered(expression):
    return create_operator("field_expression_filter", {"expression": expression}).keep(TABLE).to_pylist()


def test_struct_field_of_a_column_whose_name_holds_a_dot():
    assert selected("meta.ext.score") == [3, 1, 2]
    assert filtered("meta.ext.score >= 2") == [True, False, True]


def test_dotted_column_wins_over_struct_field():
    assert selected("meta.lang") == ["x", "y", "z"]
    assert filtered("meta.lang == 'y'") == [False, True, False]


def test_missing_field_names_the_parameter_and_the_fields():
    with pytest.raises(ParamError, match=r"topk_specified_field_selector.field_key: field 'meta.ext.rank' "
                                         r"is not in the data; fields: meta, meta.lang, meta.ext"):
        selected("meta.ext.rank")
