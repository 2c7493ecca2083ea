"""A safe compiler from a small Python-like boolean expression over row fields to a
pyarrow.compute expression. The source is parsed with `ast` and only the constructs below
are translated; nothing is ever evaluated as Python.

Supported: field names (`stats.text_len`, `meta.lang`: a flat column with a dotted name or a
struct field, as `fields.locate_field` finds them), numbers, strings, True/False, comparisons
(chained too), `and`/`or`/`not`, `+ - * /` and unary minus, `x is None` / `x is not None`,
`x in [...]` / `x not in [...]`.
"""

from __future__ import annotations

import ast
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from .fields import field_expression

SUPPORTED = ("fields, numbers, strings, True/False, comparisons, and/or/not, + - * /, "
             "'is None', 'in [...]'")

_COMPARE = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
}
_ARITHMETIC = {
    ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply,
    ast.Div: lambda a, b: pc.divide(a.cast(pa.float64()), b.cast(pa.float64())),
}
_NAMES = {
    ast.Call: "function call", ast.Subscript: "subscript", ast.Lambda: "lambda",
    ast.ListComp: "list comprehension", ast.Mod: "operator '%'", ast.FloorDiv: "operator '//'",
    ast.Pow: "operator '**'", ast.IfExp: "conditional expression", ast.NamedExpr: "':='",
}

# A compiled node: given a resolver from a field path to an Expression, build the Expression.
Builder = Callable[[Callable[[tuple], pc.Expression]], pc.Expression]


def _unsupported(node: ast.AST, what: str | None = None) -> ValueError:
    what = what or _NAMES.get(type(node), f"'{type(node).__name__}'")
    column = getattr(node, "col_offset", None)
    where = f" at column {column + 1}" if column is not None else ""
    return ValueError(f"unsupported construct {what}{where}; supported: {SUPPORTED}")


def _path(node: ast.AST) -> tuple[str, ...] | None:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        parent = _path(node.value)
        return parent + (node.attr,) if parent else None
    return None


def _constant(node: ast.AST):
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, (int, float))
            and not isinstance(node.operand.value, bool)):
        return -node.operand.value
    raise _unsupported(node, "list item other than a number, string or boolean")


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _compare(left: ast.AST, op: ast.cmpop, right: ast.AST) -> Builder:
    if isinstance(op, (ast.Is, ast.IsNot)):
        if not _is_none(right):
            raise _unsupported(right, "'is' with anything but None")
        value = _node(left)
        if isinstance(op, ast.Is):
            return lambda r: value(r).is_null()
        return lambda r: value(r).is_valid()
    if isinstance(op, (ast.In, ast.NotIn)):
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
            raise _unsupported(right, "'in' with anything but a literal list")
        items = pa.array([_constant(e) for e in right.elts])
        value = _node(left)
        if isinstance(op, ast.In):
            return lambda r: value(r).isin(items)
        return lambda r: ~value(r).isin(items)
    if _is_none(left) or _is_none(right):
        raise _unsupported(right if _is_none(right) else left, "comparison with None (use 'is None')")
    compare = _COMPARE.get(type(op))
    if compare is None:
        raise _unsupported(op)
    a, b = _node(left), _node(right)
    return lambda r: compare(a(r), b(r))


def _node(node: ast.AST) -> Builder:
    path = _path(node)
    if path is not None:
        return lambda r: r(path)
    if isinstance(node, ast.Constant):
        if _is_none(node):
            raise _unsupported(node, "None outside 'is None'")
        value = pa.scalar(_constant(node))
        return lambda r: pc.scalar(value)
    if isinstance(node, ast.BoolOp):
        parts = [_node(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda r: _reduce(parts, r, lambda x, y: x & y)
        return lambda r: _reduce(parts, r, lambda x, y: x | y)
    if isinstance(node, ast.UnaryOp):
        operand = _node(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda r: ~operand(r)
        if isinstance(node.op, ast.USub):
            return lambda r: pc.negate(operand(r))
        if isinstance(node.op, ast.UAdd):
            return operand
        raise _unsupported(node, "operator '~'")
    if isinstance(node, ast.BinOp):
        arithmetic = _ARITHMETIC.get(type(node.op))
        if arithmetic is None:
            raise _unsupported(node, _NAMES.get(type(node.op), f"operator {type(node.op).__name__}"))
        a, b = _node(node.left), _node(node.right)
        return lambda r: arithmetic(a(r), b(r))
    if isinstance(node, ast.Compare):
        lefts = [node.left] + node.comparators[:-1]
        parts = [_compare(lft, op, rgt) for lft, op, rgt in zip(lefts, node.ops, node.comparators)]
        return lambda r: _reduce(parts, r, lambda x, y: x & y)
    raise _unsupported(node)


def _reduce(parts: list[Builder], resolve, combine) -> pc.Expression:
    result = parts[0](resolve)
    for part in parts[1:]:
        result = combine(result, part(resolve))
    return result


class CompiledExpression:
    """A checked expression, turned into an Arrow expression once the schema is known."""

    def __init__(self, source: str, build: Builder):
        self.source = source
        self._build = build

    def to_arrow(self, schema: pa.Schema) -> pc.Expression:
        return self._build(lambda path: field_expression(schema, path))

    def evaluate(self, table: pa.Table) -> pa.Array:
        """Boolean mask over `table`; null results count as false."""
        expression = self.to_arrow(table.schema)
        try:
            import pyarrow.dataset as pads  # 0.3 s to import: only for runs that use an expression

            result = pads.dataset(table).to_table(columns={"keep": expression}).column(0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise ValueError(f"cannot evaluate '{self.source}': {str(e).splitlines()[0]}") from None
        if not pa.types.is_boolean(result.type):
            raise ValueError(f"'{self.source}' gives {result.type} values, not true/false")
        return pc.fill_null(result.combine_chunks() if result.num_chunks != 1 else result.chunk(0),
                            False)


def compile_expression(source: str) -> CompiledExpression:
    """Parse and check `source`; a ValueError names the first unsupported construct."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"invalid syntax at column {e.offset or 1}: {e.msg}") from None
    return CompiledExpression(source, _node(tree.body))
