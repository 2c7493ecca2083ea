"""Dotted field paths (`meta.lang`, `stats.text_len`): the one rule by which every operator finds
a field in a batch's schema."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc


def locate_field(schema: pa.Schema, path: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """(column, nested struct fields) of the field `a.b.c`: a column named 'a.b.c', or column
    'a.b' with struct field 'c', or column 'a' with nested struct fields 'b' then 'c' (the
    longest column name that leads to the field wins). ValueError names the fields there are."""
    for split in range(len(path), 0, -1):
        column = ".".join(path[:split])
        if column not in schema.names:
            continue
        field_type, nested = schema.field(column).type, path[split:]
        for name in nested:
            if not pa.types.is_struct(field_type) or field_type.get_field_index(name) < 0:
                break
            field_type = field_type.field(name).type
        else:
            return column, nested
    raise ValueError(f"field '{'.'.join(path)}' is not in the data; fields: {', '.join(schema.names)}")


def field_expression(schema: pa.Schema, path: tuple[str, ...]) -> pc.Expression:
    """The field `path` as an Arrow expression (see `locate_field`)."""
    column, nested = locate_field(schema, path)
    return pc.field(column, *nested)


def field_values(table: pa.Table, key: str):
    """The values of the field `key` (a dotted path, see `locate_field`) in `table`."""
    column, nested = locate_field(table.schema, tuple(key.split(".")))
    values = table.column(column)
    for name in nested:
        values = pc.struct_field(values, name)
    return values
