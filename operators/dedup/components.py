"""Near-duplicate clustering on Ray Data without collecting data or edges in one process.

Building blocks, each a distributed Ray Data step (`band_edges`, `local_connected_components`
and `SortedTable.of_table` do the same on one table in a local run):
- `group_by` (`operators/shuffle.py`): hash-partition on a key, then one vectorized call per
  partition (a partition holds every row of its keys).
- `candidate_edges`: (band key, doc id) rows grouped by band key; every document in a bucket
  gets an edge to the bucket's lowest id.
- `connected_components`: the alternating large-star / small-star algorithm (Kiveris et al.,
  "Connected Components in MapReduce and Beyond", 2014): each step is one `group_by` on the
  edge list, and it stops when neither step changes an edge. O(log^2 n) rounds; duplicate
  graphs, already stars around bucket minima, settle in two or three. The result maps every
  non-root node to its component's lowest id.
- `SortedTable`: blocks sorted by an int64 key, looked up from `map_batches` tasks that fetch
  only the blocks whose key range overlaps their batch, one block at a time.
  It joins small results (signatures of candidate pairs, cluster membership) back onto the
  documents without shuffling the documents, and keeps their order.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import pyarrow as pa

from ..shuffle import group_by

MAX_ROUNDS = 64
BUCKET_BITS = 16  # buckets of the pair sort: 65,536, a few hundred pairs each for 16M band keys


@functools.cache
def _remote(fn):
    """`fn` as a Ray task needing no CPU; Ray is imported only by runs that use it."""
    import ray

    return ray.remote(num_cpus=0)(fn)


def _group_starts(keys: np.ndarray) -> np.ndarray:
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = keys[1:] != keys[:-1]
    return starts


def _first_of_group(starts: np.ndarray) -> np.ndarray:
    """For each row of a sorted table, the index of its group's first row."""
    return np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))


@numba.njit(cache=True, nogil=True)
def _pair_order(a, b):
    """Indices that put the pairs (a[i], b[i]) of uint64 in lexicographic order: a counting pass
    sends each pair to a bucket by a's top bits, then each bucket, small, is sorted (a few
    times faster than numpy's lexsort on millions of pairs)."""
    n = len(a)
    order = np.empty(n, np.int64)
    if n == 0:
        return order
    shift = 0
    while (a.max() >> np.uint64(shift)) >= np.uint64(1 << BUCKET_BITS):
        shift += 1
    starts = np.zeros((1 << BUCKET_BITS) + 1, np.int64)
    for i in range(n):
        starts[(a[i] >> np.uint64(shift)) + np.uint64(1)] += 1
    for k in range(1 << BUCKET_BITS):
        starts[k + 1] += starts[k]
    at = starts[:-1].copy()
    for i in range(n):
        k = a[i] >> np.uint64(shift)
        order[at[k]] = i
        at[k] += 1
    for k in range(1 << BUCKET_BITS):
        lo, hi = starts[k], starts[k + 1]
        if hi - lo < 2:
            continue
        bucket = order[lo:hi]
        bucket[:] = bucket[np.argsort(a[bucket], kind="mergesort")]
        run = 0
        for j in range(1, hi - lo + 1):  # pairs of equal a: by b
            if j == hi - lo or a[bucket[j]] != a[bucket[run]]:
                if j - run > 1:
                    equal = bucket[run:j]
                    equal[:] = equal[np.argsort(b[equal], kind="mergesort")]
                run = j
    return order


def _ordered_uint64(x: np.ndarray) -> np.ndarray:
    """`x` as uint64 values in the same order (a signed value's sign bit flipped)."""
    if x.dtype == np.uint64:
        return x
    return x.astype(np.int64).view(np.uint64) ^ np.uint64(1 << 63)


def _sorted_unique_pairs(a: np.ndarray, b: np.ndarray):
    order = _pair_order(_ordered_uint64(a), _ordered_uint64(b))
    a, b = a[order], b[order]
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def _edges(src, dst, changed=None) -> pa.Table:
    columns = {"src": pa.array(src, pa.int64()), "dst": pa.array(dst, pa.int64())}
    if changed is not None:
        columns["chg"] = pa.array(changed, pa.int64())
    return pa.table(columns)


@numba.njit(cache=True, nogil=True)
def _bucket_members(keys, ids, order):
    """Over the pairs in `order` (sorted by key, then id): each id after the first of its key's
    bucket, once, and that first (lowest) id."""
    src = np.empty(len(order), np.int64)
    dst = np.empty(len(order), np.int64)
    edges, first = 0, 0
    for j in range(1, len(order)):
        if keys[order[j]] != keys[order[first]]:
            first = j
        elif ids[order[j]] != ids[order[j - 1]]:
            src[edges], dst[edges] = ids[order[j]], ids[order[first]]
            edges += 1
    return src[:edges], dst[:edges]


