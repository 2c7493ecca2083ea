"""Removing repeated sentences from each text in one numba pass over its characters.

The pass gives exactly what these Arrow steps give (and what sluice computed with them before):
mark a split point around every line break and after every sentence end (a run of '.', '!',
'?', '…' or their full-width forms, with any closing quotes after it), split there, and compare
pieces by a key: the piece trimmed of whitespace (Arrow's definition), lowercased (Arrow's
`utf8_lower`), stripped of everything but ASCII letters and digits, CJK ideographs, tabs,
newlines and spaces. A piece is kept when it is a line break, when its key is shorter than the
minimum, or when no earlier piece of the text had its key. Splitting at the same place twice
(a sentence end before a line break) gives an empty piece, as Arrow's split does.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .words import _GOLDEN, _mix, _power_of_two, _same_tokens, arrow_lowercase, arrow_whitespace, codepoints, put_utf8


@numba.njit(inline="always")
def _ends_sentence(c):
    return c == 0x2E or c == 0x21 or c == 0x3F or c == 0x3002 or c == 0xFF01 or c == 0xFF1F or c == 0x2026


@numba.njit(inline="always")
def _closing_quote(c):
    return c == 0x22 or c == 0x2019 or c == 0x201D


@numba.njit(inline="always")
def _compared(c):
    return ((0x61 <= c <= 0x7A) or (0x41 <= c <= 0x5A) or (0x30 <= c <= 0x39) or (0x4E00 <= c <= 0x9FA5)
            or c == 0x20 or c == 0x09 or c == 0x0A)


@numba.njit(cache=True, nogil=True)
def _without_repeats(cps, offsets, lower, space, lowercase, only_compared, min_len, key_char, in_key, data):
    """Writes each row's kept pieces as UTF-8 into `data`; returns the rows' byte offsets and
    how many rows lost a piece. An ASCII character c counts in a key as key_char[c], where
    in_key[c] is 1 (tables, so that the common case is branch-free)."""
    rows = len(offsets) - 1
    out = np.zeros(rows + 1, dtype=np.int64)
    changed = 0
    longest = 0
    for r in range(rows):
        longest = max(longest, offsets[r + 1] - offsets[r])
    pieces = 2 * longest + 2
    cuts = np.empty(pieces + 1, dtype=np.int64)
    keys = np.empty(longest + 1, dtype=np.uint32)       # the keys of one row's pieces, one after another
    key_start = np.empty(pieces, dtype=np.int64)
    key_length = np.empty(pieces, dtype=np.int64)
    key_hash = np.empty(pieces, dtype=np.uint64)
    table = np.full(_power_of_two(2 * pieces), -1, dtype=np.int64)  # piece with the first of a key
    filled = np.empty(pieces, dtype=np.uint64)                       # the table's slots in use
    kept = np.empty(pieces, dtype=np.bool_)
    mask = np.uint64(len(table) - 1)
    size = 0
    for r in range(rows):
        begin, end = offsets[r], offsets[r + 1]
        n, i = 1, begin
        cuts[0] = begin
        while i < end:
            if cps[i] == 10:
                cuts[n], cuts[n + 1] = i, i + 1
                n += 2
                i += 1
            elif _ends_sentence(cps[i]):
                while i < end and _ends_sentence(cps[i]):
                    i += 1
                while i < end and _closing_quote(cps[i]):
                    i += 1
                cuts[n] = i
                n += 1
            else:
                i += 1
        cuts[n] = end
        used = firsts = 0
        for p in range(n):
            a, b = cuts[p], cuts[p + 1]
            newline = b == a + 1 and cps[a] == 10
            while a < b and space[cps[a]]:
                a += 1
            while b > a and space[cps[b - 1]]:
                b -= 1
            key_start[p] = used
            h = np.uint64(0)
            for j in range(a, b):
                c = np.uint32(cps[j])
                if c < 128:
                    c, counted = key_char[c], in_key[c]
                else:
                    c = lower[c] if lowercase else c
                    counted = not only_compared or _compared(c)
                keys[used] = c
                used += counted
                h = h * _GOLDEN + np.uint64(c) + np.uint64(1) if counted else h
            length = used - key_start[p]
            key_length[p], key_hash[p] = length, _mix(h + np.uint64(length))
            slot = key_hash[p] & mask
            first = True
            while table[slot] >= 0:
                q = table[slot]
                if key_hash[q] == key_hash[p] and key_length[q] == length and _same_tokens(
                        keys, key_start[q], key_start[p], length):
                    first = False
                    break
                slot = (slot + np.uint64(1)) & mask
            if first:
                table[slot] = p
                filled[firsts] = slot
                firsts += 1
            kept[p] = first or newline or length < min_len
        table[filled[:firsts]] = -1
        whole = kept[:n].all()
        changed += not whole
        if whole and cps.itemsize == 1:  # ASCII, as it was
            data[size:size + end - begin] = cps[begin:end]
            size += end - begin
        else:
            for p in range(n):
                if kept[p]:
                    for j in range(cuts[p], cuts[p + 1]):
                        size = put_utf8(data, size, cps[j])
        out[r + 1] = size
    return out, changed


def without_repeated_sentences(text: pa.Array, lowercase: bool, only_compared: bool, min_len: int) -> pa.Array:
    """`text` with every sentence whose key an earlier sentence of the same row had removed
    (see the module's docstring); null rows stay null."""
    cps, offsets = codepoints(text)
    lower = arrow_lowercase()
    key_char = lower[:128] if lowercase else np.arange(128, dtype=lower.dtype)
    in_key = np.array([not only_compared or _compared(c) for c in key_char], dtype=np.int64)
    data = np.empty(len(cps) * (1 if cps.itemsize == 1 else 4), dtype=np.uint8)
    byte_offsets, changed = _without_repeats(cps, offsets, lower, arrow_whitespace(), lowercase, only_compared,
                                             min_len, key_char, in_key, data)
    if not changed:
        return text
    validity = pc.is_valid(text).buffers()[1] if text.null_count else None
    result = pa.LargeStringArray.from_buffers(len(text), pa.py_buffer(byte_offsets), pa.py_buffer(data[:byte_offsets[-1]]),
                                              validity, text.null_count)
    return result.cast(text.type)
