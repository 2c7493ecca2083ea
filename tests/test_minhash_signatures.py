"""MinHash signatures: datasketch-compatible values, estimate quality of the fast hash, shingling
rules and bad input (empty, short, non-Latin, huge documents). No Ray needed."""

import numpy as np
import pyarrow as pa
import pytest
import regex
from datasketch import LeanMinHash, MinHash, MinHashLSH

from sluice.operators import create_operator
from sluice.operators.base import ParamError
from sluice.operators.dedup import datasketch_internals
from sluice.operators.dedup import signatures as sg

TEXTS = [
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    "The quick brown fox jumps over the lazy cat, again and again and again.",
    "short one",
    "",
    None,
    "Ünïcödé  wörds   with  DOUBLE spaces,\nnew lines\tand tabs; punctuation! ok?",
    "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "x" * 300 + " y",
]


def reference_shingles(text, tokenization, window, lowercase=True, ignore=None):
    """Data-Juicer's shingling rules, written plainly; short documents are one shingle."""
    text = text or ""
    if lowercase:
        text = text.lower()
    if ignore:
        text = regex.sub(ignore, "", text)
    if not text:
        return set()
    if tokenization == "space":
        units, sep = [u for u in text.split(" ") if u], " "
    elif tokenization == "punctuation":
        units, sep = regex.split(r"\p{P}", text), " "
    else:
        units, sep = list(text), ""
    if not units:
        return set()
    width = min(window, len(units))
    return {sep.join(units[i:i + width]).encode() for i in range(len(units) - width + 1)}


def datasketch_hashvalues(shingles, num_perm, seed):
    m = MinHash(num_perm=num_perm, seed=seed)
    m.update_batch(list(shingles))
    return m.hashvalues


@pytest.mark.parametrize("tokenization", sg.TOKENIZATIONS)
@pytest.mark.parametrize("window", [1, 3, 5])
def test_compatible_mode_equals_datasketch(tokenization, window):
    shingling = sg.Shingling(tokenization, window, ignore_pattern=r"\d+")
    sig, has = sg.signatures(pa.array(TEXTS), shingling, 96, seed=7, datasketch_compatible=True)
    for text, row, present in zip(TEXTS, sig, has):
        shingles = reference_shingles(text, tokenization, window, ignore=r"\d+")
        assert present == bool(shingles)
        np.testing.assert_array_equal(row, datasketch_hashvalues(shingles, 96, 7), err_msg=repr(text))


def test_compatible_mode_equals_datasketch_bulk_on_long_documents():
    rng = np.random.default_rng(3)
    words = np.array([f"w{i}" for i in range(3000)])
    texts = [" ".join(words[rng.integers(0, 3000, 400)]) for _ in range(20)]
    sig, _ = sg.signatures(pa.array(texts), sg.Shingling(), 128, seed=1, datasketch_compatible=True)
    bulk = MinHash.bulk([sorted(reference_shingles(t, "space", 5)) for t in texts], num_perm=128, seed=1)
    np.testing.assert_array_equal(sig, np.stack([m.hashvalues for m in bulk]))


def test_signatures_load_into_datasketch_lsh_as_lean_minhash():
    texts = ["alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu",
             "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda nu",
             "completely different words make up this other sentence here today"]
    sig, _ = sg.signatures(pa.array(texts), sg.Shingling(window_size=2), 128, seed=5,
                           datasketch_compatible=True)
    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    for i, row in enumerate(sig):
        lsh.insert(i, LeanMinHash(seed=5, hashvalues=row, scheme="affine32"))
    query = MinHash(num_perm=128, seed=5)
    query.update_batch(list(reference_shingles(texts[0], "space", 2)))
    assert sorted(lsh.query(query)) == [0, 1]


