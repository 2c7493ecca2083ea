"""A run's counters: rows in and out of each operator, rejects, seconds and stat samples.

Every part of a run reports here the same way, as `Count` records under a label: a fused
stage per block, the reader per input file, the driver for a whole-dataset operator. The
summary is their sum per label, so there is one place where rows are added up. Records are
kept per block (or input file) key, so the records of a task that Ray retries replace those
of its earlier try.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import astuple, dataclass
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import STATS_PREFIX, Operator

READ = "read"  # the reader's label
KEPT = "kept"  # the rows that reach the writer
CRASHED = "worker_crash"  # blocks on which a worker died, rejected by whichever stage met them

SAMPLES_PER_BATCH = 2000
SAMPLES_PER_STAT = 50_000
SAMPLES_PER_FILE = 10_000  # per stat, in an input file's checkpoint


@dataclass(frozen=True)
class Count:
    """Rows that entered a step, left it, were rejected by it, and the seconds it took. A
    whole-dataset operator's rows marked as rejects are counted as its output by the driver;
    the next stage, which splits them off, moves them from `rows_out` to `rejected`."""

    label: str
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def dropped(self) -> int:
        return self.rows_in - self.rows_out - self.rejected

    def __add__(self, other: "Count") -> "Count":
        return Count(self.label, self.rows_in + other.rows_in, self.rows_out + other.rows_out,
                     self.rejected + other.rejected, self.seconds + other.seconds)

    def as_list(self) -> list:
        """As JSON, for an input file's completion marker."""
        return list(astuple(self))


def labels(ops: Sequence[Operator]) -> list[str]:
    """Each operator's label in a run: its name, numbered from its second use on."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for op in ops:
        seen[op.name] += 1
        out.append(op.name if seen[op.name] == 1 else f"{op.name}#{seen[op.name]}")
    return out


class Ledger:
    """The counters of one run. In a Ray run it is a small actor every task reports to (see
    `Remote`); in a local run, an object in the driver."""

    def __init__(self, seed: int = 0):
        self.blocks: dict = {}  # block or file key -> its Count records
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

    def finish(self, key, records: list[Count], samples=(), schema=None, rejects=()) -> None:
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

    def state(self) -> dict:
        """Everything counted so far, as JSON values, for a checkpoint a resumed run `restore`s."""
        return {
            "blocks": [[list(key), [r.as_list() for r in records]] for key, records in self.blocks.items()],
            "numeric": [[stat, phase, _b64(np.concatenate(v))] for (stat, phase), v in self.numeric.items()],
            "categories": [[stat, phase, dict(v)] for (stat, phase), v in self.categories.items()],
            "schemas": [[stage, base64.b64encode(schema.serialize()).decode()]
                        for stage, by_text in self.schemas.items() for schema in by_text.values()],
            "rejects": [[list(key), records] for key, records in self.rejects.items()],
        }

    def restore(self, state: dict) -> None:
        self.blocks = {tuple(key): [Count(*r) for r in records] for key, records in state["blocks"]}
        self.numeric.clear()
        for stat, phase, values in state["numeric"]:
            self.numeric[(stat, phase)] = [np.frombuffer(base64.b64decode(values), np.float64).copy()]
        self.categories.clear()
        for stat, phase, counts in state["categories"]:
            self.categories[(stat, phase)].update(counts)
        self.schemas.clear()
        for stage, schema in state["schemas"]:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(schema)))
            self.schemas[stage][schema.to_string(show_schema_metadata=False)] = schema
        self.rejects = {tuple(key): records for key, records in state["rejects"]}

    def snapshot(self) -> dict:
        counts: dict[str, Count] = {}
        for records in self.blocks.values():
            for record in records:
                counts[record.label] = counts[record.label] + record if record.label in counts else record
        return {
            "counts": counts,
            "numeric": {k: np.concatenate(v) for k, v in self.numeric.items()},
            "categories": {k: dict(v) for k, v in self.categories.items()},
        }


class Remote:
    """A Ray actor whose method calls block and return, as calls on the object itself would,
    so a stage reports to a Ledger in its own process and to one on a cluster the same way."""

    def __init__(self, actor):
        self.__dict__["actor"] = actor

    def __getattr__(self, name: str):
        if name.startswith("__"):  # pickle's probes, before __init__ has run
            raise AttributeError(name)
        import ray

        method = getattr(self.__dict__["actor"], name)
        return lambda *args, **kwargs: ray.get(method.remote(*args, **kwargs))

    def kill(self) -> None:
        import ray

        ray.kill(self.__dict__["actor"])


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


def samples_json(samples: list, rng) -> list:
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


def _b64(values: np.ndarray) -> str:
    return base64.b64encode(values.astype(np.float64).tobytes()).decode()


def marker_entries(marker: dict) -> list[tuple]:
    """An input file's completion marker as `Ledger.finish` arguments."""
    entries = [((READ, marker["ordinal"]), [Count(*marker["read"])], (), None)]
    for chunk in marker["chunks"]:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(chunk["schema"])))
        entries.append((tuple(chunk["key"]), [Count(*r) for r in chunk["records"]], (), schema))
    samples = [(stat, phase, values if isinstance(values, dict) else
                np.frombuffer(base64.b64decode(values), np.float32).astype(np.float64))
               for stat, phase, values in marker["samples"]]
    entries.append((("samples", marker["ordinal"]), [], samples, None))
    return entries
