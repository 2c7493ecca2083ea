"""The pipeline on Ray Data: row accounting, rejects, exact dedup across blocks, selection, mixing."""

import gzip
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import zstandard

from sluice.operators import Pipeline, Source, create_operator
from sluice.operators.base import Filter, Mapper, in_range, param, register
from sluice.operators.stage import SLICE_ROWS


@register
class shout_mapper(Mapper):
    """Upper-cases the text (a user operator, one decorator away)."""

    text_key: str = param("text", doc="field to change")

    def process(self, table):
        return table.set_column(table.column_names.index(self.text_key), self.text_key,
                                pc.utf8_upper(table.column(self.text_key)))


@register
class min_chars_filter(Filter):
    """Keeps rows with at least `min_chars` characters; stat `chars`."""

    text_key: str = param("text", doc="field to measure")
    min_chars: int = param(1, doc="fewest characters kept", ge=0)

    @property
    def stat_names(self):
        return ("chars",)

    def compute_stats(self, table):
        return {"chars": pc.utf8_length(table.column(self.text_key))}

    def keep(self, table):
        return in_range(self.stat(table, "chars"), self.min_chars)


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def messy_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("messy")
    good = [json.dumps({"text": f"document number {i} " * 3, "n": i}) for i in range(40)]
    write_jsonl(d / "a.jsonl", good[:20] + [
        "{not json",                                  # line 21
        json.dumps({"body": "no text field"}),        # line 22
        json.dumps({"text": 12}),                     # line 23
        "",                                           # a blank line is not a row
        json.dumps({"text": None}),                   # line 25
        json.dumps(["a", "list"]),                    # line 26
        json.dumps({"text": "x"}),                    # kept by read, dropped by the filter
    ])
    with gzip.open(d / "b.jsonl.gz", "wt") as f:
        f.write("".join(line + "\n" for line in good[20:30]))
    with zstandard.open(d / "c.jsonl.zst", "wt") as f:
        f.write("".join(line + "\n" for line in good[30:]) + "{truncated\n")
    pq.write_table(pa.table({"text": ["parquet one", "parquet two", None]}), d / "d.parquet")
    (d / "e.csv").write_text('text,n\n"csv row one",1\n"csv, row two",2\n"bad row",3,4\n')
    return d


def test_every_row_is_accounted_for_and_rejects_keep_reason_and_line(ray_session, messy_inputs, tmp_path):
    result = Pipeline([shout_mapper(), min_chars_filter(min_chars=5)]).run(
        str(messy_inputs), output=tmp_path / "out", quiet=True)
    s = result.summary
    # 40 good rows, 6 more non-blank lines in a.jsonl, 1 in c, 3 parquet rows, 3 csv rows
    assert s["rows_read"] == 40 + 6 + 1 + 3 + 3
    assert s["accounted"]
    assert s["rows_kept"] + sum(s["dropped"].values()) + sum(s["rejected"].values()) == s["rows_read"]
    assert s["dropped"] == {"min_chars_filter": 1}
    assert s["rejected"] == {"read": 8}
    rejects = [json.loads(line) for f in result.rejects_path.glob("*.jsonl") for line in f.read_text().splitlines()]
    by_line = {(r["source"].rsplit("/", 1)[-1], r["line"]): r["reason"] for r in rejects}
    assert by_line[("a.jsonl", 21)].startswith("malformed JSON")
    assert by_line[("a.jsonl", 22)] == "missing field 'text'"
    assert by_line[("a.jsonl", 23)] == "field 'text' is int, expected a string"
    assert by_line[("a.jsonl", 25)] == "field 'text' is null"
    assert by_line[("a.jsonl", 26)] == "line is not a JSON object"
    assert by_line[("c.jsonl.zst", 11)].startswith("malformed JSON")
    assert by_line[("d.parquet", 3)] == "field 'text' is null"
    assert any(name == "e.csv" and "malformed CSV" in reason for (name, _), reason in by_line.items())
    out = result.table()
    assert out.num_rows == s["rows_kept"] == 40 + 2 + 2
    assert all(t == t.upper() for t in out.column("text").to_pylist())
    assert not [c for c in out.column_names if c.startswith("__") or c.startswith("stats.")]


