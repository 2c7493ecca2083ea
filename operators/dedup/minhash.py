"""Near-duplicate removal with MinHash-LSH on Ray Data or one table (`document_minhash_deduplicator`)."""

from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..base import ID_COLUMN, Deduplicator, ParamError, param, register
from ..html_render import html_items, html_table
from . import signatures as sg
from ..shuffle import group_by
from .components import (SortedTable, band_edges, candidate_edges, column_sum, connected_components,
                         local_connected_components)

SIGNATURE_COLUMN = "__minhash__"
SCORE_COLUMN = "__keep_score__"
BAND_ROWS_PER_PARTITION = 2_000_000
# Rows per batch of the final filter: bounds its memory whatever the size of the blocks.
FILTER_BATCH_ROWS = 16_384


@register
class document_minhash_deduplicator(Deduplicator):
    """Drops near-duplicate documents: documents whose shingle sets have a Jaccard similarity of
    at least `jaccard_threshold` (estimated with MinHash, found with LSH bands) fall in one
    cluster, transitively, and only one document per cluster is kept: the lowest `__id__`
    (earliest in the input) unless `keep` names another rule. Documents with no shingles
    (empty text, or nothing left after `ignore_pattern`) are never duplicates and are kept.
    Documents shorter than the window are one shingle, so they match only identical ones.
    Parameters and shingling follow Data-Juicer's operator of the same name."""

    text_key: str = param("text", doc="field holding the text")
    tokenization: str = param("space", choices=sg.TOKENIZATIONS,
                              doc="units of a shingle: 'space' (words split on spaces), 'punctuation' "
                                  "(pieces between punctuation marks) or 'character' (for scripts "
                                  "without spaces, such as Chinese or Japanese)")
    window_size: int = param(5, ge=1, doc="units per shingle")
    lowercase: bool = param(True, doc="lowercase the text before shingling")
    ignore_pattern: Optional[str] = param(None, doc="regular expression (RE2 syntax) removed from the "
                                                    "text before shingling")
    num_permutations: int = param(256, ge=1, le=4096, doc="MinHash permutations (signature length)")
    jaccard_threshold: float = param(0.7, ge=0.0, le=1.0, doc="documents at least this similar are duplicates")
    num_bands: Optional[int] = param(None, ge=1, doc="LSH bands; default: datasketch's optimum for the threshold")
    num_rows_per_band: Optional[int] = param(None, ge=1, doc="permutations per LSH band; default: "
                                                             "datasketch's optimum for the threshold")
    seed: int = param(1, ge=0, le=2**32 - 1, doc="seed of the permutations (datasketch's default is 1)")
    datasketch_compatible: bool = param(False, doc="hash shingles with SHA-1 as datasketch does, so "
                                                   "signatures equal datasketch.MinHash's; slower")
    verify: bool = param(True, doc="drop LSH candidate pairs whose estimated Jaccard similarity is "
                                   "below the threshold")
    keep: str = param("first", doc="document kept per cluster: 'first' (lowest __id__), 'longest' "
                                   "(most characters), or a numeric column such as 'stats.quality' "
                                   "(highest value); ties go to the lowest __id__")
    cluster_column: Optional[str] = param(None, doc="if set, add this column: the lowest __id__ of "
                                                    "the document's duplicate cluster (its own id when "
                                                    "it has no duplicates)")
    drop: bool = param(True, doc="drop the duplicates; false keeps every row, to inspect the clusters "
                                 "through cluster_column before deleting anything")
    report_clusters: int = param(5, ge=0, doc="duplicate clusters sampled into the run's HTML report")

    def setup(self) -> None:
        if self.ignore_pattern:
            try:
                sg.check_pattern(self.ignore_pattern)
            except ValueError as e:
                raise ParamError(self.name, "ignore_pattern", str(e)) from None
        if self.cluster_column is not None and (self.cluster_column.startswith("__") or not self.cluster_column):
            raise ParamError(self.name, "cluster_column", "must be a non-empty name not starting with '__'")
        self._shingling = sg.Shingling(self.tokenization, self.window_size, self.lowercase,
                                       self.ignore_pattern)
        bands, rows = self.num_bands, self.num_rows_per_band
        if bands is None and rows is None:
            bands, rows = sg.optimal_bands(self.jaccard_threshold, self.num_permutations)
        elif bands is None:
            bands = self.num_permutations // rows
        elif rows is None:
            rows = self.num_permutations // bands
        if bands * rows > self.num_permutations or bands * rows == 0:
            raise ParamError(self.name, "num_bands", f"{bands} bands x {rows} rows per band must fit "
                                                     f"in num_permutations={self.num_permutations}")
        self.bands, self.rows = bands, rows

    # ---- row-local: signatures ----

    def prepare(self, table: pa.Table) -> pa.Table:
        text = self._column(table, self.text_key)
        sig, has = sg.signatures(text, self._shingling, self.num_permutations, self.seed,
                                 self.datasketch_compatible)
        table = table.append_column(SIGNATURE_COLUMN, sg.to_arrow(sig, has))
        if self.keep != "first":
            table = table.append_column(SCORE_COLUMN, self._scores(table, text))
        return table

    def _column(self, table: pa.Table, name: str):
        if name not in table.column_names:
            raise ParamError(self.name, "keep" if name == self.keep else "text_key",
                             f"no column '{name}'; columns: {', '.join(table.column_names)}")
        return table.column(name)

    def _scores(self, table: pa.Table, text) -> pa.Array:
        values = pc.utf8_length(text) if self.keep == "longest" else self._column(table, self.keep)
        try:
            values = pc.cast(values, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ParamError(self.name, "keep", f"column '{self.keep}' is not numeric ({values.type})") from None
        return pc.fill_null(values, -math.inf)

    # ---- whole dataset: LSH, clusters, selection ----

    def apply(self, ds, ctx):
        import ray

        columns = [ID_COLUMN, SIGNATURE_COLUMN] + ([SCORE_COLUMN] if self.keep != "first" else [])
        started = time.perf_counter()
        documents = ds.count()
        partitions = max(ctx.num_cpus, math.ceil(documents * self.bands / BAND_ROWS_PER_PARTITION))
        table = SortedTable.build(ds.select_columns(columns), ID_COLUMN)

        band_rows = ds.select_columns([ID_COLUMN, SIGNATURE_COLUMN]).map_batches(
            _band_rows, batch_format="pyarrow", fn_kwargs={"bands": self.bands, "rows": self.rows})
        edges = candidate_edges(band_rows, partitions).materialize()
        stats = {"documents": documents, "bands": self.bands, "rows_per_band": self.rows,
                 "candidate_pairs": edges.count(), "seconds_to_candidates": _since(started)}
        if self.verify and stats["candidate_pairs"]:
            edges = edges.map_batches(_verified, batch_size=None, batch_format="pyarrow", fn_kwargs={
                "table": table, "threshold": self.jaccard_threshold}).materialize()
            stats["verified_pairs"] = edges.count()
            stats["seconds_to_verified"] = _since(started)
        if edges.count() == 0:
            ctx.add_report_section(f"{self.name}: no near-duplicates", _stats_html(stats))
            return self._finish(ds, None)

        components, stats["rounds"] = connected_components(edges, partitions)
        stats["seconds_to_components"] = _since(started)
        members = group_by(components, "dst", _clusters, partitions, table=table,
                           scored=self.keep != "first").materialize()
        stats["clusters"] = column_sum(members, "is_root")
        stats["removed"] = members.count() - stats["clusters"]
        stats["seconds_to_clusters"] = _since(started)
        docs = ds.select_columns([ID_COLUMN, self.text_key, SIGNATURE_COLUMN])
        sample = self._sample_html((ray.get(ref) for ref in members.to_arrow_refs()), lambda ids: _collect(
            docs.map_batches(_rows_with_ids, batch_size=None, batch_format="pyarrow", fn_kwargs={"ids": ids})))
        ctx.add_report_section(f"{self.name}: near-duplicate clusters", _stats_html(stats) + sample)
        return self._finish(ds, SortedTable.build(members, ID_COLUMN))

    def only_drops_rows(self) -> bool:
        return not self.cluster_column

    def apply_table(self, table: pa.Table, ctx) -> pa.Table:
        """`apply` on one table: the same steps, each on every row at once."""
        columns = [ID_COLUMN, SIGNATURE_COLUMN] + ([SCORE_COLUMN] if self.keep != "first" else [])
        started = time.perf_counter()
        edges = band_edges(*_band_keys(table, self.bands, self.rows, ctx.map), ctx.map)
        stats = {"documents": table.num_rows, "bands": self.bands, "rows_per_band": self.rows,
                 "candidate_pairs": edges.num_rows, "seconds_to_candidates": _since(started)}
        # The (id, signature) lookup, a kilobyte per document, is built only when there are pairs.
        lookup = SortedTable.of_table(table.select(columns), ID_COLUMN) if edges.num_rows else None
        if self.verify and edges.num_rows:
            edges = _verified(edges, lookup, self.jaccard_threshold)
            stats["verified_pairs"] = edges.num_rows
            stats["seconds_to_verified"] = _since(started)
        if edges.num_rows == 0:
            ctx.add_report_section(f"{self.name}: no near-duplicates", _stats_html(stats))
            return _drop_duplicates(table, None, self.cluster_column, self.drop)
        components, stats["rounds"] = local_connected_components(edges)
        stats["seconds_to_components"] = _since(started)
        members = _clusters(components, lookup, self.keep != "first")
        stats["clusters"] = int(members.column("is_root").to_numpy().sum())
        stats["removed"] = members.num_rows - stats["clusters"]
        stats["seconds_to_clusters"] = _since(started)
        docs = table.select([ID_COLUMN, self.text_key, SIGNATURE_COLUMN])
        sample = self._sample_html([members], lambda ids: _rows_with_ids(docs, ids))
        ctx.add_report_section(f"{self.name}: near-duplicate clusters", _stats_html(stats) + sample)
        return _drop_duplicates(table, SortedTable.of_table(members, ID_COLUMN), self.cluster_column, self.drop)

    def _finish(self, ds, members: SortedTable | None):
        return ds.map_batches(_drop_duplicates, batch_size=FILTER_BATCH_ROWS, batch_format="pyarrow", fn_kwargs={
            "members": members, "cluster_column": self.cluster_column, "drop": self.drop})

    def _sample_html(self, member_blocks, docs_with_ids) -> str:
        """One dropped document from each of the first clusters, beside the one its cluster
        keeps; `docs_with_ids(ids)` gives the documents' ids, texts and signatures."""
        if self.report_clusters == 0:
            return ""
        for block in member_blocks:
            dropped = _dropped_rows(block)
            _, first = np.unique(dropped["cluster"].to_numpy(), return_index=True)
            sample = dropped.take(np.sort(first)[:self.report_clusters])
            if sample.num_rows:
                break
        ids = np.unique(np.concatenate([sample[ID_COLUMN].to_numpy(), sample["keeper"].to_numpy()]))
        docs = docs_with_ids(ids)
        by_id = {i: k for k, i in enumerate(docs[ID_COLUMN].to_pylist())}
        sigs = sg.from_arrow(docs[SIGNATURE_COLUMN])
        texts = docs[self.text_key].to_pylist()
        rows = []
        for removed, keeper, size in zip(*(sample[c].to_pylist() for c in (ID_COLUMN, "keeper", "size"))):
            a, b = by_id[removed], by_id[keeper]
            similarity = float(sg.estimated_jaccard(sigs[a:a + 1], sigs[b:b + 1])[0])
            rows.append([size, f"{similarity:.2f}", f"{keeper}: {_snippet(texts[b])}", f"{removed}: {_snippet(texts[a])}"])
        return html_table(("cluster size", "estimated Jaccard", "kept", "dropped"), rows)


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 2)


