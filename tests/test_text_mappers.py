"""Text mappers on real text: what each one changes, what it leaves alone, and edge cases
(empty strings, null text, non-Latin scripts, very long words)."""

import inspect
import json
import random
import textwrap
import unicodedata

import ftfy
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dj_fixtures import dj_strip
from sluice.operators.base import ParamError, create_operator
from sluice.operators.text.words import special_characters

PROSE = inspect.getdoc(json.dumps)
WRAPPED = inspect.getdoc(textwrap.TextWrapper)


def run(name, texts, **params):
    table = pa.table({"text": pa.array(texts, pa.string()), "__id__": list(range(len(texts)))})
    out = create_operator(name, params).process(table)
    assert out.column("__id__").to_pylist() == list(range(len(texts)))
    return out.column("text").to_pylist()


def test_whitespace_normalization():
    texts = ["  Hello\u00a0\u00a0world\u3000and\u2003more\t\ttabs  \n  next line\u200b  ", PROSE, "", None, "中文\u3000文本"]
    out = run("whitespace_normalization_mapper", texts)
    assert out[0] == "Hello world and more tabs\nnext line"
    assert "\n" in out[1] and "  " not in out[1]
    assert out[2:] == ["", None, "中文 文本"]


def test_fix_unicode_matches_ftfy_and_skips_plain_ascii():
    texts = ["The cafÃ© serves crÃ¨me brÃ»lÃ©e", "Fish &amp; chips", "plain ascii text",
             "line\r\nbreak", "“Quotes” and ﬁne ligatures", "日本語のテキスト", "", None, PROSE]
    out = run("fix_unicode_mapper", texts)
    assert out == [None if t is None else ftfy.fix_text(t, normalization="NFC") for t in texts]
    assert out[0] == "The café serves crème brûlée"
    assert out[1] == "Fish & chips"


def test_fix_unicode_normalization_forms():
    texts = ["ＡＢＣ１２３ café", "e\u0301"]
    assert run("fix_unicode_mapper", texts, normalization="NFKC") == ["ABC123 café", "é"]
    nfd = run("fix_unicode_mapper", ["café"], normalization="NFD")[0]
    assert nfd == unicodedata.normalize("NFD", "café") and len(nfd) == 5
    with pytest.raises(ParamError, match="normalization: 'NFX' is not one of"):
        create_operator("fix_unicode_mapper", {"normalization": "NFX"})


def test_punctuation_normalization():
    texts = ["“你好”，世界。（测试）：完成！", "Wait… what’s this — a dash?", PROSE, None]
    out = run("punctuation_normalization_mapper", texts)
    assert out[0] == '"你好",世界.(测试):完成!'
    assert out[1] == "Wait... what's this  -  a dash?"
    assert out[2:] == [PROSE, None]