def test_summary_report_and_stats_before_and_after(ray_session, messy_inputs, tmp_path):
    result = Pipeline([min_chars_filter(min_chars=5)]).run(str(messy_inputs / "a.jsonl"),
                                                         output=tmp_path / "out", quiet=True)
    html = result.report_path.read_text()
    assert "<svg" in html and "chars" in html
    summary = json.loads((result.output_dir / "summary.json").read_text())
    op = next(o for o in summary["operators"] if o["name"] == "min_chars_filter")
    assert op["rows_in"] == 21 and op["rows_out"] == 20
    assert 0 < op["seconds"] < summary["wall_seconds"]  # the filter's own time, measured
    half_step = 5e-5    # seconds are rounded to 4 places, the rate is not
    assert 21 / (op["seconds"] + half_step) <= op["rows_per_s"] <= 21 / (op["seconds"] - half_step)


def test_analyze_drops_nothing_but_computes_stats(ray_session, messy_inputs, tmp_path):
    pipeline = Pipeline([min_chars_filter(min_chars=10_000), create_operator("document_deduplicator")])
    result = pipeline.run(str(messy_inputs / "a.jsonl"), output=tmp_path / "out", analyze=True,
                          keep_stats=True, quiet=True)
    assert result.summary["rows_kept"] == 21 and result.summary["dropped"] == {}
    assert "stats.chars" in result.table().column_names


def test_consecutive_row_local_operators_fuse_into_one_stage():
    ops = [shout_mapper(), min_chars_filter(), shout_mapper(), create_operator("document_deduplicator"),
           min_chars_filter()]
    plan = Pipeline(ops).plan()
    kinds = [(kind, [label for label, _ in steps]) for kind, steps in plan]
    assert kinds == [
        ("fused", ["shout_mapper", "min_chars_filter", "shout_mapper#2", "document_deduplicator"]),
        ("dataset", ["document_deduplicator"]),
        ("fused", ["min_chars_filter#2"]),
    ]


@register
class batch_rows_mapper(Mapper):
    """Records how many rows the batch that held each row had."""

    def process(self, table):
        return table.append_column("batch_rows", pa.array([table.num_rows] * table.num_rows, pa.int64()))


def test_operators_see_a_large_block_in_bounded_slices_and_no_row_is_lost(ray_session, tmp_path):
    n = 3 * SLICE_ROWS + 5  # one Parquet file: one block far larger than a slice
    pq.write_table(pa.table({"text": [f"row {i}" + "!" * (i % 7) for i in range(n)]}), tmp_path / "big.parquet")
    result = Pipeline([min_chars_filter(min_chars=8), batch_rows_mapper()]).run(
        str(tmp_path / "big.parquet"), output=tmp_path / "out", quiet=True)
    out = result.table()
    expected = [f"row {i}" + "!" * (i % 7) for i in range(n) if len(f"row {i}") + i % 7 >= 8]
    assert out.column("text").to_pylist() == expected
    assert max(out.column("batch_rows").to_pylist()) <= SLICE_ROWS
    s = result.summary
    assert s["accounted"] and s["dropped"]["min_chars_filter"] == n - len(expected)


def test_a_stat_already_computed_is_reused(monkeypatch):
    calls = []
    op = min_chars_filter(min_chars=3)
    original = op.compute_stats
    monkeypatch.setattr(op, "compute_stats", lambda t: calls.append(1) or original(t))
    table = op.with_stats(pa.table({"text": ["abcd", "ab"]}))
    again = min_chars_filter(min_chars=1)
    monkeypatch.setattr(again, "compute_stats", lambda t: calls.append(2) or original(t))
    again.with_stats(table)
    assert calls == [1]