def _snippet(text: str | None, limit: int = 300) -> str:
    text = text or ""
    return text[:limit] + ("…" if len(text) > limit else "")


def _stats_html(stats: dict) -> str:
    return html_items([(k.replace("_", " "), v) for k, v in stats.items()])


def _band_keys(table: pa.Table, bands: int, rows: int, map_fn=map) -> tuple[np.ndarray, np.ndarray]:
    """(band keys, documents x bands; ids) of the documents that have a signature, batch by
    batch through `map_fn` (the signatures, a kilobyte per document, are never copied into one
    array)."""
    def keyed(batch: pa.RecordBatch):
        if batch.column(1).null_count:
            batch = batch.filter(pc.is_valid(batch.column(1)))
        return sg.band_keys(sg.from_arrow(batch.column(1)), bands, rows), batch.column(0).to_numpy()

    found = list(map_fn(keyed, table.select([ID_COLUMN, SIGNATURE_COLUMN]).to_batches()))
    return (np.concatenate([k for k, _ in found] or [np.zeros((0, bands), np.uint64)]),
            np.concatenate([i for _, i in found] or [np.zeros(0, np.int64)]))


def _band_rows(table: pa.Table, bands: int, rows: int) -> pa.Table:
    """(band key, id) of every band of the documents that have a signature."""
    keys, ids = _band_keys(table, bands, rows)
    return pa.table({"key": pa.array(keys.reshape(-1), pa.uint64()), "id": pa.array(np.repeat(ids, bands), pa.int64())})


