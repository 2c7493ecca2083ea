"""Duplicates dropped as a local run checkpoints its input parts, before their exact dedup.

A row whose dedup key a row with a lower id already has is a duplicate whatever the rest of the
run holds: the dedup keeps only each key's lowest id. So a local run drops such rows from each
chunk of an input part, against the chunks the run's threads have got to so far, in the copy its
filters make anyway, and the whole-dataset dedup later copies only the few blocks that still
hold duplicates (whose lower-id twin was in a part not reached yet), where it would otherwise
copy every row. The rows kept and the counts are the same; a run that traces what the dedup
drops, or only analyzes, skips this.
"""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa

from ..base import ID_COLUMN
from ..ledger import Count


class SeenKeys:
    """The lowest id of each key seen so far in one column, shared by the threads of a run."""

    def __init__(self, label: str, column: str):
        self.label, self.column = label, column
        self._lowest: dict = {}
        self._lock = threading.Lock()

    @classmethod
    def for_stage(cls, stage) -> "SeenKeys | None":
        """For a fused stage that ends with the `prepare` of an operator that has a
        `duplicate_key` column, when the stage neither traces nor only analyzes."""
        if not stage.steps or stage.analyze or stage.tracer is not None:
            return None
        label, op = stage.steps[-1]
        column = None if op.row_local else op.duplicate_key()
        return cls(label, column) if column else None

    def drop_seen(self, table: pa.Table) -> tuple[pa.Table, Count]:
        """`table` without the rows whose key a lower id has (seen before or in `table`), whose
        own keys are then seen; and the Count of the rows dropped."""
        keys = table.column(self.column).to_pylist()
        ids = table.column(ID_COLUMN).to_numpy()
        keep = np.ones(len(keys), dtype=bool)
        lowest = self._lowest
        with self._lock:
            for i, (key, row_id) in enumerate(zip(keys, ids.tolist())):
                seen = lowest.get(key)
                if seen is None or row_id < seen:
                    lowest[key] = row_id
                elif row_id > seen:
                    keep[i] = False
        dropped = len(keys) - int(keep.sum())
        return (table.filter(pa.array(keep)) if dropped else table), Count(self.label, dropped)
