"""document_minhash_deduplicator on Ray Data: which documents it keeps across blocks, keep rules,
the cluster column, connected components against scipy, and a Data-Juicer recipe run."""

import json
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from sluice.operators import create_operator
from sluice.operators.dedup.components import connected_components
from sluice.operators.recipe import load_recipe

RNG = np.random.default_rng(2024)
WORDS = np.array([f"word{i}" for i in range(20_000)])


def words(n):
    return list(WORDS[RNG.integers(0, len(WORDS), n)])


def edited(doc, positions):
    doc = list(doc)
    for p in positions:
        doc[p] = "EDITED"
    return doc


def run_dedup(folder, texts, params, extra=None, files=4):
    """The deduplicator alone in a Pipeline over `files` input files: (the kept rows, each with
    `i`, its index in `texts`; the run report's HTML; each input row's id, which names clusters)."""
    from sluice.operators import Pipeline

    step = -(-len(texts) // files)
    (folder / "in").mkdir()
    for f, first in enumerate(range(0, len(texts), step)):
        rows = [{"i": i, "text": texts[i], **{k: v[i] for k, v in (extra or {}).items()}}
                for i in range(first, min(first + step, len(texts)))]
        (folder / "in" / f"part-{f}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    op = create_operator("document_minhash_deduplicator", {"num_permutations": 128,
                                                           "jaccard_threshold": 0.8, **params})
    result = Pipeline([op]).run(str(folder / "in"), output=folder / "out", quiet=True, keep_stats=True)
    ids = [((i // step) << 32) + i % step for i in range(len(texts))]  # file ordinal << 32 | line
    return result.table(), result.report_path.read_text(), ids


def test_keeps_one_per_cluster_and_everything_else(ray_session, tmp_path):
    a, b = words(200), words(200)
    huge = words(200_000)
    cjk = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习并做出预测。"
    docs = {
        0: a, 1: b, 2: words(200), 3: words(200), 4: words(50),
        5: "", 6: None, 7: a, 8: "   ", 9: edited(b, [100]),
        10: "hello world", 11: "hello world", 12: edited(a, [17]), 13: "hello there",
        14: cjk, 15: cjk, 16: huge, 17: edited(huge, range(0, 200_000, 1000)),
        18: edited(a, [150]),
    }
    texts = [" ".join(d) if isinstance(d, list) else d for d in docs.values()]
    out, report, ids = run_dedup(tmp_path, texts, {"cluster_column": "cluster"})

    dropped = {7: 0, 9: 1, 11: 10, 12: 0, 15: 14, 17: 16, 18: 0}  # duplicate -> kept document
    kept = [i for i in docs if i not in dropped and texts[i] is not None]  # the reader rejects a null text
    assert out["i"].to_pylist() == kept  # input order kept
    assert out["text"].to_pylist() == [texts[i] for i in kept]
    assert out.column_names == ["i", "text", "cluster"]
    clusters = dict(zip(out["i"].to_pylist(), out["cluster"].to_pylist()))
    assert all(clusters[i] == ids[i] for i in kept)  # each kept document is its cluster's lowest id

    assert "near-duplicate clusters" in report and "removed: 7" in report and "estimated Jaccard" in report


def test_keep_rule_by_column_and_cluster_column(ray_session, tmp_path):
    base = words(300)
    texts = [" ".join(base), " ".join(base + ["and", "a", "few", "more"]), " ".join(words(300)),
             " ".join(edited(base, [5]))]
    out, _, ids = run_dedup(tmp_path, texts, {"keep": "stats.quality", "cluster_column": "dup_of", "verify": False},
                            extra={"stats.quality": [0.1, 0.5, 0.9, 0.7]})
    assert out["i"].to_pylist() == [2, 3]  # 3 has the best quality of cluster {0, 1, 3}
    assert out["dup_of"].to_pylist() == [ids[2], ids[0]]  # a cluster is named by its lowest id
    assert out.column_names == ["i", "text", "stats.quality", "dup_of"]


def cluster_table(ray_session, members: pa.Table, key="__id__"):
    from sluice.operators.dedup.components import SortedTable

    members = members.sort_by(key)
    keys = members[key].to_numpy()
    return SortedTable([ray_session.put(members)], keys[:1], keys[-1:], key)


@pytest.mark.parametrize("scores, scored, keeper", [
    ([1.0, 5.0, 3.0, 5.0], True, 11),    # highest score; the tie goes to the lower id
    ([0.0, 0.0, 0.0, 0.0], True, 10),    # all equal: lowest id
    ([1.0, 5.0, 3.0, 5.0], False, 10),   # keep: first ignores scores
])
def test_keep_rules_pick_one_document_per_cluster(ray_session, scores, scored, keeper):
    from sluice.operators.dedup.minhash import SCORE_COLUMN, _clusters

    ids = [10, 11, 12, 13]
    table = cluster_table(ray_session, pa.table({"__id__": ids + [20, 21], SCORE_COLUMN: scores + [0.0, 0.0]}))
    components = pa.table({"src": [11, 12, 13, 21], "dst": [10, 10, 10, 20]})  # clusters 10 and 20
    members = _clusters(components, table, scored=scored)
    by_cluster = {}
    for row in members.to_pylist():
        by_cluster.setdefault(row["cluster"], set()).add((row["__id__"], row["keep"], row["size"]))
    assert by_cluster[10] == {(i, i == keeper, 4) for i in ids}
    assert by_cluster[20] == {(20, True, 2), (21, False, 2)}


def test_drop_false_keeps_every_row_and_labels_clusters(ray_session):
    from sluice.operators.dedup.minhash import _drop_duplicates

    members = cluster_table(ray_session, pa.table({"__id__": [3, 5, 8], "cluster": [3, 3, 3],
                                                   "keep": [False, True, False]}))
    block = pa.table({"__id__": pa.array(range(10), pa.int64()), "text": list("abcdefghij")})
    labelled = _drop_duplicates(block, members, "dup", drop=False)
    assert labelled["__id__"].to_pylist() == list(range(10))
    assert labelled["dup"].to_pylist() == [0, 1, 2, 3, 4, 3, 6, 7, 3, 9]
    dropped = _drop_duplicates(block, members, "dup", drop=True)
    assert dropped["__id__"].to_pylist() == [0, 1, 2, 4, 5, 6, 7, 9]


def test_no_duplicates_returns_every_row(ray_session, tmp_path):
    texts = [" ".join(words(100)) for _ in range(6)] + ["", None]
    out, report, _ = run_dedup(tmp_path, texts, {})
    assert out["i"].to_pylist() == list(range(7))  # all but the null text, which the reader rejects
    assert "no near-duplicates" in report


def scipy_roots(a, b, n) -> dict[int, int]:
    """Every node of the edges (a, b) that is not its component's lowest node, to that node."""
    _, label = scipy_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    nodes = np.unique(np.r_[a, b])
    lowest = {}
    for node in nodes:
        lowest[label[node]] = min(lowest.get(label[node], node), node)
    return {int(v): int(lowest[label[v]]) for v in nodes if lowest[label[v]] != v}


def test_connected_components_match_scipy(ray_session):
    import ray

    rng = np.random.default_rng(7)
    n = 300
    a, b = rng.integers(0, n, 120), rng.integers(0, n, 120)
    path = rng.permutation(n)[:6]  # a chain needs more than one round
    a, b = np.r_[a, path[:-1]], np.r_[b, path[1:]]
    a, b = a[a != b], b[a != b]
    edges = ray.data.from_arrow(pa.table({"src": np.maximum(a, b), "dst": np.minimum(a, b)})).repartition(3)
    result, rounds = connected_components(edges, 2)
    got = pa.concat_tables(ray.get(result.to_arrow_refs())).to_pydict()

    expected = scipy_roots(a, b, n)
    assert len(got["src"]) == len(expected)
    assert dict(zip(got["src"], got["dst"])) == expected
    assert rounds > 1


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
def test_pairs_are_sorted_and_unique_as_numpy_would(dtype):
    from sluice.operators.dedup.components import _sorted_unique_pairs

    rng = np.random.default_rng(9)
    for high in (5, 1 << 20, 1 << 62):  # few, many and huge values: different bucket shifts
        a = rng.integers(-high if dtype == np.int64 else 0, high, 20_000).astype(dtype)
        b = rng.integers(-50 if dtype == np.int64 else 0, 50, 20_000).astype(dtype)
        pairs = np.unique(np.stack([a, b], axis=1), axis=0)  # sorted by a, then b
        got_a, got_b = _sorted_unique_pairs(a, b)
        np.testing.assert_array_equal(got_a, pairs[:, 0])
        np.testing.assert_array_equal(got_b, pairs[:, 1])


@pytest.mark.parametrize("spacing", [1, 1 << 32])  # document ids of one input part, or of many
def test_local_connected_components_match_scipy(spacing):
    from sluice.operators.dedup.components import bucket_edges, local_connected_components

    rng = np.random.default_rng(8)
    n = 20_000
    keys = rng.integers(0, 3_000, n // 2).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # band keys
    members = rng.integers(0, n, n // 2)
    edges = bucket_edges(pa.table({"key": keys, "id": members * spacing}))
    result, _ = local_connected_components(edges)
    a, b = edges["src"].to_numpy() // spacing, edges["dst"].to_numpy() // spacing
    expected = {v * spacing: root * spacing for v, root in scipy_roots(a, b, n).items()}
    assert dict(zip(result["src"].to_pylist(), result["dst"].to_pylist())) == expected
    assert len(result) == len(expected)


@pytest.mark.parametrize("distinct", [800, 10**9])  # band values often shared, or (almost) never
def test_band_by_band_edges_are_the_bucket_edges_of_all_band_keys(distinct):
    from concurrent.futures import ThreadPoolExecutor

    from sluice.operators.dedup.components import band_edges, bucket_edges

    rng = np.random.default_rng(3)
    n, bands = 5_000, 7
    values = rng.integers(0, distinct, (n, bands))
    keys = (values * bands + np.arange(bands)).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    ids = rng.permutation(4 * n)[:n].astype(np.int64) << 32  # ids in no order, low bits all 0
    expected = bucket_edges(pa.table({"key": keys.reshape(-1), "id": np.repeat(ids, bands)}))
    with ThreadPoolExecutor(2) as pool:
        got = band_edges(keys, ids, pool.map)
    assert got.num_rows == expected.num_rows
    assert sorted(zip(got["src"].to_pylist(), got["dst"].to_pylist())) == \
        sorted(zip(expected["src"].to_pylist(), expected["dst"].to_pylist()))
    assert (got.num_rows > 1000) == (distinct == 800)


def test_a_data_juicer_recipe_with_minhash_runs_unchanged(tmp_path, ray_session):
    originals = [" ".join(words(120)) for _ in range(5)]
    rows = originals + [originals[0], originals[2].replace("word", "Word", 3), "", "tiny text"]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(rows)))
    recipe = tmp_path / "dj.yaml"
    recipe.write_text(textwrap.dedent(f"""
        project_name: 'fuzzy-dedup'
        dataset_path: '{data}'
        export_path: '{tmp_path / "out" / "result.jsonl"}'
        np: 2
        process:
          - document_minhash_deduplicator:
              tokenization: space
              window_size: 5
              lowercase: true
              ignore_pattern: null
              num_permutations: 256
              jaccard_threshold: 0.7
              num_bands: null
              num_rows_per_band: null
    """))
    result = load_recipe(str(recipe)).run(quiet=True)
    assert result.data_path == tmp_path / "out" / "result.jsonl"
    out = result.table()
    assert sorted(out["n"].to_pylist()) == [0, 1, 2, 3, 4, 7, 8]
    assert "near-duplicate clusters" in result.report_path.read_text()
