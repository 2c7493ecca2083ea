"""Stage-time estimator: how long one call of a stage kind takes on this engine.

Per stage kind, time = a + b * (prompt tokens not served from the prefix cache) + c * output
tokens + d * output tokens * load, where load is the number of other calls running beside it
(they share every decode step), fitted by least squares over the calls observed so far. Observations decay
exponentially (`decay` per call of that kind), so the fit follows the engine's load instead of
freezing at a profile, which is HEXGEN's weakness: its static profile at one representative
length per kind is wrong as soon as lengths vary or the engine is busier than when profiled.
A profile seeds the fit as ordinary observations; a kind never seen borrows the fit pooled over
all kinds. Pure numpy, no engine needed.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from .workflow import Stage

TOKEN_SCALE = 1e-3      # features in thousands of tokens keep the system well conditioned
FEATURES = 4
RIDGE = 1e-6
POOLED = "*"
HISTORY = 10_000
DECAY = 0.98


@dataclass(frozen=True)
class Observation:
    prompt_tokens: int
    output_tokens: int
    seconds: float
    cached_tokens: int = 0
    load: int = 0            # other calls running beside it


@dataclass
class _Fit:
    gram: np.ndarray = field(default_factory=lambda: np.zeros((FEATURES, FEATURES)))
    moment: np.ndarray = field(default_factory=lambda: np.zeros(FEATURES))
    weight: float = 0.0          # decayed number of observations
    prompt_sum: float = 0.0      # decayed sums, for a stage's expected lengths
    output_sum: float = 0.0

    def add(self, x: np.ndarray, seconds: float, prompt: int, output: int, decay: float) -> None:
        for name in ("gram", "moment", "weight", "prompt_sum", "output_sum"):
            setattr(self, name, getattr(self, name) * decay)
        self.gram += np.outer(x, x)
        self.moment += x * seconds
        self.weight += 1.0
        self.prompt_sum += prompt
        self.output_sum += output

    def coefficients(self) -> np.ndarray:
        return np.linalg.solve(self.gram + RIDGE * np.eye(FEATURES), self.moment)


def _features(prompt_tokens: int, output_tokens: int, cached_tokens: int, load: int) -> np.ndarray:
    output = output_tokens * TOKEN_SCALE
    return np.array([1.0, max(prompt_tokens - cached_tokens, 0) * TOKEN_SCALE, output, output * load])


class StageTimeEstimator:
    """`observe` measured calls, `predict` a call, `stage_time` a planned stage (seconds)."""

    def __init__(self, profile: Mapping[str, Iterable[Observation]] | None = None, *,
                 decay: float = DECAY):
        if not 0 < decay <= 1:
            raise ValueError(f"estimator: decay must be in (0, 1], got {decay}")
        self.decay = decay
        self._fits: dict[str, _Fit] = defaultdict(_Fit)
        # (predicted, measured) per kind, the most recent HISTORY calls
        self.history: dict[str, deque[tuple[float, float]]] = defaultdict(
            lambda: deque(maxlen=HISTORY))
        for kind, observations in (profile or {}).items():
            for o in observations:
                self._add(kind, o)

    def _add(self, kind: str, o: Observation) -> None:
        x = _features(o.prompt_tokens, o.output_tokens, o.cached_tokens, o.load)
        for key in (kind, POOLED):
            self._fits[key].add(x, o.seconds, o.prompt_tokens, o.output_tokens, self.decay)

    def observe(self, kind: str, prompt_tokens: int, output_tokens: int, seconds: float,
                cached_tokens: int = 0, load: int = 0) -> None:
        """Learn from one measured call (and record how far off the prediction was)."""
        predicted = self.predict(kind, prompt_tokens, output_tokens, cached_tokens, load)
        self.history[kind].append((predicted, seconds))
        self._add(kind, Observation(prompt_tokens, output_tokens, seconds, cached_tokens, load))

    def _fit(self, kind: str) -> _Fit | None:
        for key in (kind, POOLED):
            fit = self._fits.get(key)
            if fit is not None and fit.weight > 0:
                return fit
        return None

    def predict(self, kind: str, prompt_tokens: int, output_tokens: int,
                cached_tokens: int = 0, load: int = 0) -> float:
        """Seconds one call should take; 0.0 before anything was observed."""
        fit = self._fit(kind)
        if fit is None:
            return 0.0
        x = _features(prompt_tokens, output_tokens, cached_tokens, load)
        return max(float(x @ fit.coefficients()), 0.0)

    def stage_time(self, stage: Stage) -> float:
        """Estimated time of a planned stage: one call at the stage's expected lengths (the mean
        observed for its kind where the plan does not say); parallel calls run side by side."""
        fit = self._fit(stage.kind)
        if fit is None:
            return 0.0
        prompt = stage.prompt_tokens if stage.prompt_tokens is not None else fit.prompt_sum / fit.weight
        output = stage.output_tokens if stage.output_tokens is not None else fit.output_sum / fit.weight
        return self.predict(stage.kind, round(prompt), round(output))

    def relative_error(self, kind: str, skip: int = 0) -> float | None:
        """Mean |predicted - measured| / measured over the calls of `kind` after the first `skip`."""
        pairs = [(p, m) for p, m in itertools.islice(self.history.get(kind, ()), skip, None)
                 if m > 0]
        if not pairs:
            return None
        return float(np.mean([abs(p - m) / m for p, m in pairs]))
