"""The sample data generator and the shipped recipes.

The generator runs as a user runs it (a subprocess); its ground truth is checked against what
is really in the files, and the recipes' thresholds against the injected kinds.
"""

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import langid
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "make_sample_data.py"
FILES = {"web.jsonl", "web2.jsonl.zst", "sft.jsonl", "books.parquet", "ground_truth.json"}
DOCS = 400
MALFORMED = {"broken_json", "non_object_json", "missing_text", "numeric_text", "null_text",
             "blank_line"}
# The operators the recipes below (the text-data ones) may use.
RECIPES = [ROOT / "recipes" / f"{name}.yaml" for name in ("webtext_clean", "sft_clean", "mixing")]
RECIPES.append(ROOT / "examples" / "dj_config.yaml")


def generate(out: Path, seed: int, docs: int = DOCS) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--seed", str(seed),
                             "--docs", str(docs)], capture_output=True, text=True, check=True)
    return result.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    stdout = generate(out, seed=0)
    return out, json.loads((out / "ground_truth.json").read_text()), stdout


def read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if path.suffix == ".zst":
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    assert raw.endswith(b"\n")
    return raw.decode("utf-8").split("\n")[:-1]


def parse(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return "<broken>"


def web_rows(data) -> list[tuple[str, int, str, object]]:
    """(file, line number, label, parsed) for every line of both web shards, in reading order."""
    out, truth, _ = data
    rows = []
    for name in ("web.jsonl", "web2.jsonl.zst"):
        lines = read_lines(out / name)
        labels = truth["files"][name]["labels"]
        assert len(lines) == len(labels) == truth["files"][name]["lines"]
        rows += [(name, i, label, parse(line))
                 for i, (line, label) in enumerate(zip(lines, labels), start=1)]
    return rows


def letters(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalpha())


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(data, tmp_path):
    out, _, _ = data
    generate(tmp_path / "again", seed=0)
    generate(tmp_path / "other", seed=1)
    assert {p.name for p in out.iterdir()} == FILES
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    assert (tmp_path / "other" / "web.jsonl").read_bytes() != (out / "web.jsonl").read_bytes()


def test_every_kind_is_present_counted_and_printed(data):
    _, truth, stdout = data
    counts = collections.Counter(label for _, _, label, _ in web_rows(data))
    assert {k: v for k, v in counts.items() if k != "blank_line"} == truth["web"]["kinds"]
    assert counts["blank_line"] == 1
    for kind in ("clean", "exact_duplicate", "near_duplicate", "boilerplate", "spam", "html",
                 "short", "non_english", *MALFORMED):
        assert counts[kind] >= 1, kind
    assert sum(counts.values()) == DOCS + 1
    assert "web total: " in stdout and f"spam={counts['spam']}" in stdout


def test_malformed_lines_really_are_malformed(data):
    for name, line_no, label, row in web_rows(data):
        where = f"{name}:{line_no} ({label})"
        if label == "broken_json":
            assert row == "<broken>", where
        elif label == "blank_line":
            assert row == "<broken>", where  # an empty line is not JSON either
        elif label == "non_object_json":
            assert not isinstance(row, dict), where
        elif label == "missing_text":
            assert isinstance(row, dict) and "text" not in row, where
        elif label == "numeric_text":
            assert isinstance(row["text"], (int, float)) and not isinstance(row["text"], bool), where
        elif label == "null_text":
            assert row["text"] is None, where
        else:
            assert isinstance(row, dict) and isinstance(row["text"], str) and row["text"], where
            assert set(row) == {"text", "url", "meta"} and set(row["meta"]) == {"lang", "source"}


def test_injected_kinds_have_their_traits(data):
    rows = [(label, row) for _, _, label, row in web_rows(data) if label not in MALFORMED]
    for label, row in rows:
        text = row["text"]
        if label == "short":
            assert len(text) < 50, text
        elif label == "html":
            assert re.search(r"<p>.+</p>", text, re.S) and "</html>" in text
        elif label == "non_english":
            assert row["meta"]["lang"] != "en"
            assert langid.classify(text)[0] == row["meta"]["lang"], text
        elif label == "boilerplate":
            lines = collections.Counter(text.split("\n"))
            assert lines.most_common(1)[0][1] >= 4 and "cookie" in text.lower(), text
        elif label == "spam":
            top = collections.Counter(text.split()).most_common(1)[0][1]
            assert top >= 4 or text.count("@") + text.count("http") >= 5 \
                or re.search(r"(\w)\1{4,}", text), text
        else:
            assert row["meta"]["lang"] == "en" and len(text) >= 100
    assert len({row["url"] for _, row in rows}) == len(rows)


def test_duplicate_counts_match_the_texts(data):
    """Exact duplicates are the only rows whose text repeats (ignoring case, whitespace, digits
    and punctuation); each points at the clean document it copies, which comes first."""
    _, truth, _ = data
    rows = web_rows(data)
    texts = [row["text"] for _, _, label, row in rows
             if label not in MALFORMED]
    assert len(texts) - len({letters(t) for t in texts}) == truth["web"]["kinds"]["exact_duplicate"]
    at = {(name, line): (label, row) for name, line, label, row in rows}
    order = {key: i for i, key in enumerate(at)}
    exact = truth["web"]["exact_duplicates"]
    assert len(exact) == truth["web"]["kinds"]["exact_duplicate"]
    for pair in exact:
        (label, copy), (of_label, original) = at[tuple(pair["line"])], at[tuple(pair["of"])]
        assert (label, of_label) == ("exact_duplicate", "clean")
        assert letters(copy["text"]) == letters(original["text"])
        assert (copy["text"] == original["text"]) == (pair["variant"] == "identical")
        assert order[tuple(pair["of"])] < order[tuple(pair["line"])]


def test_near_duplicates_differ_by_their_edit_rate(data):
    _, truth, _ = data
    at = {(name, line): (label, row) for name, line, label, row in web_rows(data)}
    near = truth["web"]["near_duplicates"]
    assert len(near) == truth["web"]["kinds"]["near_duplicate"]
    by_rate = collections.defaultdict(list)
    for pair in near:
        (label, copy), (of_label, original) = at[tuple(pair["line"])], at[tuple(pair["of"])]
        assert (label, of_label) == ("near_duplicate", "clean")
        assert letters(copy["text"]) != letters(original["text"])
        words_a, words_b = copy["text"].lower().split(), original["text"].lower().split()
        a = {tuple(words_a[i:i + 5]) for i in range(len(words_a) - 4)}
        b = {tuple(words_b[i:i + 5]) for i in range(len(words_b) - 4)}
        assert len(a & b) / len(a | b) == pytest.approx(pair["jaccard"], abs=1e-3)
        by_rate[pair["rate"]].append(pair["jaccard"])
    means = [sum(v) / len(v) for _, v in sorted(by_rate.items())]
    assert len(means) == 4 and means == sorted(means, reverse=True) and means[0] > 0.6


def test_sft_rows_match_their_labels(data):
    out, truth, _ = data
    lines = read_lines(out / "sft.jsonl")
    labels = truth["files"]["sft.jsonl"]["labels"]
    assert len(lines) == len(labels) == DOCS // 3
    assert collections.Counter(labels) == truth["files"]["sft.jsonl"]["kinds"]
    seen = set()
    for line, label in zip(lines, labels):
        row = parse(line)
        if label == "broken_json":
            assert row == "<broken>"
            continue
        assert {"instruction", "input", "output"} <= set(row)
        if label == "missing_text":
            assert "text" not in row
        elif label == "null_text":
            assert row["text"] is None
        else:
            assert row["instruction"] in row["text"] and row["text"].endswith(row["output"])
            assert (row["output"] == "") == (label == "empty_output")
            if label == "repetitive_output":
                assert len(set(row["output"].split())) * 5 < len(row["output"].split())
            assert (line in seen) == (label == "exact_duplicate")
        seen.add(line)


def test_books_are_distinct_texts(data):
    out, truth, _ = data
    books = pq.read_table(out / "books.parquet")
    assert books.num_rows == truth["files"]["books.parquet"]["rows"] == DOCS // 6
    assert books.schema.field("text").type == pa.string()
    texts = books.column("text").to_pylist()
    assert len(set(texts)) == len(texts) and min(map(len, texts)) > 0


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipes_render_with_defaults_and_compile(path):
    from sluice.operators.recipe import load_recipe

    rendered = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        path.read_text()).render(env={})
    doc = yaml.safe_load(rendered)
    names = [next(iter(step)) for step in doc["process"]]
    assert [op.name for op in load_recipe(str(path)).pipeline.ops] == names


