"""Hash partitioning of a Ray dataset on plain Ray tasks, for the whole-dataset steps that need
every row of a key in one place (exact dedup's keepers, MinHash's buckets and connected
components, the LLM operators' prefix buckets).

Ray Data's keyed repartition and groupby start a pool of aggregator actors on every call: on a
two-CPU machine that cost 1-6 s a call, and the actors held CPUs the next step waited for (a
120-document MinHash dedup took 66 s, nearly all of it in eight such calls). Here one task per
block splits it into `num_partitions` parts by a hash of the key, and one task per partition
concatenates its parts and applies `fn`: the pull-based shuffle Ray Data uses for sorting
(blocks x partitions objects in the object store, spilled as any other). A task whose worker
dies is retried by Ray, its inputs kept by lineage.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from .splitmix import splitmix64_mix


def partition_of(keys: pa.Array | pa.ChunkedArray, num_partitions: int) -> np.ndarray:
    """The partition of each key: the splitmix64 hash of an integer, or the first 8 bytes of a
    fixed-size binary digest (already a hash), modulo `num_partitions`."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if pa.types.is_integer(keys.type):
        hashes = splitmix64_mix(keys.to_numpy(zero_copy_only=False).astype(np.uint64))
    elif pa.types.is_fixed_size_binary(keys.type) and keys.type.byte_width >= 8:
        width = keys.type.byte_width
        data = np.frombuffer(keys.buffers()[1], dtype=np.uint8)[keys.offset * width:(keys.offset + len(keys)) * width]
        hashes = data.reshape(len(keys), width)[:, :8].copy().view(np.uint64).ravel()
    else:
        raise TypeError(f"cannot hash-partition a key of type {keys.type}")
    return (hashes % np.uint64(num_partitions)).astype(np.int64)


def split_block(block: pa.Table, key: str, num_partitions: int):
    """`block`'s rows in `num_partitions` tables by the partition of their key, each part's rows
    in block order."""
    if block.num_rows == 0 or key not in block.column_names:  # an empty block may lack columns
        parts = [block] * num_partitions
    else:
        partition = partition_of(block.column(key), num_partitions)
        block = block.take(np.argsort(partition, kind="stable"))
        ends = np.cumsum(np.bincount(partition, minlength=num_partitions))
        parts = [block.slice(start, end - start) for start, end in zip(np.concatenate([[0], ends[:-1]]), ends)]
    return parts[0] if num_partitions == 1 else tuple(parts)


def apply_to_partition(fn, fn_kwargs: dict, *parts: pa.Table) -> pa.Table:
    with_columns = [p for p in parts if p.num_columns]
    if not with_columns:
        return pa.table({})
    return fn(pa.concat_tables(with_columns), **fn_kwargs)


@functools.cache
def _tasks():
    import ray

    return ray.remote(split_block), ray.remote(apply_to_partition)


def group_by(ds, key: str, fn, num_partitions: int, **fn_kwargs):
    """The dataset of `fn(table, **fn_kwargs)` for each hash partition of `ds` on `key`: one
    block per partition, holding every row of its keys."""
    import ray.data

    split, apply = _tasks()
    pieces = [split.options(num_returns=num_partitions).remote(ref, key, num_partitions)
              for ref in ds.to_arrow_refs()]
    if num_partitions == 1:
        pieces = [[p] for p in pieces]
    outputs = [apply.remote(fn, fn_kwargs, *(p[i] for p in pieces)) for i in range(num_partitions)]
    return ray.data.from_arrow_refs(outputs)