def test_fast_hash_estimates_as_well_as_datasketch_hash():
    """Same permutations, different base hash: the Jaccard estimates must be as accurate."""
    rng = np.random.default_rng(11)
    words = np.array([f"tok{i}" for i in range(50_000)])
    pairs, exact = [], []
    for rate in np.repeat([0.01, 0.03, 0.06, 0.1, 0.2], 40):
        base = words[rng.integers(0, 50_000, 300)]
        edited = base.copy()
        hit = rng.random(300) < rate
        edited[hit] = words[rng.integers(0, 50_000, hit.sum())]
        a, b = " ".join(base), " ".join(edited)
        sa, sb = reference_shingles(a, "space", 5), reference_shingles(b, "space", 5)
        exact.append(len(sa & sb) / len(sa | sb))
        pairs += [a, b]
    exact = np.array(exact)
    errors = {}
    for compat in (False, True):
        sig, _ = sg.signatures(pa.array(pairs), sg.Shingling(), 128, seed=1, datasketch_compatible=compat)
        estimate = sg.estimated_jaccard(sig[0::2], sig[1::2])
        errors[compat] = np.sqrt(np.mean((estimate - exact) ** 2))
        assert abs(np.mean(estimate - exact)) < 0.01  # unbiased
    assert errors[False] < 1.2 * errors[True] and errors[False] < 0.05, errors


def test_short_empty_and_null_documents():
    texts = ["", None, "   ", "two words", "two words", "two other", "one"]
    sig, has = sg.signatures(pa.array(texts), sg.Shingling(window_size=5), 64)
    assert has.tolist() == [False, False, False, True, True, True, True]
    assert (sig[:3] == sg.MAX_HASH).all()
    np.testing.assert_array_equal(sig[3], sig[4])      # identical short documents match
    assert sg.estimated_jaccard(sig[3:4], sig[5:6])[0] < 0.1  # different ones do not


def test_ignore_pattern_can_remove_everything():
    sig, has = sg.signatures(pa.array(["123 456", "abc 123"]), sg.Shingling(ignore_pattern=r"\d"), 32)
    assert has.tolist() == [False, True]


def test_non_latin_scripts_need_character_shingles():
    a = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习并做出预测或者决定。"
    b = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习并做出预测或者决策。"
    by_char, has = sg.signatures(pa.array([a, b]), sg.Shingling("character", 3), 256)
    assert has.all() and sg.estimated_jaccard(by_char[:1], by_char[1:])[0] > 0.8
    # Without spaces a whole sentence is one word: only identical texts match, nothing fails.
    by_space, has = sg.signatures(pa.array([a, b, a]), sg.Shingling("space", 5), 64)
    assert has.all() and (by_space[0] == by_space[2]).all() and not (by_space[0] == by_space[1]).any()


@pytest.mark.parametrize("tokenization", sg.TOKENIZATIONS)
def test_lowercase_applies_to_all_scripts(tokenization):
    texts = pa.array(["ÉCOLE Straße ΑΘΗΝΑ", "école straße αθηνα", "The QUICK, Brown fox", "the quick, brown fox"])
    sig, _ = sg.signatures(texts, sg.Shingling(tokenization, window_size=2), 32)
    np.testing.assert_array_equal(sig[0], sig[1])
    np.testing.assert_array_equal(sig[2], sig[3])
    cased, _ = sg.signatures(texts, sg.Shingling(tokenization, window_size=2, lowercase=False), 32)
    assert (cased[2] != cased[3]).any() and (cased[3] == sig[3]).all()


def test_huge_document():
    rng = np.random.default_rng(5)
    words = np.array([f"w{i}" for i in range(100_000)])
    huge = words[rng.integers(0, 100_000, 1_000_000)]  # about 7 MB of text
    edited = huge.copy()
    edited[::1000] = "changed"
    sig, has = sg.signatures(pa.array([" ".join(huge), " ".join(edited)]), sg.Shingling(), 128)
    assert has.all()
    assert 0.9 < sg.estimated_jaccard(sig[:1], sig[1:])[0] < 1.0


