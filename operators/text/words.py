"""Helpers shared by the text operators: the text column, character classes, Data-Juicer's
word splitting and n-gram counting, each over a whole batch (numba kernels where a pass over
every character or word is needed; the filters of a fused stage share one split per batch)."""

from __future__ import annotations

import functools
import threading
import unicodedata
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.base import ParamError
from sluice.operators.once import built_once
from sluice.operators.splitmix import GOLDEN_GAMMA, splitmix64_mix
from sluice.operators.string_buffers import string_buffers

MAX_CODEPOINT = 0x110000
_GOLDEN = np.uint64(GOLDEN_GAMMA)  # base of the polynomial hashes of words and n-grams


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


@built_once()
def char_class(kind: str) -> np.ndarray:
    """Boolean lookup table over all code points for one character class.

    `special`: Data-Juicer's idea of special characters, by Unicode category: punctuation (P*),
    symbols (S*, which holds the emoji), separators (Z*), control and format characters
    (whitespace, zero-width joiners), variation selectors, and the ASCII digits.
    `alnum`: Python's `str.isalnum`. `alpha`: `str.isalpha`. `digit`: Unicode decimal digits (category Nd).
    """
    tests = {"special": _is_special, "alnum": str.isalnum, "alpha": str.isalpha,
             "digit": lambda c: unicodedata.category(c) == "Nd"}
    return _category_table(tests[kind])


@built_once()
def _every_character() -> tuple[np.ndarray, pa.StringArray]:
    """Every code point but the surrogates, and the same as strings of one character each: Arrow's
    own kernels over them give lookup tables that agree with those kernels exactly."""
    points = np.concatenate([np.arange(0xD800), np.arange(0xE000, MAX_CODEPOINT)]).astype(np.uint32)
    widths = np.select([points < 0x80, points < 0x800, points < 0x10000], [1, 2, 3], 4)
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int32)
    data = points.tobytes().decode("utf-32-le").encode("utf-8")
    return points, pa.StringArray.from_buffers(len(points), pa.py_buffer(offsets), pa.py_buffer(data))


@built_once()
def arrow_lowercase() -> np.ndarray:
    """Code point -> code point of its lowercase under Arrow's `utf8_lower` (one for one)."""
    points, chars = _every_character()
    lowered = pc.utf8_lower(chars)
    assert pc.all(pc.equal(pc.utf8_length(lowered), 1)).as_py(), "a lowercase of several characters"
    lower = np.arange(MAX_CODEPOINT, dtype=np.uint32)
    lower[points] = np.frombuffer(lowered.buffers()[2].to_pybytes().decode("utf-8").encode("utf-32-le"),
                                  dtype=np.uint32)
    return lower


def _table(points: np.ndarray, values: pa.Array) -> np.ndarray:
    table = np.zeros(MAX_CODEPOINT, dtype=bool)
    table[points] = values.to_numpy(zero_copy_only=False)
    return table


@built_once()
def arrow_matches(pattern: str) -> np.ndarray:
    """Per code point, whether Arrow's regex `pattern` matches that character."""
    points, chars = _every_character()
    return _table(points, pc.match_substring_regex(chars, pattern))


@built_once()
def arrow_whitespace() -> np.ndarray:
    """Per code point, whether Arrow's `utf8_trim_whitespace` trims it."""
    points, chars = _every_character()
    return _table(points, pc.equal(pc.utf8_trim_whitespace(chars), ""))


@built_once()
def special_characters() -> str:
    return "".join(chr(i) for i in np.flatnonzero(char_class("special")))


def last_batch(fn):
    """Keep `fn(arr)` for the last array seen by this thread: the filters of one fused stage ask
    for the same batch's code points or words in turn (a local run's threads each run a stage). The array is kept with the result, so its
    buffers (the cache key) cannot be freed and reused by another batch meanwhile. An array
    at other addresses with equal contents also hits (a fused stage filters the table after
    each filter, which copies the text even when every row is kept); comparing costs a
    memcmp, far less than recomputing."""
    cache = threading.local()

    @functools.wraps(fn)
    def cached(arr: pa.Array):
        key = (tuple(b.address if b is not None else 0 for b in arr.buffers()), arr.offset, len(arr))
        entry = getattr(cache, "entry", None)
        if entry is not None and (entry[0] == key or entry[1].equals(arr)):
            return entry[2]
        result = fn(arr)
        cache.entry = (key, arr, result)
        return result

    cached.cache_clear = lambda: vars(cache).clear()
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
    data, byte_offsets = string_buffers(arr)
    if byte_offsets[-1] == byte_offsets[0]:
        return np.zeros(0, dtype=np.uint32), offsets
    raw = data[byte_offsets[0]:byte_offsets[-1]]
    if len(raw) == offsets[-1]:
        return raw, offsets
    cps = np.frombuffer(raw.tobytes().decode("utf-8").encode("utf-32-le"), dtype=np.uint32)
    return cps, offsets


