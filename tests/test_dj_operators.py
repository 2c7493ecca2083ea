"""The operators and parameters Data-Juicer's gallery recipes need, each on real-ish text
(tests/dj_fixtures.py) against a plain-Python reading of Data-Juicer's definition."""

from __future__ import annotations

import hashlib
import re
from collections import deque

import numpy as np
import pyarrow as pa
import pytest

from dj_fixtures import dj_strip, sample_rows, write_arpa, write_models
from sluice.operators.base import ParamError, create_operator
from sluice.operators.text.words import special_characters

ROWS = sample_rows()
TEXTS = [r["text"] for r in ROWS]
SPECIAL = set(special_characters())
SHORT = [t for t in TEXTS if len(t) < 2500]  # for the slow plain-Python oracles


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """en.sp.model and en.arpa trained on the sample, in one folder."""
    folder = tmp_path_factory.mktemp("models")
    write_models(folder, TEXTS[:80])
    return folder


def table(texts, **columns) -> pa.Table:
    return pa.table({"text": pa.array(texts, pa.string()), **columns})


def mapped(name, texts, **params) -> list:
    return create_operator(name, params).process(table(texts)).column("text").to_pylist()


def stats(name, texts, **params) -> list:
    op = create_operator(name, params)
    return op.with_stats(table(texts)).column("stats." + op.stat_names[0]).to_pylist()


# ---- Data-Juicer's helpers, read plainly ----

def dj_words(text: str) -> list[str]:
    return [w for w in re.split(" |\n|\t", text) if w]


def dj_refined(words: list[str]) -> list[str]:
    return [w for w in (dj_strip(w.lower(), SPECIAL) for w in words) if w]


def dj_merge(text: str, keep) -> str:
    lines = [[[w for w in (x for x in part.split(" ") if x) if keep(w)] for part in line.split("\t")]
             for line in text.split("\n")]
    lines = [[" ".join(part) for part in line if part] for line in lines]
    return "\n".join("\t".join(line) for line in lines if line)


# ---- mappers ----

def test_clean_copyright_mapper_matches_data_juicer():
    def dj(sample: str) -> str:
        r = re.search(r"/\*[^*]*\*+(?:[^/*][^*]*\*+)*/", sample)
        if r:
            if re.search("copyright", sample[r.start():r.end()], re.IGNORECASE):
                sample = sample[:r.start()] + sample[r.end():]
            return sample
        lines = sample.split("\n")
        skip = 0
        for line in lines:
            if line.startswith("//") or line.startswith("#") or line.startswith("--") or not line:
                skip += 1
            else:
                break
        return "\n".join(lines[skip:]) if skip else sample

    texts = TEXTS + ["/* (C) Copyright 2021 ACME */\nint main() {}", "/* plain */\n/* Copyright */", "", "\n\nx"]
    out = mapped("clean_copyright_mapper", texts)
    assert out == [dj(t) for t in texts]
    assert sum(o != t for o, t in zip(out, texts)) >= 20  # the .py files start with comments


def test_remove_words_with_incorrect_substrings_matches_data_juicer():
    bad = ["http", "www", ".com", "href", "//"]

    def keep(word):
        return all(b not in dj_strip(word, SPECIAL) for b in bad)

    out = mapped("remove_words_with_incorrect_substrings_mapper", TEXTS)
    changed = 0
    for text, got in zip(TEXTS, out):
        if all(keep(w) for w in dj_words(text)):
            assert got == text  # nothing to remove: left as it is
        else:
            assert got == dj_merge(text, keep)
            changed += 1
    assert changed >= 20