def bucket_edges(table: pa.Table) -> pa.Table:
    keys, ids = table["key"].to_numpy(), table["id"].to_numpy()
    return _edges(*_bucket_members(keys, ids, _pair_order(_ordered_uint64(keys), _ordered_uint64(ids))))


@numba.njit(cache=True, nogil=True)
def _shared_key_edges(keys, ids):
    """For one band's keys of documents `ids`: an edge from each document whose key others
    share to the lowest id among them. An open-addressing table of the keys (hashes already,
    so their low bits place them) finds the shared ones in one pass, where a sort of millions
    of keys takes seconds; most keys are unique, so a second pass runs only if any is not."""
    n = len(keys)
    size = 2
    while size < 2 * n:
        size *= 2
    mask = np.uint64(size - 1)
    used = np.zeros(size, np.bool_)
    slot_key = np.empty(size, np.uint64)
    slot_min = np.empty(size, np.int64)
    slot_of = np.empty(n, np.int64)
    shared = 0
    for i in range(n):
        s = keys[i] & mask
        while used[s] and slot_key[s] != keys[i]:
            s = (s + np.uint64(1)) & mask
        if used[s]:
            shared += 1
            slot_min[s] = min(slot_min[s], ids[i])
        else:
            used[s], slot_key[s], slot_min[s] = True, keys[i], ids[i]
        slot_of[i] = s
    src = np.empty(shared, np.int64)
    dst = np.empty(shared, np.int64)
    edges = 0
    for i in range(n if shared else 0):
        lowest = slot_min[slot_of[i]]
        if ids[i] != lowest:
            src[edges], dst[edges] = ids[i], lowest
            edges += 1
    return src[:edges], dst[:edges]


def band_edges(keys: np.ndarray, ids: np.ndarray, map_fn=map) -> pa.Table:
    """`bucket_edges` of the band keys (documents x bands, from `band_keys`) of documents `ids`,
    band by band (keys of different bands never meet), the bands through `map_fn`."""
    found = list(map_fn(lambda band: _shared_key_edges(keys[:, band], ids), range(keys.shape[1])))
    return _edges(np.concatenate([s for s, _ in found] or [np.zeros(0, np.int64)]),
                  np.concatenate([d for _, d in found] or [np.zeros(0, np.int64)]))


def candidate_edges(band_rows, num_partitions: int):
    """(src, dst) edges, src > dst: each document to the lowest id of every bucket it shares."""
    return group_by(band_rows, "key", bucket_edges, num_partitions)


def _both_directions(table: pa.Table) -> pa.Table:
    src, dst = table["src"].to_numpy(), table["dst"].to_numpy()
    return pa.table({"u": np.concatenate([src, dst]), "v": np.concatenate([dst, src])})


def _large_star(table: pa.Table) -> pa.Table:
    # Each node u links its larger neighbours to the smallest of u and its neighbours.
    u, v = _sorted_unique_pairs(table["u"].to_numpy(), table["v"].to_numpy())
    starts = _group_starts(u)
    first = _first_of_group(starts)
    m = np.minimum(u[first], v[first])
    larger = v > u
    return _edges(v[larger], m[larger], m[larger] < u[larger])


def _oriented(table: pa.Table) -> pa.Table:
    src, dst = table["src"].to_numpy(), table["dst"].to_numpy()
    return pa.table({"u": np.maximum(src, dst), "v": np.minimum(src, dst)})


def _small_star(table: pa.Table) -> pa.Table:
    # Each node u links itself and its smaller neighbours to the smallest of them.
    u, v = _sorted_unique_pairs(table["u"].to_numpy(), table["v"].to_numpy())
    keep = u != v
    u, v = u[keep], v[keep]
    starts = _group_starts(u)
    m = v[_first_of_group(starts)]
    moved = v != m
    src = np.concatenate([u[starts], v[moved]])
    dst = np.concatenate([m[starts], m[moved]])
    changed = np.concatenate([np.zeros(int(starts.sum()), np.int64), np.ones(int(moved.sum()), np.int64)])
    return _edges(src, dst, changed)


def _column_sum(block: pa.Table, column: str) -> int:
    return int(block.column(column).to_numpy().sum()) if block.num_rows else 0


def column_sum(ds, column: str) -> int:
    """Sum of an integer column of a materialized dataset, one small task per block (Ray's
    `Dataset.sum` starts a hash-shuffle aggregation, seconds on a busy machine)."""
    import ray

    return sum(ray.get([_remote(_column_sum).remote(ref, column) for ref in ds.to_arrow_refs()]))