@numba.njit(cache=True, nogil=True)
def count_in(member, values, offsets):
    """Per row i, how many of values[offsets[i]:offsets[i+1]] are marked in the boolean
    lookup table `member` (code points in a character class, word ids in a word list)."""
    counts = np.zeros(len(offsets) - 1, dtype=np.int64)
    for r in range(len(offsets) - 1):
        hits = 0
        for j in range(offsets[r], offsets[r + 1]):
            hits += member[values[j]]
        counts[r] = hits
    return counts


CHARACTER_CLASSES = ("special", "alnum", "alpha", "digit")


@built_once()
def _class_bits() -> np.ndarray:
    """Per code point, bit i set when it is in CHARACTER_CLASSES[i]."""
    bits = np.zeros(MAX_CODEPOINT, dtype=np.uint8)
    for i, kind in enumerate(CHARACTER_CLASSES):
        bits[char_class(kind)] |= 1 << i
    return bits


@numba.njit(cache=True, nogil=True)
def _class_counts(bits, cps, offsets):
    counts = np.zeros((len(offsets) - 1, 4), dtype=np.int64)
    for r in range(len(offsets) - 1):
        special = alnum = alpha = digit = 0
        for j in range(offsets[r], offsets[r + 1]):
            b = bits[cps[j]]
            special += b & 1
            alnum += (b >> 1) & 1
            alpha += (b >> 2) & 1
            digit += b >> 3
        counts[r, 0], counts[r, 1], counts[r, 2], counts[r, 3] = special, alnum, alpha, digit
    return counts


@last_batch
def class_counts(arr: pa.Array) -> dict[str, np.ndarray]:
    """Per row, how many of its characters are in each of CHARACTER_CLASSES (see `char_class`):
    one pass for the filters of a batch that each want one class."""
    cps, offsets = codepoints(arr)
    counts = _class_counts(_class_bits(), cps, offsets)
    return {kind: counts[:, i] for i, kind in enumerate(CHARACTER_CLASSES)}


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

