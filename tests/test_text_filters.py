"""Text filters on real text: stats against plain-Python versions of Data-Juicer's
definitions, thresholds, edge cases (empty, null, non-Latin scripts, very long words)."""

import collections
import inspect
import json
import math
import pydoc
import textwrap
import unicodedata

import numpy as np
import pyarrow as pa
import pytest

from sluice.operators.base import ParamError, create_operator
from sluice.operators.text.words import load_word_list

DOCSTRINGS = [inspect.getdoc(o) for o in (json.dumps, json.loads, collections.OrderedDict,
                                          textwrap.wrap, textwrap.dedent, str.split, dict.get)]
MODULE_DOC = pydoc.plain(pydoc.render_doc(json))
SPAM = "Buy cheap watches now! Buy cheap watches now! Buy cheap watches now! " * 8
OTHER_SCRIPTS = [
    "我们在这里测试中文文本。这是第二句话，没有空格分词。",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Это тест.",
    "هذا نص تجريبي باللغة العربية، يحتوي على بعض الكلمات والأرقام ١٢٣.",
    "Emoji 🎉🎉 party 🎉 time! ✨ Enjoy 👍 👍",
    "Σήμερα είναι 25/11 και η θερμοκρασία 12°C — καλή μέρα!",
]
EDGE = ["", " ", "\n\n", "x", "a" * 10_000, "word " + "z" * 5000 + " end.", "tab\tsep\r\nwin\rmac\x0bvt"]
CORPUS = DOCSTRINGS + [MODULE_DOC, SPAM] + OTHER_SCRIPTS + EDGE + [None]


def table(texts=CORPUS, **extra):
    return pa.table({"text": pa.array(texts, pa.string()), **extra})


def stats_of(name, texts=CORPUS, **params):
    op = create_operator(name, params)
    out = op.with_stats(table(texts))
    return {n: out.column("stats." + n).to_pylist() for n in op.stat_names}, op, out


# ---- plain-Python references (Data-Juicer's definitions) ----

def special(c):
    cat = unicodedata.category(c)
    return cat[0] in "PSZ" or cat in ("Cc", "Cf") or c in "0123456789" or "\ufe00" <= c <= "\ufe0f"


def strip_special(word):
    start, end = 0, len(word)
    while start < end and special(word[start]):
        start += 1
    while end > start and special(word[end - 1]):
        end -= 1
    return word[start:end]


def ref_words(text):
    words = [w for part in text.replace("\n", " ").replace("\t", " ").split(" ") for w in [part] if w]
    return [w for w in (strip_special(w.lower()) for w in words) if w]


def ref_char_rep(text, n):
    grams = collections.Counter(text[i:i + n] for i in range(len(text) - n + 1))
    if not grams:
        return 0.0
    freqs = sorted(grams.values(), reverse=True)
    k = min(int(np.sqrt(len(freqs))), len(freqs) - sum(1 for f in freqs if f == 1))
    return sum(freqs[:k]) / sum(freqs)


def ref_word_rep(text, n):
    words = ref_words(text)
    grams = collections.Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return sum(f for f in grams.values() if f > 1) / total if total else 0.0


def check(values, expected):
    assert len(values) == len(expected)
    for got, want in zip(values, expected):
        if want is None:
            assert got is None
        else:
            assert got == pytest.approx(want, abs=1e-12)


def per_text(fn, texts=CORPUS):
    return [None if t is None else fn(t) for t in texts]


# ---- stats against the references ----

@pytest.mark.parametrize("rep_len", [10, 5, 1])
def test_character_repetition_ratio_matches_reference(rep_len):
    stats, op, _ = stats_of("character_repetition_filter", rep_len=rep_len)
    name = "char_rep_ratio" if rep_len == 10 else f"char_rep_ratio_{rep_len}"
    assert op.stat_names == (name,)
    check(stats[name], per_text(lambda t: ref_char_rep(t, rep_len)))
    if rep_len == 10:
        spam, docs = stats[name][CORPUS.index(SPAM)], stats[name][:len(DOCSTRINGS)]
        assert spam > max(docs)  # repeated spam scores above prose


@pytest.mark.parametrize("rep_len", [10, 2, 1])
def test_word_repetition_ratio_matches_reference(rep_len):
    stats, op, _ = stats_of("word_repetition_filter", rep_len=rep_len)
    name = op.stat_names[0]
    assert name == ("word_rep_ratio" if rep_len == 10 else f"word_rep_ratio_{rep_len}")
    check(stats[name], per_text(lambda t: ref_word_rep(t, rep_len)))


