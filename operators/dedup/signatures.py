"""MinHash signatures for whole batches of text: shingling and hashing in numba kernels.

A document becomes a set of shingles: `window_size` consecutive units, where a unit is a
space-separated word (`space`), a piece between punctuation marks (`punctuation`) or a
character (`character`), after optional lowercasing and removal of `ignore_pattern`. These
rules are Data-Juicer's. A document with fewer units than the window has one shingle: all
its units. An empty text (after normalization) has no units, so no shingles and no signature.

Each shingle gets a 32-bit base hash, then datasketch's `affine32` scheme: the MurmurHash3
finalizer, then `a_k * h + b_k mod 2^32` for permutation k, with (a, b) drawn exactly as
datasketch draws them from `seed`. The signature is the minimum over shingles.

Base hash:
- `datasketch_compatible=True`: the first 4 bytes of SHA-1 of the shingle's UTF-8 bytes (units
  joined by a single space, characters joined by nothing), as datasketch's `sha1_hash32`.
  Signatures then equal `datasketch.MinHash(num_perm, seed)` updated with those bytes.
- default: FNV-1a of each unit, combined over the window and finalized with MurmurHash3's
  64-bit finalizer, folded to 32 bits. Same permutations, same estimator; several times faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.dedup.datasketch_internals import lsh_optimal_param
from sluice.operators.splitmix import GOLDEN_GAMMA
from sluice.operators.string_buffers import string_buffers
from sluice.operators.text.byte_flags import change_where

TOKENIZATIONS = ("space", "punctuation", "character")
MAX_HASH = np.uint32(0xFFFFFFFF)

_M32 = np.uint64(0xFFFFFFFF)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_COMBINE = np.uint64(GOLDEN_GAMMA)
_SPACE = 32
_BY_SPACE, _BY_CHARACTER, _GIVEN = 0, 1, 2  # how the kernel finds a document's units
_U8, _U13, _U16, _U24 = np.uint64(8), np.uint64(13), np.uint64(16), np.uint64(24)
_C1, _C2 = np.uint64(0x85EBCA6B), np.uint64(0xC2B2AE35)
_B0, _B1 = np.uint64(0xFF), np.uint64(0xFF00)
_K = (np.uint64(0x5A827999), np.uint64(0x6ED9EBA1), np.uint64(0x8F1BBCDC), np.uint64(0xCA62C1D6))
_H = (np.uint64(0x67452301), np.uint64(0xEFCDAB89), np.uint64(0x98BADCFE), np.uint64(0x10325476),
      np.uint64(0xC3D2E1F0))


@dataclass(frozen=True)
class Shingling:
    tokenization: str = "space"
    window_size: int = 5
    lowercase: bool = True
    ignore_pattern: str | None = None

    def __post_init__(self):
        if self.tokenization not in TOKENIZATIONS:
            raise ValueError(f"tokenization must be one of {TOKENIZATIONS}, got {self.tokenization!r}")
        if self.window_size < 1:
            raise ValueError(f"window_size must be at least 1, got {self.window_size}")
        if self.ignore_pattern:
            check_pattern(self.ignore_pattern)


def check_pattern(pattern: str) -> None:
    """Raise ValueError if `pattern` is not a valid RE2 regular expression (pyarrow's syntax)."""
    try:
        pc.replace_substring_regex(pa.array([""]), pattern=pattern, replacement="")
    except pa.ArrowInvalid as e:
        raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters (a odd), drawn from RandomState(seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimizing false positives + false negatives, as datasketch's LSH."""
    return lsh_optimal_param(threshold, num_perm)


def normalize(texts, shingling: Shingling) -> pa.Array:
    """Remove the ignore pattern, as one string array (nulls become empty), and lowercase all
    but ASCII letters, which the signature kernel lowercases."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    if pa.types.is_large_string(texts.type) or pa.types.is_string_view(texts.type):
        texts = texts.cast(pa.large_string())
    elif not pa.types.is_string(texts.type):
        raise TypeError(f"text column must hold strings, got {texts.type}")
    texts = pc.fill_null(texts, "")
    if shingling.lowercase and shingling.ignore_pattern:
        texts = pc.utf8_lower(texts)
    elif shingling.lowercase:  # the kernel lowercases ASCII letters: only other rows need Arrow
        texts = change_where(texts, np.logical_not(pc.string_is_ascii(texts)), pc.utf8_lower)
    if shingling.ignore_pattern:
        texts = pc.replace_substring_regex(texts, pattern=shingling.ignore_pattern, replacement="")
    return texts


def units(texts, shingling: Shingling):
    """(data, each document's byte range in data, and for punctuation the unit starts, unit
    ends and per-document unit offsets; space and character units are found in the kernel)."""
    texts = normalize(texts, shingling)
    none = np.zeros(0, np.int64)
    if shingling.tokenization != "punctuation":
        data, offsets = string_buffers(texts)
        return data, offsets, none, none, none
    # An empty text would split into one empty piece; it has no units.
    texts = pc.if_else(pc.equal(texts, ""), pa.scalar(None, texts.type), texts)
    pieces = pc.split_pattern_regex(texts, pattern=r"\p{P}")
    values = pieces.values if not isinstance(pieces, pa.ChunkedArray) else pieces.combine_chunks().values
    data, value_offsets = string_buffers(values)
    list_offsets = np.asarray(pieces.offsets, dtype=np.int64)
    first = list_offsets[0]
    starts = value_offsets[first:list_offsets[-1]]
    ends = value_offsets[first + 1:list_offsets[-1] + 1]
    return data, value_offsets[list_offsets], starts, ends, list_offsets - first


@numba.njit(nogil=True, inline="always")
def _document_units(data, lo, hi, mode, starts, ends, first, last, lower, buf, ustart, uend, unit_hash):
    """Copy document bytes data[lo:hi] into buf (ASCII letters lowercased with `lower`), write
    its units' ranges in buf into ustart/uend and their FNV-1a hashes into unit_hash; return the
    number of units."""
    length = hi - lo
    for i in range(lo, hi):
        c = data[i]
        buf[i - lo] = c + 32 if lower and 65 <= c <= 90 else c
    k = 0
    if mode == _GIVEN:
        for j in range(first, last):
            ustart[k] = starts[j] - lo
            uend[k] = ends[j] - lo
            h = _FNV_OFFSET
            for i in range(ustart[k], uend[k]):
                h = (h ^ np.uint64(buf[i])) * _FNV_PRIME
            unit_hash[k] = h
            k += 1
        return k
    start, h = 0, _FNV_OFFSET
    for i in range(length):
        c = buf[i]
        if mode == _BY_SPACE and c == _SPACE:
            if i > start:
                ustart[k], uend[k], unit_hash[k] = start, i, h
                k += 1
            start, h = i + 1, _FNV_OFFSET
            continue
        if mode == _BY_CHARACTER and (c & 0xC0) != 0x80 and i > start:  # a code point's first byte
            ustart[k], uend[k], unit_hash[k] = start, i, h
            k += 1
            start, h = i, _FNV_OFFSET
        h = (h ^ np.uint64(c)) * _FNV_PRIME
    if length > start:
        ustart[k], uend[k], unit_hash[k] = start, length, h
        k += 1
    return k


@numba.njit(inline="always")
def _fmix32(h):
    h = h & _M32
    h ^= h >> _U16
    h = (h * _C1) & _M32
    h ^= h >> _U13
    h = (h * _C2) & _M32
    h ^= h >> _U16
    return h


@numba.njit(inline="always")
def _fmix64(h):
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@numba.njit(inline="always")
def _rotl(x, n):
    return ((x << np.uint64(n)) | (x >> np.uint64(32 - n))) & _M32


@numba.njit(nogil=True)
def _sha1_block(state, block, w):
    for t in range(16):
        w[t] = ((np.uint64(block[4 * t]) << _U24) | (np.uint64(block[4 * t + 1]) << _U16)
                | (np.uint64(block[4 * t + 2]) << _U8) | np.uint64(block[4 * t + 3]))
    for t in range(16, 80):
        w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
    a, b, c, d, e = state[0], state[1], state[2], state[3], state[4]
    for t in range(80):
        if t < 20:
            f = (b & c) | ((~b) & d)
            k = _K[0]
        elif t < 40:
            f = b ^ c ^ d
            k = _K[1]
        elif t < 60:
            f = (b & c) | (b & d) | (c & d)
            k = _K[2]
        else:
            f = b ^ c ^ d
            k = _K[3]
        tmp = (_rotl(a, 5) + f + e + k + w[t]) & _M32
        e = d
        d = c
        c = _rotl(b, 30)
        b = a
        a = tmp
    state[0] = (state[0] + a) & _M32
    state[1] = (state[1] + b) & _M32
    state[2] = (state[2] + c) & _M32
    state[3] = (state[3] + d) & _M32
    state[4] = (state[4] + e) & _M32


@numba.njit(nogil=True)
def _sha1_hash32(data, starts, ends, first, count, sep, state, block, w):
    """datasketch's sha1_hash32 of units first..first+count-1 joined by byte `sep` (-1: none)."""
    for i in range(5):
        state[i] = _H[i]
    fill = 0
    length = 0
    for j in range(first, first + count):
        if j > first and sep >= 0:
            block[fill] = sep
            fill += 1
            length += 1
            if fill == 64:
                _sha1_block(state, block, w)
                fill = 0
        for i in range(starts[j], ends[j]):
            block[fill] = data[i]
            fill += 1
            length += 1
            if fill == 64:
                _sha1_block(state, block, w)
                fill = 0
    block[fill] = 0x80
    fill += 1
    if fill > 56:
        for i in range(fill, 64):
            block[i] = 0
        _sha1_block(state, block, w)
        fill = 0
    for i in range(fill, 56):
        block[i] = 0
    bits = np.uint64(length) * np.uint64(8)
    for i in range(8):
        block[63 - i] = (bits >> np.uint64(8 * i)) & _B0
    _sha1_block(state, block, w)
    h0 = state[0]
    # digest[:4] read little-endian: the byte-swapped first state word
    return ((h0 & _B0) << _U24) | ((h0 & _B1) << _U8) | ((h0 >> _U8) & _B1) | (h0 >> _U24)


@numba.njit(cache=True, nogil=True)
def _signatures(data, doc_bytes, starts, ends, unit_off, mode, lower, window, sep, compat, a, b, out, has):
    n, num_perm = out.shape
    state = np.zeros(5, np.uint64)
    block = np.zeros(64, np.uint8)
    w = np.zeros(80, np.uint64)
    mins = np.empty(num_perm, np.uint32)
    buf = np.empty(0, np.uint8)
    ustart = np.empty(0, np.int64)
    uend = np.empty(0, np.int64)
    unit_hash = np.empty(0, np.uint64)
    for d in range(n):
        lo, hi = doc_bytes[d], doc_bytes[d + 1]
        first, last = (unit_off[d], unit_off[d + 1]) if mode == _GIVEN else (0, 0)
        size = max(hi - lo + 1, last - first)
        if len(buf) < size:  # per-document buffers, grown to the longest document so far
            buf = np.empty(max(size, 2 * len(buf)), np.uint8)
            ustart = np.empty(len(buf), np.int64)
            uend = np.empty(len(buf), np.int64)
            unit_hash = np.empty(len(buf), np.uint64)
        n_units = _document_units(data, lo, hi, mode, starts, ends, first, last, lower, buf, ustart, uend,
                                  unit_hash)
        if n_units == 0:
            has[d] = False
            out[d, :] = MAX_HASH
            continue
        has[d] = True
        width = min(window, n_units)
        mins[:] = MAX_HASH
        for s in range(n_units - width + 1):
            if compat:
                base = _sha1_hash32(buf, ustart, uend, s, width, sep, state, block, w)
            else:
                h = np.uint64(width)
                for j in range(s, s + width):
                    h = h * _COMBINE + unit_hash[j]
                h = _fmix64(h)
                base = (h ^ (h >> np.uint64(32))) & _M32
            x = np.uint32(_fmix32(base))
            for k in range(num_perm):
                mins[k] = min(mins[k], np.uint32(a[k] * x + b[k]))
        out[d, :] = mins
    return out


def signatures(texts, shingling: Shingling, num_perm: int, seed: int = 1,
               datasketch_compatible: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures (n, num_perm) uint32 and a mask of documents that have shingles.

    Rows without shingles hold the empty-set signature (all 0xFFFFFFFF)."""
    data, doc_bytes, starts, ends, unit_off = units(texts, shingling)
    n = len(doc_bytes) - 1
    a, b = permutations(num_perm, seed)
    out = np.empty((n, num_perm), np.uint32)
    has = np.empty(n, np.bool_)
    mode = {"space": _BY_SPACE, "character": _BY_CHARACTER, "punctuation": _GIVEN}[shingling.tokenization]
    sep = -1 if shingling.tokenization == "character" else _SPACE
    _signatures(data, doc_bytes, starts, ends, unit_off, mode, shingling.lowercase, shingling.window_size, sep,
                datasketch_compatible, a, b, out, has)
    return out, has


@numba.njit(cache=True, nogil=True)
def _band_keys(sig, num_bands, rows, out):
    for d in range(sig.shape[0]):
        for band in range(num_bands):
            h = _fmix64(np.uint64(band + 1) * _COMBINE)
            for k in range(band * rows, (band + 1) * rows):
                h = _fmix64(h ^ np.uint64(sig[d, k]))
            out[d, band] = h
    return out


def band_keys(sig: np.ndarray, num_bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (document, band); equal keys mean equal rows in that band.

    The band number is hashed in, so keys of different bands never meet."""
    if num_bands * rows > sig.shape[1]:
        raise ValueError(f"{num_bands} bands x {rows} rows exceed {sig.shape[1]} permutations")
    out = np.empty((sig.shape[0], num_bands), np.uint64)
    return _band_keys(np.ascontiguousarray(sig), num_bands, rows, out)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values."""
    return (sig_a == sig_b).mean(axis=1)


def to_arrow(sig: np.ndarray, has: np.ndarray) -> pa.FixedSizeListArray:
    """Signatures as a fixed-size list column; null where the document has no shingles."""
    n, num_perm = sig.shape
    values = pa.array(sig.reshape(-1), type=pa.uint32())
    mask = pa.array(~has) if not has.all() else None
    return pa.FixedSizeListArray.from_arrays(values, num_perm, mask=mask)


def from_arrow(column) -> np.ndarray:
    """(n, num_perm) uint32 from a fixed-size list column with no nulls."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    num_perm = column.type.list_size
    values = column.values.slice(column.offset * num_perm, len(column) * num_perm)  # a slice's own rows
    return values.to_numpy(zero_copy_only=False).reshape(-1, num_perm)