def test_slices_chunks_and_large_strings_give_the_same_signatures():
    shingling = sg.Shingling("punctuation", 2)
    whole, _ = sg.signatures(pa.array(TEXTS), shingling, 32)
    sliced, _ = sg.signatures(pa.array(TEXTS).slice(2), shingling, 32)
    chunked, _ = sg.signatures(pa.chunked_array([TEXTS[:4], TEXTS[4:]]), shingling, 32)
    large, _ = sg.signatures(pa.array(TEXTS, pa.large_string()), shingling, 32)
    np.testing.assert_array_equal(whole[2:], sliced)
    np.testing.assert_array_equal(whole, chunked)
    np.testing.assert_array_equal(whole, large)


def test_bands_default_to_datasketch_optimum():
    for threshold in (0.7, 0.8, 0.85):
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        assert sg.optimal_bands(threshold, 128) == (lsh.b, lsh.r)
    op = create_operator("document_minhash_deduplicator", {"num_permutations": 128, "jaccard_threshold": 0.8})
    assert (op.bands, op.rows) == (9, 13)
    op = create_operator("document_minhash_deduplicator", {"num_permutations": 128, "num_bands": 16})
    assert (op.bands, op.rows) == (16, 8)


@pytest.mark.parametrize("installed, supported", [("1.6.5", True), ("2.0.0", True), ("1.5.3", False),
                                                  ("2.1.0", False), ("3.0.0.dev1", False)])
def test_datasketch_outside_the_pinned_range_is_refused_in_one_line(monkeypatch, installed, supported):
    monkeypatch.setattr(datasketch_internals, "version", lambda name: installed)
    datasketch_internals.check_datasketch.cache_clear()
    try:
        if supported:
            assert datasketch_internals.lsh_optimal_param(0.8, 128) == (9, 13)
        else:
            with pytest.raises(RuntimeError, match=rf"^datasketch {installed} is installed; .* "
                                                   r"pip install 'datasketch>=1.6,<2.1'$"):
                datasketch_internals.lsh_optimal_param(0.8, 128)
    finally:
        datasketch_internals.check_datasketch.cache_clear()


@pytest.mark.parametrize("params, where", [
    ({"tokenization": "sentencepiece"}, "tokenization"),
    ({"ignore_pattern": "(unclosed"}, "ignore_pattern"),
    ({"num_permutations": 64, "num_bands": 9, "num_rows_per_band": 13}, "num_bands"),
    ({"jaccard_threshold": 1.5}, "jaccard_threshold"),
    ({"cluster_column": "__cluster"}, "cluster_column"),
])
def test_bad_parameters_are_one_line_errors(params, where):
    with pytest.raises(ParamError) as info:
        create_operator("document_minhash_deduplicator", params)
    assert info.value.param == where and "\n" not in str(info.value)


def test_prepare_adds_internal_columns_and_rejects_nothing():
    op = create_operator("document_minhash_deduplicator", {"num_permutations": 32, "keep": "longest"})
    table = pa.table({"__id__": pa.array(range(len(TEXTS)), pa.int64()), "text": TEXTS})
    out = op.prepare(table)
    assert out.num_rows == table.num_rows and "__reject__" not in out.column_names
    assert {c for c in out.column_names if c not in table.column_names} == {"__minhash__", "__keep_score__"}
    assert out["__minhash__"].null_count == 2  # "" and None have no shingles
    with pytest.raises(ParamError, match="no column 'body'"):
        create_operator("document_minhash_deduplicator", {"text_key": "body"}).prepare(table)


def test_signatures_of_a_slice_are_its_own_rows():
    """A batch of a larger column (as a table's batches are) reads back only its own rows."""
    sig = np.arange(40, dtype=np.uint32).reshape(10, 4)
    column = sg.to_arrow(sig, np.ones(10, dtype=bool))
    assert (sg.from_arrow(column.slice(0, 3)) == sig[:3]).all()
    assert (sg.from_arrow(column.slice(4, 5)) == sig[4:9]).all()
    assert (sg.from_arrow(pa.chunked_array([column.slice(0, 2), column.slice(7, 2)])) == sig[[0, 1, 7, 8]]).all()
