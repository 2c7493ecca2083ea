"""The tracer (Data-Juicer's open_tracer): what each traced operator changed or dropped, a
sample of `limit` rows per operator, first in input order, written to `<run folder>/trace/`:

- `mapper-<op>.jsonl`: rows whose text the mapper changed, as {"original text": ...,
  "processed_text": ...} (Data-Juicer's keys);
- `filter-<op>.jsonl`: rows the filter dropped, with their fields and stats;
- `duplicate-<op>.jsonl`: rows a deduplicator or selector removed (Data-Juicer writes pairs of
  duplicates instead; sluice writes the removed rows).

`<op>` is the operator's label in the summary (`name#2` for a second use of one operator).
Tasks hand their samples to a small Ray actor (`TraceCollector`); a task that Ray retries
sends the same rows again, which are kept once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import ID_COLUMN, Filter, Mapper
from .storage import Location

KINDS = {"mapper": "mapper", "filter": "filter", "deduplicator": "duplicate", "selector": "duplicate"}


@dataclass(frozen=True)
class TraceSettings:
    limit: int = 10               # rows kept per operator (Data-Juicer's trace_num)
    ops: tuple[str, ...] = ()     # operator names traced; empty: all (op_list_to_trace)

    def wants(self, label: str) -> bool:
        return not self.ops or label.split("#")[0] in self.ops


class TraceCollector:
    """Ray actor: per operator label, the traced rows with the smallest order keys."""

    def __init__(self, limit: int):
        self.limit = limit
        self.rows: dict[str, dict[int, dict]] = {}
        self.kinds: dict[str, str] = {}

    def add(self, label: str, kind: str, items: list[tuple[int, dict]]) -> None:
        kept = self.rows.setdefault(label, {})
        self.kinds[label] = kind
        kept.update(items)
        if len(kept) > self.limit:
            self.rows[label] = {k: kept[k] for k in sorted(kept)[:self.limit]}

    def collected(self) -> dict[str, tuple[str, list[dict]]]:
        return {label: (self.kinds[label], [rows[k] for k in sorted(rows)]) for label, rows in self.rows.items()}


def _public(table: pa.Table) -> pa.Table:
    return table.select([c for c in table.column_names if not c.startswith("__")])


def step_items(op, before: pa.Table, after: pa.Table, limit: int) -> list[tuple[int, dict]]:
    """What a row-local step changed (a mapper) or dropped (a filter), at most `limit` rows."""
    text_key = getattr(op, "text_key", None)
    if isinstance(op, Mapper) and text_key in before.column_names and before.num_rows == after.num_rows:
        old, new = before.column(text_key), after.column(text_key)
        changed = pc.fill_null(pc.not_equal(old, new), False)
        index = np.flatnonzero(changed.to_numpy(zero_copy_only=False))[:limit]
        ids = before.column(ID_COLUMN).to_numpy()
        return [(int(ids[i]), {"original text": old[int(i)].as_py(), "processed_text": new[int(i)].as_py()})
                for i in index]
    if isinstance(op, Filter):
        return dropped_items(before, after.column(ID_COLUMN).to_numpy(), limit, op.with_stats)
    return []


def dropped_items(before: pa.Table, kept_ids: np.ndarray, limit: int, with_stats=None) -> list[tuple[int, dict]]:
    """The rows of `before` whose ids are not in `kept_ids`, at most `limit`, in input order;
    `with_stats` adds a filter's stats to them."""
    ids = before.column(ID_COLUMN).to_numpy()
    index = np.flatnonzero(~np.isin(ids, kept_ids))
    index = index[np.argsort(ids[index], kind="stable")][:limit]
    dropped = before.take(pa.array(index, pa.int64()))
    rows = _public(with_stats(dropped) if with_stats else dropped).to_pylist()
    return [(int(ids[i]), row) for i, row in zip(index, rows)]


def ids_of(ds) -> np.ndarray:
    import ray

    tables = ray.get(ds.select_columns([ID_COLUMN]).to_arrow_refs())
    return np.concatenate([t.column(ID_COLUMN).to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)


def _rows_with_ids(batch: pa.Table, ids: np.ndarray) -> pa.Table:
    return batch.filter(pa.array(np.isin(batch.column(ID_COLUMN).to_numpy(), ids)))


def removed_items(before, after, limit: int) -> list[tuple[int, dict]]:
    """The first `limit` rows (in input order) of Dataset `before` that are not in `after`."""
    import ray

    removed = np.setdiff1d(ids_of(before), ids_of(after))[:limit]
    if not len(removed):
        return []
    parts = ray.get(before.map_batches(_rows_with_ids, batch_format="pyarrow",
                                       fn_kwargs={"ids": removed}).to_arrow_refs())
    table = pa.concat_tables([p for p in parts if p.num_rows], promote_options="permissive") if parts else None
    return [] if table is None else dropped_items(table, np.zeros(0, np.int64), limit)


def write_traces(folder: Location, collected: dict[str, tuple[str, list[dict]]]) -> list[Location]:
    """One JSON-lines file per traced operator that changed or dropped something."""
    written = []
    for label, (kind, rows) in collected.items():
        if not rows:
            continue
        folder.mkdir()
        path = folder / f"{kind}-{label}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
        written.append(path)
    return written