def word(i):
    """Distinct letters-only words: normalization that drops digits keeps them apart."""
    return chr(97 + i // 26) + chr(97 + i % 26)


@pytest.fixture(scope="module")
def duplicated_shards(tmp_path_factory):
    """Five files (so several blocks); duplicates of each text spread across them."""
    d = tmp_path_factory.mktemp("dups")
    for shard in range(5):
        rows = [{"text": f"Doc {word(i)}: the same words.", "shard": shard} for i in range(shard, shard + 30)]
        rows += [{"text": f"doc {word(i)} the SAME words", "shard": shard} for i in range(3)]  # normalized dups
        write_jsonl(d / f"part-{shard}.jsonl", [json.dumps(r) for r in rows])
    return d


def test_exact_dedup_is_global_and_keeps_the_first_row(ray_session, duplicated_shards, tmp_path):
    exact = Pipeline([create_operator("document_deduplicator")]).run(
        str(duplicated_shards), output=tmp_path / "exact", quiet=True)
    texts = exact.table().column("text").to_pylist()
    assert len(texts) == len(set(texts)) == 34 + 3  # 34 "Doc" texts plus 3 "doc ... the SAME words"
    normalized = create_operator("document_deduplicator", {"lowercase": True, "ignore_non_character": True})
    norm = Pipeline([normalized]).run(str(duplicated_shards), output=tmp_path / "norm", quiet=True)
    rows = norm.table().to_pylist()
    assert len(rows) == 34
    # The kept copy is the first in input order: shard 0's "Doc" rows, not the lower-case ones.
    kept = {r["text"] for r in rows if r["shard"] == 0}
    assert {f"Doc {word(i)}: the same words." for i in range(30)} == kept
    assert norm.summary["dropped"] == {"document_deduplicator": 5 * 33 - 34}
    again = Pipeline([normalized]).run(str(duplicated_shards), output=tmp_path / "again", quiet=True)
    assert sorted(map(str, again.table().to_pylist())) == sorted(map(str, rows))


@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("ignore_non_character", [False, True])
def test_exact_dedup_keys_are_the_texts_arrow_normalizes(lowercase, ignore_non_character):
    """The key kernel gives byte for byte what Arrow's utf8_lower and the ignore pattern give,
    for characters whose case or class is unusual, so which rows count as equal is unchanged."""
    import hashlib

    from sluice.operators.dedup.exact import IGNORED

    texts = ["Hello, World! 123", "KELVIN \u212a sign İstanbul ǅ", "Ünïcödé — “quotes” ½ ٣ 𝟘",
             "中文，标点。", "emoji 😀 ok\u00a0nbsp\u2003x", "", "a\tb\nc\rd\fe\vf", "ΣΑΣ ς", "ﬁ ß ẞ",
             "".join(map(chr, range(128)))]
    expected = pa.array(texts)
    if lowercase:
        expected = pc.utf8_lower(expected)
    if ignore_non_character:
        expected = pc.replace_substring_regex(expected, IGNORED + "+", "")
    op = create_operator("document_deduplicator", {"lowercase": lowercase,
                                                   "ignore_non_character": ignore_non_character})
    keys = op.prepare(pa.table({"text": texts})).column("__dedup_key__").to_pylist()
    assert keys == [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in expected.to_pylist()]
    with pytest.raises(ValueError, match="'text' is null"):
        op.prepare(pa.table({"text": ["a", None]}))


def all_texts(directory):
    return [json.loads(line)["text"] for f in sorted(directory.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_selectors_take_exact_counts(ray_session, duplicated_shards, tmp_path):
    top = Pipeline([min_chars_filter(), create_operator(
        "topk_specified_field_selector", {"field_key": "stats.chars", "topk": 7})]).run(
        str(duplicated_shards), output=tmp_path / "top", quiet=True, keep_stats=True)
    chars = top.table().column("stats.chars").to_pylist()
    all_chars = sorted((len(t) for t in all_texts(duplicated_shards)), reverse=True)
    assert sorted(chars, reverse=True) == all_chars[:7]
    sample = Pipeline([create_operator("random_selector", {"select_num": 23, "seed": 7})])
    first = sample.run(str(duplicated_shards), output=tmp_path / "s1", quiet=True).table()
    second = sample.run(str(duplicated_shards), output=tmp_path / "s2", quiet=True).table()
    assert first.num_rows == 23
    assert sorted(first.column("text").to_pylist()) == sorted(second.column("text").to_pylist())


def test_mixing_gives_exact_seeded_counts_per_source(ray_session, tmp_path):
    for name, n in (("web", 500), ("books", 300), ("code", 50)):
        write_jsonl(tmp_path / f"{name}.jsonl", [json.dumps({"text": f"{name} {i}"}) for i in range(n)])
    sources = [Source(str(tmp_path / "web.jsonl"), "web", 0.6), Source(str(tmp_path / "books.jsonl"), "books", 0.3),
               Source(str(tmp_path / "code.jsonl"), "code", 0.1)]

    def mix(seed, **params):
        op = create_operator("source_mixer", {"seed": seed, **params})
        table = Pipeline([op]).run(sources, output=tmp_path / f"mix{seed}", quiet=True).table()
        return table.column("text").to_pylist()

    texts = mix(1, total_rows=401)
    counts = {s: sum(t.startswith(s + " ") for t in texts) for s in ("web", "books", "code")}
    assert counts == {"web": 241, "books": 120, "code": 40}  # 240.6, 120.3, 40.1 by largest remainder
    assert sorted(texts) == sorted(mix(1, total_rows=401))
    assert sorted(texts) != sorted(mix(2, total_rows=401))
    capped = mix(3)  # no total: the largest mixture no source runs short of (code: 50 rows = 10%)
    assert len(capped) == 500
    with pytest.raises(ValueError, match="source 'web' has 500 rows available"):
        mix(4, total_rows=1000)
