"""Hash partitioning on Ray tasks (operators/shuffle.py): every row reaches exactly one
partition, every key lives in one partition only, whatever the blocks and the key's type."""

import hashlib

import pyarrow as pa
import pytest

from sluice.operators.shuffle import group_by


def digests(values):
    return pa.array([hashlib.blake2b(str(v).encode(), digest_size=16).digest() for v in values], pa.binary(16))


@pytest.mark.parametrize("key_type", ["int64", "digest"])
def test_every_row_lands_once_and_every_key_in_one_partition(ray_session, key_type):
    import ray.data

    keys = [i % 37 for i in range(600)]
    make_key = (lambda ks: pa.array(ks, pa.int64())) if key_type == "int64" else digests
    rows = pa.table({"k": make_key(keys), "row": list(range(600))})
    blocks = [rows.slice(0, 250), pa.table({}), rows.slice(250, 0), rows.slice(250)]  # an empty block may lack columns
    ds = ray.data.from_arrow_refs([ray_session.put(b) for b in blocks])

    seen = group_by(ds, "k", lambda t, tag: t.append_column("tag", pa.array([tag] * t.num_rows)), 5, tag="x")
    partitions = [ray_session.get(ref) for ref in seen.to_arrow_refs()]

    assert sorted(r for p in partitions if p.num_rows for r in p.column("row").to_pylist()) == list(range(600))
    key_sets = [set(p.column("k").to_pylist()) for p in partitions if p.num_rows]
    assert sum(len(s) for s in key_sets) == 37 and len(key_sets) > 1  # disjoint, and spread
    assert all(set(p.column("tag").to_pylist()) == {"x"} for p in partitions if p.num_rows)


def test_a_key_that_cannot_be_hashed_is_named(ray_session):
    import ray.data

    ds = ray.data.from_arrow(pa.table({"k": ["a", "b"]}))
    with pytest.raises(Exception, match="cannot hash-partition a key of type string"):
        group_by(ds, "k", lambda t: t, 2).materialize()
