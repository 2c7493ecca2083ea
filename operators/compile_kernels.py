"""Compile the built-in operators' numba kernels into the user's cache ahead of any run.

    python -m sluice.operators.compile_kernels

The kernels compile on first use and are cached (NUMBA_CACHE_DIR, see `sluice.operators`), so
without this step the first run on a machine pays about 15 s of compilation. The Makefile runs
it once after installing, as `compileall` does for bytecode. A kernel compiles once per type of
its arguments, so each built-in operator runs, with its defaults and as each built-in recipe
sets it, on short ASCII rows, on rows with other characters and on empty rows, each row written
twice so that the dedups reach their duplicate paths too. One that cannot be built (it needs a
model or a required parameter) is skipped, and its kernels compile on first use as before.
"""

from __future__ import annotations

import sys
import time

import pyarrow as pa

from .base import ID_COLUMN, OPERATORS, SOURCE_COLUMN, Filter, Mapper, Operator, load_builtin_operators
from .context import RunContext

SAMPLES = (
    ["A first document, with a few words. And a second sentence, written twice! And a second "
     "sentence, written twice! https://example.org mail@example.org 127.0.0.1"],
    ["机器学习是人工智能的一个分支。 Ünïcödé text, digits 12345 and symbols $$$ ★★★",
     "Plain ASCII beside it."],
    [""],
)


def sample_tables() -> list[pa.Table]:
    def table(texts: list[str]) -> pa.Table:
        texts = texts * 2
        return pa.table({"text": texts, ID_COLUMN: pa.array(range(len(texts)), pa.int64()),
                         SOURCE_COLUMN: ["sample"] * len(texts)})

    return [table(texts) for texts in SAMPLES]


def builtin_operators() -> tuple[list[Operator], list[str]]:
    """(each built-in operator with its defaults and as each built-in recipe sets it, the names
    of those that cannot be built with their defaults)."""
    from .recipe import RecipeError, builtin_recipes, load_recipe

    load_builtin_operators()
    ops, unbuilt = [], []
    for name, cls in sorted(OPERATORS.items()):
        if not cls.__module__.startswith("sluice.operators."):
            continue
        try:
            ops.append(cls())
        except Exception:  # noqa: BLE001 - it needs a parameter: compiled on first use
            unbuilt.append(name)
    for recipe in builtin_recipes():
        try:
            ops += load_recipe(recipe).pipeline.ops
        except RecipeError:  # it names a model that is not here (llm_score's tiny model)
            continue
    return ops, unbuilt


def run_on(op: Operator, table: pa.Table) -> None:
    if isinstance(op, Filter):
        op.keep(op.with_stats(table))
    elif isinstance(op, Mapper):
        op.process(table)
    elif op.runs_in_process():
        op.apply_table(op.prepare(table), RunContext())
    else:  # the LLM operators: only their row-local part runs without a model
        op.prepare(table)


def compile_all() -> tuple[list[str], list[str]]:
    """(operators run, operators skipped)."""
    ops, skipped = builtin_operators()
    ran = []
    for op in ops:
        try:
            for table in sample_tables():
                run_on(op, table)
        except Exception:  # noqa: BLE001 - it needs a model: compiled on first use
            skipped.append(op.name)
            continue
        ran.append(op.name)
    ran = list(dict.fromkeys(ran))
    return ran, sorted(set(skipped) - set(ran))


def main() -> int:
    start = time.perf_counter()
    ran, skipped = compile_all()
    print(f"sluice: compiled the kernels of {len(ran)} operators in {time.perf_counter() - start:.0f}s "
          f"({len(skipped)} need a model or a parameter and compile on first use)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
