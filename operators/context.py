"""What a whole-dataset operator may use while it runs: where output goes, the CPUs, the inputs, the report."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa


@dataclass
class RunContext:
    output_dir: Path | None = None
    num_cpus: int = 1
    # An analyze-only run computes stats and drops nothing.
    analyze: bool = False
    # The run's inputs by source name (`__source__`), with their mixture weights.
    sources: dict = field(default_factory=dict)
    # (title, html) pairs shown in the run's HTML report, in order.
    report_sections: list[tuple[str, str]] = field(default_factory=list)

    def add_report_section(self, title: str, html: str) -> None:
        self.report_sections.append((title, html))

    def map(self, fn, items) -> list:
        """[fn(item) for item in items] on `num_cpus` threads, for work that releases the GIL."""
        with ThreadPoolExecutor(self.num_cpus) as pool:
            return list(pool.map(fn, items))

    def filter(self, table: pa.Table, keep: np.ndarray) -> pa.Table:
        """The rows of `table` where `keep` is true, copied batch by batch on `num_cpus` threads
        (one thread takes seconds to copy gigabytes of text); a batch that keeps all its rows,
        and `table` when all are kept, as they are."""
        if keep.all():
            return table
        batches = table.to_batches()
        bounds = np.cumsum([0] + [b.num_rows for b in batches])

        def kept(i: int) -> pa.RecordBatch:
            part = keep[bounds[i]:bounds[i + 1]]
            return batches[i] if part.all() else batches[i].filter(pa.array(part))

        return pa.Table.from_batches(self.map(kept, range(len(batches))), schema=table.schema)
