"""Near-duplicate removal with 64-bit SimHash, as Data-Juicer's document_simhash_deduplicator.

A document's shingles are `window_size` consecutive tokens (words split on single spaces,
pieces between punctuation marks, or characters) after optional lowercasing and removal of
`ignore_pattern`; each shingle's hash is the first 8 bytes of its MD5 (big-endian), and bit j
of the SimHash is set when more shingle hashes have bit j set than not. Documents whose
SimHashes differ in at most `hamming_distance` bits are near-duplicates; near-duplicate
links make clusters (connected components over the distinct SimHashes) and each cluster
keeps its first document in input order. A document with fewer tokens than the window has
no shingle and the SimHash 0, as in Data-Juicer.

Pairs are found exactly by the pigeonhole rule: split the 64 bits into `num_blocks` blocks;
two hashes within `hamming_distance` bits agree on at least num_blocks - hamming_distance
whole blocks, so for every such choice of blocks the hashes are grouped by those blocks and
only hashes inside a group are compared.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Optional

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex

from ..base import ID_COLUMN, Deduplicator, ParamError, param, register

HASH_COLUMN = "__simhash__"
TOKENIZATIONS = ("space", "punctuation", "character")
_PUNCTUATION = regex.compile(r"\p{P}")


def shingles(text: str, tokenization: str, window: int) -> list[bytes]:
    if tokenization == "character":
        return [text[i:i + window].encode() for i in range(len(text) - window + 1)]
    tokens = (_PUNCTUATION.split(text) if tokenization == "punctuation"
              else [t for t in text.split(" ") if t])
    return [" ".join(tokens[i:i + window]).encode() for i in range(len(tokens) - window + 1)]


@numba.njit(cache=True, nogil=True)
def _simhashes(hashes, offsets):
    out = np.zeros(len(offsets) - 1, dtype=np.uint64)
    counts = np.zeros(64, dtype=np.int64)
    for d in range(len(offsets) - 1):
        counts[:] = 0
        for k in range(offsets[d], offsets[d + 1]):
            h = hashes[k]
            for bit in range(64):
                counts[bit] += 1 if (h >> np.uint64(bit)) & np.uint64(1) else -1
        value = np.uint64(0)
        for bit in range(64):
            if counts[bit] > 0:
                value |= np.uint64(1) << np.uint64(bit)
        out[d] = value
    return out


def simhashes(texts: list, tokenization: str, window: int, lowercase: bool,
              ignore: Optional[regex.Pattern]) -> np.ndarray:
    """The 64-bit SimHash of each text (0 for a null text). Per-row Python for shingling and
    MD5; the bit counting is one numba pass."""
    hashes: list[int] = []
    offsets = [0]
    for text in texts:
        if text is not None:
            if lowercase:
                text = text.lower()
            if ignore is not None:
                text = ignore.sub("", text)
            hashes.extend(int.from_bytes(hashlib.md5(s).digest()[:8], "big")
                          for s in shingles(text, tokenization, window))
        offsets.append(len(hashes))
    return _simhashes(np.array(hashes, dtype=np.uint64), np.array(offsets, dtype=np.int64))


@numba.njit(inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@numba.njit(inline="always")
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(cache=True, nogil=True)
def _link_groups(hashes, order, keys, parent, max_bits):
    """Union the hashes within `max_bits` of each other among those sharing a key (`order`
    sorts them by key)."""
    n = len(order)
    start = 0
    while start < n:
        end = start + 1
        while end < n and keys[order[end]] == keys[order[start]]:
            end += 1
        for a in range(start, end):
            for b in range(a + 1, end):
                i, j = order[a], order[b]
                if _popcount(hashes[i] ^ hashes[j]) <= max_bits:
                    ri, rj = _root(parent, i), _root(parent, j)
                    if ri != rj:
                        parent[max(ri, rj)] = min(ri, rj)
        start = end


def block_masks(num_blocks: int) -> list[np.uint64]:
    """Bit masks of `num_blocks` contiguous blocks covering the 64 bits."""
    bounds = np.linspace(0, 64, num_blocks + 1).round().astype(int)
    return [np.uint64(((1 << int(hi)) - 1) ^ ((1 << int(lo)) - 1)) for lo, hi in zip(bounds, bounds[1:])]


def clusters(hashes: np.ndarray, num_blocks: int, max_bits: int) -> np.ndarray:
    """Cluster label of each distinct hash: equal labels for hashes linked by chains of pairs
    at most `max_bits` apart."""
    parent = np.arange(len(hashes), dtype=np.int64)
    masks = block_masks(num_blocks)
    for chosen in itertools.combinations(masks, num_blocks - max_bits):
        mask = np.uint64(0)
        for m in chosen:
            mask |= m
        keys = hashes & mask
        _link_groups(hashes, np.argsort(keys, kind="stable"), keys, parent, max_bits)
    return np.array([_root(parent, i) for i in range(len(hashes))], dtype=np.int64)


def first_of_clusters(ids: np.ndarray, hashes: np.ndarray, num_blocks: int, max_bits: int) -> np.ndarray:
    """The ids (input order keys) to keep: the lowest id of each cluster."""
    distinct, which = np.unique(hashes, return_inverse=True)
    label = clusters(distinct, num_blocks, max_bits)[which]
    order = np.lexsort((ids, label))
    firsts = np.ones(len(order), dtype=bool)
    firsts[1:] = label[order][1:] != label[order][:-1]
    return np.sort(ids[order][firsts])


def _keep_ids(batch: pa.Table, kept: np.ndarray, drop: list[str]) -> pa.Table:
    ids = batch.column(ID_COLUMN).to_numpy()
    return batch.filter(pa.array(np.isin(ids, kept))).drop_columns(drop)


@register
class document_simhash_deduplicator(Deduplicator):
    """Drops near-duplicate documents by 64-bit SimHash (Data-Juicer's definition): documents
    whose SimHashes differ in at most `hamming_distance` bits are linked, and each cluster of
    linked documents keeps its first one in input order. Exact pair search by blocks; the
    (id, hash) pairs of the whole dataset are gathered in the driver (16 bytes a document)."""

    text_key: str = param("text", doc="field holding the text")
    tokenization: str = param("space", choices=TOKENIZATIONS,
                              doc="shingle units: 'space' (words split on spaces), 'punctuation' "
                                  "(pieces between punctuation marks) or 'character'")
    window_size: int = param(6, ge=1, doc="units per shingle")
    lowercase: bool = param(True, doc="lowercase the text first")
    ignore_pattern: Optional[str] = param(None, doc="regular expression (Python `regex` syntax, as "
                                                    "Data-Juicer) removed before shingling")
    num_blocks: int = param(6, ge=1, le=64, doc="blocks the 64 bits are split into for the search")
    hamming_distance: int = param(4, ge=0, doc="most differing bits between near-duplicates")
    keep_hash: bool = param(False, doc="keep each row's SimHash in the output field 'simhash' "
                                       "(Data-Juicer's keep_hashes_in_res_ds)")

    def setup(self):
        if self.hamming_distance >= self.num_blocks:
            raise ParamError(self.name, "hamming_distance", f"must be less than num_blocks "
                             f"({self.num_blocks}), got {self.hamming_distance}")
        try:
            self._ignore = regex.compile(self.ignore_pattern) if self.ignore_pattern else None
        except regex.error as e:
            raise ParamError(self.name, "ignore_pattern", f"invalid regular expression: {e}") from None

    def prepare(self, table: pa.Table) -> pa.Table:
        texts = table.column(self.text_key).to_pylist()
        values = simhashes(texts, self.tokenization, self.window_size, self.lowercase, self._ignore)
        return table.append_column(HASH_COLUMN, pa.array(values, pa.uint64()))

    def apply(self, ds, ctx):
        import ray

        kept = self._kept(pa.concat_tables(ray.get(ds.select_columns([ID_COLUMN, HASH_COLUMN]).to_arrow_refs())))
        return ds.map_batches(self._finish, batch_format="pyarrow", fn_kwargs={"kept": kept})

    def apply_table(self, table: pa.Table, ctx) -> pa.Table:
        return self._finish(table, self._kept(table))

    def _kept(self, pairs: pa.Table) -> np.ndarray:
        """The ids of the documents that stay, from every document's (id, hash)."""
        return first_of_clusters(pairs.column(ID_COLUMN).to_numpy(), pairs.column(HASH_COLUMN).to_numpy(),
                                 self.num_blocks, self.hamming_distance)

    def _finish(self, batch: pa.Table, kept: np.ndarray) -> pa.Table:
        batch = _keep_ids(batch, kept, [] if self.keep_hash else [HASH_COLUMN])
        return _hash_as_text(batch) if self.keep_hash else batch


def _hash_as_text(batch: pa.Table) -> pa.Table:
    """The SimHash as Data-Juicer writes it (decimal text), in a public field."""
    index = batch.column_names.index(HASH_COLUMN)
    return batch.set_column(index, "simhash", pc.cast(batch.column(HASH_COLUMN), pa.string()))
