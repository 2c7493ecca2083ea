"""A fused stage: consecutive row-local operators run one after another on each block, slice by
slice, and the first stage's task per input file, which commits its rows to the run's checkpoint.

An operator that raises on a slice is run again on each of its rows alone: the rows it fails on
are rejected with the error (or, without skip_op_error, stop the run); a block on which a
worker died CRASHES times is rejected on the next try.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .base import ID_COLUMN, STATS_PREFIX, Filter, Operator
from .commit import RunFolder
from .io import FileReader, InputPart, Rejects, json_lines, reject_records, split_rejects
from .ledger import CRASHED, KEPT, READ, Count, samples_json, stat_samples
from .trace import KINDS as TRACE_KINDS
from .trace import TraceSettings, step_items

SLICE_ROWS = 8192
# A block on which a worker died this many times is rejected on the next try; Ray's own retries
# of a task whose worker died (infinite by default) are bounded to as many.
CRASHES = 2
# Checkpoint chunks are scratch that lives for one run: written as fast as Parquet goes (no
# dictionary attempt on unique texts, no compression, no min/max statistics, which nothing
# reads back and which take half of what is left: a fifth of the default's write time).
CHECKPOINT_PARQUET = dict(use_dictionary=False, compression="none", write_statistics=False)


class FusedStage:
    """Row-local operators applied in order to each block: one `map_batches` stage of a Ray
    run, a loop over the blocks of a local one. It reports to the run's ledger and tracer,
    objects in this process or `Remote` actors."""

    def __init__(self, steps: list[tuple[str, Operator]], ledger, file_paths: dict[int, str], *, upstream: str | None = None, sink: bool = False,
                 keep_stats: bool = False, analyze: bool = False, index: int = 0,
                 stat_names: Iterable[str] = (), skip_op_error: bool = True, tracer=None,
                 trace: TraceSettings | None = None):
        self.steps, self.ledger = steps, ledger
        self.file_paths, self.upstream, self.sink = file_paths, upstream, sink
        self.keep_stats, self.analyze = keep_stats, analyze
        # The stats this run's filters compute; other `stats.` fields are input data, kept as is.
        self.stat_names = frozenset(stat_names)
        self.skip_op_error = skip_op_error
        self.tracer, self.trace = tracer, trace  # the TraceCollector actor and what it traces
        labels = [label for label, _ in steps] or ["write" if sink else "split_rejects"]
        self.name = labels[0] if len(labels) < 3 else f"{labels[0]}+{len(labels) - 2}+{labels[-1]}"
        self.index, self.key = index, f"{index}:{self.name}"  # the key names the stage in the ledger

    def udf(self):
        """The stage as a named function, so progress lines say which operators it runs."""
        def fused(table: pa.Table) -> pa.Table:
            return self(table)

        fused.__name__ = fused.__qualname__ = self.name
        return fused

    def __call__(self, table: pa.Table) -> pa.Table:
        rejects = Rejects()
        key, table, records, samples = self.run(table, rejects)
        self.ledger.finish(key, records, samples, table.schema, rejects)
        return table

    def run(self, table: pa.Table, rejects: Rejects) -> tuple[tuple, pa.Table, list, list]:
        """(ledger key, the rows that go on, their ledger records, stat samples) for one block;
        its rejected rows are added to `rejects`."""
        rng = np.random.default_rng(table.num_rows)
        records, samples = [], []
        key = (self.key, table.column(ID_COLUMN)[0].as_py() if table.num_rows else None)
        if self.upstream is not None:
            table, rejected = split_rejects(table)
            if rejected is not None:
                rejects.write(reject_records(rejected, self.upstream, self.file_paths))
                # counted as the whole-dataset operator's output by the driver: now rejects
                records.append(Count(self.upstream, 0, -rejected.num_rows, rejected.num_rows))
        crashes = self.ledger.begin(key)
        if crashes >= CRASHES:  # this block killed the worker: its rows go to the rejects
            reason = f"a worker died {crashes} times running {self.name} on the block holding this row"
            rejects.write(reject_records(_reject_all(table, reason), CRASHED, self.file_paths))
            records.append(Count(CRASHED, table.num_rows, 0, table.num_rows))
            table = table.slice(0, 0)
        # Slices bound the operators' working memory (a block can hold a whole input file).
        pieces = [self._run_steps(table.slice(start, SLICE_ROWS), rejects, rng, records, samples)
                  for start in range(0, max(table.num_rows, 1), SLICE_ROWS)]
        table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces, promote_options="permissive")
        if self.sink:
            stats = [n for n in sorted(self.stat_names) if STATS_PREFIX + n in table.column_names]
            samples += stat_samples(table, stats, "after", rng)
            records.append(Count(KEPT, table.num_rows, table.num_rows))
            drop = [c for c in table.column_names if c.startswith("__")]
            table = table.drop_columns(drop + ([] if self.keep_stats else [STATS_PREFIX + n for n in stats]))
        return key, table, records, samples

    def _run_steps(self, table: pa.Table, rejects: Rejects, rng, records: list, samples: list) -> pa.Table:
        for label, op in self.steps:
            start, rows_in, before = time.perf_counter(), table.num_rows, table
            try:
                table = self._apply(op, table, rng, samples)
            except Exception:  # an operator failing on a slice rejects the rows it fails on, not the run
                table = self._apply_row_by_row(label, op, table, rng, samples)
            table, rejected = split_rejects(table)
            if self.tracer is not None and op.row_local and self.trace.wants(label) and not self.analyze:
                self._trace(label, op, before, table)
            n_rejected = 0 if rejected is None else rejected.num_rows
            if rejected is not None:
                rejects.write(reject_records(rejected, label, self.file_paths))
            seconds = time.perf_counter() - start
            if op.row_local:
                records.append(Count(label, rows_in, table.num_rows, n_rejected, seconds))
            else:  # a whole-dataset operator's prepare: the driver counts the rows it lets through
                records.append(Count(label, n_rejected, 0, n_rejected, seconds))
        return table

    def _trace(self, label: str, op: Operator, before: pa.Table, after: pa.Table) -> None:
        items = step_items(op, before, after, self.trace.limit)
        if items:
            self.tracer.add(label, TRACE_KINDS[op.kind], items)

    def _apply_row_by_row(self, label: str, op: Operator, table: pa.Table, rng, samples: list) -> pa.Table:
        """`op` on each row alone: a row it fails on is rejected with the error, or, without
        skip_op_error, stops the run with it."""
        pieces = []
        for i in range(table.num_rows):
            row = table.slice(i, 1)
            try:
                pieces.append(self._apply(op, row, rng, samples))
            except Exception as e:
                message = f"{label} failed on this row: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
                if not self.skip_op_error:
                    raise OperatorFailed(f"{message} ({_where(row, self.file_paths)}); with skip_op_error: "
                                         "true such rows go to the rejects") from None
                pieces.append(_reject_all(row, message))
        return pa.concat_tables(pieces, promote_options="permissive") if pieces else table

    def _apply(self, op: Operator, table: pa.Table, rng, samples: list) -> pa.Table:
        if not op.row_local:
            return op.prepare(table)
        if not isinstance(op, Filter):
            return op.process(table)
        table = op.with_stats(table)
        samples += stat_samples(table, op.stat_names, "before", rng)
        if not self.analyze:
            keep = op.keep(table)
            if not pc.all(keep).as_py():  # a filter that keeps every row leaves the batch as is
                table = table.filter(keep)
        return table


class OperatorFailed(ValueError):
    """An operator failed on a row of a run that does not skip operator errors."""


def _where(row: pa.Table, file_paths: dict[int, str]) -> str:
    row_id = row.column(ID_COLUMN)[0].as_py()
    return f"{file_paths.get(row_id >> 32)}, line {(row_id & 0xFFFFFFFF) + 1}"


def _reject_all(table: pa.Table, reason: str) -> pa.Table:
    return Operator.reject(table, pa.array(np.ones(table.num_rows, dtype=bool)), reason)


def checkpoint_part(folder: RunFolder, ordinal: int, part: InputPart, *, stage: FusedStage, text_key: str,
                    kept: dict[str, pa.Table] | None = None, seen=None) -> None:
    """Reads input part `ordinal`, runs the first fused stage on it and commits the result to the
    run's checkpoint: one Parquet file per chunk of rows and the part's rejects, then, last, its
    completion marker (ledger records, stat samples). A resumed run takes the parts that have one
    as they are. (A Ray task in a Ray run; a local run `kept` the chunks by path, so as not to
    read them back, and drops the duplicates its `seen` keys show, see `dedup.seen`.)"""
    for earlier in folder.checkpoint.children(f"{ordinal:05d}-*"):  # an earlier try's
        earlier.unlink()
    rejects = Rejects()
    reader = FileReader(part, text_key, rejects)
    start, stage_seconds = time.perf_counter(), 0.0
    chunks, samples = [], []
    for i, table in enumerate(reader.tables()):
        began = time.perf_counter()
        key, table, records, chunk_samples = stage.run(table, rejects)
        if seen is not None and table.num_rows:
            table, dropped = seen.drop_seen(table)
            records.append(dropped)
        name = f"{ordinal:05d}-{i:05d}.parquet" if table.num_rows else None
        if name:
            (folder.checkpoint / name).write_with(lambda out, t=table: pq.write_table(t, out, **CHECKPOINT_PARQUET))
            if kept is not None:
                kept[str(folder.checkpoint / name)] = table
        _flush_rejects(folder, f"{ordinal:05d}-{i:05d}", rejects)
        stage.ledger.end(key)
        chunks.append({"key": list(key), "records": [r.as_list() for r in records], "file": name,
                       "schema": base64.b64encode(table.schema.serialize()).decode()})
        samples += chunk_samples
        stage_seconds += time.perf_counter() - began
    _flush_rejects(folder, f"{ordinal:05d}-end", rejects)  # the unreadable rest of a file
    good = reader.rows_read - reader.rows_rejected
    read = Count(READ, reader.rows_read, good, reader.rows_rejected, time.perf_counter() - start - stage_seconds)
    marker = {"ordinal": ordinal, "path": part.path, "read": read.as_list(), "chunks": chunks,
              "samples": samples_json(samples, np.random.default_rng(ordinal))}
    folder.done_path(ordinal).write_text(json.dumps(marker))


def _flush_rejects(folder: RunFolder, name: str, rejects: Rejects) -> None:
    if rejects:
        (folder.checkpoint / f"{name}.rejects.jsonl").write_bytes(json_lines(rejects))
        rejects.clear()
