"""Entity retrieval without an LLM: column names by edit similarity, database values through a
MinHash LSH index over the distinct values of each text column (CHESS's information retriever).

The index covers text columns that hold names and categories; ids, URLs, dates and free text
(long values) are skipped, since a question names those by pattern, not by value. It is built
once per database version and kept in the cache folder as arrays (no pickle: a cache file is
data, never code), then loaded back into a datasketch `MinHashLSH`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from ..duck import Sandbox, fingerprint, quote_ident
from ..perturb import cache_folder
from ..schema import DatabaseProfile

NUM_PERM = 64
THRESHOLD = 0.3         # low on purpose: misspelled values share few 3-grams; ranking sorts it out
SEED = 1
SCHEME = "affine32"
SKIPPED_NAME = re.compile(r"(^|_)(id|key|uuid|guid|url|uri|link|href|email|date|time|hash)s?$", re.I)
SKIPPED_VALUE = re.compile(r"^(https?://|www\.|\d{4}-\d{2}-\d{2})", re.I)
MAX_VALUE_CHARS = 80     # longer values are free text
MAX_DISTINCT = 100_000   # a column with more distinct values holds names of things, not categories
SMALL_COLUMN = 1_000     # values of columns this small are also compared one by one


@dataclass(frozen=True)
class ValueMatch:
    table: str
    column: str
    value: str
    score: float         # edit similarity to the searched text, 0..1


@dataclass(frozen=True)
class ColumnMatch:
    table: str
    column: str
    score: float


def shingles(text: str) -> set[bytes]:
    padded = f" {text.lower()} "
    return {padded[i:i + 3].encode() for i in range(max(1, len(padded) - 2))}


def similarity(a: str, b: str) -> float:
    """Edit similarity; a search text whose words all appear in the value (a dropped word)
    scores at least 0.9 times the share of the value's words it has."""
    a, b = a.lower(), b.lower()
    ratio = difflib.SequenceMatcher(None, a, b).ratio()
    words, value_words = a.split(), b.split()
    if words and all(w in value_words for w in words):
        ratio = max(ratio, 0.9 * len(words) / len(value_words) + 0.05)
    return ratio


def indexed_columns(profile: DatabaseProfile) -> list[tuple[str, str]]:
    return [(t.name, c.name) for t in profile.tables.values() for c in t.columns
            if c.type.upper().startswith("VARCHAR") and not SKIPPED_NAME.search(c.name)
            and c.distinct <= MAX_DISTINCT]


class ValueIndex:
    """Distinct values of a database's text columns, searchable by approximate spelling."""

    def __init__(self, values: list[tuple[str, str, str]], signatures: np.ndarray):
        self.values = values                  # (table, column, value) per row of `signatures`
        self.signatures = signatures
        sizes = Counter((t, c) for t, c, _ in values)
        # short misspelled words share few 3-grams with their value: small columns are also scanned
        self.small = [i for i, (t, c, _) in enumerate(values) if sizes[(t, c)] <= SMALL_COLUMN]
        self.lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
        with self.lsh.insertion_session() as session:
            for i, row in enumerate(signatures):
                session.insert(i, LeanMinHash(seed=SEED, hashvalues=row.astype(np.uint64), scheme=SCHEME))

    @classmethod
    def build(cls, sandbox: Sandbox, profile: DatabaseProfile) -> "ValueIndex":
        values = []
        for table, column in indexed_columns(profile):
            col = quote_ident(column)
            rows = sandbox.query(f"SELECT DISTINCT {col} FROM {quote_ident(table)} WHERE {col} IS NOT "
                                 f"NULL AND length({col}) <= {MAX_VALUE_CHARS} "
                                 f"LIMIT {2 * MAX_DISTINCT}").rows
            values += [(table, column, v) for (v,) in rows if v.strip() and not SKIPPED_VALUE.match(v)]
        hashes = MinHash.bulk([shingles(v) for _, _, v in values], num_perm=NUM_PERM, seed=SEED, scheme=SCHEME)
        # affine32 hash values fit in 32 bits: half the size on disk
        signatures = np.array([m.hashvalues for m in hashes], dtype=np.uint32).reshape(-1, NUM_PERM)
        return cls(values, signatures)

    @classmethod
    def for_database(cls, sandbox: Sandbox, profile: DatabaseProfile,
                     cache_dir: str | Path | None = None) -> "ValueIndex":
        """Loaded from the cache folder, or built and saved there; rebuilt when the file changes."""
        stem = cache_folder(cache_dir) / f"values-v2-{fingerprint(sandbox.path)}"
        arrays, listing = stem.with_suffix(".npy"), stem.with_suffix(".json")
        if arrays.exists() and listing.exists():
            return cls([tuple(v) for v in json.loads(listing.read_text())],
                       np.load(arrays, allow_pickle=False))
        index = cls.build(sandbox, profile)
        _write_atomically(arrays, lambda f: np.save(f, index.signatures, allow_pickle=False))
        _write_atomically(listing, lambda f: f.write(json.dumps(index.values).encode()))
        return index

    def search(self, text: str, k: int = 10) -> list[ValueMatch]:
        """The `k` values spelled most like `text`, best first."""
        if not text.strip() or not self.values:
            return []
        query = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=SCHEME)
        query.update_batch(list(shingles(text)))
        found = set(self.lsh.query(query)) | {i for i in self.small if _close(text, self.values[i][2])}
        scored = sorted(((similarity(text, v), t, c, v) for t, c, v in map(self.values.__getitem__, found)),
                        reverse=True)
        return [ValueMatch(t, c, v, round(s, 3)) for s, t, c, v in scored[:k]]


def _close(a: str, b: str, cutoff: float = 0.6) -> bool:
    if abs(len(a) - len(b)) > max(3, len(a) // 2):
        return False
    matcher = difflib.SequenceMatcher(None, a.lower(), b.lower())
    return matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff


def _write_atomically(path: Path, write) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("wb") as f:
        write(f)
    partial.rename(path)


def match_columns(profile: DatabaseProfile, terms: list[str], min_score: float = 0.75,
                  k: int = 10) -> list[ColumnMatch]:
    """Columns whose name (or table.name) is spelled like one of `terms`."""
    best: dict[tuple[str, str], float] = {}
    for t in profile.tables.values():
        for c in t.columns:
            name = c.name.replace("_", " ")
            score = max((similarity(term, name) for term in terms), default=0.0)
            if score >= min_score:
                best[(t.name, c.name)] = max(score, best.get((t.name, c.name), 0.0))
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]
    return [ColumnMatch(t, c, round(s, 3)) for (t, c), s in ranked]