def test_repetition_on_many_rows_matches_reference():
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(["ab", "cd", "ef", "gh."], size=rng.integers(0, 40)))
             for _ in range(300)]
    stats, _, _ = stats_of("character_repetition_filter", texts, rep_len=4)
    check(stats["char_rep_ratio_4"], per_text(lambda t: ref_char_rep(t, 4), texts))
    stats, _, _ = stats_of("word_repetition_filter", texts, rep_len=3)
    check(stats["word_rep_ratio_3"], per_text(lambda t: ref_word_rep(t, 3), texts))


def test_word_stats_with_many_distinct_words_match_reference():
    # Thousands of distinct words in mixed case, scripts and punctuation: the word table and
    # the distinct words' characters grow many times; equal words must still match across
    # rows and case.
    rng = np.random.default_rng(5)
    letters = list("abcdeABCDE") + ["é", "É", "ж", "Ж", "ß"]
    vocab = ["".join(rng.choice(letters, size=rng.integers(1, 12))) for _ in range(20000)]
    dressed = [w if rng.random() < 0.7 else f"({w}," for w in vocab] + ["the", "The.", "--"]
    texts = [" ".join(rng.choice(dressed, size=rng.integers(0, 800))) + "\n" for _ in range(60)]
    texts += [texts[0] + " " + texts[0]]  # a row repeating another's words exactly
    check(stats_of("words_num_filter", texts)[0]["num_words"], per_text(lambda t: len(ref_words(t)), texts))
    check(stats_of("word_repetition_filter", texts, rep_len=2)[0]["word_rep_ratio_2"],
          per_text(lambda t: ref_word_rep(t, 2), texts))
    stop = load_word_list("stopwords", "en")
    check(stats_of("stopwords_filter", texts)[0]["stopwords_ratio"],
          per_text(lambda t: sum(w in stop for w in ref_words(t)) / max(len(ref_words(t)), 1), texts))


def test_character_ratios_match_python():
    def share(test):
        return lambda t: sum(map(test, t)) / len(t) if t else 0.0

    check(stats_of("alphanumeric_filter")[0]["alnum_ratio"], per_text(share(str.isalnum)))
    check(stats_of("special_characters_filter")[0]["special_char_ratio"], per_text(share(special)))
    check(stats_of("digit_ratio_filter")[0]["digit_ratio"],
          per_text(share(lambda c: unicodedata.category(c) == "Nd")))
    arabic = CORPUS.index(OTHER_SCRIPTS[2])
    assert stats_of("digit_ratio_filter")[0]["digit_ratio"][arabic] == pytest.approx(
        3 / len(OTHER_SCRIPTS[2]))  # Arabic-Indic digits count


def test_lengths_words_and_lines_match_python():
    check(stats_of("text_length_filter")[0]["text_len"], per_text(len))
    check(stats_of("words_num_filter")[0]["num_words"], per_text(lambda t: len(ref_words(t))))
    check(stats_of("average_line_length_filter")[0]["avg_line_length"],
          per_text(lambda t: len(t) / len(t.splitlines()) if t.splitlines() else 0.0))
    check(stats_of("maximum_line_length_filter")[0]["max_line_length"],
          per_text(lambda t: max(map(len, t.splitlines()), default=0)))


def test_word_list_ratios_match_python():
    stop, flagged = load_word_list("stopwords", "en"), load_word_list("flagged_words", "en")

    def share(words):
        return lambda t: (sum(w in words for w in ref_words(t)) / len(ref_words(t))
                          if ref_words(t) else 0.0)

    check(stats_of("stopwords_filter")[0]["stopwords_ratio"], per_text(share(stop)))
    texts = CORPUS + ["What the fuck, this shit is crap.", "FUCK!!! fuck."]
    flagged_ratio = stats_of("flagged_words_filter", texts)[0]["flagged_words_ratio"]
    check(flagged_ratio, per_text(share(flagged), texts))
    assert flagged_ratio[-2:] == [pytest.approx(2 / 7), 1.0]


# ---- keeping and dropping ----

def kept(name, texts, **params):
    op = create_operator(name, params)
    return op.keep(op.with_stats(table(texts))).to_pylist()


