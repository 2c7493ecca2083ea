"""Runs a pipeline's plan in this process, without Ray: for inputs that fit in memory.

The same plan as on Ray (the same fused stages, checkpoint, ledger, rejects and report), over
a list of Arrow tables instead of a Dataset's blocks: one per checkpoint chunk, and one after
each whole-dataset operator, which runs its `apply_table`. It saves Ray's start and its
per-stage task and shuffle costs, seconds that dominate a small run (datatrove's local
executor and Data-Juicer's standalone mode are the same idea).

Input parts and blocks go through the row-local stages on one thread per CPU: the operators'
work is Arrow compute and numba kernels that release the GIL, so the threads use every core
without a process per core. (An operator is called from several threads at once: the built-in
ones keep no state between calls; a recipe's own operator that does needs `ray: {num_cpus: 1}`,
or Data-Juicer's `np: 1`.)
The threads are daemons, so Ctrl-C ends the run without waiting for a slow operator.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .base import ID_COLUMN
from .commit import RunFolder
from .dedup.seen import SeenKeys
from .io import InputPart, write_table
from .progress import Progress
from .stage import CHECKPOINT_PARQUET, SLICE_ROWS, FusedStage, checkpoint_part
from .storage import Location
from .trace import dropped_items

Blocks = list  # of pa.Table


def in_threads(fn: Callable, items: Sequence, workers: int, on_done: Callable[[int], None] = lambda n: None) -> list:
    """[fn(item) for item in items] on `workers` daemon threads, in order; `on_done(n)` in this
    thread after each of the n items finished; the first exception raised is raised here."""
    if workers <= 1 or len(items) <= 1:
        results = []
        for item in items:
            results.append(fn(item))
            on_done(len(results))
        return results
    results, finished = [None] * len(items), queue.Queue()
    todo = iter(range(len(items)))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
                finished.put(None)
            except BaseException as e:
                finished.put(e)
                return

    for _ in range(min(workers, len(items))):
        threading.Thread(target=work, daemon=True).start()
    for done in range(1, len(items) + 1):
        error = finished.get()
        if error is not None:
            with lock:
                todo = iter(())  # the other threads take nothing more
            raise error
        on_done(done)
    return results


class LocalExecutor:
    name = "local"
    saves_ids = True  # rows that are some of the checkpointed ones are checkpointed as their ids

    def __init__(self, num_cpus: int | None = None):
        self.num_cpus = num_cpus or len(os.sched_getaffinity(0))
        self.kept: dict[str, pa.Table] = {}  # the checkpoint chunks this run wrote, by path

    def start(self, locations: list[Location], shared_fs: bool, pipeline) -> None:
        pass

    def actor(self, cls, *args):
        return cls(*args)

    def release(self, handle) -> None:
        pass

    def checkpoint(self, folder: RunFolder, parts: list[tuple[int, InputPart]], stage: FusedStage,
                   text_key: str, progress: Progress) -> None:
        seen = SeenKeys.for_stage(stage)
        in_threads(lambda item: checkpoint_part(folder, item[0], item[1], stage=stage, text_key=text_key,
                                                kept=self.kept, seen=seen),
                   parts, self.num_cpus,
                   lambda done: progress.update(f"input parts read and checkpointed: {done}/{len(parts)}"))

    def load(self, chunks: list[Location]) -> Blocks:
        return [self.kept.pop(str(c)) if str(c) in self.kept else pq.read_table(c.open_input_file()) for c in chunks]

    def save(self, blocks: Blocks, folder: Location) -> list[Location]:
        folder.mkdir()
        files = [folder / f"{i:05d}.parquet" for i in range(len(blocks))]

        def write(i: int) -> None:
            files[i].write_with(lambda out: pq.write_table(blocks[i], out, **CHECKPOINT_PARQUET))

        in_threads(write, range(len(blocks)), self.num_cpus)
        return files

    def save_ids(self, blocks: Blocks, folder: Location) -> tuple[list[Location], list[str]]:
        """Checkpoint only the ids of `blocks` (rows that are some of the checkpointed ones); and
        their columns."""
        return self.save([b.select([ID_COLUMN]) for b in blocks], folder), blocks[0].column_names

    def rows_with_ids(self, blocks: Blocks, id_files: list[Location], columns: list[str]) -> Blocks:
        """The rows of `blocks` whose ids `id_files` hold (`save_ids`), in their order, with `columns`."""
        rows = pa.concat_tables(blocks, promote_options="permissive")
        ids = pa.concat_tables(self.load(id_files)).column(ID_COLUMN)
        return self._cut(rows.take(pc.index_in(ids, value_set=rows.column(ID_COLUMN))).select(columns))

    def materialize(self, blocks: Blocks) -> Blocks:
        return blocks

    def count(self, blocks: Blocks) -> int:
        return sum(b.num_rows for b in blocks)

    def map_blocks(self, blocks: Blocks, fn, **kwargs) -> Blocks:
        return in_threads(lambda b: fn(b, **kwargs), blocks, self.num_cpus)

    def whole_dataset(self, op, blocks: Blocks, ctx) -> Blocks:
        return self._cut(op.apply_table(pa.concat_tables(blocks, promote_options="permissive"), ctx))

    def _cut(self, table: pa.Table) -> Blocks:
        """A few blocks per thread (views, no copy), so that the stages after a whole-dataset
        operator, the checkpoint and the writer use every thread."""
        rows = max(SLICE_ROWS, -(-table.num_rows // (4 * self.num_cpus)))
        return [table.slice(start, rows) for start in range(0, max(table.num_rows, 1), rows)]

    def removed(self, before: Blocks, after: Blocks, limit: int) -> list:
        kept = pa.concat_tables([b.select([ID_COLUMN]) for b in after]).column(ID_COLUMN).to_numpy()
        return dropped_items(pa.concat_tables(before, promote_options="permissive"), kept, limit)

    def fused(self, stage: FusedStage, blocks: Blocks) -> Blocks:
        return in_threads(stage, blocks, self.num_cpus)

    def write(self, blocks: Blocks, folder: Location, fmt: str) -> None:
        folder.mkdir()
        written = [b for b in blocks if b.num_rows]
        in_threads(lambda i: write_table(written[i], folder / f"{i:06d}.{fmt}", fmt), range(len(written)),
                   self.num_cpus)