def test_clean_email_links_ip():
    text = ("Write to jane.doe+news@mail.example.org or visit https://example.com/path?q=1, "
            "www.python.org and docs.python.org/3/library. Server 192.168.0.12 and "
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334 answered; 999.1.2.3 is no address.")
    assert run("clean_email_mapper", [text])[0].startswith("Write to  or visit https://")
    links = run("clean_links_mapper", [text])[0]
    assert "example.com" not in links and "www.python" not in links and "docs.python" not in links
    assert "visit ," in links and "Server 192.168.0.12" in links
    ips = run("clean_ip_mapper", [text], repl="<ip>")[0]
    assert "Server <ip> and <ip> answered; 999.1.2.3 is no address." in ips
    assert run("clean_email_mapper", [PROSE, "", None]) == [PROSE, "", None]
    custom = run("clean_links_mapper", ["see foo://bar and x"], pattern=r"foo://\S+", repl="[link]")
    assert custom == ["see [link] and x"]
    with pytest.raises(ParamError, match="clean_ip_mapper.pattern: invalid regular expression"):
        create_operator("clean_ip_mapper", {"pattern": "(?<=x)y"})


def test_clean_html():
    page = ("<!DOCTYPE html><html><head><title>Menu</title><style>p { color: red }</style>"
            "<script>if (a < b) { alert('x'); }</script></head><body>\n  <h1>Fish &amp; Chips</h1>"
            "<p>Price: &pound;5 &mdash; <b>fresh</b> daily.</p><!-- hidden note -->"
            "<ul><li>cod</li><li>haddock</li></ul><br/>Bye&#33;</body></html>")
    code = "def f(x):\n    if x < 3 and x > 1:\n\n        return '&amp;'\n"
    out = run("clean_html_mapper", [page, "no markup: 3 < 4 and 5 > 2", code, "", None])
    assert out[0] == "Menu\nFish & ChipsPrice: £5 — fresh daily.\n*cod\n*haddockBye!"
    assert out[1:] == ["no markup: 3 < 4 and 5 > 2", code, "", None]  # no markup: as it is
    indented = "<div>\n    <p>Two  spaces,\n\n  a blank line, <b>bold</b> text.</p>\n</div>\n"
    assert run("clean_html_mapper", [indented]) == ["Two  spaces,\n\n  a blank line, bold text."]


def test_remove_repeat_sentences():
    text = ("The cat sat. The dog ran! The cat sat. the cat sat.\n"
            "The dog ran! A new line. ok. ok.\n\nEnd.")
    assert run("remove_repeat_sentences_mapper", [text])[0] == (
        "The cat sat. The dog ran! the cat sat.\n A new line. ok.\n\nEnd.")
    lowered = run("remove_repeat_sentences_mapper", [text], lowercase=True)[0]
    assert lowered == "The cat sat. The dog ran!\n A new line. ok.\n\nEnd."
    short_kept = run("remove_repeat_sentences_mapper", [text], min_repeat_sentence_length=3)[0]
    assert short_kept.endswith("A new line. ok. ok.\n\nEnd.")
    punct = run("remove_repeat_sentences_mapper", ["Hi, there. Hi there!"],
                ignore_special_character=False)[0]
    assert punct == "Hi, there. Hi there!"
    assert run("remove_repeat_sentences_mapper", ["Hi, there. Hi there!"])[0] == "Hi, there."
    chinese = run("remove_repeat_sentences_mapper", ["你好世界。今天天气好。你好世界。"])[0]
    assert chinese == "你好世界。今天天气好。"
    assert run("remove_repeat_sentences_mapper", [PROSE, "", None]) == [PROSE, "", None]


def arrow_remove_repeat_sentences(text, lowercase, ignore_special_character, min_len):
    """The mapper as Arrow steps (sluice's earlier implementation): split at markers put around
    line breaks and after sentence ends, key each piece, keep line breaks, short keys and the
    first piece of each key."""
    import numpy as np
    import pyarrow.compute as pc
    from sluice.operators.text.mappers import _join_pieces
    from sluice.operators.text.words import free_marker

    marker = free_marker(text)
    marked = pc.replace_substring(text, "\n", marker + "\n" + marker)
    pieces = pc.split_pattern(pc.replace_substring_regex(marked, "([.。!！?？…]+[’”\"]*)", r"\1" + marker), marker)
    flat = pieces.flatten()
    key = pc.utf8_trim_whitespace(flat)
    key = pc.utf8_lower(key) if lowercase else key
    if ignore_special_character:
        key = pc.replace_substring_regex(key, "[^a-zA-Z0-9\u4e00-\u9fa5\n\t ]+", "")
    keep = (pc.less(pc.utf8_length(key), min_len).to_numpy(zero_copy_only=False)
            | pc.equal(flat, "\n").to_numpy(zero_copy_only=False))
    ids = pc.dictionary_encode(key).indices.to_numpy().astype(np.int64)
    parents = pc.list_parent_indices(pieces).to_numpy().astype(np.int64)
    _, first = np.unique(parents * (int(ids.max(initial=0)) + 1) + ids, return_index=True)
    keep[first] = True
    return _join_pieces(pieces, keep, text).to_pylist()


@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("ignore_special_character", [False, True])
def test_remove_repeat_sentences_gives_what_the_arrow_steps_give(lowercase, ignore_special_character):
    rng = random.Random(0)
    alphabet = (list("aAbB 1,é中😀\x00\r\x0b\t\n\u00a0\u3000\u212aİ") + list(".!?。！？…’”\""))
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(2000)]
    texts += [None, "", "a. a. a.", "\n\n", ". .", "x.\n", PROSE]
    for min_len in (0, 1, 2, 3):
        params = dict(lowercase=lowercase, ignore_special_character=ignore_special_character,
                      min_repeat_sentence_length=min_len)
        assert run("remove_repeat_sentences_mapper", texts, **params) == arrow_remove_repeat_sentences(
            pa.array(texts), lowercase, ignore_special_character, min_len)


def reference_remove_long_words(text, min_len, max_len):
    """Data-Juicer's remove_long_words_mapper in plain Python, leaving texts that lose no
    word as they are."""
    specials = set(special_characters())

    def keep(word):
        return min_len <= len(word) <= max_len or min_len <= len(dj_strip(word, specials)) <= max_len

    if all(keep(w) for w in text.replace("\n", " ").replace("\t", " ").split(" ") if w):
        return text
    lines = []
    for line in text.split("\n"):
        parts = [" ".join(w for w in part.split(" ") if w and keep(w)) for part in line.split("\t")]
        parts = [p for p in parts if p]
        if parts:
            lines.append("\t".join(parts))
    return "\n".join(lines)


def test_remove_long_words_matches_reference():
    rng = random.Random(7)
    alphabet = ["a", "bb", "ccc", "dddddddd", "(eeeeeeeeeeee)", "x" * 3000, " ", "  ", "\t", "\n", ".", "ü"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(300)]
    texts += [PROSE, WRAPPED, "Привет  мир\tи\n\nвсе", "", "   "]
    for min_len, max_len in [(1, 10), (3, 12), (2, 5000)]:
        out = run("remove_long_words_mapper", texts, min_len=min_len, max_len=max_len)
        assert out == [reference_remove_long_words(t, min_len, max_len) for t in texts]
    assert run("remove_long_words_mapper", [None]) == [None]
    url = "see https://example.com/" + "a" * 200 + " ok"
    assert run("remove_long_words_mapper", [url, "  fine  text "], max_len=50) == ["see ok", "  fine  text "]


