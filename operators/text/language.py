"""Language identification with langid's model, computed for a whole batch at once.

langid (its model ships inside the PyPI package) classifies one text at a time with a Python
loop over the text's bytes: about 70 documents of 400 words per second here. Its model is a
byte automaton whose states emit n-gram features, followed by naive Bayes. Here a numba kernel
runs the automaton over each text, counts the states it visits, and adds each visited state's
class log-probabilities (its features folded in) times its count; most states a text visits emit
no feature and are skipped. The scores are langid's own, up to float rounding.

Two things make it fast: a few texts walk the automaton in lockstep (one text's walk is a chain of
dependent lookups, waiting on the cache), and the state rows (7 MB, more than a core's cache) are
added for a batch of texts at a time in state order, so each row is read once per batch instead
of once per text.
"""

from __future__ import annotations

import functools
import os
import zipfile

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.commit import cache_folder
from sluice.operators.once import built_once
from sluice.operators.string_buffers import string_buffers
from sluice.operators.text.byte_flags import NON_ASCII, byte_flags, change_where


LANES = 4    # texts walked in lockstep: their lookups are independent, so their cache misses overlap
BATCH = 128  # texts whose visited states are summed state by state: each state's row is read once


@numba.njit(inline="always")
def _step(next_state, visits, visited, base, state, byte, distinct):
    """One byte of a text's walk: the next state, counted, and the text's distinct states."""
    s = next_state[(state << 8) + byte]
    seen = visits[base + s]
    visited[base + distinct] = s                        # branch-free: a new state is kept by moving on
    visits[base + s] = seen + 1
    return s, distinct + (seen == 0)


@numba.njit(cache=True, nogil=True)
def _visit_states(data, offsets, start, stop, next_state, emits, visits, visited, pair_state, pair_text,
                  pair_count):
    """Walks texts start..stop through the automaton, LANES at a time, and writes each text's
    distinct visited states that emit features (`emits`) and their counts as pairs; returns how
    many. visits is zero on entry and on return."""
    states = len(visits) // LANES
    pos = np.empty(LANES, np.int64)
    end = np.empty(LANES, np.int64)
    state = np.zeros(LANES, np.int64)
    distinct = np.zeros(LANES, np.int64)
    pairs = 0
    for first in range(start, stop, LANES):
        lanes = min(LANES, stop - first)
        steps = 0 if lanes < LANES else min(offsets[first + 1:first + LANES + 1] - offsets[first:first + LANES])
        for i in range(lanes):
            pos[i], end[i], state[i], distinct[i] = offsets[first + i], offsets[first + i + 1], 0, 0
        for j in range(steps):
            for i in range(LANES):
                state[i], distinct[i] = _step(next_state, visits, visited, i * states, state[i],
                                              data[pos[i] + j], distinct[i])
        for i in range(lanes):
            s, d = state[i], distinct[i]
            for j in range(pos[i] + steps, end[i]):
                s, d = _step(next_state, visits, visited, i * states, s, data[j], d)
            for u in range(d):
                s = visited[i * states + u]
                pair_state[pairs], pair_text[pairs] = s, first + i - start
                pair_count[pairs] = visits[i * states + s]
                visits[i * states + s] = 0
                pairs += emits[s]  # most states a text visits emit nothing: a zero row
    return pairs


@numba.njit(cache=True, nogil=True)
def _add_state_rows(pair_state, pair_text, pair_count, pairs, state_logp, total):
    """total[text] += count * state_logp[state] for every pair, taken state by state (a counting
    sort), so that a state's row is read once for all the texts that visited it."""
    states = len(state_logp)
    begin = np.zeros(states + 1, np.int64)
    for p in range(pairs):
        begin[pair_state[p] + 1] += 1
    for s in range(states):
        begin[s + 1] += begin[s]
    at = begin[:-1].copy()
    text = np.empty(pairs, np.int32)
    count = np.empty(pairs, np.float64)
    for p in range(pairs):
        s = pair_state[p]
        text[at[s]], count[at[s]] = pair_text[p], pair_count[p]
        at[s] += 1
    for s in range(states):
        if begin[s] == begin[s + 1]:
            continue
        row = state_logp[s]
        for p in range(begin[s], begin[s + 1]):
            into, c = total[text[p]], count[p]
            for k in range(len(row)):
                into[k] += c * row[k]


