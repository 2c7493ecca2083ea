"""Operator kinds, typed parameters and the registry.

An operator is a small dataclass registered by name. Its parameters are declared with
`param(...)`, checked once at construction, and listed by `sluice ops`.

Kinds:
- Mapper: rows to rows, row-local (`process`).
- Filter: computes named stats into `stats.<name>` columns (`compute_stats`), then keeps
  rows by thresholds (`keep`). A stat column already present is reused, so a later filter
  or an analyze-only run never computes the same stat twice.
- Whole-dataset operators (`WholeDatasetOperator`): a row-local `prepare` (hashes,
  signatures, ranks) fuses into the preceding stage, then `apply` works on the Ray Dataset
  and `apply_table` on one Arrow table in a local run. Deduplicator and Selector are its
  kinds; the LLM operators are another.

Row-local operators may reject rows they cannot handle with `reject(...)`; the pipeline
moves those rows to the rejects output with the reason and the operator's name.
"""

from __future__ import annotations

import dataclasses
import decimal
import difflib
import re
import types
import typing
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

STATS_PREFIX = "stats."
REJECT_COLUMN = "__reject__"
ID_COLUMN = "__id__"
SOURCE_COLUMN = "__source__"


class ParamError(ValueError):
    """A parameter value a user can fix; `param` names which one."""

    def __init__(self, op: str, param: str | None, message: str):
        self.op, self.param, self.message = op, param, message
        where = f"{op}.{param}" if param else op
        super().__init__(f"{where}: {message}")


def param(default: Any = dataclasses.MISSING, *, doc: str, ge: float | None = None,
          le: float | None = None, gt: float | None = None, choices: tuple | None = None):
    """Declare an operator parameter with its default, documentation and allowed range."""
    meta = {"doc": doc, "ge": ge, "le": le, "gt": gt, "choices": choices}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    type: Any
    default: Any
    doc: str
    ge: float | None
    le: float | None
    gt: float | None
    choices: tuple | None

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def type_name(self) -> str:
        return _type_name(self.type)


class Operator:
    """Base of every operator. Subclasses are declared with `@register`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    # Row-local operators run inside fused map_batches stages; others see the Dataset.
    row_local: ClassVar[bool] = True

    def __post_init__(self):
        for spec in self.param_specs():
            value = getattr(self, spec.name)
            setattr(self, spec.name, check_value(self.name, spec, value))
        self.setup()

    def setup(self) -> None:
        """Derive state from validated parameters (compiled regexes, word sets)."""

    def notes(self) -> tuple[str, ...]:
        """What a user should know about how this operator ran (a model it lacked, say); the
        run summary and report show each distinct note once."""
        return ()

    @classmethod
    def param_specs(cls) -> list[ParamSpec]:
        hints = typing.get_type_hints(cls)
        specs = []
        for f in dataclasses.fields(cls):
            default = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            specs.append(ParamSpec(f.name, hints[f.name], default, f.metadata.get("doc", ""),
                                   f.metadata.get("ge"), f.metadata.get("le"),
                                   f.metadata.get("gt"), f.metadata.get("choices")))
        return specs

    def config(self) -> dict[str, Any]:
        return {s.name: getattr(self, s.name) for s in self.param_specs()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{self.name}({args})"

    @staticmethod
    def reject(table: pa.Table, mask, reasons) -> pa.Table:
        """Mark rows where `mask` is true as rejected with `reasons` (str or array of str)."""
        mask = pc.fill_null(mask, False)
        if isinstance(reasons, str):
            reasons = pa.scalar(reasons)
        existing = (table.column(REJECT_COLUMN) if REJECT_COLUMN in table.column_names
                    else pa.nulls(table.num_rows, pa.string()))
        column = pc.if_else(mask, reasons, existing)
        if REJECT_COLUMN in table.column_names:
            return table.set_column(table.column_names.index(REJECT_COLUMN), REJECT_COLUMN, column)
        return table.append_column(REJECT_COLUMN, column)


class Mapper(Operator):
    kind: ClassVar[str] = "mapper"

    def process(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError


class Filter(Operator):
    kind: ClassVar[str] = "filter"

    @property
    def stat_names(self) -> tuple[str, ...]:
        """Names of the stats this filter computes. A name must fix the computation:
        include any parameter that changes the value (e.g. `char_rep_ratio_5`)."""
        raise NotImplementedError

    def compute_stats(self, table: pa.Table) -> dict[str, pa.Array]:
        raise NotImplementedError

    def keep(self, table: pa.Table) -> pa.Array:
        """Boolean mask over `table`, whose `stats.<name>` columns are present."""
        raise NotImplementedError

    def stat(self, table: pa.Table, name: str):
        return table.column(STATS_PREFIX + name)

    def with_stats(self, table: pa.Table) -> pa.Table:
        """Append this filter's stat columns that `table` does not have yet."""
        missing = [n for n in self.stat_names if STATS_PREFIX + n not in table.column_names]
        if not missing:
            return table
        stats = self.compute_stats(table)
        for name in missing:
            table = table.append_column(STATS_PREFIX + name, stats[name])
        return table


