"""Whole-dataset selection: top-k by a field, exact random samples, weighted source mixing.

Random choices come from a seeded hash of each row's stable `__id__`, so a sample does not
depend on how the data is split into blocks or on the order rows arrive in.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import ID_COLUMN, SOURCE_COLUMN, ParamError, Selector, param, register
from .fields import field_values
from .splitmix import GOLDEN_GAMMA, splitmix64_mix

RANK_COLUMN = "__rank__"
FIELD_COLUMN = "__select_key__"


def row_uniforms(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) value per row id (splitmix64 of id and seed)."""
    z = splitmix64_mix(ids.astype(np.uint64) + np.uint64((seed * GOLDEN_GAMMA) & 0xFFFFFFFFFFFFFFFF))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def with_rank(table: pa.Table, seed: int) -> pa.Table:
    ids = table.column(ID_COLUMN).to_numpy()
    return table.append_column(RANK_COLUMN, pa.array(row_uniforms(ids, seed)))


def _source_counts(table: pa.Table) -> pa.Table:
    counts = pc.value_counts(table.column(SOURCE_COLUMN).combine_chunks())
    return pa.table({"source": counts.field("values"), "n": counts.field("counts")})


def source_counts(ds) -> dict[str, int]:
    """Rows per `__source__`, from per-block counts (tasks only, no shuffle)."""
    totals: dict[str, int] = {}
    for row in ds.map_batches(_source_counts, batch_format="pyarrow").take_all():
        totals[row["source"]] = totals.get(row["source"], 0) + row["n"]
    return totals


def table_source_counts(table: pa.Table) -> dict[str, int]:
    return dict(zip(*(_source_counts(table).column(c).to_pylist() for c in ("source", "n"))))


def _cutoff(k: int, n: int) -> float:
    """A rank below which at least k of n uniform ranks fall with overwhelming probability
    (6 standard deviations of margin), so one pass almost always suffices."""
    p = k / n
    return min(1.0, p + 6 * math.sqrt(p * (1 - p) / n) + 1 / n)


def _below(table: pa.Table, cutoffs: dict[str, float]) -> pa.Table:
    limit = pc.index_in(table.column(SOURCE_COLUMN), pa.array(list(cutoffs)))
    limit = pc.take(pa.array(list(cutoffs.values()), pa.float64()), limit)
    return table.filter(pc.fill_null(pc.less_equal(table.column(RANK_COLUMN), limit), False))


def _threshold(ranks: np.ndarray, k: int) -> float:
    """The k-th lowest of `ranks`."""
    return float(np.partition(ranks, k - 1)[k - 1])


def take_lowest_ranks_of_table(table: pa.Table, targets: dict[str, int]) -> pa.Table:
    """`take_lowest_ranks` on one table."""
    sources = table.column(SOURCE_COLUMN).to_numpy(zero_copy_only=False)
    ranks = table.column(RANK_COLUMN).to_numpy()
    thresholds = {s: _threshold(ranks[sources == s], k) for s, k in targets.items() if k}
    return _below(table, thresholds) if thresholds else table.slice(0, 0)


def take_lowest_ranks(ds, targets: dict[str, int], counts: dict[str, int]):
    """Exactly targets[s] rows of each source s: those with the lowest ranks. Only the ranks of
    about sum(targets) candidate rows reach the driver (16 bytes a row)."""
    import ray

    cutoffs = {s: _cutoff(k, counts[s]) if k < counts[s] else 1.0 for s, k in targets.items() if k}
    if not cutoffs:
        return ds.limit(0)
    while True:
        candidates = ds.map_batches(_below, batch_format="pyarrow", fn_kwargs={"cutoffs": cutoffs}).materialize()
        keys = pa.concat_tables(ray.get(candidates.select_columns([SOURCE_COLUMN, RANK_COLUMN]).to_arrow_refs()))
        thresholds, short = {}, False
        for s, limit in cutoffs.items():
            ranks = keys.filter(pc.equal(keys.column(SOURCE_COLUMN), s)).column(RANK_COLUMN).to_numpy()
            if len(ranks) < targets[s]:  # the margin was not enough (rare): take every row's rank
                cutoffs[s], short = 1.0, True
                continue
            thresholds[s] = _threshold(ranks, targets[s])
        if not short:
            return candidates.map_batches(_below, batch_format="pyarrow", fn_kwargs={"cutoffs": thresholds})


@register
class topk_specified_field_selector(Selector):
    """Keeps the rows with the highest (or, with reverse=false, lowest) values of a field or
    stat; drops the rest and rows where the field is null. Ties break by input order."""

    field_key: str = param(doc="field or stat column to rank by, e.g. stats.text_len or meta.score")
    top_ratio: Optional[float] = param(None, doc="keep this fraction of rows", ge=0.0, le=1.0)
    topk: Optional[int] = param(None, doc="keep at most this many rows", ge=0)
    reverse: bool = param(True, doc="true keeps the highest values, false the lowest")

    def setup(self):
        if self.top_ratio is None and self.topk is None:
            raise ParamError(self.name, "topk", "set topk or top_ratio")

    def prepare(self, table: pa.Table) -> pa.Table:
        try:
            return table.append_column(FIELD_COLUMN, field_values(table, self.field_key))
        except ValueError as e:
            raise ParamError(self.name, "field_key", str(e)) from None

    def apply(self, ds, ctx):
        ranked = ds.map_batches(_rows_with_field, batch_format="pyarrow")
        top = ranked.sort([FIELD_COLUMN, ID_COLUMN], descending=[self.reverse, False]).limit(self._k(ds.count()))
        return top.drop_columns([FIELD_COLUMN])

    def apply_table(self, table: pa.Table, ctx) -> pa.Table:
        order = [(FIELD_COLUMN, "descending" if self.reverse else "ascending"), (ID_COLUMN, "ascending")]
        top = _rows_with_field(table).sort_by(order).slice(0, self._k(table.num_rows))
        return top.drop_columns([FIELD_COLUMN])

    def _k(self, n: int) -> int:
        return min(x for x in (self.topk, None if self.top_ratio is None else int(self.top_ratio * n)) if x is not None)


