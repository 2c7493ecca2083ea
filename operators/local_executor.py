"""Runs a pipeline's plan in this process, without Ray: for inputs that fit in memory.

The same plan as on Ray (the same fused stages, checkpoint, ledger, rejects and report), over
a list of Arrow tables instead of a Dataset's blocks: one per checkpoint chunk, and one after
each whole-dataset operator, which runs its `apply_table`. It saves Ray's start and its
per-stage task and shuffle costs, seconds that dominate a small run (datatrove's local
executor and Data-Juicer's standalone mode are the same idea).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .base import ID_COLUMN
from .commit import RunFolder
from .io import InputPart, write_table
from .progress import Progress
from .stage import FusedStage, checkpoint_part
from .trace import dropped_items

Blocks = list  # of pa.Table


class LocalExecutor:
    name = "local"
    num_cpus = 1

    def start(self, output: Path, shared_fs: bool, pipeline) -> None:
        pass

    def actor(self, cls, *args):
        return cls(*args)

    def release(self, handle) -> None:
        pass

    def checkpoint(self, folder: RunFolder, parts: list[tuple[int, InputPart]], stage: FusedStage,
                   text_key: str, progress: Progress) -> None:
        for done, (i, part) in enumerate(parts, 1):
            checkpoint_part(folder, i, part, stage=stage, text_key=text_key)
            progress.update(f"input parts read and checkpointed: {done}/{len(parts)}")

    def load(self, chunks: list[str]) -> Blocks:
        return [pq.read_table(path) for path in chunks]

    def materialize(self, blocks: Blocks) -> Blocks:
        return blocks

    def count(self, blocks: Blocks) -> int:
        return sum(b.num_rows for b in blocks)

    def map_blocks(self, blocks: Blocks, fn, **kwargs) -> Blocks:
        return [fn(b, **kwargs) for b in blocks]

    def whole_dataset(self, op, blocks: Blocks, ctx) -> Blocks:
        return [op.apply_table(pa.concat_tables(blocks, promote_options="permissive"), ctx)]

    def removed(self, before: Blocks, after: Blocks, limit: int) -> list:
        kept = pa.concat_tables([b.select([ID_COLUMN]) for b in after]).column(ID_COLUMN).to_numpy()
        return dropped_items(pa.concat_tables(before, promote_options="permissive"), kept, limit)

    def fused(self, stage: FusedStage, blocks: Blocks) -> Blocks:
        return [stage(b) for b in blocks]

    def write(self, blocks: Blocks, path: str, fmt: str) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for i, block in enumerate(b for b in blocks if b.num_rows):
            write_table(block, str(folder / f"{i:06d}.{fmt}"), fmt)
