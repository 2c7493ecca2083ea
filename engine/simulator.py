"""Discrete-event replay of workflows on one engine: compare schedules without running vLLM.

The engine model is the online engine's: at most `max_inflight_seqs` calls run at once, and a
call admitted while `load` others run takes `call_time(kind, prompt, output, load)` seconds
(for instance a `StageTimeEstimator.predict` fitted on a recorded trace). The admission queue,
the policies, the workflows' deadline split and the online estimator are the real ones, driven
by the simulated clock, so a policy behaves here as it does on the engine, minus the noise of a
shared machine.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

from .admission import AdmissionQueue, Pending, Policy
from .estimator import StageTimeEstimator
from .prefix_cache import PrefixIndex
from .workflow import Stage, Workflow

CallTime = Callable[[str, int, int, int], float]     # (kind, prompt, output, load) -> seconds


@dataclass(frozen=True)
class SimWorkflow:
    arrival: float
    slo_s: float
    stages: tuple[Stage, ...]        # run in order; each issues `fanout` calls at its lengths


class _Run:
    def __init__(self, index: int, spec: SimWorkflow, sim: "_Sim"):
        self.index, self.spec, self.sim = index, spec, sim
        self.workflow = Workflow(spec.stages, spec.slo_s, late="run", clock=lambda: sim.now)
        self.stage = -1
        self.open_calls = 0

    def next_stage(self) -> bool:
        """Issue the next stage's calls; False when the workflow is done."""
        self.stage += 1
        if self.stage == len(self.spec.stages):
            return False
        s = self.spec.stages[self.stage]
        deadline = self.workflow.stage_deadline(s.name, self.sim.now, self.sim.estimator.stage_time)
        for _ in range(s.fanout):
            self.sim.queue.push(Pending(s.kind, s.prompt_tokens or 0, s.output_tokens or 0,
                                        deadline=deadline, workflow_deadline=self.workflow.deadline,
                                        enqueued=self.sim.now, ticket=self))
        self.open_calls = s.fanout
        return True


class _Sim:
    def __init__(self, policy, call_time, max_inflight_seqs, estimator):
        self.policy, self.call_time, self.limit = policy, call_time, max_inflight_seqs
        self.estimator = estimator
        self.queue = AdmissionQueue(estimator, PrefixIndex(block_size=1, capacity_blocks=0))
        self.now, self.running = 0.0, 0
        self.events: list = []
        self._seq = itertools.count()

    def at(self, t: float, what, payload) -> None:
        heapq.heappush(self.events, (t, next(self._seq), what, payload))

    def dispatch(self) -> None:
        while len(self.queue) and self.running < self.limit:
            call = self.queue.choose(self.policy, self.now, load=self.running)
            self.queue.remove(call)
            seconds = self.call_time(call.kind, call.prompt_tokens, call.max_tokens, self.running)
            self.running += 1
            self.at(self.now + seconds, "done", (call, seconds))


def simulate(workflows: Sequence[SimWorkflow], policy: Policy, call_time: CallTime, *,
             max_inflight_seqs: int = 8, estimator: StageTimeEstimator | None = None) -> list[float]:
    """End-to-end latency of each workflow (in the given order) under `policy`. The estimator
    (fresh if None) learns from the simulated calls, as the engine's does from real ones."""
    sim = _Sim(policy, call_time, max_inflight_seqs, estimator or StageTimeEstimator())
    latencies: list[float | None] = [None] * len(workflows)
    for i, spec in enumerate(workflows):
        sim.at(spec.arrival, "arrive", i)
    while sim.events:
        sim.now, _, what, payload = heapq.heappop(sim.events)
        if what == "arrive":
            _Run(payload, workflows[payload], sim).next_stage()
        else:
            call, seconds = payload
            sim.running -= 1
            sim.estimator.observe(call.kind, call.prompt_tokens, call.max_tokens, seconds,
                                  load=call.load)
            run = call.ticket
            run.open_calls -= 1
            if run.open_calls == 0 and not run.next_stage():
                latencies[run.index] = sim.now - run.spec.arrival
        sim.dispatch()
    return latencies
