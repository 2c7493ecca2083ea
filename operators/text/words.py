"""Helpers shared by the text operators: the text column, character classes, Data-Juicer's
word splitting and n-gram counting, all vectorized over a whole batch."""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.base import ParamError

MAX_CODEPOINT = 0x110000


def text_array(op, table: pa.Table) -> pa.Array:
    """The string column `op.text_key` as one Array; a clear error if absent or not text."""
    key = op.text_key
    if key not in table.column_names:
        raise ParamError(op.name, "text_key", f"field '{key}' is not in the data; fields: "
                         + ", ".join(table.column_names))
    column = table.column(key)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ParamError(op.name, "text_key", f"field '{key}' holds {column.type}, not text")
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def replace_column(table: pa.Table, key: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(key), key, values)


def _category_table(test) -> np.ndarray:
    chars = (chr(i) for i in range(MAX_CODEPOINT))
    return np.fromiter((test(c) for c in chars), dtype=bool, count=MAX_CODEPOINT)


def _is_special(c: str) -> bool:
    cat = unicodedata.category(c)
    return cat[0] in "PSZ" or cat in ("Cc", "Cf") or c in "0123456789" or "\ufe00" <= c <= "\ufe0f"


@functools.lru_cache(maxsize=None)
def char_class(kind: str) -> np.ndarray:
    """Boolean lookup table over all code points for one character class.

    `special`: Data-Juicer's idea of special characters, by Unicode category: punctuation (P*),
    symbols (S*, which holds the emoji), separators (Z*), control and format characters
    (whitespace, zero-width joiners), variation selectors, and the ASCII digits.
    `alnum`: Python's `str.isalnum`. `digit`: Unicode decimal digits (category Nd).
    """
    tests = {"special": _is_special, "alnum": str.isalnum,
             "digit": lambda c: unicodedata.category(c) == "Nd"}
    return _category_table(tests[kind])


@functools.lru_cache(maxsize=None)
def special_characters() -> str:
    return "".join(chr(i) for i in np.flatnonzero(char_class("special")))


def last_batch(fn):
    """Keep `fn(arr)` for the last array seen: the filters of one fused stage ask for the
    same batch's code points or words in turn. The array is kept with the result, so its
    buffers (the cache key) cannot be freed and reused by another batch meanwhile."""
    cache: list = []

    @functools.wraps(fn)
    def cached(arr: pa.Array):
        key = (tuple(b.address if b is not None else 0 for b in arr.buffers()), arr.offset, len(arr))
        entry = cache[0] if cache else None  # one read: safe if threads share the cache
        if entry is not None and entry[0] == key:
            return entry[2]
        result = fn(arr)
        cache[:] = [(key, arr, result)]
        return result

    cached.cache_clear = cache.clear
    return cached