def test_webtext_recipe_drops_the_injected_junk_and_keeps_the_docs(data):
    """The recipe's operators applied to the web rows in reading order (row-local ones on one
    table, the dedup by its key, no Ray): every boilerplate, spam, short and non-English
    document is dropped, HTML is kept once cleaned and so is nearly all real text; the exact
    duplicates that pass the filters, and only they, repeat an earlier key."""
    from sluice.operators.base import Filter, Mapper
    from sluice.operators.recipe import load_recipe

    rows = [(label, row["text"]) for _, _, label, row in web_rows(data) if label not in MALFORMED]
    table = pa.table({"text": [t for _, t in rows]})
    kept = pa.array([True] * table.num_rows)
    repeats = [False] * table.num_rows
    for op in load_recipe("webtext_clean").pipeline.ops:
        if isinstance(op, Mapper):
            table = op.process(table)
        elif isinstance(op, Filter):
            kept = pa.compute.and_(kept, op.keep(op.with_stats(table)))
        elif op.name == "document_deduplicator":  # near-dup removal runs on Ray in its own tests
            keys, seen = op.prepare(table).column(table.num_columns).to_pylist(), set()
            for i, (key, keep) in enumerate(zip(keys, kept.to_pylist())):
                repeats[i] = keep and key in seen
                seen.update([key] if keep else [])
    outcome = collections.defaultdict(collections.Counter)
    for (label, _), keep in zip(rows, kept.to_pylist()):
        outcome[label][keep] += 1
    for junk in ("boilerplate", "spam", "short", "non_english"):
        assert outcome[junk][True] == 0, (junk, outcome[junk])
    assert outcome["html"][False] <= 1
    assert outcome["clean"][True] >= 0.95 * sum(outcome["clean"].values()), outcome["clean"]
    assert "<p>" not in "".join(table.column("text").to_pylist())
    dropped_as_duplicate = [label for (label, _), repeat in zip(rows, repeats) if repeat]
    assert dropped_as_duplicate == ["exact_duplicate"] * outcome["exact_duplicate"][True]
