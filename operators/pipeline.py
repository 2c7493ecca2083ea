"""The operator graph and its Ray Data plan.

A Pipeline is a list of operators. Consecutive row-local operators (mappers, filters, and the
row-local `prepare` of the next whole-dataset operator) fuse into one `map_batches` stage that
runs them one after another on each block, slice by slice. Whole-dataset operators (dedup,
selection, mixing, LLM operators) get the materialized Dataset. A final fused stage drops
internal columns before the writer. A small Ray actor, the ledger, collects per-operator row
counts, seconds and stat samples from every task, so the run summary accounts for every row read.

An operator that raises on a slice rejects that slice's rows with the error; a block on which a
worker died CRASHES times is rejected on the next try; columns whose types differ between
blocks (beyond what Arrow promotes) become JSON text where blocks meet and in Parquet output.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
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
from .context import RunContext
from .io import (FileReader, RejectWriter, Source, json_text, read_once, reject_records, split_rejects,
                 write_dataset)

SAMPLES_PER_BATCH = 2000
SAMPLES_PER_STAT = 50_000
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

    @property
    def data_path(self) -> Path:
        return self.output_dir / "data"

    @property
    def rejects_path(self) -> Path:
        return self.output_dir / "rejects"

    @property
    def report_path(self) -> Path:
        return self.output_dir / "report.html"

    def table(self) -> pa.Table:
        from .io import read_output

        return read_output(str(self.data_path))


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

    def begin(self, key) -> int:
        """Start a try on block `key`; returns how many earlier tries died before `finish`."""
        self.unfinished[key] += 1
        return self.unfinished[key] - 1

    def finish(self, key, records, samples=(), schema=None) -> None:
        self.unfinished.pop(key, None)
        self.blocks[key] = records
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

    def __init__(self, steps: list[tuple[str, Operator]], ledger, rejects_dir: str | None,
                 file_paths: dict[int, str], *, upstream: str | None = None, sink: bool = False,
                 keep_stats: bool = False, analyze: bool = False, index: int = 0,
                 stat_names: Iterable[str] = ()):
        self.steps, self.ledger, self.rejects_dir = steps, ledger, rejects_dir
        self.file_paths, self.upstream, self.sink = file_paths, upstream, sink
        self.keep_stats, self.analyze = keep_stats, analyze
        # The stats this run's filters compute; other `stats.` fields are input data, kept as is.
        self.stat_names = frozenset(stat_names)
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

        rng = np.random.default_rng(table.num_rows)
        records, samples = [], []
        key = (self.key, table.column(ID_COLUMN)[0].as_py() if table.num_rows else None)
        rejects = RejectWriter(self.rejects_dir, f"stage{self.index}-{key[1]}")
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
        ray.get(self.ledger.finish.remote(key, records, samples, table.schema))
        return table

    def _run_steps(self, table: pa.Table, rejects: RejectWriter, rng, records: list, samples: list) -> pa.Table:
        for label, op in self.steps:
            start, rows_in = time.perf_counter(), table.num_rows
            try:
                table = self._apply(op, table, rng, samples)
            except Exception as e:  # an operator failing on a slice rejects that slice, not the run
                message = (str(e).strip().splitlines() or [""])[0]
                table = _reject_all(table, f"{label} failed on this row's slice: {type(e).__name__}: {message}")
            table, rejected = split_rejects(table)
            n_rejected = 0 if rejected is None else rejected.num_rows
            if rejected is not None:
                rejects.write(reject_records(rejected, label, self.file_paths))
            seconds = time.perf_counter() - start
            if op.row_local:
                records.append((label, rows_in, table.num_rows, n_rejected, seconds))
            else:  # the prepare step of a whole-dataset operator: its rows are counted by the driver
                records.append((label, 0, 0, n_rejected, seconds))
        return table

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


def _reject_all(table: pa.Table, reason: str) -> pa.Table:
    return Operator.reject(table, pa.array(np.ones(table.num_rows, dtype=bool)), reason)


def read_files(batch: pa.Table, *, text_key: str, rejects_dir: str | None, ledger):
    """map_batches over a table of (ordinal, path, source) rows: yields the files' rows."""
    import ray

    for ordinal, path, source in zip(*(batch.column(c).to_pylist() for c in ("ordinal", "path", "source"))):
        start = time.perf_counter()
        reader = FileReader(path, ordinal, source, text_key, RejectWriter(rejects_dir, f"read-{ordinal}"))
        yield from reader.tables()
        seconds = time.perf_counter() - start
        good = reader.rows_read - reader.rows_rejected
        ray.get(ledger.finish.remote((READ, ordinal), [(READ, reader.rows_read, good, reader.rows_rejected, seconds)]))


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
    import ray

    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": not quiet,
              "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:  # "local": never attach to a cluster some `ray start` left on this machine
        ray.init(address="local", num_cpus=num_cpus, **kwargs)


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

    def run(self, source, output: str | os.PathLike, *, output_format: str = "parquet",
            analyze: bool = False, keep_stats: bool = False, ray_address: str | None = None,
            num_cpus: int | None = None, seed: int = 42, quiet: bool = False,
            overwrite: bool = True) -> RunResult:
        import ray

        from .report import build_summary, write_report

        started = time.perf_counter()
        sources = as_sources(source)
        files = read_once([(path, s.source_name()) for s in sources for path in s.files()])
        output_dir = Path(output)
        if overwrite and output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        rejects_dir = str((output_dir / "rejects").resolve())
        ensure_ray(ray_address, num_cpus, quiet)
        self.ship_user_code()
        configure_ray_data(quiet)
        ctx = RunContext(output_dir=output_dir, seed=seed, analyze=analyze,
                         num_cpus=int(ray.cluster_resources().get("CPU", 1)),
                         sources={s.source_name(): s for s in sources})
        ledger = ray.remote(num_cpus=0)(Ledger).remote(seed)
        file_paths = {i: os.path.abspath(p) for i, (p, _) in enumerate(files)}

        listing = pa.table({"ordinal": list(range(len(files))), "path": list(file_paths.values()),
                            "source": [name for _, name in files]})
        ds = ray.data.from_arrow(listing).repartition(len(files)).map_batches(
            # max_retries: Ray 2.60 takes it only as a (deprecated) remote argument.
            read_files, batch_size=1, batch_format="pyarrow", max_retries=CRASHES,
            fn_kwargs={"text_key": self.text_key, "rejects_dir": rejects_dir, "ledger": ledger})

        driver_counts: dict[str, tuple[int, int, float]] = {}
        upstream = None
        stages = self.plan()
        for i, (kind, steps) in enumerate(stages):
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
                    ds = op.apply(ds, ctx).materialize()
                driver_counts[label] = (rows_in, ds.count(), time.perf_counter() - start)
                upstream = label
                continue
            sink = i == len(stages) - 1
            if analyze:
                steps = [(lb, o) for lb, o in steps if o.row_local or not isinstance(o, (Deduplicator, Selector))]
            stage = FusedStage(steps, ledger, rejects_dir, file_paths, upstream=upstream, sink=sink,
                               keep_stats=keep_stats, analyze=analyze, index=i,
                               stat_names=[n for o in self.ops if isinstance(o, Filter) for n in o.stat_names])
            ds = ds.map_batches(stage.udf(), batch_format="pyarrow", batch_size=None, max_retries=CRASHES)
            upstream = None

        data_dir = output_dir / "data"
        write_dataset(ds, str(data_dir), output_format)
        data_dir.mkdir(exist_ok=True)
        if output_format == "parquet":
            _unify_output(data_dir, _conflicting_columns(ray.get(ledger.output_schemas.remote(stage.key))))
        snapshot = ray.get(ledger.snapshot.remote())
        ray.kill(ledger)
        summary = build_summary(self, snapshot, driver_counts, ctx,
                                wall_seconds=time.perf_counter() - started, analyze=analyze,
                                output_format=output_format, files=list(file_paths.values()))
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        write_report(output_dir / "report.html", summary, snapshot, ctx.report_sections)
        return RunResult(summary=summary, output_dir=output_dir)
