"""Hostile rows and files on a real local Ray: each goes to the rejects with its reason, file and
line (or is kept exactly as written), is counted in the summary, and never stops, hangs or
silently changes a run."""

import gzip
import json
import os
import signal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import zstandard

from sluice.operators import OPERATORS, Mapper, Pipeline, Source, create_operator, register
from sluice.operators.base import Deduplicator, Filter
from sluice.operators.io import MAX_DEPTH


@pytest.fixture
def inp(tmp_path):
    """The inputs' folder (outputs go beside it, never where a directory input lists files)."""
    (tmp_path / "in").mkdir()
    return tmp_path / "in"


GOOD = [json.dumps({"text": f"good row {i}", "n": i}) for i in range(6)]


def write_lines(path, lines):
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def run(tmp_path, source, ops=(), **options):
    """Run, check the accounting, and return (summary, rejects, output rows)."""
    result = Pipeline(list(ops)).run(source if isinstance(source, list) else str(source),
                                     output=tmp_path / "out", quiet=True, **options)
    rejects = [json.loads(line) for f in sorted(result.rejects_path.glob("*.jsonl"))
               for line in f.read_text().splitlines()]
    s = result.summary
    assert s["accounted"], s
    assert sum(s["rejected"].values()) == len(rejects)
    return s, rejects, result.table().to_pylist()


def by_line(rejects):
    return {(os.path.basename(r["source"]), r["line"]): r["reason"] for r in rejects}


def texts(rows):
    return sorted(r["text"] for r in rows)


GOOD_TEXTS = sorted(json.loads(line)["text"] for line in GOOD)


def test_bytes_that_are_not_utf8_are_rejected_not_passed_through(ray_session, tmp_path, inp):
    write_lines(inp / "a.jsonl", GOOD[:3] + [b'{"text": "caf\xe9"}', b'{"text": "ok", "m": "\xff\xfe"}'] + GOOD[3:])
    (inp / "b.csv").write_bytes(b'text,n\n"csv one",1\n"bad \xff",2\n"csv three",3\n')
    raw = pa.array([b"pq one", b"bad \xe9", b"pq three"], pa.binary())
    pq.write_table(pa.table({"text": pa.Array.from_buffers(pa.string(), 3, raw.buffers())}), inp / "c.parquet")
    s, rejects, rows = run(tmp_path, inp)
    assert texts(rows) == sorted(GOOD_TEXTS + ["csv one", "csv three", "pq one", "pq three"])
    assert by_line(rejects) == {("a.jsonl", 4): "not UTF-8: byte 0xe9 at column 14",
                                ("a.jsonl", 5): "not UTF-8: byte 0xff at column 22",
                                ("b.csv", 3): "not UTF-8 in field 'text'",
                                ("c.parquet", 2): "not UTF-8 in field 'text'"}
    assert s["rows_read"] == 8 + 3 + 3


def test_lone_surrogates_are_rejected_and_surrogate_pairs_kept(ray_session, tmp_path, inp):
    write_lines(inp / "a.jsonl", ['{"text": "a \\ud800 b"}', '{"text": "ok", "m": ["\\uDFFF"]}',
                                       b'{"text": "raw \xed\xa0\x80"}', '{"text": "smile \\ud83d\\ude00"}'] + GOOD)
    s, rejects, rows = run(tmp_path, inp / "a.jsonl")
    assert texts(rows) == sorted(GOOD_TEXTS + ["smile \U0001F600"])
    assert sorted(line for _, line in by_line(rejects)) == [1, 2, 3]
    assert all("lone UTF-16 surrogate" in r["reason"] for r in rejects)