class WholeDatasetOperator(Operator):
    """An operator that needs every row at once. Its row-local `prepare` (keys, signatures,
    ranks) fuses into the stage before it; then `apply` works on the Ray Dataset, or, in a
    local run, `apply_table` on the rows as one Arrow table. Both give the same rows."""

    row_local: ClassVar[bool] = False

    def prepare(self, table: pa.Table) -> pa.Table:
        return table

    def apply(self, ds, ctx):
        """The Ray Dataset after this operator. `ctx` is a `RunContext`."""
        raise NotImplementedError

    def apply_table(self, table: pa.Table, ctx) -> pa.Table:
        """The same on one table, in this process; an operator without it runs only on Ray."""
        raise NotImplementedError

    def only_drops_rows(self) -> bool:
        """Whether its rows out are some of its rows in, unchanged, without the columns its
        `prepare` added and with none of its own: a local run then checkpoints them as ids."""
        return False

    def duplicate_key(self) -> str | None:
        """A column, once `prepare` has run, whose equal values make rows duplicates of which
        only the lowest id is kept: a local run drops the others early (see `dedup.seen`)."""
        return None

    @classmethod
    def runs_in_process(cls) -> bool:
        return cls.apply_table is not WholeDatasetOperator.apply_table


class Deduplicator(WholeDatasetOperator):
    kind: ClassVar[str] = "deduplicator"


class Selector(WholeDatasetOperator):
    kind: ClassVar[str] = "selector"


def in_range(values, lo=None, hi=None) -> pa.Array:
    """Mask of values within [lo, hi]; null values are dropped."""
    mask = pc.is_valid(values)
    if lo is not None:
        mask = pc.and_(mask, pc.greater_equal(values, lo))
    if hi is not None:
        mask = pc.and_(mask, pc.less_equal(values, hi))
    return pc.fill_null(mask, False)


# ---- registry ----

OPERATORS: dict[str, type[Operator]] = {}


def register(cls=None, *, name: str | None = None):
    """Class decorator: make `cls` a keyword-only dataclass and register it by name.

    A user operator is one decorator away::

        @register
        class shout_mapper(Mapper):
            text_key: str = param("text", doc="field to change")
            def process(self, table): ...
    """

    def wrap(c):
        c.name = name or c.__dict__.get("name") or c.__name__
        if not c.__doc__ or c.__doc__.startswith(c.__name__ + "("):
            raise TypeError(f"operator {c.name} needs a docstring saying what it keeps, drops or changes")
        doc = c.__doc__
        dc = dataclasses.dataclass(kw_only=True, repr=False)(c)
        dc.__doc__ = doc
        OPERATORS[c.name] = dc
        return dc

    return wrap(cls) if cls is not None else wrap


def closest_name(name: str, names) -> str | None:
    match = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return match[0] if match else None


def get_operator(name: str) -> type[Operator]:
    load_builtin_operators()
    try:
        return OPERATORS[name]
    except KeyError:
        hint = closest_name(name, OPERATORS)
        suffix = f"; did you mean '{hint}'?" if hint else "; `sluice ops` lists them"
        raise ParamError(name, None, f"unknown operator '{name}'{suffix}") from None