@built_once()
def lowercase() -> np.ndarray:
    """Code point -> code point of its lowercase (Python's `str.lower`). U+0130 (İ), the one
    character whose lowercase is two characters, maps to 'i' as in Arrow's `utf8_lower`."""
    everything = "".join(map(chr, range(MAX_CODEPOINT))).replace("\u0130", "I").lower()
    return np.frombuffer(everything.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclass
class Words:
    """A batch's words after Data-Juicer's refinement: split on ' ', '\\n' and '\\t', lowercased,
    special characters stripped from both ends, empty words dropped."""

    ids: np.ndarray         # the words of all rows, row after row, as indices into `vocab`
    vocab: pa.Array         # the distinct words of the batch
    counts: np.ndarray      # number of words per row
    offsets: np.ndarray     # row i's words are ids[offsets[i]:offsets[i+1]]


_mix = numba.njit(inline="always")(splitmix64_mix)  # spreads a polynomial hash into its high bits


@numba.njit(inline="always")
def _same_word(chars, start, cps, a, length, lower):
    for k in range(length):
        if chars[start + k] != lower[cps[a + k]]:
            return False
    return True


# One slot of the distinct-word hash table: the word's id and hash, and where its lowercase
# characters lie in the batch's `chars` (one record per slot: one cache miss per probe; the
# distinct words' characters are few and close together, unlike their first occurrences).
_WORD_SLOT = np.dtype([("id", np.int64), ("hash", np.uint64), ("start", np.int64), ("length", np.int64)])


@numba.njit(cache=True, nogil=True)
def _word_table(size, old):
    """An empty table of `size` slots (a power of two) holding the entries of `old`."""
    table = np.empty(size, dtype=_WORD_SLOT)
    for slot in range(size):
        table[slot].id = -1
    mask = np.uint64(size - 1)
    for entry in old:
        if entry.id >= 0:
            slot = entry.hash & mask
            while table[slot].id >= 0:
                slot = (slot + np.uint64(1)) & mask
            table[slot] = entry
    return table


@numba.njit(cache=True, nogil=True)
def _add_words(cps, offsets, lower, special, table, row, ids, counts, distinct, words, chars, used):
    """Split rows row, row+1, ... into refined words (see `Words`) and look each up in `table`
    (open addressing; equal hashes confirmed character by character), adding new ones, whose
    lowercase characters go to chars[used:]. Stops before a row that could fill the table more
    than half or overflow `chars`; returns (that row, distinct words, words so far, chars used)."""
    mask = np.uint64(len(table) - 1)
    base = _GOLDEN
    while row < len(offsets) - 1:
        i, end_of_row = offsets[row], offsets[row + 1]
        if 2 * (distinct + (end_of_row - i + 1) // 2) > len(table) or used + end_of_row - i > len(chars):
            break
        while i < end_of_row:
            while i < end_of_row and (cps[i] == 32 or cps[i] == 10 or cps[i] == 9):
                i += 1
            begin = i
            while i < end_of_row and not (cps[i] == 32 or cps[i] == 10 or cps[i] == 9):
                i += 1
            a, b = begin, i
            while a < b and special[lower[cps[a]]]:
                a += 1
            while b > a and special[lower[cps[b - 1]]]:
                b -= 1
            if a == b:
                continue
            h = np.uint64(0)
            for j in range(a, b):
                h = h * base + np.uint64(lower[cps[j]])
            h = _mix(h)
            slot = h & mask
            while True:
                entry = table[slot]
                if entry.id < 0:
                    entry.id, entry.hash, entry.start, entry.length = distinct, h, used, b - a
                    for j in range(a, b):
                        chars[used] = lower[cps[j]]
                        used += 1
                    distinct += 1
                    break
                if entry.hash == h and entry.length == b - a and _same_word(chars, entry.start, cps, a, b - a, lower):
                    break
                slot = (slot + np.uint64(1)) & mask
            ids[words] = entry.id
            words += 1
            counts[row] += 1
        row += 1
    return row, distinct, words, used


def _split_words(cps, offsets, lower, special):
    """Per word its distinct word's id, per row the word count, and the distinct words in id
    order: their lowercase characters and where each starts in them, and its length."""
    rows = len(offsets) - 1
    ids = np.empty((len(cps) + rows) // 2 + 1, dtype=np.int32)
    counts = np.zeros(rows, dtype=np.int64)
    table = _word_table(1024, np.empty(0, dtype=_WORD_SLOT))
    chars = np.empty(1 << 16, dtype=np.uint32)
    row = distinct = words = used = 0
    while True:
        row, distinct, words, used = _add_words(cps, offsets, lower, special, table, row, ids, counts,
                                                distinct, words, chars, used)
        if row == rows:
            break
        row_length = offsets[row + 1] - offsets[row]
        if 2 * (distinct + (row_length + 1) // 2) > len(table):
            table = _word_table(2 * len(table), table)
        if used + row_length > len(chars):
            chars = np.concatenate([chars, np.empty(max(len(chars), row_length), dtype=np.uint32)])
    entries = table[table["id"] >= 0]
    entries = entries[np.argsort(entries["id"])]
    return ids[:words], counts, chars[:used], entries["start"].copy(), entries["length"].copy()


@numba.njit(inline="always")
def put_utf8(data, size, c):
    """Writes code point `c` as UTF-8 at data[size:]; returns the new size."""
    if c < 0x80:
        data[size] = c
        return size + 1
    if c < 0x800:
        data[size], data[size + 1] = 0xC0 | (c >> 6), 0x80 | (c & 0x3F)
        return size + 2
    if c < 0x10000:
        data[size], data[size + 1] = 0xE0 | (c >> 12), 0x80 | ((c >> 6) & 0x3F)
        data[size + 2] = 0x80 | (c & 0x3F)
        return size + 3
    data[size], data[size + 1] = 0xF0 | (c >> 18), 0x80 | ((c >> 12) & 0x3F)
    data[size + 2], data[size + 3] = 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)
    return size + 4


@numba.njit(cache=True, nogil=True)
def _utf8(chars, starts, lengths):
    """The characters chars[starts[i]:starts[i]+lengths[i]] for every i, as UTF-8 bytes and
    int64 offsets (an Arrow large_string array's buffers)."""
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    data = np.empty(4 * lengths.sum(), dtype=np.uint8)
    size = 0
    for i in range(len(starts)):
        for j in range(starts[i], starts[i] + lengths[i]):
            size = put_utf8(data, size, chars[j])
        offsets[i + 1] = size
    return data[:size], offsets


@last_batch
def refined_words(arr: pa.Array) -> Words:
    """Split `arr` into refined words (see `Words`)."""
    cps, char_offsets = codepoints(arr)
    lower = lowercase()
    ids, counts, chars, starts, lengths = _split_words(cps, char_offsets, lower, char_class("special"))
    data, vocab_offsets = _utf8(chars, starts, lengths)
    vocab = pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(vocab_offsets), pa.py_buffer(data))
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Words(ids, vocab, counts, offsets)


# ---- n-grams ----

# One slot of the n-gram hash table (16 bytes); `first` is where the n-gram first occurs,
# counted from the row's start; count 0 marks an empty slot.
_NGRAM_SLOT = np.dtype([("hash", np.uint64), ("first", np.int32), ("count", np.int32)])


@numba.njit(inline="always")
def _same_tokens(tokens, a, b, n):
    for k in range(n):
        if tokens[a + k] != tokens[b + k]:
            return False
    return True


@numba.njit(inline="always")
def _power_of_two(at_least):
    size = 1
    while size < at_least:
        size *= 2
    return size


@numba.njit(cache=True, nogil=True)
def _repetition(tokens, offsets, n, top):
    """Per row, the share of its n-grams that repeat (see `ngram_repetition`).

    n-grams are hashed with a rolling polynomial hash. Most n-grams of a text occur once, so a
    first pass counts hashes in a small array of counters that saturate at 2 (a few n-grams
    share a counter): an n-gram whose counter stays at 1 occurs once. Only the others go
    through an open-addressing hash table, where equal hashes are confirmed token by token,
    so the counts are exact. Memory: at most about 90 bytes per n-gram of the longest row."""
    rows = len(offsets) - 1
    out = np.zeros(rows, dtype=np.float64)
    longest = 0
    for r in range(rows):
        longest = max(longest, offsets[r + 1] - offsets[r] - n + 1)
    hashes = np.empty(max(longest, 0), dtype=np.uint64)
    marks = np.zeros(_power_of_two(8 * longest), dtype=np.uint8)
    table = np.zeros(_power_of_two(2 * longest), dtype=_NGRAM_SLOT)
    used = np.empty(max(longest, 0), dtype=np.int64)
    base = _GOLDEN
    drop = np.uint64(1)                            # base ** (n - 1): weight of the oldest token
    for _ in range(n - 1):
        drop *= base
    for r in range(rows):
        begin, windows = offsets[r], offsets[r + 1] - offsets[r] - n + 1
        if windows <= 0:
            continue
        mark_mask = np.uint64(_power_of_two(8 * windows) - 1)
        h = np.uint64(0)
        for j in range(begin, begin + n - 1):
            h = h * base + np.uint64(tokens[j]) + np.uint64(1)
        for w in range(windows):
            h = h * base + np.uint64(tokens[begin + w + n - 1]) + np.uint64(1)
            hashes[w] = _mix(h)
            h -= (np.uint64(tokens[begin + w]) + np.uint64(1)) * drop
            mark = hashes[w] & mark_mask
            marks[mark] = min(marks[mark] + 1, 2)
        mask = np.uint64(_power_of_two(2 * windows) - 1)
        distinct = candidates = 0
        for w in range(windows):
            h = hashes[w]
            if marks[h & mark_mask] == 1:
                distinct += 1
                continue
            slot = (h >> np.uint64(32)) & mask
            while True:
                entry = table[slot]
                if entry.count == 0:
                    entry.hash, entry.first, entry.count = h, w, 1
                    used[candidates] = slot
                    candidates += 1
                    break
                if entry.hash == h and _same_tokens(tokens, begin + entry.first, begin + w, n):
                    entry.count += 1
                    break
                slot = (slot + np.uint64(1)) & mask
        marks[:mark_mask + np.uint64(1)] = 0
        repeated = np.empty(candidates, dtype=np.int64)
        m = 0
        for u in range(candidates):
            c = table[used[u]].count
            table[used[u]].count = 0
            if c > 1:
                repeated[m] = c
                m += 1
        distinct += candidates
        if top:
            k = min(int(np.sqrt(distinct)), m)
            shown = np.sort(repeated[:m])[m - k:].sum() if k else 0
        else:
            shown = repeated[:m].sum()
        out[r] = shown / windows
    return out


def ngram_repetition(tokens: np.ndarray, offsets: np.ndarray, n: int, top: bool) -> np.ndarray:
    """Data-Juicer's repetition ratios of the n-grams of tokens within each row (n-grams never
    cross rows), 0.0 for rows of fewer than n tokens.

    `top=False`: the share of n-grams that occur more than once (word repetition).
    `top=True`: the share taken by the k most frequent n-grams, with k = min(floor(sqrt(number
    of distinct n-grams)), number of n-grams occurring more than once) (character repetition)."""
    return _repetition(tokens, offsets.astype(np.int64), n, top)


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