def local_connected_components(edges: pa.Table) -> tuple[pa.Table, int]:
    """`connected_components` on one table in this process: each step on the whole edge list."""
    edges = edges.select(["src", "dst"])
    for rounds in range(1, MAX_ROUNDS + 1):
        edges = _large_star(_both_directions(edges))
        large_changes = int(edges["chg"].to_numpy().sum())
        edges = _small_star(_oriented(edges))
        if large_changes == 0 and int(edges["chg"].to_numpy().sum()) == 0:
            return edges.select(["src", "dst"]), rounds
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def connected_components(edges, num_partitions: int):
    """(src=node, dst=root) for every node of `edges` except the roots, root = the lowest id
    of its component; also returns the number of rounds taken."""
    edges = edges.select_columns(["src", "dst"])
    for rounds in range(1, MAX_ROUNDS + 1):
        edges = group_by(edges.map_batches(_both_directions, batch_format="pyarrow"), "u",
                         _large_star, num_partitions).materialize()
        large_changes = column_sum(edges, "chg")
        edges = group_by(edges.map_batches(_oriented, batch_format="pyarrow"), "u",
                         _small_star, num_partitions).materialize()
        if large_changes == 0 and column_sum(edges, "chg") == 0:
            return edges.select_columns(["src", "dst"]), rounds
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def _key_bounds(block: pa.Table, key: str):
    if block.num_rows == 0:  # an empty block may lack the columns too
        return None
    keys = block.column(key).to_numpy()
    return int(keys[0]), int(keys[-1]), bool(np.all(keys[1:] > keys[:-1]))


def _sort_block(block: pa.Table, key: str) -> pa.Table:
    return block.sort_by(key)


class SortedTable:
    """Blocks of a dataset, each sorted by a unique int64 key, with each block's key range: Ray
    object refs, or (`of_table`) one table in this process.

    Ranges may overlap (blocks from a hash partition); lookups then read more blocks, never
    more than one at a time. Blocks in key order (documents as read) are read only where needed."""

    def __init__(self, refs: list, lows: np.ndarray, highs: np.ndarray, key: str):
        self.refs, self.lows, self.highs, self.key = refs, lows, highs, key

    @classmethod
    def build(cls, ds, key: str) -> "SortedTable":
        """Use the blocks of `ds` as they are when each is sorted by `key`, else sort each one."""
        import ray

        ds = ds.materialize()
        refs = ds.to_arrow_refs()
        bounds = ray.get([_remote(_key_bounds).remote(r, key) for r in refs])
        if not all(b[2] for b in bounds if b is not None):
            ds = ds.map_batches(_sort_block, batch_size=None, batch_format="pyarrow",
                                fn_kwargs={"key": key}).materialize()
            refs = ds.to_arrow_refs()
            bounds = ray.get([_remote(_key_bounds).remote(r, key) for r in refs])
        kept = [(r, b) for r, b in zip(refs, bounds) if b is not None]
        return cls([r for r, _ in kept], np.array([b[0] for _, b in kept], dtype=np.int64),
                   np.array([b[1] for _, b in kept], dtype=np.int64), key)

    @classmethod
    def of_table(cls, table: pa.Table, key: str) -> "SortedTable":
        bounds = _key_bounds(table, key)
        if bounds is None:
            return cls([], np.zeros(0, np.int64), np.zeros(0, np.int64), key)
        if not bounds[2]:
            table = _sort_block(table, key)
            bounds = _key_bounds(table, key)
        return cls([table.combine_chunks()], np.array([bounds[0]]), np.array([bounds[1]]), key)

    def lookup(self, keys: np.ndarray, columns: list[str]) -> tuple[np.ndarray, pa.Table | None]:
        """(mask of keys found, rows of `columns` for the found keys, in the order of `keys`)."""
        found = np.zeros(len(keys), dtype=bool)
        if len(keys) == 0 or len(self.refs) == 0:
            return found, None
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        positions, pieces = [], []
        lo, hi = np.searchsorted(sorted_keys, self.lows, "left"), np.searchsorted(sorted_keys, self.highs, "right")
        for i in np.flatnonzero(hi > lo):
            block = self.refs[i] if isinstance(self.refs[i], pa.Table) else _get(self.refs[i])
            block_keys = block.column(self.key).to_numpy()
            wanted = sorted_keys[lo[i]:hi[i]]
            at = np.minimum(np.searchsorted(block_keys, wanted), len(block_keys) - 1)
            hit = block_keys[at] == wanted
            positions.append(order[lo[i]:hi[i]][hit])
            pieces.append(block.select(columns).take(at[hit]))
            del block
        if not pieces:
            return found, None
        positions = np.concatenate(positions)
        found[positions] = True
        rows = pa.concat_tables(pieces).take(np.argsort(positions, kind="stable"))
        return found, rows


def _get(ref) -> pa.Table:
    import ray

    return ray.get(ref)