@last_batch
def codepoints(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """All characters of a string array as code points, and per-row character offsets
    (length n+1). Null rows count as empty. One decode for the whole array, no per-row work;
    pure ASCII text is used as it is (one byte per code point, no copy)."""
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    lengths = pc.utf8_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    byte_offsets = np.frombuffer(arr.buffers()[1], dtype=off_type)[arr.offset:arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    if data is None or byte_offsets[-1] == byte_offsets[0]:
        return np.zeros(0, dtype=np.uint32), offsets
    raw = np.frombuffer(data, dtype=np.uint8)[byte_offsets[0]:byte_offsets[-1]]
    if len(raw) == offsets[-1]:
        return raw, offsets
    cps = np.frombuffer(raw.tobytes().decode("utf-8").encode("utf-32-le"), dtype=np.uint32)
    return cps, offsets


def prefix_counts(mask: np.ndarray) -> np.ndarray:
    """cumulative[i] = number of true entries in mask[:i] (length len(mask)+1)."""
    # Summing a uint8 view is several times faster than summing booleans into int64.
    dtype = np.int32 if len(mask) < 2**31 else np.int64
    cumulative = np.zeros(len(mask) + 1, dtype=dtype)
    np.cumsum(mask.view(np.uint8), dtype=dtype, out=cumulative[1:])
    return cumulative


def count_per_row(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Number of true entries of `mask` within each row's [offsets[i], offsets[i+1])."""
    cumulative = prefix_counts(mask)
    return (cumulative[offsets[1:]] - cumulative[offsets[:-1]]).astype(np.int64)


def with_nulls(values: np.ndarray, arr: pa.Array) -> pa.Array:
    """`values` as an Arrow array, null where the text `arr` is null."""
    mask = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    return pa.array(values, mask=mask)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0.0 where the denominator is 0 (Data-Juicer's convention)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


# ---- words ----

@dataclass
class Words:
    """A batch's words after Data-Juicer's refinement: split on ' ', '\\n' and '\\t', lowercased,
    special characters stripped from both ends, empty words dropped."""

    values: pa.Array        # the words of all rows, row after row
    counts: np.ndarray      # number of words per row
    offsets: np.ndarray     # row i's words are values[offsets[i]:offsets[i+1]]


@last_batch
def refined_words(arr: pa.Array) -> Words:
    """Split `arr` into refined words (see `Words`)."""
    spaced = pc.replace_substring(pc.replace_substring(arr, "\n", " "), "\t", " ")
    lists = pc.split_pattern(spaced, " ")
    flat = pc.utf8_trim(pc.utf8_lower(lists.flatten()), characters=special_characters())
    nonempty = pc.greater(pc.binary_length(flat), 0)
    parents = pc.filter(pc.list_parent_indices(lists), nonempty).to_numpy()
    counts = np.bincount(parents, minlength=len(arr)).astype(np.int64)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Words(pc.filter(flat, nonempty), counts, offsets)


def word_ids(words: Words) -> np.ndarray:
    """Each word as an integer: equal words get equal ids within the batch."""
    encoded = pc.dictionary_encode(words.values)
    return encoded.indices.to_numpy().astype(np.uint64)


# ---- n-grams ----

_HASH_BASE = 0x9E3779B97F4A7C15  # odd: multiplying by it modulo 2**64 loses no information


def window_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash (mod 2**64) of every window of `n` consecutive tokens.

    Windows are built by doubling (hashes of 1, 2, 4, ... tokens), so the cost is O(log n)
    passes over the array rather than n."""
    total = len(tokens)
    if total < n:
        return np.zeros(0, dtype=np.uint64)
    block = tokens.astype(np.uint64) + np.uint64(1)
    size, result, result_size = 1, None, 0
    with np.errstate(over="ignore"):
        while True:
            if n & size:
                if result is None:
                    result, result_size = block, size
                else:
                    keep = total - result_size - size + 1
                    shift = np.uint64(pow(_HASH_BASE, size, 1 << 64))
                    result = result[:keep] * shift + block[result_size:result_size + keep]
                    result_size += size
            if size * 2 > n:
                break
            keep = total - 2 * size + 1
            shift = np.uint64(pow(_HASH_BASE, size, 1 << 64))
            block = block[:keep] * shift + block[size:size + keep]
            size *= 2
    return result[:total - n + 1]


def _row_tails(offsets: np.ndarray, n: int, limit: int) -> np.ndarray:
    """Positions below `limit` where a window of n tokens would run past its row's end."""
    begin = np.maximum(offsets[:-1], offsets[1:] - n + 1)
    sizes = offsets[1:] - begin
    positions = np.arange(int(sizes.sum())) + np.repeat(begin - (np.cumsum(sizes) - sizes), sizes)
    return positions[positions < limit]


@dataclass
class NgramCounts:
    """Distinct n-grams per row: `row[g]` and `count[g]` for each distinct n-gram g, and the
    number of n-grams (with repeats) in each row."""

    row: np.ndarray
    count: np.ndarray
    totals: np.ndarray


def ngram_counts(tokens: np.ndarray, offsets: np.ndarray, n: int) -> NgramCounts:
    """Count the n-grams of tokens within each row (n-grams never cross rows).

    n-grams are compared by a 64-bit polynomial hash. A sort key holds the hash's low bits
    shifted up and the row number in the bits freed (the low bits of a polynomial hash mod
    2**64 depend on every token; its high bits would not separate n-grams that differ in the
    last token). Sorting puts equal (n-gram, row) pairs side by side. With at least 44 hash
    bits (up to 2**20 rows) two different n-grams of one document of m n-grams collide with
    probability about m**2 / 2**45: negligible for the ratios built on these counts."""
    rows = len(offsets) - 1
    lengths = np.diff(offsets)
    windows = np.maximum(lengths - n + 1, 0)
    total = int(windows.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return NgramCounts(empty, empty, windows)
    row_bits = max(1, int(rows).bit_length())
    keys = window_hashes(tokens, n) << np.uint64(row_bits)
    keys |= np.repeat(np.arange(rows, dtype=np.uint64), lengths)[:len(keys)]
    # Windows running past the end of their row get a key no real n-gram has (a real key's
    # row part is at most rows - 1 < 2**row_bits - 1): they sort last and are cut off.
    keys[_row_tails(offsets, n, len(keys))] = np.uint64((1 << 64) - 1)
    keys.sort()
    keys = keys[:total]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    count = np.diff(np.append(starts, len(keys)))
    row = (keys[starts] & np.uint64((1 << row_bits) - 1)).astype(np.int64)
    return NgramCounts(row, count, windows)


# ---- word lists ----

def load_word_list(kind: str, lang: str, directory: str = "") -> frozenset[str]:
    """Words of `<kind>_<lang>.txt` (one per line, '#' comments) from `directory`, or from the
    lists shipped with sluice when `directory` is empty. `lang='all'` merges every language."""
    folder = Path(directory) if directory else resources.files("sluice.operators.text") / "data"
    files = [p for p in folder.iterdir() if p.name.startswith(kind + "_") and p.name.endswith(".txt")]
    langs = {p.name[len(kind) + 1:-4]: p for p in files}
    if lang != "all" and lang not in langs:
        raise ValueError(f"no {kind} list for language '{lang}' in {folder}; "
                         f"available: {', '.join(sorted(langs)) or 'none'}, all")
    chosen = langs.values() if lang == "all" else [langs[lang]]
    words = set()
    for path in chosen:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip().lower()
            if line and not line.startswith("#"):
                words.add(line)
    return frozenset(words)


def free_marker(arr: pa.Array) -> str:
    """A character that occurs in no row of `arr`, to mark split points in a regex replace."""
    for candidate in ("\x00", "\ufdd0", "\ufdd1", "\ufdd2", "\ufdd3"):
        if not pc.any(pc.match_substring(arr, candidate)).as_py():
            return candidate
    raise ValueError("text holds every marker character sluice can use to split it")
