"""What each row of a text column could hold, from one pass over its bytes.

A cleaning mapper can change only rows that hold what its pattern needs (an e-mail address
has an '@', a Unicode space a byte above 0x7f): it runs its regular expressions on those rows
and leaves the others as they are. One pass sets every flag for a batch (under 1 ns per
byte), where each mapper's regular expression scanned every row (about 2 ns per byte each).
The flags are kept for the batch, so the mappers of a fused stage that leave it unchanged
share them. A flag may be set where the pattern then finds nothing (a row with '/' holds no
link); it is never clear where the pattern would match.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.string_buffers import string_buffers
from sluice.operators.text.words import last_batch

NON_ASCII = 1 << 0     # a byte above 0x7f: any character beyond ASCII
CONTROL = 1 << 1       # a control character other than '\t', '\n' and '\x0c', or DEL
AMPERSAND = 1 << 2
AT_SIGN = 1 << 3
SLASH = 1 << 4
COLON = 1 << 5
WW = 1 << 6            # 'ww' in any case (every 'www' holds one)
DIGIT_DOT = 1 << 7     # a digit followed by '.'
TAB_VT_FF = 1 << 8     # '\t', '\x0b' or '\x0c'
DOUBLE_SPACE = 1 << 9
SPACE_AT_BREAK = 1 << 10   # ' ' before or after '\n'
SPACE_AT_END = 1 << 11     # the first or the last byte is ASCII whitespace or a control byte


def _byte_flags_table() -> np.ndarray:
    """The flags each byte value sets on its own."""
    table = np.zeros(256, dtype=np.uint16)
    table[0x80:] |= NON_ASCII
    for b in [*range(0x20), 0x7F]:
        if b not in (0x09, 0x0A, 0x0C):
            table[b] |= CONTROL
    for b in (0x09, 0x0B, 0x0C):
        table[b] |= TAB_VT_FF
    for char, flag in (("&", AMPERSAND), ("@", AT_SIGN), ("/", SLASH), (":", COLON)):
        table[ord(char)] |= flag
    return table


def _pair_flags_table() -> np.ndarray:
    """The flags a pair of bytes (first << 8 | second) sets: the second byte's own and the
    pair's."""
    single = _byte_flags_table()
    table = np.tile(single, 256).reshape(256, 256)
    for first, second, flag in ((" ", " ", DOUBLE_SPACE), (" ", "\n", SPACE_AT_BREAK), ("\n", " ", SPACE_AT_BREAK),
                                *((a, b, WW) for a in "wW" for b in "wW"),
                                *((d, ".", DIGIT_DOT) for d in "0123456789")):
        table[ord(first), ord(second)] |= flag
    return table.reshape(-1)


_SINGLE, _PAIRS = _byte_flags_table(), _pair_flags_table()


@numba.njit(cache=True, nogil=True)
def _flags(data, offsets, single, pairs):
    # One lookup per byte in a table of byte pairs (128 kB, in L2); two accumulators, so that
    # consecutive lookups do not wait for each other.
    out = np.zeros(len(offsets) - 1, dtype=np.uint16)
    for r in range(len(offsets) - 1):
        begin, end = offsets[r], offsets[r + 1]
        if begin == end:
            continue
        even, odd = np.int64(single[data[begin]]), np.int64(0)
        i = begin + 1
        while i + 1 < end:
            even |= pairs[(np.int64(data[i - 1]) << 8) | data[i]]
            odd |= pairs[(np.int64(data[i]) << 8) | data[i + 1]]
            i += 2
        if i < end:
            even |= pairs[(np.int64(data[i - 1]) << 8) | data[i]]
        if data[begin] <= 0x20 or data[end - 1] <= 0x20:
            even |= SPACE_AT_END
        out[r] = even | odd
    return out


@last_batch
def byte_flags(text: pa.Array) -> np.ndarray:
    """Per row, the OR of the flags above that its bytes set (0 for a null row)."""
    data, offsets = string_buffers(text)
    flags = _flags(data, offsets, _SINGLE, _PAIRS)
    if text.null_count:
        flags[text.is_null().to_numpy(zero_copy_only=False)] = 0
    return flags


def change_rows_with(text: pa.Array, wanted: int, change) -> pa.Array:
    """`change` (Array -> Array of as many rows) applied only to the rows with any of the flags
    `wanted`; the other rows stay as they are."""
    return change_where(text, (byte_flags(text) & wanted) != 0, change)


def change_where(text: pa.Array, mask: np.ndarray, change) -> pa.Array:
    """`change` applied only to the rows where `mask` (numpy bool) is true."""
    if not mask.any():
        return text
    if mask.all():
        return change(text)
    mask = pa.array(mask)
    return pc.replace_with_mask(text, mask, change(pc.filter(text, mask)))