def test_latex_mappers_match_data_juicer():
    latex = [t for r, t in zip(ROWS, TEXTS) if r["meta"]["kind"] == "latex"]
    texts = latex + TEXTS[:30]
    header = (r"^(.*?)(" + "|".join(rf"\\\b{k}\b\*?(?:\[(.*?)\])?\{{(.*?)\}}" for k in
                                    ("chapter", "part", "section", "subsection", "subsubsection"))
              + r"|\\\bparagraph\b\*?(?:\[(.*?)\])?\{(.*?)\}\\\bsubparagraph\b\*?(?:\[(.*?)\])?\{(.*?)\})")

    def dj_header(text, drop):
        if not re.search(header, text, flags=re.DOTALL):
            return "" if drop else text
        return re.sub(header, r"\2", text, flags=re.DOTALL)

    assert mapped("remove_header_mapper", texts) == [dj_header(t, True) for t in texts]
    assert mapped("remove_header_mapper", texts, drop_no_head=False) == [dj_header(t, False) for t in texts]
    assert mapped("remove_header_mapper", latex)[0].startswith("\\section{Introduction}")

    def dj_comments(text):
        text = re.sub(r"[^\\]%.+$", "", text, flags=re.MULTILINE)
        return re.sub(r"(?m)^%.*\n?", "", text, flags=re.MULTILINE)

    out = mapped("remove_comments_mapper", texts, doc_type=["md", "tex"])
    assert out == [dj_comments(t) for t in texts] and "TODO" not in out[0] and "draft" not in out[0]

    bib = (r"(\\appendix|\\begin\{references\}|\\begin\{REFERENCES\}|\\begin\{thebibliography\}|"
           r"\\bibliography\{.*\}).*$")
    out = mapped("remove_bibliography_mapper", texts)
    assert out == [re.sub(bib, "", t, flags=re.DOTALL) for t in texts]
    assert "\\bibliography" not in out[0] and "Tables" not in out[1]

    def dj_macros(text):
        macros = {}
        for reg in (r"\\\bnewcommand\b\*?\{(\\[a-zA-Z0-9]+?)\}\{(.*?)\}$", r"\\def\s*(\\[a-zA-Z0-9]+?)\s*\{(.*?)\}$"):
            for m in re.finditer(reg, text, flags=re.MULTILINE):
                macros[m.group(1).encode("unicode-escape").decode()] = m.group(2).encode("unicode-escape").decode()
        for name, value in macros.items():
            text = re.sub(r"(" + name + r")" + r"([^a-zA-Z0-9])", value + r"\2", text)
        return text

    out = mapped("expand_macro_mapper", texts)
    assert out == [dj_macros(t) for t in texts]
    assert "x \\in \\mathbb{R}^n" in out[0] and "\\varepsilon$ in every" in out[0]