def test_rename_and_select_fields():
    table = pa.table({"text": ["a"], "meta": ["m"], "url": ["u"], "__id__": [0], "stats.text_len": [1]})
    renamed = create_operator("rename_fields_mapper", {"mapping": {"text": "content", "url": "link"}})
    assert renamed.process(table).column_names == ["content", "meta", "link", "__id__", "stats.text_len"]
    selected = create_operator("select_fields_mapper", {"fields": ["url", "text"]}).process(table)
    assert selected.column_names == ["url", "text", "__id__", "stats.text_len"]
    with pytest.raises(ParamError, match="mapping: field.*'body' not in the data; fields: text, meta"):
        create_operator("rename_fields_mapper", {"mapping": {"body": "text"}}).process(table)
    with pytest.raises(ParamError, match="two fields named 'meta'"):
        create_operator("rename_fields_mapper", {"mapping": {"text": "meta"}}).process(table)
    with pytest.raises(ParamError, match="fields: field.*'lang' not in the data"):
        create_operator("select_fields_mapper", {"fields": ["lang"]}).process(table)
    with pytest.raises(ParamError, match="missing required parameter 'fields'"):
        create_operator("select_fields_mapper", {})


def test_mapper_on_missing_text_field_names_it():
    with pytest.raises(ParamError, match="clean_html_mapper.text_key: field 'body' is not in the data"):
        create_operator("clean_html_mapper", {"text_key": "body"}).process(pa.table({"text": ["x"]}))


def test_mappers_leave_marker_characters_alone():
    # The sentence and word splitters mark split points with a character absent from the batch.
    texts = ["a\x00b. a\x00b. c", "\ufdd0 x. \ufdd0 x."]
    assert run("remove_repeat_sentences_mapper", texts) == ["a\x00b. c", "\ufdd0 x."]
    assert run("remove_long_words_mapper", texts, max_len=3) == texts


@pytest.mark.parametrize("texts", [[], [None, None], [""]], ids=["no rows", "all null", "empty"])
def test_every_text_mapper_handles_degenerate_batches(texts):
    from sluice.operators.base import OPERATORS, load_builtin_operators
    from sluice.operators.text import latex, mappers

    load_builtin_operators()
    names = [n for n, c in OPERATORS.items()
             if c.__module__ in (mappers.__name__, latex.__name__) and "text_key" in c.__dataclass_fields__]
    assert {OPERATORS[n].__module__ for n in names} == {mappers.__name__, latex.__name__}  # both found
    for name in names:
        assert run(name, texts) == texts


# Pieces that make (or almost make) what each cleaning mapper looks for.
PIECES = ["word", "WWW", "www.", "ww", "w", "@", "a@b.org", "x.y", "/", "http://e.org/p", "e.org/x", ":", "::",
          "1.", "10.0.0.1", "255.255.255.255", "1:2:3:4:5:6:7:8", " ", "  ", "\n", " \n", "\n ", "\t", "\x0b",
          "\x0c", "\r", "\x7f", "\x1c", "&", "&amp;", "\u00a0", "\u200b", "\u3000", "\ufeff", "é", "Ã©", "“", "…",
          "—", "，", ".", "9", "K"]


def test_mappers_change_only_rows_that_could_match_and_leave_them_as_the_full_pattern_does():
    """The cleaning mappers run their patterns only on rows whose bytes hold what a match needs
    (`byte_flags`); the output equals running the patterns on every row."""
    from sluice.operators.text.mappers import PUNCTUATION_TO_ASCII, _collapse_spaces

    rng = random.Random(7)
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 12))) for _ in range(6000)] + [None]
    arr = pa.array(texts, pa.string())

    def whitespace(rows):
        rows = _collapse_spaces(pc.replace_substring_regex(rows, "[\u200b\u2060\ufeff]", ""))
        return pc.utf8_trim_whitespace(pc.replace_substring_regex(rows, " ?\n ?", "\n"))

    def punctuation(rows):
        for source, target in PUNCTUATION_TO_ASCII.items():
            rows = pc.replace_substring(rows, source, target)
        return rows

    references = {"whitespace_normalization_mapper": whitespace, "punctuation_normalization_mapper": punctuation,
                  "fix_unicode_mapper": lambda rows: [None if t is None else ftfy.fix_text(t, normalization="NFC")
                                                      for t in rows.to_pylist()]}
    for name in ("clean_email_mapper", "clean_links_mapper", "clean_ip_mapper"):
        pattern = create_operator(name, {}).pattern
        references[name] = lambda rows, pattern=pattern: pc.replace_substring_regex(rows, pattern, "")
    for name, reference in references.items():
        expected = reference(arr)
        expected = expected if isinstance(expected, list) else expected.to_pylist()
        assert sum(a != b for a, b in zip(expected, texts)) > 50, name  # the pieces make it change rows
        got = run(name, texts)
        assert got == expected, (name, next((t, g, e) for t, g, e in zip(texts, got, expected) if g != e))
