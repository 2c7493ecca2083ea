"""Language identification with langid's model, computed for a whole batch at once.

langid (its model ships inside the PyPI package) classifies one text at a time with a Python
loop over the text's bytes: about 70 documents of 400 words per second here. Its model is a
byte automaton whose states emit n-gram features, followed by naive Bayes. Here a numba kernel
runs the automaton over each text, counts the states it visits, and adds each visited state's
class log-probabilities (its features folded in) times its count. The scores are langid's own,
up to float rounding.
"""

from __future__ import annotations


import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.operators.once import built_once
from sluice.operators.string_buffers import string_buffers


@numba.njit(cache=True, nogil=True)
def _log_probabilities(data, offsets, next_state, state_logp, prior):
    """Per text (data[offsets[i]:offsets[i+1]]), the class log-probabilities."""
    rows, classes = len(offsets) - 1, len(prior)
    logp = np.empty((rows, classes), dtype=np.float64)
    visits = np.zeros(len(state_logp), dtype=np.int64)
    visited = np.empty(len(state_logp), dtype=np.int64)
    for r in range(rows):
        state, distinct = 0, 0
        for j in range(offsets[r], offsets[r + 1]):
            state = next_state[(state << 8) + data[j]]
            if visits[state] == 0:
                visited[distinct] = state
                distinct += 1
            visits[state] += 1
        total = prior.copy()
        for u in range(distinct):
            state = visited[u]
            count = float(visits[state])
            visits[state] = 0
            row = state_logp[state]
            for k in range(classes):
                total[k] += count * row[k]
        logp[r] = total
    return logp


class BatchLanguageIdentifier:
    def __init__(self):
        from langid.langid import LanguageIdentifier, model

        langid = LanguageIdentifier.from_modelstring(model, norm_probs=True)
        self.langid = langid  # the per-text original, for checking results against
        self.classes = np.array(langid.nb_classes)
        self.next_state = np.frombuffer(langid.tk_nextmove, dtype=np.uint16)  # small: stays in cache
        states = len(self.next_state) >> 8
        ptc = np.asarray(langid.nb_ptc, dtype=np.float64)
        # Each state's summed feature log-probabilities per class.
        self.state_logp = np.zeros((states, ptc.shape[1]), dtype=np.float64)
        for state, features in langid.tk_output.items():
            if features:
                self.state_logp[state] = ptc[list(features)].sum(axis=0)
        self.prior = np.asarray(langid.nb_pc, dtype=np.float64)

    def identify(self, text: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(language code, probability) per row; null for null rows."""
        prepared = pc.replace_substring(pc.utf8_lower(pc.fill_null(text, "")), "\n", " ")
        if isinstance(prepared, pa.ChunkedArray):
            prepared = prepared.combine_chunks()
        data, offsets = string_buffers(prepared)
        logp = _log_probabilities(data, offsets, self.next_state, self.state_logp, self.prior)
        best = logp.argmax(axis=1)
        score = 1.0 / np.exp(logp - logp[np.arange(len(best)), best][:, None]).sum(axis=1)
        mask = text.is_null().to_numpy(zero_copy_only=False) if text.null_count else None
        return pa.array(self.classes[best], pa.string(), mask=mask), pa.array(score, mask=mask)


@built_once(maxsize=1)
def language_identifier() -> BatchLanguageIdentifier:
    """One identifier per process: loading langid's model takes a few seconds."""
    return BatchLanguageIdentifier()
