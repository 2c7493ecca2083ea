"""The operator graph and its plan.

A Pipeline is a list of operators. Consecutive row-local operators (mappers, filters, and the
row-local `prepare` of the next whole-dataset operator) fuse into one stage (see `stage`). The
first fused stage runs once per input file, reading it and committing its rows to the run's
checkpoint (see `commit`), so an interrupted run resumes from the files it finished; later
ones run over the checkpoint. Whole-dataset operators (dedup, selection, mixing, LLM operators)
get every row at once; the rows after each are checkpointed too, with the counts so far, so a
run interrupted later resumes after the last one that finished. A final fused stage drops
internal columns before the writer. The ledger collects per-operator row counts, seconds, stat samples and the rejects of
later stages, so the run summary accounts for every row read.

An executor runs the plan: `RayExecutor` on Ray Data (the local machine's Ray or a cluster),
`LocalExecutor` in this process for inputs small enough that Ray's start and per-stage costs
would dominate. Both give the same rows, rejects and summary. Columns whose types differ
between blocks (beyond what Arrow promotes) become JSON text where blocks meet and in Parquet
output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .base import Deduplicator, Filter, Operator, Selector
from .commit import SUMMARY, input_identity, prepare
from .context import RunContext
from .io import COMPRESSIONS, Source, input_parts, json_lines, json_text, read_once
from .ledger import Count, Ledger, labels, marker_entries
from .progress import Progress
from .stage import FusedStage
from .storage import Location
from .trace import KINDS as TRACE_KINDS
from .trace import TraceCollector, TraceSettings, write_traces

EXECUTORS = ("auto", "local", "ray")
# `auto` runs an input in this process, on a thread per core, when its data fits in memory: a
# local run holds it there, where Ray Data streams blocks and spills them to disk. Measured peaks
# of webtext_clean: 4.8 GB for 3.0 GB of JSON lines; a recipe whose mappers change every row
# holds more copies of the text. So an input may take a fifth of the free memory.
LOCAL_MEMORY_SHARE = 5
COMPRESSION_RATIO = 4  # text in .gz, .zst and Parquet files, in memory against on disk


def in_memory_bytes(files: list[str]) -> int:
    """About how much memory the text of `files` takes once read."""
    def size(f: str) -> int:
        compressed = f.lower().endswith(COMPRESSIONS + (".parquet",))
        return Location.of(f).info().size * (COMPRESSION_RATIO if compressed else 1)

    return sum(size(f) for f in files)


def fits_in_memory(size: int) -> bool:
    import psutil

    return size * LOCAL_MEMORY_SHARE <= psutil.virtual_memory().available


@dataclass
class RunResult:
    summary: dict
    output_dir: Path | Location  # a Path on the local disk
    data_files: list[Path] = field(default_factory=list)  # a Data-Juicer export_path's file(s)

    @property
    def data_path(self) -> Path | Location:
        return self.data_files[0] if len(self.data_files) == 1 else self.output_dir / "data"

    @property
    def rejects_path(self) -> Path | Location:
        return self.output_dir / "rejects"

    @property
    def report_path(self) -> Path | Location:
        return self.output_dir / "report.html"

    def table(self) -> pa.Table:
        from .export import read_result
        from .io import read_output

        return read_result(self.data_files) if self.data_files else read_output(self.data_path)


def _as_json_text(table: pa.Table, columns: list[str]) -> pa.Table:
    """`table` with those of `columns` that do not hold text as JSON text (strings stay as they are)."""
    for name in columns:
        if name in table.column_names and not _is_text(table.schema.field(name).type):
            table = table.set_column(table.column_names.index(name), name, json_text(table.column(name).to_pylist()))
    return table


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _unify_output(data_dir: Location, columns: list[str]) -> None:
    """Rewrite the Parquet files whose types for `columns` differ from the others' (a rare case,
    from inputs that disagree), so that the output reads as one table."""
    for path in data_dir.children("*.parquet") if columns else []:
        if any(not _is_text(f.type) for f in pq.read_schema(path.open_input_file()) if f.name in columns):
            table = _as_json_text(pq.read_table(path.open_input_file()), columns)
            path.write_with(lambda out: pq.write_table(table, out))


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


def as_sources(source) -> list[Source]:
    if isinstance(source, (str, os.PathLike, Source)):
        source = [source]
    return [s if isinstance(s, Source) else Source(str(s)) for s in source]


def choose_executor(executor: str, ops: Sequence[Operator], files: list[str], *, ray_address: str | None,
                    num_cpus: int | None, quiet: bool):
    """The executor for a run: `local`, `ray`, or (`auto`) local for inputs that fit in memory
    (`fits_in_memory`) without a Ray address whose operators all run in one process."""
    from .local_executor import LocalExecutor
    from .ray_executor import RayExecutor

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor '{executor}'; use {', '.join(EXECUTORS)}")
    ray_only = [label for label, op in zip(labels(ops), ops) if not op.row_local and not op.runs_in_process()]
    if executor == "local":
        if ray_address:
            raise ValueError("the local executor runs in this process; drop the Ray address or use --executor ray")
        if ray_only:
            raise ValueError(f"{ray_only[0]} runs only on Ray Data; use --executor ray (or auto)")
    if executor == "local" or (executor == "auto" and not ray_address and not ray_only
                               and fits_in_memory(in_memory_bytes(files))):
        return LocalExecutor(num_cpus)
    return RayExecutor(ray_address, num_cpus, quiet)


@dataclass
class Pipeline:
    """An ordered list of operators that runs on Ray Data or, for small inputs, in this process.

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
        for label, op in zip(labels(self.ops), self.ops):
            stages[-1][1].append((label, op))  # a whole-dataset operator's row-local prepare() too
            if not op.row_local:
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
            overwrite: bool = False, resume: bool = False, shared_fs: bool = False,
            executor: str = "auto") -> RunResult:
        """Run on `source` into the folder `output`: a new or empty folder, or an earlier sluice
        output, which is replaced only once this run has finished (`overwrite` lets it replace
        any folder). With `resume`, an interrupted run of the same operators, settings and input
        files continues from the input files it finished. On a Ray cluster of several nodes,
        `shared_fs` says that every node mounts the inputs and the output at the same paths
        (without it, such a cluster takes URIs that every node reaches: `s3://...`).
        `executor`: `ray`, `local` (this process) or `auto` (see `choose_executor`)."""
        from .report import build_summary, write_report

        started = time.perf_counter()
        sources = as_sources(source)
        files = read_once([(path, s.source_name()) for s in sources for path in s.files()])
        file_paths = {i: str(Location.of(p)) for i, (p, _) in enumerate(files)}
        runner = choose_executor(executor, self.ops, list(file_paths.values()), ray_address=ray_address,
                                 num_cpus=num_cpus, quiet=quiet)
        identity = self.identity(list(file_paths.values()), output_format=output_format, analyze=analyze,
                                 keep_stats=keep_stats, seed=seed)
        folder = prepare(output, sources, list(file_paths.values()), identity, overwrite=overwrite, resume=resume)
        with folder:  # holds the output's lock until the run ends, however it ends
            runner.start([folder.target, *map(Location.of, file_paths.values())], shared_fs, self)
            ctx = RunContext(output_dir=folder.target.native(), analyze=analyze, num_cpus=runner.num_cpus,
                             sources={s.source_name(): s for s in sources})
            ledger = runner.actor(Ledger, seed)
            tracer = runner.actor(TraceCollector, self.trace.limit) if self.trace else None
            stages = self.plan()
            stat_names = [n for o in self.ops if isinstance(o, Filter) for n in o.stat_names]

            def fused(i: int, steps: list, upstream: str | None) -> FusedStage:
                if analyze:
                    steps = [(lb, o) for lb, o in steps if o.row_local or not isinstance(o, (Deduplicator, Selector))]
                return FusedStage(steps, ledger, file_paths, upstream=upstream, sink=i == len(stages) - 1,
                                  keep_stats=keep_stats, analyze=analyze, index=i, stat_names=stat_names,
                                  skip_op_error=self.skip_op_error, tracer=tracer, trace=self.trace)

            stage = fused(0, stages[0][1], None)
            parts = input_parts([(file_paths[i], name) for i, (_, name) in enumerate(files)])
            resumed = folder.finished_parts()
            progress = Progress(quiet)
            restart = folder.finished_stage() if folder.resumed and tracer is None else None
            if restart is None:
                runner.checkpoint(folder, [(i, part) for i, part in enumerate(parts) if i not in resumed],
                                  stage, self.text_key, progress)
                progress.done(f"{runner.name}: {len(files)} input file(s) in {len(parts)} part(s) read and "
                              "checkpointed" + (f" ({len(resumed)} from the interrupted run)" if resumed else "")
                              + f" in {time.perf_counter() - started:.1f}s")
                done = folder.finished_parts()
                ledger.finish_many([e for i in sorted(done) for e in marker_entries(done[i])])
                data = runner.load(folder.part_chunks(done))
            else:  # the rows after a whole-dataset operator, with the counts up to there
                ledger.restore(restart["ledger"])
                saved = [folder.stage_folder(restart["stage"]) / name for name in restart["files"]]
                if restart.get("id_columns") is not None:
                    data = runner.rows_with_ids(runner.load(folder.part_chunks(folder.finished_parts())), saved,
                                                restart["id_columns"])
                else:
                    data = runner.load(saved)
                progress.done(f"{runner.name}: resumed after {stages[restart['stage']][1][0][0]} from the "
                              "interrupted run's checkpoint")

            upstream = None
            # Whether `data` holds some of the checkpointed rows, unchanged, with none but their columns.
            checkpointed_rows = restart is None or restart.get("id_columns") is not None
            for i, (kind, steps) in enumerate(stages[1:], 1):
                label, op = steps[0] if steps else (None, None)
                if kind == "dataset":
                    if analyze and isinstance(op, (Deduplicator, Selector)):
                        upstream = None
                        continue
                    if restart is not None and i <= restart["stage"]:
                        upstream = label
                        continue
                    data = runner.materialize(data)
                    rows_in, start = runner.count(data), time.perf_counter()
                    if rows_in:  # an empty Dataset has no columns to join or group on
                        conflicts = _conflicting_columns(ledger.output_schemas(stage.key))
                        if conflicts:
                            data = runner.map_blocks(data, _as_json_text, columns=conflicts)
                            checkpointed_rows = False
                        before, data = data, runner.whole_dataset(op, data, ctx)
                        if tracer is not None and self.trace.wants(label):
                            tracer.add(label, TRACE_KINDS[op.kind], runner.removed(before, data, self.trace.limit))
                    count = Count(label, rows_in, runner.count(data), 0, time.perf_counter() - start)
                    ledger.finish(("driver", label), [count])
                    total = ledger.snapshot()["counts"][label]  # with the rows a local run dropped early
                    progress.done(f"{label}: {total.rows_in - total.rejected:,} -> {count.rows_out:,} rows "
                                  f"in {count.seconds:.1f}s")
                    checkpointed_rows = checkpointed_rows and op.only_drops_rows()
                    if tracer is None and checkpointed_rows and runner.saves_ids and count.rows_out:
                        files, columns = runner.save_ids(data, folder.stage_folder(i))
                        folder.save_stage(i, files, ledger.state(), id_columns=columns)
                    elif tracer is None:  # (a traced run resumes from the input parts' checkpoints)
                        folder.save_stage(i, runner.save(data, folder.stage_folder(i)), ledger.state())
                    upstream = label
                    continue
                stage = fused(i, steps, upstream)
                if restart is None or i > restart["stage"]:
                    data = runner.fused(stage, data)
                    checkpointed_rows = checkpointed_rows and not any(o.row_local for _, o in steps)
                upstream = None

            data_dir = folder.partial / "data"
            runner.write(data, data_dir, output_format)
            progress.done(f"output written in {time.perf_counter() - started:.1f}s")
            data_dir.mkdir()
            if output_format == "parquet":
                _unify_output(data_dir, _conflicting_columns(ledger.output_schemas(stage.key)))
            snapshot = ledger.snapshot()
            for stage_key, rejected in ledger.rejected().items():
                (folder.partial / "rejects").mkdir()
                (folder.partial / "rejects" / f"stage{stage_key.split(':')[0]}.jsonl").write_bytes(json_lines(rejected))
            runner.release(ledger)
            summary = build_summary(self, snapshot, ctx, wall_seconds=time.perf_counter() - started,
                                    analyze=analyze, output_format=output_format, executor=runner.name,
                                    files=list(file_paths.values()), parts=len(parts), resumed_parts=len(resumed))
            if tracer is not None:
                write_traces(folder.partial / "trace", tracer.collected())
                runner.release(tracer)
            write_report(folder.partial / "report.html", summary, snapshot, ctx.report_sections)
            (folder.partial / SUMMARY).write_text(json.dumps(summary, indent=2))  # last: the run is whole
            folder.commit()
            return RunResult(summary=summary, output_dir=folder.target.native())
