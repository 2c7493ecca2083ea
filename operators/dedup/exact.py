"""Exact deduplication across the whole dataset."""

from __future__ import annotations

import hashlib
import math

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..base import ID_COLUMN, Deduplicator, param, register
from ..string_buffers import string_buffers
from ..text.words import arrow_lowercase, arrow_matches, codepoints, put_utf8, text_array

KEY_COLUMN = "__dedup_key__"
TARGET_PARTITION_BYTES = 128 << 20
# Data-Juicer's choice: whitespace, digits and punctuation do not make documents differ.
IGNORED = r"[\s\d\pP\pS]"


@numba.njit(cache=True, nogil=True)
def _normalized(cps, offsets, lower, ignored, lowercase, ignore, ascii_byte, ascii_kept, data):
    """The rows of code points `cps` (row i: cps[offsets[i]:offsets[i+1]]), lowercased and
    without ignored characters, as UTF-8 in `data`; returns the rows' byte offsets. An ASCII
    character c becomes ascii_byte[c], or nothing where ascii_kept[c] is 0 (branch-free)."""
    out = np.zeros(len(offsets), dtype=np.int64)
    size = 0
    for r in range(len(offsets) - 1):
        for j in range(offsets[r], offsets[r + 1]):
            c = cps[j]
            if c < 128:
                data[size] = ascii_byte[c]
                size += ascii_kept[c]
                continue
            c = lower[c] if lowercase else np.uint32(c)
            if not (ignore and ignored[c]):
                size = put_utf8(data, size, c)
        out[r + 1] = size
    return out


def normalized(text: pa.Array, lowercase: bool, ignore_non_character: bool) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, offsets) of each row's text as the dedup key sees it: what
    `utf8_lower` (with `lowercase`) and then removing IGNORED (with `ignore_non_character`) give."""
    if not (lowercase or ignore_non_character):
        return string_buffers(text)
    cps, offsets = codepoints(text)
    lower, ignored = arrow_lowercase(), arrow_matches(IGNORED)
    ascii_byte = (lower[:128] if lowercase else np.arange(128)).astype(np.uint8)
    ascii_kept = (~ignored[ascii_byte] if ignore_non_character else np.ones(128, bool)).astype(np.int64)
    data = np.empty(len(cps) * (1 if cps.itemsize == 1 else 4), dtype=np.uint8)
    return data, _normalized(cps, offsets, lower, ignored, lowercase, ignore_non_character, ascii_byte,
                             ascii_kept, data)


def digest(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """16-byte BLAKE2b of each row data[offsets[i]:offsets[i+1]]; pyarrow has no string hash
    kernel, and hashlib takes the bytes without a copy."""
    view, bounds = memoryview(data), offsets.tolist()
    hashes = b"".join(hashlib.blake2b(view[a:b], digest_size=16).digest() for a, b in zip(bounds, bounds[1:]))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(bounds) - 1, [None, pa.py_buffer(hashes)])


def partitions_for(ds, num_cpus: int) -> int:
    return max(num_cpus, math.ceil(ds.size_bytes() / TARGET_PARTITION_BYTES))


@register
class document_deduplicator(Deduplicator):
    """Drops documents whose (normalized) text equals an earlier document's anywhere in the
    dataset; keeps the first one by the stable input order (lowest `__id__`). Deterministic
    however the data is split into blocks."""

    text_key: str = param("text", doc="field holding the text")
    lowercase: bool = param(False, doc="compare texts ignoring case")
    ignore_non_character: bool = param(False, doc="compare texts ignoring whitespace, digits and punctuation")

    def prepare(self, table: pa.Table) -> pa.Table:
        text = text_array(self, table)
        if text.null_count:
            raise ValueError(f"'{self.text_key}' is null")
        return table.append_column(KEY_COLUMN, digest(*normalized(text, self.lowercase, self.ignore_non_character)))

    def first_ids(self, keys: pa.Table) -> pa.Table:
        """The lowest id of each key, from (key, id) rows holding every row of their keys."""
        first = keys.group_by(KEY_COLUMN, use_threads=False).aggregate([(ID_COLUMN, "min")])
        return pa.table({ID_COLUMN: first.column(f"{ID_COLUMN}_min")})

    def apply(self, ds, ctx):
        from ..shuffle import group_by
        from .components import SortedTable

        keepers = group_by(ds.select_columns([KEY_COLUMN, ID_COLUMN]), KEY_COLUMN, self.first_ids,
                           partitions_for(ds, ctx.num_cpus))
        # The keepers' ids are looked up from each block, so the documents keep their order.
        return ds.map_batches(_keep_first, batch_format="pyarrow",
                              fn_kwargs={"keepers": SortedTable.build(keepers, ID_COLUMN)})

    def only_drops_rows(self) -> bool:
        return True

    def duplicate_key(self) -> str:
        return KEY_COLUMN

    def apply_table(self, table: pa.Table, ctx) -> pa.Table:
        keepers = self.first_ids(table.select([KEY_COLUMN, ID_COLUMN])).column(ID_COLUMN)
        keep = pc.is_in(table.column(ID_COLUMN), value_set=keepers).to_numpy(zero_copy_only=False)
        return ctx.filter(table.drop_columns([KEY_COLUMN]), keep)


def _keep_first(table: pa.Table, keepers) -> pa.Table:
    found, _ = keepers.lookup(table.column(ID_COLUMN).to_numpy(), [ID_COLUMN])
    return table.filter(pa.array(found)).drop_columns([KEY_COLUMN])