def _verified(edges: pa.Table, table: SortedTable, threshold: float) -> pa.Table:
    pairs = np.unique(np.stack([edges["src"].to_numpy(), edges["dst"].to_numpy()], axis=1), axis=0)
    src, dst = pairs[:, 0], pairs[:, 1]
    found_src, sig_src = table.lookup(src, [SIGNATURE_COLUMN])
    found_dst, sig_dst = table.lookup(dst, [SIGNATURE_COLUMN])
    if not (found_src.all() and found_dst.all()):
        raise RuntimeError("candidate pair refers to a document without a signature")
    similarity = sg.estimated_jaccard(sg.from_arrow(sig_src[SIGNATURE_COLUMN]),
                                      sg.from_arrow(sig_dst[SIGNATURE_COLUMN]))
    keep = similarity >= threshold
    return pa.table({"src": src[keep], "dst": dst[keep], "similarity": similarity[keep]})


def _clusters(components: pa.Table, table: SortedTable, scored: bool) -> pa.Table:
    """Members of the clusters rooted in this partition, with the document each one keeps."""
    roots = np.unique(components["dst"].to_numpy())
    ids = np.concatenate([components["src"].to_numpy(), roots])
    cluster = np.concatenate([components["dst"].to_numpy(), roots])
    if scored:
        _, scores = table.lookup(ids, [SCORE_COLUMN])
        score = scores[SCORE_COLUMN].to_numpy()
    else:
        score = np.zeros(len(ids))
    order = np.lexsort((ids, -score, cluster))  # per cluster: best score, then lowest id
    ids, cluster = ids[order], cluster[order]
    starts = np.ones(len(ids), dtype=bool)
    starts[1:] = cluster[1:] != cluster[:-1]
    first = np.flatnonzero(starts)
    sizes = np.diff(np.append(first, len(ids)))
    keeper = np.repeat(ids[first], sizes)
    members = pa.table({ID_COLUMN: ids, "cluster": cluster, "keeper": keeper,
                        "keep": ids == keeper, "is_root": (ids == cluster).astype(np.int64),
                        "size": np.repeat(sizes, sizes)})
    return members.sort_by(ID_COLUMN)  # blocks sorted by id serve lookups


