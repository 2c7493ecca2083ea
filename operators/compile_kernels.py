"""Compile the built-in operators' numba kernels into the user's cache ahead of any run.

    python -m sluice.operators.compile_kernels

The kernels compile on first use and are cached (NUMBA_CACHE_DIR, see `sluice.operators`), so
without this step the first run on a machine pays about 15 s of compilation. The Makefile runs
it once after installing, as `compileall` does for bytecode. Each built-in operator that can
be built with its defaults runs on two short rows; one that cannot (it needs a model or a
required parameter) is skipped, and its kernels compile on first use as before.
"""

from __future__ import annotations

import sys
import time

import pyarrow as pa

from .base import ID_COLUMN, OPERATORS, SOURCE_COLUMN, Filter, Mapper, load_builtin_operators

SAMPLE = ["A first document, with a few words. And a second sentence, written twice! And a second "
          "sentence, written twice! https://example.org mail@example.org 127.0.0.1",
          "机器学习是人工智能的一个分支。 Ünïcödé text, digits 12345 and symbols $$$ ★★★"]


def sample_table() -> pa.Table:
    return pa.table({"text": SAMPLE, ID_COLUMN: pa.array([0, 1], pa.int64()),
                     SOURCE_COLUMN: ["sample", "sample"]})


def compile_all() -> tuple[list[str], list[str]]:
    """(operators run, operators skipped)."""
    load_builtin_operators()
    ran, skipped = [], []
    for name, cls in sorted(OPERATORS.items()):
        if not cls.__module__.startswith("sluice.operators."):
            continue
        try:
            op = cls()
            table = sample_table()
            if isinstance(op, Filter):
                op.keep(op.with_stats(table))
            elif isinstance(op, Mapper):
                op.process(table)
            else:
                op.prepare(table)
        except Exception:  # noqa: BLE001 - it needs a model or a parameter: compiled on first use
            skipped.append(name)
            continue
        ran.append(name)
    return ran, skipped


def main() -> int:
    start = time.perf_counter()
    ran, skipped = compile_all()
    print(f"sluice: compiled the kernels of {len(ran)} operators in {time.perf_counter() - start:.0f}s "
          f"({len(skipped)} need a model or a parameter and compile on first use)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