def test_thresholds_keep_and_drop_rows():
    texts = [DOCSTRINGS[0], SPAM, "too short", "", None]
    assert kept("text_length_filter", texts, min_len=10, max_len=5000) == [True, True, False, False, False]
    assert kept("words_num_filter", texts, min_num=2) == [True, True, True, False, False]
    assert kept("character_repetition_filter", texts, max_ratio=0.15) == [True, False, True, True, False]
    assert kept("word_repetition_filter", texts, rep_len=3) == [True, False, True, True, False]
    assert kept("stopwords_filter", texts, min_ratio=0.3) == [True, False, True, False, False]
    assert kept("alphanumeric_filter", ["!!!???", "plain words", ""]) == [False, True, False]
    assert kept("special_characters_filter", ["!!!???", "plain words"]) == [False, True]
    assert kept("digit_ratio_filter", ["1234 5678", "no digits"], max_ratio=0.5) == [False, True]
    assert kept("flagged_words_filter", ["damn fine coffee", "porn porn xxx"]) == [True, False]
    lines = ["short\nlines\nhere", "one long line of text that goes on"]
    assert kept("average_line_length_filter", lines) == [False, True]
    assert kept("maximum_line_length_filter", lines, max_len=20) == [False, False]
    assert kept("maximum_line_length_filter", lines, min_len=1, max_len=20) == [True, False]


def test_existing_stats_are_reused_not_recomputed():
    op = create_operator("text_length_filter", {"min_len": 5})
    given = table(["long enough text", "tiny"], **{"stats.text_len": pa.array([1, 100], pa.int64())})
    assert op.with_stats(given) is given
    assert op.keep(given).to_pylist() == [False, True]


def test_stat_names_follow_parameters_that_change_values(tmp_path):
    assert create_operator("stopwords_filter", {}).stat_names == ("stopwords_ratio",)
    (tmp_path / "stopwords_en.txt").write_text("alpha\nbeta\n")
    custom = create_operator("stopwords_filter", {"stopwords_dir": str(tmp_path)})
    assert custom.stat_names[0].startswith("stopwords_ratio_")
    stats = custom.with_stats(table(["alpha beta gamma delta"])).column("stats." + custom.stat_names[0])
    assert stats.to_pylist() == [0.5]
    both = create_operator("flagged_words_filter", {"lang": "all"})
    assert both.stat_names == ("flagged_words_ratio_all",)


# ---- language identification ----

def test_language_id_scores_and_keeps_languages():
    texts = [DOCSTRINGS[0], "Der schnelle braune Fuchs springt über den faulen Hund und läuft "
             "danach schnell nach Hause.", OTHER_SCRIPTS[1], "", None]
    stats, op, out = stats_of("language_id_score_filter", texts, lang=["en", "de"], min_score=0.8)
    assert stats["lang"][:3] == ["en", "de", "ru"]
    assert all(s > 0.9 for s in stats["lang_score"][:3])
    assert stats["lang"][4] is None and stats["lang_score"][4] is None
    assert op.keep(out).to_pylist() == [True, True, False, False, False]
    anything = create_operator("language_id_score_filter", {"min_score": 0.8})
    assert anything.keep(out).to_pylist() == [True, True, True, False, False]