def _drop_duplicates(table: pa.Table, members: SortedTable | None, cluster_column: str | None,
                     drop: bool) -> pa.Table:
    ids = table.column(ID_COLUMN).to_numpy()
    cluster = ids.copy()
    if members is not None:
        found, rows = members.lookup(ids, ["cluster", "keep"])
        if rows is not None:
            cluster[found] = rows["cluster"].to_numpy()
            if drop:
                duplicate = np.zeros(len(ids), dtype=bool)
                duplicate[found] = ~rows["keep"].to_numpy(zero_copy_only=False)
                table = table.filter(pa.array(~duplicate))
                cluster = cluster[~duplicate]
    table = table.drop_columns([c for c in (SIGNATURE_COLUMN, SCORE_COLUMN) if c in table.column_names])
    if cluster_column:
        table = table.append_column(cluster_column, pa.array(cluster, pa.int64()))
    return table


def _dropped_rows(table: pa.Table) -> pa.Table:
    return table.filter(pc.invert(table.column("keep")))


def _collect(ds) -> pa.Table:
    """A small dataset as one table in this process."""
    import ray

    return pa.concat_tables([t for t in ray.get(ds.to_arrow_refs()) if t.num_rows])  # empty ones may lack columns


def _rows_with_ids(table: pa.Table, ids: np.ndarray) -> pa.Table:
    return table.filter(pa.array(np.isin(table.column(ID_COLUMN).to_numpy(), ids)))