def dj_html_text(raw: str) -> str:
    """Data-Juicer's clean_html: '<li>'/'<ol>' start '*' lines, then the parsed document's text
    (read here with Python's HTML parser)."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.parts = []

        def handle_data(self, data):
            self.parts.append(data)

    for tag, new in (("<li>", "\n*"), ("</li>", ""), ("<ol>", "\n*"), ("</ol>", "")):
        raw = raw.replace(tag, new)
    parser = Text()
    parser.feed(raw)
    parser.close()
    return "".join(parser.parts)


def test_clean_html_mapper_changes_only_markup():
    out = mapped("clean_html_mapper", TEXTS)
    markup = [re.search(r"</?[A-Za-z][^>]*>|<![^>]*>|<\?[^>]*>", t) is not None for t in TEXTS]
    assert 5 <= sum(markup) < len(TEXTS) - 100
    for text, got, is_html in zip(TEXTS, out, markup):
        if "<script" in text or "<style" in text:  # script and style contents: see test_clean_html
            continue
        if is_html:  # the same text; whitespace that touched markup is tidied (see test_clean_html)
            assert got.split() == dj_html_text(text).split()
        else:
            assert got == text


def test_clean_html_mapper_matches_data_juicers_parser():
    lexbor = pytest.importorskip("selectolax.lexbor")
    html_rows = [t for t in TEXTS if re.search(r"</?[A-Za-z][^>]*>", t) and "<script" not in t and "<style" not in t]

    def dj(raw):
        for tag, new in (("<li>", "\n*"), ("</li>", ""), ("<ol>", "\n*"), ("</ol>", "")):
            raw = raw.replace(tag, new)
        return lexbor.LexborHTMLParser(raw).text()

    got, expected = mapped("clean_html_mapper", html_rows), [dj(t) for t in html_rows]
    # The same text; sluice tidies the whitespace that touched markup, and the HTML5 parser
    # moves some where a document's head ends.
    assert ["".join(g.split()) for g in got] == ["".join(e.split()) for e in expected]


# ---- filters ----

def test_suffix_filter_keeps_listed_suffixes():
    values = [".py", ".md", "src/app.js", "Dockerfile", "docs/Makefile", "notes.txt", None]
    tab = table(["x"] * len(values), suffix=pa.array(values, pa.string()))
    op = create_operator("suffix_filter", {"suffixes": [".py", ".js", "Dockerfile", "Makefile"]})
    assert op.keep(op.with_stats(tab)).to_pylist() == [True, False, True, True, True, False, False]
    assert create_operator("suffix_filter", {}).keep(tab).to_pylist() == [True] * len(values)
    with pytest.raises(ParamError, match="suffix_key: field 'suffix' is not in the data"):
        op.keep(table(["x"]))


def test_word_augmentation_matches_data_juicer():
    zh = [t for r, t in zip(ROWS, TEXTS) if r["meta"]["kind"] == "zh"]
    texts = zh + ["色情 内容 和 成人视频", "成人 视频 成人视频"] + TEXTS[:10]
    from sluice.operators.text.words import load_word_list

    flagged = load_word_list("flagged_words", "zh")

    def dj(text):
        words = dj_refined(dj_words(text))
        words = words + ["".join(words[i:i + 2]) for i in range(len(words) - 1)]
        return sum(w in flagged for w in words) / len(words) if words else 0.0

    got = stats("flagged_words_filter", texts, lang="zh", use_words_aug=True)
    np.testing.assert_allclose(got, [dj(t) for t in texts])
    assert got[len(zh) + 1] == pytest.approx(2 / 5)  # the word 成人视频 and the pair 成人+视频


def test_tokenization_with_a_sentencepiece_model_matches_data_juicer(models):
    import sentencepiece as spm

    model = str(models / "en.sp.model")
    sp = spm.SentencePieceProcessor(model_file=model)
    texts = SHORT[:40]
    got = stats("words_num_filter", texts, tokenization=True, tokenizer_model=model)
    assert got == [len(dj_refined(sp.encode_as_pieces(t))) for t in texts]
    assert got != stats("words_num_filter", texts)  # pieces, not whitespace words

    def dj_rep(text, n=10):
        words = dj_refined(sp.encode_as_pieces(text))
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        counts = {}
        for g in grams:
            counts[g] = counts.get(g, 0) + 1
        return sum(c for c in counts.values() if c > 1) / len(grams) if grams else 0.0

    np.testing.assert_allclose(stats("word_repetition_filter", texts, tokenization=True, tokenizer_model=model),
                               [dj_rep(t) for t in texts])
    alpha = stats("alphanumeric_filter", texts, tokenization=True, tokenizer_model=model)
    np.testing.assert_allclose(alpha, [sum(c.isalpha() for c in t) / len(sp.encode_as_pieces(t)) for t in texts])


def test_tokenization_without_a_model_splits_words_and_says_so(tmp_path, monkeypatch, models):
    monkeypatch.setenv("SLUICE_MODELS", str(tmp_path))  # an empty models folder
    op = create_operator("stopwords_filter", {"tokenization": True})
    assert op.stat_names == ("stopwords_ratio",) and "tokenization: true without a SentencePiece" in op.notes()[0]
    assert create_operator("stopwords_filter", {}).notes() == ()
    alpha = stats("alphanumeric_filter", TEXTS[:20], tokenization=True)
    np.testing.assert_allclose(alpha, [sum(c.isalpha() for c in t) / len(dj_words(t)) for t in TEXTS[:20]])
    monkeypatch.setenv("SLUICE_MODELS", str(models))  # Data-Juicer's file name there is used
    assert create_operator("words_num_filter", {"tokenization": True}).notes() == ()


def test_perplexity_filter_matches_data_juicer(models):
    from sluice.operators.text.models import ArpaModel

    tmp_path = models
    model = ArpaModel(tmp_path / "en.arpa")
    op = create_operator("perplexity_filter", {"model_path": str(tmp_path / "en.arpa"),
                                               "tokenizer_model": str(tmp_path / "en.sp.model")})
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "en.sp.model"))

    def dj(text):
        line = " ".join(sp.encode_as_pieces(text))
        score = model.score(line)
        return round(10.0 ** (-score / (len(line.split()) + 1)), 1)

    texts = TEXTS[:30]
    got = op.with_stats(table(texts)).column("stats." + op.stat_names[0]).to_pylist()
    assert got == [dj(t) for t in texts]
    assert len(set(got)) > 10


def test_arpa_scores_equal_kenlm(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    from sluice.operators.text.models import ArpaModel

    sentences = [dj_words(t.lower())[:200] for t in TEXTS[:60]]
    write_arpa(tmp_path / "m.arpa", sentences)
    ours, theirs = ArpaModel(tmp_path / "m.arpa"), kenlm.Model(str(tmp_path / "m.arpa"))
    for text in TEXTS[60:90] + ["", "words never seen zzqx"]:
        line = " ".join(dj_words(text.lower()))
        assert ours.score(line) == pytest.approx(theirs.score(line), rel=1e-5)  # KenLM keeps float32


def test_perplexity_filter_without_a_model_names_the_parameter(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_MODELS", str(tmp_path))
    with pytest.raises(ParamError) as e:
        create_operator("perplexity_filter", {"max_ppl": 1500})
    assert str(e.value).startswith("perplexity_filter.model_path: no KenLM model for 'en': set model_path: ")
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    (tmp_path / "en.arpa.bin").write_bytes(b"binary")
    pytest.importorskip("kenlm")
    assert create_operator("perplexity_filter", {}).lm_path == tmp_path / "en.arpa.bin"


# ---- SimHash ----

def dj_simhash(text, tokenization, window, ignore):
    import regex

    text = text.lower()
    if ignore:
        text = regex.sub(ignore, "", text)
    if tokenization == "character":
        tokens = [text[i:i + window] for i in range(len(text) - window + 1)]
    else:
        words = [w for w in text.split(" ") if w] if tokenization == "space" else regex.split(r"\p{P}", text)
        tokens = [" ".join(words[i:i + window]) for i in range(len(words) - window + 1)]
    counts = [0] * 64
    for token in tokens:
        h = int.from_bytes(hashlib.md5(token.encode()).digest()[:8], "big")
        for bit in range(64):
            counts[bit] += 1 if h >> bit & 1 else -1
    return sum(1 << bit for bit in range(64) if counts[bit] > 0)


def dj_simhash_keep(hashes, max_bits):
    graph = {}
    for i, a in enumerate(hashes):
        for b in hashes[i + 1:]:
            if a != b and bin(a ^ b).count("1") <= max_bits:
                graph.setdefault(a, set()).add(b)
                graph.setdefault(b, set()).add(a)
    cluster, visited = {}, set()
    for h in hashes:
        if h in visited or h not in graph:
            continue
        queue = deque([h])
        visited.add(h)
        while queue:
            cur = queue.popleft()
            cluster[cur] = h
            for n in graph[cur]:
                if n not in visited:
                    visited.add(n)
                    queue.append(n)
    seen, keep = set(), []
    for h in hashes:
        key = cluster.get(h, ("single", h))
        keep.append(key not in seen)
        seen.add(key)
    return keep


@pytest.mark.parametrize("tokenization,window,ignore,blocks,bits", [
    ("space", 6, None, 6, 4), ("character", 4, r"\p{P}", 10, 8), ("punctuation", 3, r"\n\n", 9, 7)])
def test_simhash_dedup_matches_data_juicer(tokenization, window, ignore, blocks, bits):
    from sluice.operators.dedup.simhash import first_of_clusters

    op = create_operator("document_simhash_deduplicator", {
        "tokenization": tokenization, "window_size": window, "ignore_pattern": ignore,
        "num_blocks": blocks, "hamming_distance": bits})
    hashes = op.prepare(table(SHORT)).column("__simhash__").to_pylist()
    assert hashes == [dj_simhash(t, tokenization, window, ignore) for t in SHORT]
    ids = np.arange(len(SHORT), dtype=np.int64) * 7
    kept = set(first_of_clusters(ids, np.array(hashes, dtype=np.uint64), blocks, bits).tolist())
    expected = dj_simhash_keep(hashes, bits)
    assert [int(i) in kept for i in ids] == expected
    assert expected.count(False) >= 3  # the sample's near and exact copies


def test_simhash_pair_search_is_exact_on_planted_neighbours():
    from sluice.operators.dedup.simhash import clusters

    rng = np.random.default_rng(3)
    base = rng.integers(0, 2 ** 63, 300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300).astype(np.uint64)
    flips = [np.uint64(sum(1 << int(b) for b in rng.choice(64, k, replace=False))) for k in rng.integers(0, 9, 300)]
    hashes = np.unique(np.concatenate([base, base ^ np.array(flips, dtype=np.uint64)]))
    labels = clusters(hashes, 10, 8)
    py = [int(h) for h in hashes]
    parent = list(range(len(py)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(py)):
        for j in range(i + 1, len(py)):
            if bin(py[i] ^ py[j]).count("1") <= 8:
                parent[max(root(i), root(j))] = min(root(i), root(j))
    truth = [root(i) for i in range(len(py))]
    assert len(set(truth)) < len(py)
    assert [labels[i] == labels[j] for i in range(len(py)) for j in (0, len(py) // 2)] == \
           [truth[i] == truth[j] for i in range(len(py)) for j in (0, len(py) // 2)]
    assert len(set(labels.tolist())) == len(set(truth))


def test_simhash_parameters_are_checked():
    with pytest.raises(ParamError, match="hamming_distance: must be less than num_blocks"):
        create_operator("document_simhash_deduplicator", {"num_blocks": 4, "hamming_distance": 4})
    with pytest.raises(ParamError, match="ignore_pattern: invalid regular expression"):
        create_operator("document_simhash_deduplicator", {"ignore_pattern": "(["})