def test_language_scores_match_langid_per_text():
    from sluice.operators.text import language
    from sluice.operators.text.language import language_identifier

    base = CORPUS + DOCSTRINGS + OTHER_SCRIPTS + ["THE Straße\nIS Long AND wide", "SHOUTED\nENGLISH TEXT, ALL CAPS"]
    # several batches of texts (BATCH), walked in lockstep lanes of unequal lengths
    texts = [t if t is None else t[:len(t) * (i % 7 + 1) // 7] for i, t in enumerate(base * 9)]
    assert len(texts) > 2 * language.BATCH
    stats = stats_of("language_id_score_filter", texts)[0]
    classify = language_identifier().langid.classify
    expected = per_text(lambda t: classify(t.lower().replace("\n", " ")), texts)
    assert stats["lang"] == [None if e is None else e[0] for e in expected]
    check(stats["lang_score"], [None if e is None else e[1] for e in expected])


@pytest.mark.parametrize("texts", [[], [None, None], [""], [None, CORPUS[0], None, "", CORPUS[1]]],
                         ids=["no rows", "all null", "empty", "nulls among texts"])
def test_every_text_filter_handles_degenerate_batches(texts, tmp_path):
    """A null row is dropped (kept only by an expression that asks for nulls) and has null
    stats; the other rows are judged as they are without the null rows beside them."""
    from dj_fixtures import write_arpa
    from sluice.operators.base import OPERATORS, load_builtin_operators
    from sluice.operators.text import filters

    load_builtin_operators()
    names = [n for n, c in OPERATORS.items() if c.__module__ == filters.__name__ and n != "suffix_filter"]
    write_arpa(tmp_path / "en.arpa", [["a", "b"]])
    special = {"field_expression_filter": {"expression": "text is None or text != ''"},
               "text_length_filter": {"min_len": 1},
               "perplexity_filter": {"model_path": str(tmp_path / "en.arpa")}}
    assert set(special) <= set(names)  # the parameters above reach filters that exist
    present = [t for t in texts if t is not None]
    for name in names:
        op = create_operator(name, special.get(name, {}))
        stats = op.with_stats(table(texts))
        mask = op.keep(stats).to_pylist()
        alone = op.keep(op.with_stats(table(present))).to_pylist()
        null_kept = name == "field_expression_filter"
        assert [m for m, t in zip(mask, texts) if t is None] == [null_kept] * texts.count(None), name
        assert [m for m, t in zip(mask, texts) if t is not None] == alone, name
        for n in op.stat_names:
            column = stats.column("stats." + n)
            assert [column[i].is_valid for i, t in enumerate(texts) if t is None] == [False] * texts.count(None), name


# ---- bad input ----

def test_clear_errors():
    with pytest.raises(ParamError, match="text_key: field 'body' is not in the data; fields: text"):
        create_operator("text_length_filter", {"text_key": "body"}).with_stats(table(["x"]))
    with pytest.raises(ParamError, match="holds int64, not text"):
        create_operator("words_num_filter", {}).with_stats(pa.table({"text": [1, 2]}))
    with pytest.raises(ParamError, match="tokenizer_model: model file 'nowhere.model' does not exist"):
        create_operator("word_repetition_filter", {"tokenization": True, "tokenizer_model": "nowhere.model"})
    with pytest.raises(ParamError, match="no stopwords list for language 'xx'.*available: en, zh, all"):
        create_operator("stopwords_filter", {"lang": "xx"})
    with pytest.raises(ParamError, match="rep_len: 0 is below the minimum 1"):
        create_operator("character_repetition_filter", {"rep_len": 0})


def test_chunked_and_large_string_columns():
    texts = [DOCSTRINGS[1], SPAM, None, OTHER_SCRIPTS[0]]
    chunked = pa.table({"text": pa.chunked_array([texts[:2], texts[2:]], pa.large_string())})
    op = create_operator("character_repetition_filter", {})
    check(op.with_stats(chunked).column("stats.char_rep_ratio").to_pylist(),
          per_text(lambda t: ref_char_rep(t, 10), texts))


# ---- in a Pipeline ----

def test_filters_in_one_pipeline_keep_the_rows_every_reference_keeps(ray_session, tmp_path):
    from sluice.operators import Pipeline

    ops = [create_operator(n, p) for n, p in [
        ("text_length_filter", {"min_len": 20}), ("words_num_filter", {"min_num": 5}),
        ("character_repetition_filter", {"max_ratio": 0.15}), ("stopwords_filter", {"min_ratio": 0.1}),
        ("field_expression_filter", {"expression": "stats.num_words < 1000"})]]
    texts = DOCSTRINGS + [SPAM, "tiny", "", MODULE_DOC]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    rows = Pipeline(ops).run(str(tmp_path / "in.jsonl"), output=tmp_path / "out", quiet=True,
                             keep_stats=True).table().to_pylist()
    stop = load_word_list("stopwords", "en")
    expected = [t for t in texts if len(t) >= 20 and 5 <= len(ref_words(t)) < 1000
                and ref_char_rep(t, 10) <= 0.15
                and sum(w in stop for w in ref_words(t)) >= 0.1 * len(ref_words(t))]
    assert 0 < len(expected) < len(texts)
    assert sorted(r["text"] for r in rows) == sorted(expected)
    assert math.isclose(rows[0]["stats.text_len"], len(rows[0]["text"]))


def test_language_tables_come_from_the_cache_and_a_damaged_cache_file_is_rebuilt(tmp_path, monkeypatch):
    from sluice.operators.text import language

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = language._model_tables()
    (stored,) = (tmp_path / "sluice" / "langid").iterdir()
    again = language._model_tables()
    assert all((again[k] == built[k]).all() for k in built)
    stored.write_bytes(stored.read_bytes()[:1000])
    rebuilt = language._model_tables()
    assert all((rebuilt[k] == built[k]).all() for k in built) and stored.stat().st_size > 1000
