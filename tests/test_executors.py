"""The local executor (one process, no Ray) and the Ray executor run the same plan: the same
rows in the same order, the same rejects and the same accounting, for every whole-dataset
operator that runs in one process; and `auto` chooses between them as documented."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.operators import Pipeline, Selector, Source, create_operator, get_operator, register
from sluice.operators import pipeline as pipeline_module
from sluice.operators.pipeline import choose_executor

WORDS = [f"w{i}" for i in range(400)]


@register
class ray_only_selector(Selector):
    """Keeps every row; has no in-process path (no apply_table), as the LLM operators."""

    def apply(self, ds, ctx):
        return ds


def doc(seed: int, n: int = 60) -> str:
    return " ".join(WORDS[(seed * 7919 + k * 31) % len(WORDS)] for k in range(n))


def write_inputs(folder, files: int = 3, rows: int = 40) -> str:
    """Files of documents with exact and near duplicates across files, a malformed line, a null
    text and a score field; returns the folder."""
    folder.mkdir()
    for f in range(files):
        lines = []
        for i in range(rows):
            text = doc(i if f != 2 else i % 10)  # file 2 repeats the first 10 documents of file 0
            if i % 13 == 5:
                text = text.replace("w", "W", 3)  # near duplicates of another row
            lines.append(json.dumps({"text": text, "score": (f * 37 + i * 11) % 23, "n": i}))
        lines.insert(7, "{not json")
        lines.insert(9, json.dumps({"text": None, "score": 1}))
        (folder / f"part-{f}.jsonl").write_text("\n".join(lines) + "\n")
    return str(folder)


OPERATORS = {
    "dedup": [("text_length_filter", {"min_len": 10}),
              ("document_deduplicator", {"lowercase": True}),
              ("document_minhash_deduplicator", {"jaccard_threshold": 0.6, "keep": "longest",
                                                 "cluster_column": "cluster"})],
    "simhash_topk": [("document_simhash_deduplicator", {"hamming_distance": 4}),
                     ("topk_specified_field_selector", {"field_key": "score", "topk": 30})],
    "random": [("random_selector", {"select_num": 25, "seed": 3})],
}


def counts_of(summary):
    return [(o["name"], o["rows_in"], o["rows_out"], o["dropped"], o["rejected"]) for o in summary["operators"]]


def run(tmp_path, name, executor, source):
    ops = [create_operator(op, params) for op, params in OPERATORS[name]]
    result = Pipeline(ops).run(source, output=tmp_path / f"{name}-{executor}", quiet=True, executor=executor)
    rejects = sorted(line for f in result.rejects_path.glob("*.jsonl") for line in f.read_text().splitlines())
    return result, rejects, counts_of(result.summary)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_local_and_ray_give_the_same_rows_rejects_and_counts(ray_session, tmp_path, name):
    source = write_inputs(tmp_path / "in")
    local, local_rejects, local_counts = run(tmp_path, name, "local", source)
    on_ray, ray_rejects, ray_counts = run(tmp_path, name, "ray", source)
    assert (local.summary["executor"], on_ray.summary["executor"]) == ("local", "ray")
    assert local.summary["accounted"] and on_ray.summary["accounted"]
    assert local.table().num_rows > 0 and local.table().num_rows < local.summary["rows_read"]
    assert local.table().equals(on_ray.table())  # same rows, same order, same types
    assert local_rejects == ray_rejects and len(local_rejects) == 6  # a malformed line and a null text per file
    assert local_counts == ray_counts


def test_source_mixing_and_analyze_agree(ray_session, tmp_path):
    first, second = write_inputs(tmp_path / "a", files=1), write_inputs(tmp_path / "b", files=2)
    sources = [Source(first, "a", weight=1.0), Source(second, "b", weight=3.0)]
    mixed = [Pipeline([create_operator("source_mixer", {"total_rows": 40})]).run(
        sources, output=tmp_path / f"mix-{e}", quiet=True, executor=e) for e in ("local", "ray")]
    assert mixed[0].table().num_rows == 40 and mixed[0].table().equals(mixed[1].table())
    assert counts_of(mixed[0].summary) == counts_of(mixed[1].summary)
    ops = [create_operator("words_num_filter", {"min_num": 50}), create_operator("document_deduplicator")]
    analyzed = [Pipeline(ops).run(sources, output=tmp_path / f"analyze-{e}", quiet=True, executor=e,
                                  analyze=True).summary for e in ("local", "ray")]
    assert counts_of(analyzed[0]) == counts_of(analyzed[1])
    assert [o["name"] for o in analyzed[0]["operators"]] == ["read", "words_num_filter"]  # no dedup
    assert analyzed[0]["rows_kept"] == analyzed[0]["rows_read"] - 6  # analyze drops nothing; 6 rejects


def test_auto_runs_small_inputs_locally_and_the_rest_on_ray(tmp_path, monkeypatch):
    write_inputs(tmp_path / "in")
    files = [str(p) for p in sorted((tmp_path / "in").iterdir())]
    dedup = [create_operator("document_deduplicator")]
    ray_only = [create_operator("document_deduplicator"), ray_only_selector()]
    choose = lambda executor, ops, **kw: choose_executor(  # noqa: E731
        executor, ops, files, ray_address=kw.get("ray_address"), num_cpus=None, quiet=True).name
    assert choose("auto", dedup) == "local"
    assert choose("auto", dedup, ray_address="127.0.0.1:6379") == "ray"
    assert choose("auto", ray_only) == "ray"
    assert not any(get_operator(name).runs_in_process() for name in ("llm_generate", "llm_score", "text2sql"))
    assert choose("ray", dedup) == "ray"
    monkeypatch.setattr(pipeline_module, "LOCAL_MEMORY_SHARE", 10**15)
    assert choose("auto", dedup) == "ray" and choose("local", dedup) == "local"
    compressed = tmp_path / "in" / "more.jsonl.zst"
    compressed.write_bytes(b"x" * 100)
    assert pipeline_module.in_memory_bytes([str(compressed), files[0]]) == 400 + os.path.getsize(files[0])
    with pytest.raises(ValueError, match="ray_only_selector runs only on Ray Data; use --executor ray"):
        choose("local", ray_only)
    with pytest.raises(ValueError, match="unknown executor 'spark'"):
        choose("spark", dedup)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_large_file_read_in_parts_gives_what_it_gives_whole(ray_session, tmp_path, monkeypatch, fmt):
    from sluice.operators import io

    rows = [{"text": doc(i % 700, 20), "n": i} for i in range(3000)]
    rows[2500]["text"] = None
    (tmp_path / "in").mkdir()
    if fmt == "jsonl":
        lines = [json.dumps(r) for r in rows]
        lines[1234] = "{broken"
        (tmp_path / "in" / "big.jsonl").write_text("\n".join(lines) + "\n")
    else:
        rows[1234]["text"] = None
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in" / "big.parquet", row_group_size=250,
                       compression="none", use_dictionary=False)
    ops = lambda: [create_operator("words_num_filter", {"min_num": 5})]  # noqa: E731
    whole = Pipeline(ops()).run(str(tmp_path / "in"), output=tmp_path / "whole", quiet=True, executor="local")
    monkeypatch.setattr(io, "PART_BYTES", 40_000)
    for executor in ("local", "ray"):
        parts = Pipeline(ops()).run(str(tmp_path / "in"), output=tmp_path / f"parts-{executor}", quiet=True,
                                    executor=executor)
        assert whole.summary["input_parts"] == 1 and parts.summary["input_parts"] > 4
        assert parts.table().equals(whole.table())
        assert counts_of(parts.summary) == counts_of(whole.summary)
        rejects = [json.loads(line) for f in sorted(parts.rejects_path.glob("*.jsonl")) for line in open(f)]
        assert sorted(r["line"] for r in rejects) == [1235, 2501]  # numbered as in the whole file


@pytest.mark.parametrize("read_bytes", [7, 64, 100_000])
def test_line_chunks_are_the_whole_lines_of_the_stream_in_order(monkeypatch, read_bytes):
    import io as stdio
    import random

    from sluice.operators import io

    monkeypatch.setattr(io, "CHUNK_BYTES", 50)
    rng = random.Random(read_bytes)
    lines = [b"x" * rng.choice([0, 3, 40, 120]) + b"\n" for _ in range(300)]
    data = b"".join(lines) + b"no newline at the end"
    chunks = list(io._line_chunks(stdio.BytesIO(data), read_bytes))
    assert b"".join(chunks) == data + b"\n"
    assert all(c.endswith(b"\n") for c in chunks) and len(chunks) > (20 if read_bytes < 100 else 1)


def test_a_local_run_drops_early_only_rows_whose_key_a_lower_id_has():
    from sluice.operators.dedup.seen import SeenKeys

    seen = SeenKeys("document_deduplicator", "key")

    def drop(ids, keys):
        table, count = seen.drop_seen(pa.table({"__id__": pa.array(ids, pa.int64()), "key": keys}))
        return table["__id__"].to_pylist(), count.dropped

    assert drop([10, 11, 12], [b"a", b"b", b"a"]) == ([10, 11], 1)  # a later part, reached first
    assert drop([1, 2], [b"b", b"c"]) == ([1, 2], 0)  # lower ids are kept (11 is the dedup's to drop)
    assert drop([20, 21, 22], [b"b", b"c", b"d"]) == ([22], 2)


def test_local_threads_keep_the_order_and_raise_the_first_error():
    import time

    from sluice.operators.local_executor import in_threads

    done = []
    slow_first = lambda i: (time.sleep(0.05 * (5 - i)), i * i)[1]  # noqa: E731 - later items finish first
    assert in_threads(slow_first, list(range(5)), 3, done.append) == [0, 1, 4, 9, 16]
    assert done == [1, 2, 3, 4, 5]

    def fails_on_three(i):
        if i == 3:
            raise ValueError("item 3")
        return i

    with pytest.raises(ValueError, match="item 3"):
        in_threads(fails_on_three, list(range(8)), 2)