@numba.njit(cache=True, nogil=True)
def _log_probabilities(data, offsets, next_state, emits, state_logp, prior):
    """Per text (data[offsets[i]:offsets[i+1]]), the class log-probabilities."""
    rows, states = len(offsets) - 1, len(state_logp)
    logp = np.empty((rows, len(prior)), dtype=np.float64)
    visits = np.zeros(LANES * states, np.int32)
    visited = np.empty(LANES * states, np.int32)
    capacity = BATCH * states                           # a text visits each state at most once
    pair_state = np.empty(capacity, np.int32)
    pair_text = np.empty(capacity, np.int32)
    pair_count = np.empty(capacity, np.int32)
    for start in range(0, rows, BATCH):
        stop = min(start + BATCH, rows)
        pairs = _visit_states(data, offsets, start, stop, next_state, emits, visits, visited,
                              pair_state, pair_text, pair_count)
        total = logp[start:stop]
        total[:] = prior
        _add_state_rows(pair_state, pair_text, pair_count, pairs, state_logp, total)
    return logp


TABLES_FORMAT = 1  # bump when _model_tables changes what it builds


def _langid():
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def _build_tables() -> dict[str, np.ndarray]:
    langid = _langid()
    next_state = np.frombuffer(langid.tk_nextmove, dtype=np.uint16).reshape(-1, 256)
    # Data-Juicer lowercases the text and makes newlines spaces: for ASCII bytes, the
    # automaton does it, reading 'A' as 'a' and '\n' as ' '.
    read_as = np.arange(256)
    read_as[ord("A"):ord("Z") + 1] += ord("a") - ord("A")
    read_as[ord("\n")] = ord(" ")
    ptc = np.asarray(langid.nb_ptc, dtype=np.float64)
    # Each state's summed feature log-probabilities per class.
    state_logp = np.zeros((len(next_state), ptc.shape[1]), dtype=np.float64)
    for state, features in langid.tk_output.items():
        if features:
            state_logp[state] = ptc[list(features)].sum(axis=0)
    return {"classes": np.array(langid.nb_classes), "prior": np.asarray(langid.nb_pc, dtype=np.float64),
            "next_state": np.ascontiguousarray(next_state[:, read_as]).reshape(-1), "state_logp": state_logp}


def _model_tables() -> dict[str, np.ndarray]:
    """langid's model as the kernel's tables: built once per machine and kept in sluice's cache,
    since unpacking langid's model takes over a second per process."""
    from importlib.metadata import version

    path = cache_folder() / "langid" / f"tables-{version('langid')}-{TABLES_FORMAT}.npz"
    try:
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # none yet, or a damaged one
        pass
    tables = _build_tables()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as f:
            np.savez(f, **tables)
        os.replace(partial, path)
    except OSError:  # a read-only cache: built again next time
        pass
    return tables


class BatchLanguageIdentifier:
    def __init__(self):
        tables = _model_tables()
        self.classes, self.prior = tables["classes"], tables["prior"]
        self.next_state, self.state_logp = tables["next_state"], tables["state_logp"]
        self.emits = (self.state_logp != 0).any(axis=1).astype(np.int64)

    @functools.cached_property
    def langid(self):
        """langid's own per-text identifier, for checking results against."""
        return _langid()

    def identify(self, text: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(language code, probability) per row; null for null rows."""
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        filled = pc.fill_null(text, "")
        # Only rows beyond ASCII need Arrow's lowercase (the automaton lowercases ASCII).
        prepared = change_where(filled, (byte_flags(filled) & NON_ASCII) != 0, pc.utf8_lower)
        data, offsets = string_buffers(prepared)
        logp = _log_probabilities(data, offsets, self.next_state, self.emits, self.state_logp, self.prior)
        best = logp.argmax(axis=1)
        score = 1.0 / np.exp(logp - logp[np.arange(len(best)), best][:, None]).sum(axis=1)
        mask = text.is_null().to_numpy(zero_copy_only=False) if text.null_count else None
        return pa.array(self.classes[best], pa.string(), mask=mask), pa.array(score, mask=mask)


@built_once(maxsize=1)
def language_identifier() -> BatchLanguageIdentifier:
    """One identifier per process: loading langid's model takes a few seconds."""
    return BatchLanguageIdentifier()