def param_problems(cls: type[Operator], params: dict[str, Any]) -> list[ParamError]:
    """Every unknown, missing or ill-typed parameter of `params` for operator class `cls`."""
    known = {s.name: s for s in cls.param_specs()}
    problems = []
    for key, value in params.items():
        if key not in known:
            hint = closest_name(key, known)
            fix = f"did you mean '{hint}'?" if hint else f"known: {', '.join(known) or 'none'}"
            problems.append(ParamError(cls.name, key, f"unknown parameter '{key}'; {fix}"))
            continue
        try:
            check_value(cls.name, known[key], value)
        except ParamError as e:
            problems.append(e)
    for spec in known.values():
        if spec.required and spec.name not in params:
            problems.append(ParamError(cls.name, spec.name,
                                       f"missing required parameter '{spec.name}' ({spec.type_name()})"))
    return problems


def create_operator(name: str, params: dict[str, Any] | None = None) -> Operator:
    """Build a registered operator from a name and a dict of parameters."""
    cls = get_operator(name)
    params = dict(params or {})
    problems = param_problems(cls, params)
    if problems:
        raise problems[0]
    return cls(**params)


def load_builtin_operators() -> None:
    """Import the modules that register the built-in operators, then those that installed
    packages declare in the `sluice.operators` entry point group (sluice's own SQL agents too)."""
    import importlib
    import importlib.metadata

    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        if entry.value not in _LOADED_PLUGINS:
            entry.load()
            _LOADED_PLUGINS.add(entry.value)


PLUGIN_GROUP = "sluice.operators"
_LOADED_PLUGINS: set[str] = set()


BUILTIN_MODULES = [
    "sluice.operators.text.mappers",
    "sluice.operators.text.latex",
    "sluice.operators.text.filters",
    "sluice.operators.dedup.exact",
    "sluice.operators.dedup.minhash",
    "sluice.operators.dedup.simhash",
    "sluice.operators.select",
    "sluice.operators.llm",
]


# ---- parameter type checking ----

def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _conforms(value, tp) -> bool:
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items())
    return isinstance(value, tp)


# A number as YAML 1.1 leaves it a string: `2e5`, `1e-3`, `1.5E+6` (no dot before the exponent).
_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def as_number(value):
    """`value` as a number when it is text in scientific notation ('2e5'), an exact integer as
    an int (2e5 -> 200000); anything else unchanged."""
    if not isinstance(value, str) or not _NUMBER_TEXT.fullmatch(value.strip()):
        return value
    number = decimal.Decimal(value.strip())
    return int(number) if number == number.to_integral_value() else float(number)


def _accepts(tp, kind: type) -> bool:
    if tp is kind:
        return True
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and any(
        _accepts(a, kind) for a in typing.get_args(tp))


def check_value(op: str, spec: ParamSpec, value):
    if (isinstance(value, str) and not _accepts(spec.type, str)
            and (_accepts(spec.type, int) or _accepts(spec.type, float))):
        value = as_number(value)
    if not _conforms(value, spec.type):
        raise ParamError(op, spec.name, f"expected {spec.type_name()}, got {type(value).__name__} {value!r}")
    if spec.type is float or (typing.get_origin(spec.type) in (typing.Union, types.UnionType)
                              and float in typing.get_args(spec.type) and isinstance(value, int)
                              and not isinstance(value, bool)):
        value = float(value)
    if spec.choices is not None and value not in spec.choices:
        hint = closest_name(str(value), [str(c) for c in spec.choices])
        raise ParamError(op, spec.name, f"{value!r} is not one of {list(spec.choices)}"
                         + (f"; did you mean '{hint}'?" if hint else ""))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.ge is not None and value < spec.ge:
            raise ParamError(op, spec.name, f"{value} is below the minimum {spec.ge}")
        if spec.gt is not None and value <= spec.gt:
            raise ParamError(op, spec.name, f"{value} must be greater than {spec.gt}")
        if spec.le is not None and value > spec.le:
            raise ParamError(op, spec.name, f"{value} is above the maximum {spec.le}")
    return value


__all__ = [
    "Operator", "Mapper", "Filter", "Deduplicator", "Selector", "ParamError", "ParamSpec",
    "param", "register", "create_operator", "param_problems", "as_number", "get_operator",
    "OPERATORS", "in_range",
    "STATS_PREFIX", "REJECT_COLUMN", "ID_COLUMN", "SOURCE_COLUMN",
]
