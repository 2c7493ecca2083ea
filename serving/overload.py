"""Admission at the door: refuse at once what cannot finish in time, instead of queueing it.

A request is refused, in this order, when the server is draining (503, `draining`), when the
requests admitted and not finished reach the queue bound (`limits.max_queue`, by default twice
the calls the engine runs at once; 429, `queue_full`; a request of
`priority` p > 0 sees the bound divided by 1 + p, so less important work is shed first), when
the queue is at least half full and its tenant already holds its fair share of it (429,
`tenant_share`), or when its predicted finish lies past its deadline (429, `deadline`).

The prediction: the request's own time from the engine's stage-time estimator, plus its wait
behind the calls already in the engine: with S call slots (the engine's `call_slots`: the
schedule's max_inflight_seqs, by default vLLM's max_num_seqs, times the live replicas),
the calls ahead of it beyond the free slots finish in rounds of S, each as long as the mean of
the recent calls. `Retry-After` is that wait, at least a second.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from dataclasses import dataclass

from sluice.engine import OnlineEngine

RECENT_CALLS = 64
QUEUE_PER_SLOT = 2          # the default queue bound: this many requests per engine call slot
UNBOUNDED_ENGINE_QUEUE = 256   # the default bound over an engine without admission control


class Refused(Exception):
    """A request the server will not take now: its HTTP status, reason and Retry-After."""

    def __init__(self, status: int, reason: str, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.reason, self.retry_after_s = status, reason, retry_after_s


def queue_wait_s(engine: OnlineEngine) -> float:
    """Seconds a call issued now should wait before the engine admits it."""
    health = engine.health()
    slots = engine.call_slots
    ahead = health.waiting + health.running + 1 - (slots or math.inf)
    if ahead <= 0:
        return 0.0
    recent = list(itertools.islice(reversed(engine.traces), RECENT_CALLS))
    call_s = statistics.fmean(t.run_s for t in recent) if recent else 0.0
    return math.ceil(ahead / slots) * call_s


@dataclass
class Slot:
    """One admitted request; `release` it when its response is done (twice is harmless)."""
    gate: "Gate"
    tenant: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.held[self.tenant] -= 1


class Gate:
    def __init__(self, max_queue: int | None):
        self.max_queue = max_queue              # None: QUEUE_PER_SLOT x the engine's call slots
        self.held: Counter[str] = Counter()     # tenant -> requests admitted, not finished
        self.draining = False

    def bound(self, engine: OnlineEngine) -> int:
        """Requests admitted and not finished at most."""
        if self.max_queue is not None:
            return self.max_queue
        slots = engine.call_slots
        return QUEUE_PER_SLOT * slots if slots else UNBOUNDED_ENGINE_QUEUE

    @property
    def inflight(self) -> int:
        return sum(self.held.values())

    def admit(self, engine: OnlineEngine, tenant: str, priority: int, own_s: float,
              slo_s: float) -> Slot:
        """A slot for a request whose own work takes `own_s`, or Refused."""
        if self.draining:
            raise Refused(503, "draining", "the server is shutting down; retry on another replica")
        wait_s = queue_wait_s(engine)
        retry = max(1.0, wait_s)
        max_queue = self.bound(engine)
        bound = max(1, max_queue // (1 + max(priority, 0)))
        if self.inflight >= bound:
            raise Refused(429, "queue_full", f"the queue is full ({self.inflight} requests for a "
                          f"bound of {bound} at priority {priority})", retry)
        tenants = len(self.held + Counter([tenant]))
        if self.inflight * 2 >= max_queue and self.held[tenant] >= max_queue / tenants:
            raise Refused(429, "tenant_share", f"tenant '{tenant}' holds {self.held[tenant]} of "
                          f"{self.inflight} queued requests, its fair share under load", retry)
        if wait_s + own_s > slo_s:
            raise Refused(429, "deadline", f"predicted to finish in {wait_s + own_s:.3f} s "
                          f"({wait_s:.3f} s queued), past its deadline of {slo_s:.3f} s", retry)
        self.held[tenant] += 1
        return Slot(self, tenant)