def _rows_with_field(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_valid(table.column(FIELD_COLUMN)))


@register
class random_selector(Selector):
    """Keeps a random sample of an exact size, seeded and reproducible; drops the rest. The
    sample is stratified by input: each input gives rows in proportion to its size."""

    select_ratio: Optional[float] = param(None, doc="keep this fraction of rows", ge=0.0, le=1.0)
    select_num: Optional[int] = param(None, doc="keep this many rows", ge=0)
    seed: int = param(42, doc="random seed")

    def setup(self):
        if self.select_ratio is None and self.select_num is None:
            raise ParamError(self.name, "select_num", "set select_num or select_ratio")

    def prepare(self, table: pa.Table) -> pa.Table:
        return with_rank(table, self.seed)

    def apply(self, ds, ctx):
        counts = source_counts(ds)
        return take_lowest_ranks(ds, self._targets(counts), counts).drop_columns([RANK_COLUMN])

    def apply_table(self, table: pa.Table, ctx) -> pa.Table:
        targets = self._targets(table_source_counts(table))
        return take_lowest_ranks_of_table(table, targets).drop_columns([RANK_COLUMN])

    def _targets(self, counts: dict[str, int]) -> dict[str, int]:
        n = sum(counts.values())
        sizes = [self.select_num, None if self.select_ratio is None else int(self.select_ratio * n)]
        k = min(min(x for x in sizes if x is not None), n)
        # Spread k over the sources in proportion to their rows, so every source's sample is exact.
        return mixture_targets(counts, {s: c for s, c in counts.items()}, k, {})


def mixture_targets(available: dict[str, int], weights: dict[str, float], total: int | None,
                    caps: dict[str, int]) -> dict[str, int]:
    """Rows to take from each source: proportional to `weights`, summing exactly to `total`
    (largest remainders), or, without a total, the largest mixture no source runs short of."""
    weights = {s: w for s, w in weights.items() if w > 0}
    norm = sum(weights.values())
    share = {s: w / norm for s, w in weights.items()}
    supply = {s: min(available.get(s, 0), caps.get(s, available.get(s, 0))) for s in share}
    if total is None:
        total = int(min(supply[s] / share[s] for s in share) + 1e-9)
    exact = {s: share[s] * total for s in share}
    targets = {s: int(math.floor(v)) for s, v in exact.items()}
    for s in sorted(share, key=lambda s: (targets[s] - exact[s], s))[: total - sum(targets.values())]:
        targets[s] += 1
    for s, t in targets.items():
        if t > supply[s]:
            raise ValueError(f"source_mixer: source '{s}' has {supply[s]:,} rows available but its weight "
                             f"needs {t:,} of total_rows {total:,}; lower total_rows or its weight")
    return targets


@register
class source_mixer(Selector):
    """Mixes the run's inputs by weight into exact per-source row counts (seeded, reproducible);
    drops the rows not drawn. Weights default to the inputs' `weight:` values."""

    weights: Optional[dict[str, float]] = param(None, doc="source name -> weight (default: the inputs' weights)")
    total_rows: Optional[int] = param(None, doc="rows in the mixture (default: as many as the weights allow)", ge=0)
    max_rows_per_source: Optional[Union[int, dict[str, int]]] = param(
        None, doc="cap on rows drawn from each source (one number, or source name -> cap)")
    seed: int = param(42, doc="random seed")

    def prepare(self, table: pa.Table) -> pa.Table:
        return with_rank(table, self.seed)

    def apply(self, ds, ctx):
        counts = source_counts(ds)
        return take_lowest_ranks(ds, self._targets(counts, ctx), counts).drop_columns([RANK_COLUMN])

    def apply_table(self, table: pa.Table, ctx) -> pa.Table:
        targets = self._targets(table_source_counts(table), ctx)
        return take_lowest_ranks_of_table(table, targets).drop_columns([RANK_COLUMN])

    def _targets(self, counts: dict[str, int], ctx) -> dict[str, int]:
        weights = self.weights or {name: s.weight for name, s in ctx.sources.items() if s.weight is not None}
        if not weights:
            weights = {name: 1.0 for name in ctx.sources}
        unknown = sorted(set(weights) - set(ctx.sources)) if ctx.sources else []
        if unknown:
            raise ValueError(f"source_mixer: no input named {unknown}; inputs are {sorted(ctx.sources)}")
        caps = self.max_rows_per_source
        caps = {s: caps for s in weights} if isinstance(caps, int) else dict(caps or {})
        return mixture_targets(counts, weights, self.total_rows, caps)
