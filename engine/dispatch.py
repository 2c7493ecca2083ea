"""HEXGEN's workload-balanced dispatch rule across engine replicas, on outstanding work.

    score_e = alpha * t_base / t_e - (1 - alpha) * W_e / W_base,   pick the argmax

t_e is the call's estimated time on engine e (t_base the fastest engine's), W_e the estimated
work engine e still has to do (queued plus running; W_base the largest, so both terms lie in
[0, 1]). HEXGEN's W_e only ever grows (work assigned since the start): an engine that was busy
an hour ago keeps losing calls after it has drained. Outstanding work drops as calls finish, so
a drained engine wins again. alpha = 0 balances load only; alpha = 1 picks the fastest engine.

`Dispatcher` keeps the state the rule reads, for the replica set (engine/replicas.py), the Ray
Serve request router (engine/serve_router.py) and the simulator alike; `RoundRobin` is the
baseline rule.
"""

from __future__ import annotations

from typing import Sequence

from .estimator import StageTimeEstimator
from .prefix_cache import PrefixIndex


def dispatch_scores(alpha: float, call_times: Sequence[float],
                    outstanding: Sequence[float]) -> list[float]:
    """score_e for each engine, from the call's time there and the engine's outstanding work."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"dispatch: alpha must be in [0, 1], got {alpha}")
    if len(call_times) != len(outstanding) or not call_times:
        raise ValueError("dispatch: one call time and one outstanding work per engine")
    t_base = min(call_times)
    w_base = max(outstanding) or 1.0
    return [alpha * (t_base / t if t > 0 else 1.0) - (1 - alpha) * w / w_base
            for t, w in zip(call_times, outstanding)]


def choose_engine(alpha: float, call_times: Sequence[float], outstanding: Sequence[float]) -> int:
    """Index of the engine with the highest score (the first one on ties)."""
    scores = dispatch_scores(alpha, call_times, outstanding)
    return max(range(len(scores)), key=lambda e: (scores[e], -e))


class RoundRobin:
    """The baseline: replicas in turn, whatever their load or cache."""
    name = "round-robin"

    def __init__(self):
        self._next = 0

    def choose(self, call_times: Sequence[float], outstanding: Sequence[float]) -> int:
        e, self._next = self._next % len(call_times), self._next + 1
        return e


class Balanced:
    """HEXGEN's workload-balanced rule on outstanding work (`choose_engine`)."""

    def __init__(self, alpha: float = 0.5):
        dispatch_scores(alpha, [1.0], [0.0])               # checks alpha
        self.alpha = alpha
        self.name = f"balanced(alpha={alpha:g})"

    def choose(self, call_times: Sequence[float], outstanding: Sequence[float]) -> int:
        return choose_engine(self.alpha, call_times, outstanding)


class Dispatcher:
    """Which replica a call goes to, and the work each replica still holds.

    Per replica: the estimator of its call times, a mirror of its prefix cache (the prompts sent
    to it) and its outstanding work W_e (estimated seconds of the calls sent and not finished).
    t_e is the call's estimated time on replica e with the prefix e probably holds and the calls
    e runs now (capped at `max_load`, the calls a replica runs at once)."""

    def __init__(self, rule: RoundRobin | Balanced, estimators: Sequence[StageTimeEstimator],
                 prefixes: Sequence[PrefixIndex], max_load: int | None = None):
        if len(estimators) != len(prefixes):
            raise ValueError("dispatcher: one estimator and one prefix index per replica")
        self.rule = rule
        self.estimators, self.prefixes = list(estimators), list(prefixes)
        self.max_load = max_load
        self.outstanding = [0.0] * len(estimators)
        self.calls = [0] * len(estimators)
        self.alive = [True] * len(estimators)

    def call_times(self, kind: str, prompt_tokens: int, max_tokens: int,
                   hashes: Sequence[int]) -> list[float]:
        times = []
        for e, (est, prefix) in enumerate(zip(self.estimators, self.prefixes)):
            load = min(self.calls[e], self.max_load or self.calls[e])
            times.append(est.predict(kind, prompt_tokens, max_tokens,
                                     prefix.cached_tokens(hashes), load))
        return times

    def add_replica(self, estimator: StageTimeEstimator, prefix: PrefixIndex) -> int:
        """A replica that joined (Ray Serve replaces a dead one with a new one): its index."""
        self.estimators.append(estimator)
        self.prefixes.append(prefix)
        self.outstanding.append(0.0)
        self.calls.append(0)
        self.alive.append(True)
        return len(self.alive) - 1

    def choose(self, kind: str, prompt_tokens: int, max_tokens: int, hashes: Sequence[int] = (),
               among: Sequence[int] | None = None) -> tuple[int, list[float]]:
        """The best live replica (of `among`, default every live one) for this call, and the
        call's estimated time on every replica; counts nothing (see `sent`)."""
        live = [e for e in (range(len(self.alive)) if among is None else among) if self.alive[e]]
        if not live:
            raise RuntimeError("dispatcher: no replica is alive")
        times = self.call_times(kind, prompt_tokens, max_tokens, hashes)
        work = [self.outstanding[i] for i in live]
        if not any(work):                     # nothing estimated yet: balance by call count
            work = [self.calls[i] for i in live]
        return live[self.rule.choose([times[i] for i in live], work)], times

    def sent(self, e: int, estimate_s: float, hashes: Sequence[int] = ()) -> None:
        """A call estimated at `estimate_s` went to replica e: its work, its prompt's blocks."""
        self.outstanding[e] += estimate_s
        self.calls[e] += 1
        self.prefixes[e].add(hashes)

    def assign(self, kind: str, prompt_tokens: int, max_tokens: int,
               hashes: Sequence[int] = ()) -> tuple[int, float]:
        """The replica for this call and the call's estimated time there; counts it as sent."""
        e, times = self.choose(kind, prompt_tokens, max_tokens, hashes)
        self.sent(e, times[e], hashes)
        return e, times[e]

    def finished(self, e: int, estimate_s: float) -> None:
        self.outstanding[e] = max(self.outstanding[e] - estimate_s, 0.0)
        self.calls[e] -= 1
