"""Language identification with langid's model, computed for a whole batch at once.

langid (its model ships inside the PyPI package) classifies one text at a time with a Python
loop over the text's bytes: about 70 documents of 400 words per second here. Its model is a
byte automaton whose states emit n-gram features, followed by naive Bayes. Here the automaton
runs for all texts of a batch in lockstep (one numpy step per byte position), state visits
are counted per text, and the counts are multiplied by each state's class log-probabilities
(its features folded in). The scores are langid's own, up to float rounding.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Below this many texts still running, the automaton finishes the remaining (longest) texts
# with a plain loop: a numpy step per byte costs more than a Python step for so few texts.
_LOCKSTEP_MIN_ACTIVE = 16
# Texts per block when counting state visits (block x states int64 counts in memory).
_BLOCK = 256


class BatchLanguageIdentifier:
    def __init__(self):
        from langid.langid import LanguageIdentifier, model

        langid = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        self.langid = langid  # the per-text original, for checking results against
        self.classes = np.array(langid.nb_classes)
        self.next_state = np.frombuffer(langid.tk_nextmove, dtype=np.uint16).astype(np.int64)
        self.next_state_list = langid.tk_nextmove
        states = len(self.next_state) >> 8
        ptc = np.asarray(langid.nb_ptc, dtype=np.float64)
        # Each state's summed feature log-probabilities per class.
        self.state_logp = np.zeros((states, ptc.shape[1]), dtype=np.float64)
        for state, features in langid.tk_output.items():
            if features:
                self.state_logp[state] = ptc[list(features)].sum(axis=0)
        self.prior = np.asarray(langid.nb_pc, dtype=np.float64)

    def _visits(self, data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The automaton state after each byte of each text, laid out like `data`."""
        visits = np.empty(len(data), dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        starts, lengths = starts[order], lengths[order]
        state = np.zeros(len(order), dtype=np.int64)
        active, pos = len(order), 0
        while True:
            while active and lengths[active - 1] <= pos:
                active -= 1
            if active < _LOCKSTEP_MIN_ACTIVE:
                break
            where = starts[:active] + pos
            state[:active] = self.next_state[(state[:active] << 8) + data[where]]
            visits[where] = state[:active]
            pos += 1
        table = self.next_state_list
        for i in range(active):
            s, begin, end = int(state[i]), starts[i] + pos, starts[i] + lengths[i]
            tail = []
            for byte in data[begin:end].tolist():
                s = table[(s << 8) + byte]
                tail.append(s)
            visits[begin:end] = tail
        return visits

    def identify(self, text: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(language code, probability) per row; null for null rows."""
        prepared = pc.replace_substring(pc.utf8_lower(pc.fill_null(text, "")), "\n", " ")
        if isinstance(prepared, pa.ChunkedArray):
            prepared = prepared.combine_chunks()
        prepared = prepared.cast(pa.large_string())
        offsets = np.frombuffer(prepared.buffers()[1], dtype=np.int64)[
            prepared.offset:prepared.offset + len(prepared) + 1]
        raw = prepared.buffers()[2]
        data = (np.frombuffer(raw, dtype=np.uint8)[offsets[0]:offsets[-1]] if raw is not None
                else np.zeros(0, dtype=np.uint8)).astype(np.int64)
        starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
        visits = self._visits(data, starts, lengths)
        states = len(self.state_logp)
        logp = np.empty((len(text), len(self.prior)), dtype=np.float64)
        for a in range(0, len(text), _BLOCK):
            b = min(a + _BLOCK, len(text))
            lo, hi = starts[a], starts[b - 1] + lengths[b - 1]
            row = np.repeat(np.arange(b - a, dtype=np.int64), lengths[a:b])
            counts = np.bincount(row * states + visits[lo:hi], minlength=(b - a) * states)
            logp[a:b] = counts.reshape(b - a, states).astype(np.float64) @ self.state_logp
        logp += self.prior
        best = logp.argmax(axis=1)
        score = 1.0 / np.exp(logp - logp[np.arange(len(best)), best][:, None]).sum(axis=1)
        mask = text.is_null().to_numpy(zero_copy_only=False) if text.null_count else None
        return pa.array(self.classes[best], pa.string(), mask=mask), pa.array(score, mask=mask)


@functools.lru_cache(maxsize=1)
def language_identifier() -> BatchLanguageIdentifier:
    """One identifier per process: loading langid's model takes a few seconds."""
    return BatchLanguageIdentifier()
