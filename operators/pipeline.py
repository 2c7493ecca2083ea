"""The operator graph and its Ray Data plan.

A Pipeline is a list of operators. Consecutive row-local operators (mappers, filters, and the
row-local `prepare` of the next whole-dataset operator) fuse into one stage that runs them one
after another on each block, slice by slice. The first fused stage runs in one Ray task per input
file that reads the file and commits its rows to the run's checkpoint (see `commit`), so an
interrupted run resumes from the files it finished; later ones are `map_batches` stages over the
checkpoint. Whole-dataset operators (dedup, selection, mixing, LLM operators) get the
materialized Dataset. A final fused stage drops internal columns before the writer. A small Ray
actor, the ledger, collects per-operator row counts, seconds, stat samples and the rejects of
later stages from every task, so the run summary accounts for every row read and the driver
writes those rejects.

An operator that raises on a slice is run again on each of its rows alone: the rows it fails on
are rejected with the error (or, without skip_op_error, stop the run); a block on which a
worker died CRASHES times is rejected on the next try; columns whose types differ between
blocks (beyond what Arrow promotes) become JSON text where blocks meet and in Parquet output.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .base import ID_COLUMN, STATS_PREFIX, Deduplicator, Filter, Operator, Selector
from .commit import SUMMARY, OutputError, RunFolder, input_identity, prepare
from .context import RunContext
from .trace import KINDS as TRACE_KINDS
from .trace import TraceCollector, TraceSettings, removed_items, step_items, write_traces
from .io import (FileReader, Rejects, Source, json_text, read_once, reject_records, split_rejects,
                 write_dataset, write_rejects)

SAMPLES_PER_BATCH = 2000
SAMPLES_PER_STAT = 50_000
SAMPLES_PER_FILE = 10_000  # per stat, in an input file's checkpoint
SLICE_ROWS = 8192
READ = "read"
# A block on which a worker died this many times is rejected on the next try; Ray's own retries
# of a task whose worker died (infinite by default) are bounded to as many.
CRASHES = 2
CRASHED = "worker_crash"


@dataclass
class RunResult:
    summary: dict
    output_dir: Path
    data_files: list[Path] = field(default_factory=list)  # a Data-Juicer export_path's file(s)

    @property
    def data_path(self) -> Path:
        return self.data_files[0] if len(self.data_files) == 1 else self.output_dir / "data"

    @property
    def rejects_path(self) -> Path:
        return self.output_dir / "rejects"

    @property
    def report_path(self) -> Path:
        return self.output_dir / "report.html"

    def table(self) -> pa.Table:
        from .export import read_result
        from .io import read_output

        return read_result(self.data_files) if self.data_files else read_output(str(self.data_path))


class Ledger:
    """Ray actor: row counts, seconds and stat samples reported by every task of a run. Counts
    are kept per block (or input file), so the counts of a task that Ray retries replace those
    of its earlier try."""

    def __init__(self, seed: int = 0):
        self.blocks = {}  # block or file -> its (label, rows in, rows out, rejected, seconds) records
        self.numeric = defaultdict(list)  # (stat, phase) -> arrays of sampled values
        self.categories = defaultdict(lambda: defaultdict(int))
        self.rng = np.random.default_rng(seed)
        self.unfinished = defaultdict(int)  # block -> tries that began and did not finish
        self.schemas = defaultdict(dict)  # stage -> the distinct schemas of its output blocks
        self.rejects = {}  # block -> its rejected rows' records (from stages after a whole-dataset one)

    def begin(self, key) -> int:
        """Start a try on block `key`; returns how many earlier tries died before `finish`."""
        self.unfinished[key] += 1
        return self.unfinished[key] - 1

    def end(self, key) -> None:
        """A try on block `key` ended without its worker dying (its counts come later)."""
        self.unfinished.pop(key, None)

    def finish_many(self, entries) -> None:
        for key, records, samples, schema in entries:
            self.finish(key, records, samples, schema)

    def finish(self, key, records, samples=(), schema=None, rejects=()) -> None:
        self.unfinished.pop(key, None)
        self.blocks[key] = records
        if rejects:
            self.rejects[key] = list(rejects)
        else:
            self.rejects.pop(key, None)
        if schema is not None:
            self.schemas[key[0]][schema.to_string(show_schema_metadata=False)] = schema
        for stat, phase, values in samples:
            if isinstance(values, dict):
                for k, v in values.items():
                    self.categories[(stat, phase)][k] += v
                continue
            kept = self.numeric[(stat, phase)]
            kept.append(values)
            total = np.concatenate(kept)
            if len(total) > SAMPLES_PER_STAT:
                total = self.rng.choice(total, SAMPLES_PER_STAT, replace=False)
            self.numeric[(stat, phase)] = [total]

    def rejected(self) -> dict[str, list[dict]]:
        """The reject records by stage, in input order."""
        by_stage = defaultdict(list)
        for key in sorted(self.rejects, key=lambda k: (k[0], -1 if k[1] is None else k[1])):
            by_stage[key[0]] += self.rejects[key]
        return dict(by_stage)

    def output_schemas(self, stage: str) -> list:
        return list(self.schemas[stage].values())

    def snapshot(self) -> dict:
        counts = defaultdict(lambda: [0, 0, 0, 0.0])  # rows in, rows out, rejected, seconds
        for records in self.blocks.values():
            for label, *values in records:
                counts[label] = [total + v for total, v in zip(counts[label], values)]
        return {
            "counts": dict(counts),
            "numeric": {k: np.concatenate(v) for k, v in self.numeric.items()},
            "categories": {k: dict(v) for k, v in self.categories.items()},
        }


def stat_samples(table: pa.Table, names: Iterable[str], phase: str, rng) -> list:
    """Samples of stat columns for the report: numbers as arrays, strings as counts."""
    out = []
    for name in names:
        column = table.column(STATS_PREFIX + name)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            counts = pc.value_counts(column).to_pylist()
            out.append((name, phase, {c["values"]: c["counts"] for c in counts}))
            continue
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        values = values[~np.isnan(values)]
        if len(values) > SAMPLES_PER_BATCH:
            values = rng.choice(values, SAMPLES_PER_BATCH, replace=False)
        out.append((name, phase, values))
    return out


class FusedStage:
    """One map_batches stage: row-local operators applied in order to each batch."""

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
        import ray

        rejects = Rejects()
        key, table, records, samples = self.run(table, rejects)
        ray.get(self.ledger.finish.remote(key, records, samples, table.schema, rejects))
        return table

    def run(self, table: pa.Table, rejects: Rejects) -> tuple[tuple, pa.Table, list, list]:
        """(ledger key, the rows that go on, their ledger records, stat samples) for one block;
        its rejected rows are added to `rejects`."""
        import ray

        rng = np.random.default_rng(table.num_rows)
        records, samples = [], []
        key = (self.key, table.column(ID_COLUMN)[0].as_py() if table.num_rows else None)
        if self.upstream is not None:
            table, rejected = split_rejects(table)
            if rejected is not None:
                rejects.write(reject_records(rejected, self.upstream, self.file_paths))
                records.append((self.upstream, 0, 0, rejected.num_rows, 0.0))
        crashes = ray.get(self.ledger.begin.remote(key))
        if crashes >= CRASHES:  # this block killed the worker: its rows go to the rejects
            reason = f"a worker died {crashes} times running {self.name} on the block holding this row"
            rejects.write(reject_records(_reject_all(table, reason), CRASHED, self.file_paths))
            records.append((CRASHED, table.num_rows, 0, table.num_rows, 0.0))
            table = table.slice(0, 0)
        # Slices bound the operators' working memory (a block can hold a whole input file).
        pieces = [self._run_steps(table.slice(start, SLICE_ROWS), rejects, rng, records, samples)
                  for start in range(0, max(table.num_rows, 1), SLICE_ROWS)]
        table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces, promote_options="permissive")
        if self.sink:
            stats = [n for n in sorted(self.stat_names) if STATS_PREFIX + n in table.column_names]
            samples += stat_samples(table, stats, "after", rng)
            records.append(("kept", table.num_rows, table.num_rows, 0, 0.0))
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
                records.append((label, rows_in, table.num_rows, n_rejected, seconds))
            else:  # the prepare step of a whole-dataset operator: its rows are counted by the driver
                records.append((label, 0, 0, n_rejected, seconds))
        return table

    def _trace(self, label: str, op: Operator, before: pa.Table, after: pa.Table) -> None:
        import ray

        items = step_items(op, before, after, self.trace.limit)
        if items:
            ray.get(self.tracer.add.remote(label, TRACE_KINDS[op.kind], items))

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


def checkpoint_file(folder: RunFolder, ordinal: int, path: str, source: str, *, stage: FusedStage,
                    text_key: str) -> None:
    """Ray task: reads input file `ordinal`, runs the first fused stage on it and commits the
    result to the run's checkpoint: one Parquet file per chunk of rows and the file's rejects,
    then, last, its completion marker (ledger records, stat samples). A resumed run takes the
    files that have one as they are."""
    import ray

    for earlier in folder.checkpoint.glob(f"{ordinal:05d}-*"):  # an earlier try's
        earlier.unlink()
    rejects = Rejects()
    reader = FileReader(path, ordinal, source, text_key, rejects)
    start, stage_seconds = time.perf_counter(), 0.0
    chunks, samples = [], []
    for i, table in enumerate(reader.tables()):
        began = time.perf_counter()
        key, table, records, chunk_samples = stage.run(table, rejects)
        name = f"{ordinal:05d}-{i:05d}.parquet" if table.num_rows else None
        if name:
            _write_new(folder.checkpoint / name, lambda p, t=table: pq.write_table(t, p))
        _flush_rejects(folder, f"{ordinal:05d}-{i:05d}", rejects)
        ray.get(stage.ledger.end.remote(key))
        chunks.append({"key": list(key), "records": records, "file": name,
                       "schema": base64.b64encode(table.schema.serialize()).decode()})
        samples += chunk_samples
        stage_seconds += time.perf_counter() - began
    _flush_rejects(folder, f"{ordinal:05d}-end", rejects)  # the unreadable rest of a file
    good = reader.rows_read - reader.rows_rejected
    read = [READ, reader.rows_read, good, reader.rows_rejected, time.perf_counter() - start - stage_seconds]
    marker = {"ordinal": ordinal, "path": path, "read": read, "chunks": chunks,
              "samples": _samples_json(samples, np.random.default_rng(ordinal))}
    _write_new(folder.done_path(ordinal), lambda p: Path(p).write_text(json.dumps(marker)))


def _flush_rejects(folder: RunFolder, name: str, rejects: Rejects) -> None:
    if rejects:
        _write_new(folder.checkpoint / f"{name}.rejects.jsonl", lambda p: write_rejects(p, rejects))
        rejects.clear()


def _write_new(path: Path, write) -> None:
    """`write(path)`, but through a temporary name: `path` is whole or absent."""
    temporary = path.with_name(path.name + ".tmp")
    write(str(temporary))
    os.replace(temporary, path)


def _samples_json(samples: list, rng) -> list:
    """One file's stat samples (numbers merged per stat and phase, at most
    SAMPLES_PER_FILE of each, as float32 bytes in base64; string counts summed) for its marker."""
    numeric, categories = defaultdict(list), defaultdict(lambda: defaultdict(int))
    for stat, phase, values in samples:
        if isinstance(values, dict):
            for k, v in values.items():
                categories[(stat, phase)][k] += v
        else:
            numeric[(stat, phase)].append(values)
    out = [[stat, phase, dict(counts)] for (stat, phase), counts in categories.items()]
    for (stat, phase), arrays in numeric.items():
        values = np.concatenate(arrays)
        if len(values) > SAMPLES_PER_FILE:
            values = rng.choice(values, SAMPLES_PER_FILE, replace=False)
        out.append([stat, phase, base64.b64encode(values.astype(np.float32).tobytes()).decode()])
    return out


def _ledger_entries(marker: dict) -> list[tuple]:
    """A file's completion marker as Ledger.finish arguments."""
    entries = [((READ, marker["ordinal"]), [tuple(marker["read"])], (), None)]
    for chunk in marker["chunks"]:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(chunk["schema"])))
        entries.append((tuple(chunk["key"]), [tuple(r) for r in chunk["records"]], (), schema))
    samples = [(stat, phase, values if isinstance(values, dict) else
                np.frombuffer(base64.b64decode(values), np.float32).astype(np.float64))
               for stat, phase, values in marker["samples"]]
    entries.append((("samples", marker["ordinal"]), [], samples, None))
    return entries