def test_truncated_or_mislabelled_compressed_files_reject_their_unreadable_part(ray_session, tmp_path, inp):
    lines = [json.dumps({"text": f"line {i} of a long file"}) for i in range(60_000)]  # 2 MB: many reads
    raw = "".join(line + "\n" for line in lines).encode()
    gz, zst = gzip.compress(raw), zstandard.ZstdCompressor().compress(raw)
    (inp / "cut.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    (inp / "cut.jsonl.zst").write_bytes(zst[: len(zst) // 2])
    write_lines(inp / "plain.jsonl.gz", GOOD)  # not gzip at all
    (inp / "junk.jsonl.zst").write_bytes(os.urandom(5000))
    csv = gzip.compress(("text\n" + "".join(f"row {i}\n" for i in range(60_000))).encode())
    (inp / "cut.csv.gz").write_bytes(csv[: len(csv) // 2])
    write_lines(inp / "fake.parquet", GOOD)  # not Parquet
    pq.write_table(pa.table({"text": ["lost"] * 1000}), inp / "cut.parquet")
    (inp / "cut.parquet").write_bytes((inp / "cut.parquet").read_bytes()[:-100])  # its footer cut off
    write_lines(inp / "good.jsonl", GOOD)
    s, rejects, rows = run(tmp_path, inp)
    assert {r["text"] for r in rows} >= set(GOOD_TEXTS)
    reasons = by_line(rejects)
    assert len(rejects) == 7 and {("fake.parquet", 1), ("cut.parquet", 1)} <= set(reasons)
    assert all(reason.startswith("unreadable from here to the end of the file") for reason in reasons.values())
    assert sorted(f for (f, _), reason in reasons.items() if reason.endswith("Truncated compressed stream")) == [
        "cut.csv.gz", "cut.jsonl.gz", "cut.jsonl.zst"]
    assert reasons[("plain.jsonl.gz", 1)].endswith("incorrect header check")
    assert ("junk.jsonl.zst", 1) in reasons
    # A truncated JSON file keeps exactly the whole lines before its reject's line: some, not all.
    gz_line, zst_line = (next(ln for (f, ln) in reasons if f == name) for name in ("cut.jsonl.gz", "cut.jsonl.zst"))
    assert 1 < gz_line < len(lines) and 1 < zst_line < len(lines)
    assert sum(r["text"].startswith("line ") for r in rows) == gz_line - 1 + zst_line - 1
    csv_rows = sum(r["text"].startswith("row ") for r in rows)
    assert s["rows_read"] == len(GOOD) + gz_line - 1 + zst_line - 1 + csv_rows + 7


def nested(levels, kind="list"):
    """A row whose field `d` nests lists or objects so that the row has `levels` levels in all."""
    if kind == "list":
        inner = "[" * (levels - 1) + "]" * (levels - 1)
    else:
        inner = '{"a":' * (levels - 1) + "1" + "}" * (levels - 1)
    return '{"text": "deep %d", "d": %s}' % (levels, inner)


@pytest.mark.timeout(120)
def test_lines_nested_thousands_of_levels_deep_are_rejected_not_crashing_the_worker(ray_session, tmp_path, inp):
    write_lines(inp / "a.jsonl", GOOD[:3] + [
        nested(10_000), nested(10_000, "object"), nested(MAX_DEPTH + 1), nested(MAX_DEPTH), nested(MAX_DEPTH, "object"),
        json.dumps({"text": "brackets in a string are text: " + "[{" * 5000}),
    ] + GOOD[3:])
    s, rejects, rows = run(tmp_path, inp / "a.jsonl")
    kept = [f"deep {MAX_DEPTH}"] * 2 + ["brackets in a string are text: " + "[{" * 5000]
    assert texts(rows) == sorted(GOOD_TEXTS + kept)
    assert by_line(rejects) == {("a.jsonl", n): f"nested more than {MAX_DEPTH} levels deep" for n in (4, 5, 6)}


def test_numbers_are_kept_as_written_or_the_row_is_rejected(ray_session, tmp_path, inp):
    write_lines(inp / "a.jsonl", [
        '{"text": "wide", "n": 1180591620717411303424}', '{"text": "negative", "n": -9223372036854775809}',
        '{"text": "small", "n": 7}', '{"text": "nested", "m": {"big": [36893488147419103232]}}',
        '{"text": "nan", "x": NaN}', '{"text": "inf", "x": Infinity}', '{"text": "minf", "x": [-Infinity]}',
        '{"text": "float", "x": 1.5}', '{"text": "huge", "x": 1e400}', '{"text": "large", "x": 1e300}',
        '{"text": "edge", "n": -9223372036854775808}'])
    write_lines(inp / "b.jsonl", GOOD)
    s, rejects, rows = run(tmp_path, inp)
    too_wide = "integer {} does not fit in 64 bits; write it as a string"
    assert by_line(rejects) == {
        ("a.jsonl", 1): too_wide.format(2 ** 70), ("a.jsonl", 2): too_wide.format(-2 ** 63 - 1),
        ("a.jsonl", 4): too_wide.format(2 ** 65), ("a.jsonl", 5): "NaN is not a JSON value",
        ("a.jsonl", 6): "Infinity is not a JSON value", ("a.jsonl", 7): "-Infinity is not a JSON value",
        ("a.jsonl", 9): "number 1e400 is too large for a 64-bit float; write it as a string"}
    row = {r["text"]: r for r in rows}
    assert (row["small"]["n"], row["edge"]["n"], row["float"]["x"], row["large"]["x"]) == (7, -2 ** 63, 1.5, 1e300)
    assert [row[f"good row {i}"]["n"] for i in range(6)] == list(range(6))


def test_fields_named_like_internal_columns_are_rejected_and_other_rows_kept(ray_session, tmp_path, inp):
    write_lines(inp / "a.jsonl", GOOD[:3] + [
        json.dumps({"text": "x", "__id__": 5}), json.dumps({"text": "y", "__reject__": "no"}),
        json.dumps({"text": "z", "__source__": "elsewhere", "__other": 1})] + GOOD[3:])
    pq.write_table(pa.table({"text": ["p", "q"], "__id__": [1, 2]}), inp / "b.parquet")
    # A `stats.` field no filter of the run computes is input data: kept as it was.
    write_lines(inp / "c.jsonl", [json.dumps({"text": "noted", "stats.note": {"by": "hand"}})])
    s, rejects, rows = run(tmp_path, inp, [create_operator("text_length_filter", {"min_len": 1})])
    assert texts(rows) == sorted(GOOD_TEXTS + ["noted"])
    assert [r["stats.note"] for r in rows if r["text"] == "noted"] == [{"by": "hand"}]
    assert "stats.text_len" not in rows[0]
    lines = by_line(rejects)
    assert sorted(lines) == [("a.jsonl", 4), ("a.jsonl", 5), ("a.jsonl", 6), ("b.parquet", 1), ("b.parquet", 2)]
    assert all("reserved for sluice's internal columns" in reason for reason in lines.values())
    assert "'__source__', '__other'" in lines[("a.jsonl", 6)]


@register
class fails_on_marked_mapper(Mapper):
    """Raises on a slice holding the text 'FAIL' (a user operator with a bug)."""

    def process(self, table):
        if pc.any(pc.equal(table.column("text"), "FAIL")).as_py():
            raise ValueError("cannot handle this\nsecond line")
        return table


def test_an_operator_failing_on_a_slice_rejects_the_rows_it_fails_on_with_the_reason(ray_session, tmp_path, inp):
    write_lines(inp / "a.jsonl", GOOD)
    write_lines(inp / "b.jsonl", [json.dumps({"text": "FAIL"}), json.dumps({"text": "with it"})])
    # A stat column of the wrong type from the input makes the filter fail the same way.
    write_lines(inp / "c.jsonl", [json.dumps({"text": "odd stat", "stats.text_len": "long"})])
    s, rejects, rows = run(tmp_path, inp, [fails_on_marked_mapper(),
                                                 create_operator("text_length_filter", {"min_len": 1})])
    assert texts(rows) == sorted(GOOD_TEXTS + ["with it"])  # the row beside the failing one goes on
    reasons = by_line(rejects)
    assert sorted(reasons) == [("b.jsonl", 1), ("c.jsonl", 1)]
    assert reasons[("b.jsonl", 1)] == "fails_on_marked_mapper failed on this row: ValueError: cannot handle this"
    assert reasons[("c.jsonl", 1)].startswith("text_length_filter failed on this row: Arrow")
    assert s["rejected"] == {"fails_on_marked_mapper": 1, "text_length_filter": 1}


def test_column_types_that_differ_between_files_meet_in_a_dedup_and_in_the_output(ray_session, tmp_path, inp):
    pq.write_table(pa.table({"text": ["a", "b"], "n": [1, 2]}), inp / "a.parquet")
    pq.write_table(pa.table({"text": ["b", "c"], "n": ["x", "y"]}), inp / "b.parquet")
    pq.write_table(pa.table({"text": ["d"], "n": pa.array([{"k": 1}])}), inp / "c.parquet")
    write_lines(inp / "d.jsonl", ['{"text": "e", "n": [1, 2]}', '{"text": "a", "n": 3}'])  # mixed: JSON text
    sources = [str(inp / "*.parquet"), str(inp / "d.jsonl")]
    # Where the types disagree, text stays as it was and other values become JSON text.
    s, rejects, rows = run(tmp_path / "none", sources)
    assert sorted((r["text"], r["n"]) for r in rows) == [
        ("a", "1"), ("a", "3"), ("b", "2"), ("b", "x"), ("c", "y"), ("d", '{"k": 1}'), ("e", "[1, 2]")]
    s, rejects, rows = run(tmp_path / "dedup", sources, [create_operator("document_deduplicator")])
    # The first copy of each text survives.
    assert {r["text"]: r["n"] for r in rows} == {"a": "1", "b": "2", "c": "y", "d": '{"k": 1}', "e": "[1, 2]"}
    assert s["dropped"] == {"document_deduplicator": 2} and not rejects


def test_large_string_text_reaches_every_row_local_operator(ray_session, tmp_path, inp):
    from dj_fixtures import write_arpa

    write_arpa(tmp_path / "en.arpa", [["hello", "world"]])
    required = {"field_expression_filter": {"expression": "n > 0"}, "rename_fields_mapper": {"mapping": {"n": "m"}},
                "select_fields_mapper": {"fields": ["text", "n"]},
                "perplexity_filter": {"model_path": str(tmp_path / "en.arpa")}}
    text = pa.array(["Hello  world. Hello world.\nSome <b>html</b> http://x.com 12345", "again again"],
                    pa.large_string())
    table = pa.table({"text": text, "n": [1, 2]})
    for name, cls in sorted(OPERATORS.items()):
        if not (cls.row_local or issubclass(cls, Deduplicator)):
            continue
        if not cls.__module__.startswith("sluice."):     # registered by another test's module
            continue
        op = create_operator(name, required.get(name))
        if isinstance(op, Filter):
            op.keep(op.with_stats(table))
        elif isinstance(op, Mapper):
            assert op.process(table).num_rows == 2, name
        else:
            op.prepare(table)
    repeated = pa.array(["Same words here. Same words here. Other.", "c"], pa.large_string())
    pq.write_table(pa.table({"text": repeated}), inp / "a.parquet")
    s, rejects, rows = run(tmp_path, inp / "a.parquet", [create_operator("remove_repeat_sentences_mapper")])
    assert texts(rows) == ["Same words here. Other.", "c"] and not rejects


def test_an_input_of_which_no_row_survives_reading_then_a_dedup(ray_session, tmp_path, inp):
    write_lines(inp / "a.jsonl", ["{broken", json.dumps({"body": "no text"}), json.dumps({"text": None})])
    pq.write_table(pa.table({"other": [1, 2]}), inp / "b.parquet")
    ops = [create_operator("document_deduplicator"), create_operator("document_minhash_deduplicator"),
           create_operator("random_selector", {"select_num": 3})]
    s, rejects, rows = run(tmp_path, inp, ops)
    assert rows == [] and s["rows_read"] == 5 and s["rejected"] == {"read": 5}


def test_a_glob_reaching_files_through_symlinks_and_a_loop_reads_each_file_once(ray_session, tmp_path, inp):
    data = inp
    (data / "sub").mkdir(parents=True)
    write_lines(data / "sub" / "a.jsonl", GOOD[:4])
    write_lines(data / "b.jsonl", GOOD[4:])
    os.symlink("..", data / "sub" / "loop")  # data/sub/loop/sub/loop/... for ever
    os.symlink("sub/a.jsonl", data / "link.jsonl")
    (data / ".cache").mkdir()  # hidden, as `glob` has it
    write_lines(data / ".cache" / "copy.jsonl", GOOD)
    sources = [Source(str(data / "**" / "*.jsonl"), "all"), Source(str(data / "sub" / "a.jsonl"), "again")]
    s, rejects, rows = run(tmp_path, sources)
    assert texts(rows) == GOOD_TEXTS and s["rows_read"] == len(GOOD)
    assert len(s["inputs"]) == 2


@register
class dies_on_marked_mapper(Mapper):
    """Kills its own worker process on a block holding the text 'DIE' (a crash in native code)."""

    def process(self, table):
        if pc.any(pc.equal(table.column("text"), "DIE")).as_py():
            os.kill(os.getpid(), signal.SIGKILL)
        return table


@pytest.mark.timeout(180)
def test_a_worker_dying_on_a_block_ends_that_block_in_the_rejects(ray_session, tmp_path, inp):
    write_lines(inp / "a.jsonl", GOOD)
    write_lines(inp / "b.jsonl", [json.dumps({"text": "DIE"}), json.dumps({"text": "beside it"})])
    s, rejects, rows = run(tmp_path, inp, [dies_on_marked_mapper()], executor="ray")
    assert texts(rows) == GOOD_TEXTS
    reason = "a worker died 2 times running dies_on_marked_mapper on the block holding this row"
    assert by_line(rejects) == {("b.jsonl", 1): reason, ("b.jsonl", 2): reason}
    assert s["rejected"] == {"worker_crash": 2} and s["rows_read"] == 8  # the retries counted once
