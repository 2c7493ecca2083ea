"""The admission queue and its policies: which waiting call vLLM gets next.

sluice keeps its own queue and hands vLLM only what vLLM can run now, so the order in which
this queue releases calls is the schedule (vLLM's priority policy cannot do this: priority is
fixed at submission and a waiting request never preempts a running one).

A policy maps a waiting call to a priority, lower first, recomputed at every decision:

- `FCFS`: arrival at the queue.
- `EDF`: the workflow's end-to-end deadline.
- `Urgency`: minus the urgency, where urgency = the call's estimated time on this engine minus
  its remaining slack (its stage's deadline minus now); calls of workflows already past their
  deadline go last. Among calls whose priority is within `prefix_window` x (the best call's
  estimated time) of the best, the one with the longest prefix already in vLLM's cache goes
  first (all stages of a Text-to-SQL question share one schema prompt).

Offline calls (batch work) wait behind every online call and go in submission order.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from .estimator import StageTimeEstimator
from .prefix_cache import PrefixIndex

_seq = itertools.count()


@dataclass(eq=False)
class Pending:
    """One call waiting for admission. `estimate_s` and `cached_tokens` are refreshed by the
    queue at every decision (the prefix cache and the estimator change as calls run)."""
    kind: str
    prompt_tokens: int
    max_tokens: int
    hashes: tuple[int, ...] = ()          # prompt block hashes (prefix_cache.block_hashes)
    deadline: float = math.inf            # the stage's deadline (absolute, seconds)
    workflow_deadline: float = math.inf
    offline: bool = False
    enqueued: float = 0.0
    seq: int = field(default_factory=lambda: next(_seq))
    estimate_s: float = 0.0
    cached_tokens: int = 0
    load: int = 0                         # calls running when the estimate was made
    ticket: Any = None                    # the engine's handle for this call

    @property
    def kv_tokens(self) -> int:
        """KV-cache tokens this call can hold at most (prompt plus every output token)."""
        return self.prompt_tokens + self.max_tokens


class Policy(Protocol):
    name: str
    prefix_window: float | None           # None: no prefix tie-break

    def priority(self, call: Pending, now: float) -> float: ...


class FCFS:
    name = "fcfs"
    prefix_window = None

    def priority(self, call: Pending, now: float) -> float:
        return call.enqueued


class EDF:
    name = "edf"
    prefix_window = None

    def priority(self, call: Pending, now: float) -> float:
        return call.workflow_deadline


def urgency(call: Pending, now: float) -> float:
    """Estimated time minus remaining slack: positive means the stage deadline will be missed."""
    return call.estimate_s - (call.deadline - now)


LATE = 1e12   # priority offset of calls whose workflow has missed its deadline


class Urgency:
    """Most urgent first. A call whose workflow is already past its deadline waits behind every
    call that can still make its own (in arrival order): serving hopeless work first is what
    makes least-slack scheduling collapse under overload."""
    name = "urgency"

    def __init__(self, prefix_window: float | None = 0.25):
        self.prefix_window = prefix_window

    def priority(self, call: Pending, now: float) -> float:
        if now > call.workflow_deadline:
            return LATE + call.enqueued
        return -urgency(call, now)


POLICIES = {"fcfs": FCFS, "edf": EDF, "urgency": Urgency}


class AdmissionQueue:
    """Waiting calls; `choose` names the one a policy admits next."""

    def __init__(self, estimator: StageTimeEstimator, prefix: PrefixIndex):
        self.estimator = estimator
        self.prefix = prefix
        self._calls: list[Pending] = []

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self):
        return iter(list(self._calls))

    def __contains__(self, call: Pending) -> bool:
        return any(c is call for c in self._calls)

    def push(self, call: Pending) -> None:
        self._calls.append(call)

    def remove(self, call: Pending) -> None:
        self._calls = [c for c in self._calls if c is not call]

    def _refresh(self, call: Pending, load: int) -> None:
        call.cached_tokens = self.prefix.cached_tokens(call.hashes)
        call.load = load
        call.estimate_s = self.estimator.predict(call.kind, call.prompt_tokens, call.max_tokens,
                                                 call.cached_tokens, load)

    def choose(self, policy: Policy, now: float, load: int = 0) -> Pending | None:
        """The call to admit next, `load` calls running now."""
        online = [c for c in self._calls if not c.offline]
        if not online:
            first = min(self._calls, key=lambda c: c.seq, default=None)
            if first is not None:
                self._refresh(first, load)
            return first
        for call in online:
            self._refresh(call, load)
        keyed = [(policy.priority(call, now), call.seq, call) for call in online]
        best = min(keyed, key=lambda k: k[:2])
        if policy.prefix_window is None:
            return best[2]
        near = [k for k in keyed if k[0] <= best[0] + policy.prefix_window * best[2].estimate_s]
        return max(near, key=lambda k: (k[2].cached_tokens, -k[0], -k[1]))[2]