def read_checkpoint(batch: pa.Table):
    """map_batches over a table of checkpoint file paths: yields their rows."""
    for path in batch.column("path").to_pylist():
        yield pq.read_table(path)


def _as_json_text(table: pa.Table, columns: list[str]) -> pa.Table:
    """`table` with those of `columns` that do not hold text as JSON text (strings stay as they are)."""
    for name in columns:
        if name in table.column_names and not _is_text(table.schema.field(name).type):
            table = table.set_column(table.column_names.index(name), name, json_text(table.column(name).to_pylist()))
    return table


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _unify_output(data_dir: Path, columns: list[str]) -> None:
    """Rewrite the Parquet files whose types for `columns` differ from the others' (a rare case,
    from inputs that disagree), so that the output reads as one table."""
    for path in sorted(data_dir.glob("*.parquet")) if columns else []:
        if any(not _is_text(f.type) for f in pq.read_schema(path) if f.name in columns):
            pq.write_table(_as_json_text(pq.read_table(path), columns), path)


def _conflicting_columns(schemas: list[pa.Schema]) -> list[str]:
    """Columns whose types differ between blocks beyond what Arrow can promote (int64 in one
    file, string in another): blocks that meet in a join or a shuffle cannot be concatenated."""
    names = dict.fromkeys(name for schema in schemas for name in schema.names)
    conflicts = []
    for name in names:
        fields = [pa.schema([schema.field(name)]) for schema in schemas if name in schema.names]
        try:
            pa.unify_schemas(fields, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            conflicts.append(name)
    return conflicts


def ensure_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> None:
    """Start or join Ray. A Ctrl-C while Ray starts is held until it has started and raised then:
    cut short, `ray.init` leaves processes behind that `ray.shutdown` cannot reach."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": not quiet,
              "logging_level": "WARNING"}
    with _sigint_held() as held:
        if address:
            ray.init(address=address, **kwargs)
        else:  # "local": never attach to a cluster some `ray start` left on this machine
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
    if held:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _sigint_held():
    """Within the block, SIGINT is noted instead of raised; the list it yields is non-empty when
    one came. (Signal handlers belong to the main thread: elsewhere this does nothing.)"""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


def check_shared(output: Path, shared_fs: bool) -> None:
    """Workers read the inputs and write the checkpoints and output by path: on a cluster whose
    nodes do not mount one filesystem, rows would land on whichever machine ran a task."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if nodes > 1 and not shared_fs:
        raise OutputError(f"the Ray cluster has {nodes} nodes and '{output}' is a local path, which each node "
                          "resolves on its own disk; put the inputs and output in a folder every node mounts at "
                          "the same path and pass --shared-fs (recipe: ray: {shared_fs: true})")


def configure_ray_data(quiet: bool) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = False


def as_sources(source) -> list[Source]:
    if isinstance(source, (str, os.PathLike, Source)):
        source = [source]
    return [s if isinstance(s, Source) else Source(str(s)) for s in source]


def _labels(ops: Sequence[Operator]) -> list[str]:
    seen: dict[str, int] = defaultdict(int)
    labels = []
    for op in ops:
        seen[op.name] += 1
        labels.append(op.name if seen[op.name] == 1 else f"{op.name}#{seen[op.name]}")
    return labels


@dataclass
class Pipeline:
    """An ordered list of operators that runs on Ray Data.

    >>> Pipeline([whitespace_normalization_mapper(), text_length_filter(min_len=50)]).run(
    ...     "data/*.jsonl", output="out/clean")
    """

    ops: list[Operator] = field(default_factory=list)
    text_key: str = "text"
    notes: list[str] = field(default_factory=list)  # for the run summary (keys a recipe ignored)
    skip_op_error: bool = True  # a row an operator fails on is rejected; False: the run stops
    trace: TraceSettings | None = None  # write what each traced operator changed or dropped

    def __post_init__(self):
        for op in self.ops:
            if not isinstance(op, Operator):
                raise TypeError(f"Pipeline takes operators, got {type(op).__name__}")

    def ship_user_code(self) -> None:
        """Ray workers may not be able to import a user's operator module (a script, a test, a
        recipe's `modules:` file): send its code by value with the pickled operators."""
        from ray import cloudpickle

        for op in self.ops:
            module = sys.modules[type(op).__module__]
            if not module.__name__.startswith("sluice."):
                cloudpickle.register_pickle_by_value(module)

    def plan(self) -> list[tuple[str, list[tuple[str, Operator]]]]:
        """Stages in order: ('fused', steps) or ('dataset', [step])."""
        stages: list[tuple[str, list]] = [("fused", [])]
        for label, op in zip(_labels(self.ops), self.ops):
            if op.row_local:
                stages[-1][1].append((label, op))
                continue
            if hasattr(op, "prepare"):
                stages[-1][1].append((label, op))  # its row-local prepare() fuses into this stage
            stages.append(("dataset", [(label, op)]))
            stages.append(("fused", []))
        return stages

    def identity(self, files: list[str], *, output_format: str, analyze: bool, keep_stats: bool,
                 seed: int) -> dict:
        """What a run is, for a resumed run to check: its operators, settings and input files."""
        return {"operators": [repr(op) for op in self.ops], "text_key": self.text_key,
                "output_format": output_format, "analyze": analyze, "keep_stats": keep_stats,
                "seed": seed, "inputs": input_identity(files)}

    def run(self, source, output: str | os.PathLike, *, output_format: str = "parquet",
            analyze: bool = False, keep_stats: bool = False, ray_address: str | None = None,
            num_cpus: int | None = None, seed: int = 42, quiet: bool = False,
            overwrite: bool = False, resume: bool = False, shared_fs: bool = False) -> RunResult:
        """Run on `source` into the folder `output`: a new or empty folder, or an earlier sluice
        output, which is replaced only once this run has finished (`overwrite` lets it replace
        any folder). With `resume`, an interrupted run of the same operators, settings and input
        files continues from the input files it finished. On a Ray cluster of several nodes,
        `shared_fs` says that every node mounts the inputs and the output at the same paths."""
        import ray

        from .report import build_summary, write_report

        started = time.perf_counter()
        sources = as_sources(source)
        files = read_once([(path, s.source_name()) for s in sources for path in s.files()])
        file_paths = {i: os.path.abspath(p) for i, (p, _) in enumerate(files)}
        identity = self.identity(list(file_paths.values()), output_format=output_format, analyze=analyze,
                                 keep_stats=keep_stats, seed=seed)
        folder = prepare(output, sources, list(file_paths.values()), identity, overwrite=overwrite, resume=resume)
        ensure_ray(ray_address, num_cpus, quiet)
        check_shared(folder.target, shared_fs)
        self.ship_user_code()
        configure_ray_data(quiet)
        ctx = RunContext(output_dir=folder.target, analyze=analyze,
                         num_cpus=int(ray.cluster_resources().get("CPU", 1)),
                         sources={s.source_name(): s for s in sources})
        ledger = ray.remote(num_cpus=0)(Ledger).remote(seed)
        tracer = ray.remote(num_cpus=0)(TraceCollector).remote(self.trace.limit) if self.trace else None
        stages = self.plan()
        stat_names = [n for o in self.ops if isinstance(o, Filter) for n in o.stat_names]

        def fused(i: int, steps: list, upstream: str | None) -> FusedStage:
            if analyze:
                steps = [(lb, o) for lb, o in steps if o.row_local or not isinstance(o, (Deduplicator, Selector))]
            return FusedStage(steps, ledger, file_paths, upstream=upstream, sink=i == len(stages) - 1,
                              keep_stats=keep_stats, analyze=analyze, index=i, stat_names=stat_names,
                              skip_op_error=self.skip_op_error, tracer=tracer, trace=self.trace)

        stage = fused(0, stages[0][1], None)
        resumed = folder.finished_files()
        task = ray.remote(max_retries=CRASHES)(checkpoint_file)
        stage_ref = ray.put(stage)
        pending = [task.remote(folder, i, file_paths[i], name, stage=stage_ref, text_key=self.text_key)
                   for i, (_, name) in enumerate(files) if i not in resumed]
        while pending:  # what Ray Data's progress bar showed for reading: files done so far
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)
            if not quiet:
                end = "\n" if not pending else ""
                print(f"\rinput files read and checkpointed: {len(files) - len(pending)}/{len(files)}",
                      end=end, file=sys.stderr, flush=True)
        done = folder.finished_files()
        ray.get(ledger.finish_many.remote([e for i in sorted(done) for e in _ledger_entries(done[i])]))
        chunks = [str(folder.checkpoint / c["file"]) for i in sorted(done) for c in done[i]["chunks"] if c["file"]]
        ds = ray.data.from_arrow(pa.table({"path": pa.array(chunks, pa.string())})).repartition(
            max(len(chunks), 1)).map_batches(read_checkpoint, batch_size=1, batch_format="pyarrow")

        driver_counts: dict[str, tuple[int, int, float]] = {}
        upstream = None
        for i, (kind, steps) in enumerate(stages[1:], 1):
            label, op = steps[0] if steps else (None, None)
            if kind == "dataset":
                if analyze and isinstance(op, (Deduplicator, Selector)):
                    upstream = None
                    continue
                ds = ds.materialize()
                rows_in, start = ds.count(), time.perf_counter()
                if rows_in:  # an empty Dataset has no columns to join or group on
                    conflicts = _conflicting_columns(ray.get(ledger.output_schemas.remote(stage.key)))
                    if conflicts:
                        ds = ds.map_batches(_as_json_text, batch_format="pyarrow", batch_size=None,
                                            fn_kwargs={"columns": conflicts})
                    before, ds = ds, op.apply(ds, ctx).materialize()
                    if tracer is not None and self.trace.wants(label):
                        ray.get(tracer.add.remote(label, TRACE_KINDS[op.kind],
                                                  removed_items(before, ds, self.trace.limit)))
                driver_counts[label] = (rows_in, ds.count(), time.perf_counter() - start)
                upstream = label
                continue
            stage = fused(i, steps, upstream)
            ds = ds.map_batches(stage.udf(), batch_format="pyarrow", batch_size=None, max_retries=CRASHES)
            upstream = None

        data_dir = folder.partial / "data"
        write_dataset(ds, str(data_dir), output_format)
        data_dir.mkdir(exist_ok=True)
        if output_format == "parquet":
            _unify_output(data_dir, _conflicting_columns(ray.get(ledger.output_schemas.remote(stage.key))))
        snapshot = ray.get(ledger.snapshot.remote())
        for stage_key, rejected in ray.get(ledger.rejected.remote()).items():
            (folder.partial / "rejects").mkdir(exist_ok=True)
            write_rejects(str(folder.partial / "rejects" / f"stage{stage_key.split(':')[0]}.jsonl"), rejected)
        ray.kill(ledger)
        summary = build_summary(self, snapshot, driver_counts, ctx,
                                wall_seconds=time.perf_counter() - started, analyze=analyze,
                                output_format=output_format, files=list(file_paths.values()),
                                resumed_files=len(resumed))
        if tracer is not None:
            write_traces(folder.partial / "trace", ray.get(tracer.collected.remote()))
            ray.kill(tracer)
        write_report(folder.partial / "report.html", summary, snapshot, ctx.report_sections)
        (folder.partial / SUMMARY).write_text(json.dumps(summary, indent=2))  # last: the run is whole
        folder.commit()
        return RunResult(summary=summary, output_dir=folder.target)
