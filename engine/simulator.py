"""Discrete-event replay of workflows on one engine or several: compare schedules and dispatch
rules without running vLLM.

The engine model is the online engine's: at most `max_inflight_seqs` calls run at once on an
engine, and a call admitted while `load` others run there, with `cached` prompt tokens already
in that engine's prefix cache, takes `call_time(kind, prompt, output, load, cached) / speed`
seconds (for instance a `StageTimeEstimator.predict` fitted on a recorded trace). The admission
queue, the policies, the workflows' deadline split, the estimator and, with several engines,
the dispatcher are the real ones, driven by the simulated clock, so a policy behaves here as it
does on the engine, minus the noise of a shared machine.

`workflows_from_traces` turns the calls an engine recorded back into workflows to replay, and
`tune_alpha` replays them under each dispatch alpha and keeps the best SLO attainment.
"""

from __future__ import annotations

import copy
import heapq
import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .admission import AdmissionQueue, Pending, Policy, Urgency
from .dispatch import Balanced, Dispatcher, RoundRobin
from .estimator import Observation, StageTimeEstimator
from .prefix_cache import PrefixIndex
from .workflow import Stage, Workflow

# (kind, prompt tokens, output tokens, calls running beside it, cached prompt tokens) -> seconds
CallTime = Callable[[str, int, int, int, int], float]
ALPHAS = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class SimWorkflow:
    arrival: float
    slo_s: float
    stages: tuple[Stage, ...]        # run in order; each issues `fanout` calls at its lengths
    hashes: tuple[tuple[tuple[int, ...], ...], ...] = ()   # per stage, per call: prompt block
                                     # hashes (prefix_cache.block_hashes); () for none


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
        hashes = self.spec.hashes[self.stage] if self.spec.hashes else ((),) * s.fanout
        for h in hashes:
            self.sim.submit(Pending(s.kind, s.prompt_tokens or 0, s.output_tokens or 0, h,
                                    deadline=deadline, workflow_deadline=self.workflow.deadline,
                                    enqueued=self.sim.now, ticket=self))
        self.open_calls = len(hashes)
        return True


class _Engine:
    def __init__(self, speed: float, estimator: StageTimeEstimator, prefix: PrefixIndex):
        self.speed = speed
        self.queue = AdmissionQueue(estimator, prefix)
        self.running = 0


class _Sim:
    def __init__(self, policy, call_time, max_inflight_seqs, estimator, speeds, rule,
                 block_size, cache_blocks):
        self.policy, self.call_time, self.limit = policy, call_time, max_inflight_seqs
        self.estimator = estimator
        own = [estimator] if len(speeds) == 1 else [copy.deepcopy(estimator) for _ in speeds]
        self.engines = [_Engine(speed, est, PrefixIndex(block_size, cache_blocks))
                        for speed, est in zip(speeds, own)]
        self.dispatcher = Dispatcher(rule or RoundRobin(),
                                     [e.queue.estimator for e in self.engines],
                                     [PrefixIndex(block_size, cache_blocks) for _ in speeds],
                                     max_inflight_seqs)
        self.sent: dict[int, tuple[int, float]] = {}    # call seq -> (engine, its estimate)
        self.now = 0.0
        self.events: list = []
        self._seq = itertools.count()

    def at(self, t: float, what, payload) -> None:
        heapq.heappush(self.events, (t, next(self._seq), what, payload))

    def submit(self, call: Pending) -> None:
        e, estimate = self.dispatcher.assign(call.kind, call.prompt_tokens, call.max_tokens,
                                             call.hashes)
        self.sent[call.seq] = e, estimate
        self.engines[e].queue.push(call)

    def dispatch(self, e: int) -> None:
        engine = self.engines[e]
        while len(engine.queue) and engine.running < self.limit:
            call = engine.queue.choose(self.policy, self.now, load=engine.running)
            engine.queue.remove(call)
            engine.queue.prefix.add(call.hashes)
            seconds = self.call_time(call.kind, call.prompt_tokens, call.max_tokens,
                                     engine.running, call.cached_tokens) / engine.speed
            engine.running += 1
            self.at(self.now + seconds, "done", (call, seconds))

    def finish(self, call: Pending, seconds: float) -> None:
        e, estimate = self.sent.pop(call.seq)
        engine = self.engines[e]
        engine.running -= 1
        self.dispatcher.finished(e, estimate)
        observed = (call.kind, call.prompt_tokens, call.max_tokens, seconds, call.cached_tokens,
                    call.load)
        self.estimator.observe(*observed)
        if engine.queue.estimator is not self.estimator:
            engine.queue.estimator.observe(*observed)


def simulate(workflows: Sequence[SimWorkflow], policy: Policy, call_time: CallTime, *,
             max_inflight_seqs: int = 8, estimator: StageTimeEstimator | None = None,
             speeds: Sequence[float] = (1.0,), dispatch: RoundRobin | Balanced | None = None,
             block_size: int = 32, cache_blocks: int = 0) -> list[float]:
    """End-to-end latency of each workflow (in the given order) under `policy`, on one engine
    per entry of `speeds` (relative speed) with calls sent by `dispatch` (round robin if None)
    and a prefix cache of `cache_blocks` blocks each. The estimator (fresh if None) splits the
    deadlines and learns from the simulated calls, as the engine's does from real ones; each
    engine's own estimator (a copy of it), which its queue and the dispatcher read, learns
    its own calls."""
    sim = _Sim(policy, call_time, max_inflight_seqs, estimator or StageTimeEstimator(),
               speeds, dispatch, block_size, cache_blocks)
    latencies: list[float | None] = [None] * len(workflows)
    for i, spec in enumerate(workflows):
        sim.at(spec.arrival, "arrive", i)
    while sim.events:
        sim.now, _, what, payload = heapq.heappop(sim.events)
        if what == "arrive":
            _Run(payload, workflows[payload], sim).next_stage()
        else:
            call, seconds = payload
            sim.finish(call, seconds)
            run = call.ticket
            run.open_calls -= 1
            if run.open_calls == 0 and not run.next_stage():
                latencies[run.index] = sim.now - run.spec.arrival
        for e in range(len(sim.engines)):
            sim.dispatch(e)
    return latencies


def attainment(latencies: Sequence[float], slos: Sequence[float]) -> float:
    """Share of workflows that finished within their SLO."""
    return sum(lat <= slo for lat, slo in zip(latencies, slos)) / len(latencies)


# --- replaying a recorded trace ----------------------------------------------------------


def workflows_from_traces(traces: Iterable) -> list[SimWorkflow]:
    """The workflows behind an engine's recorded online calls (`OnlineEngine.traces`, or the
    dicts of a trace file), each stage with its calls' measured lengths and prefixes, stages in
    the order their calls were issued. Calls outside a workflow are left out."""
    by_workflow = defaultdict(list)
    for t in traces:
        t = t if isinstance(t, dict) else t.to_dict()
        if t["workflow"] is not None and not t["offline"] and t["slo_s"] is not None:
            by_workflow[t["workflow"]].append(t)
    workflows = []
    for calls in by_workflow.values():
        stages: dict[str, list[dict]] = {}
        for t in sorted(calls, key=lambda t: t["admitted_at"] - t["queued_s"]):
            stages.setdefault(t["stage"], []).append(t)
        plan = tuple(Stage(name, ts[0]["kind"], len(ts),
                           round(sum(t["prompt_tokens"] for t in ts) / len(ts)),
                           round(sum(t["output_tokens"] for t in ts) / len(ts)))
                     for name, ts in stages.items())
        hashes = tuple(tuple(tuple(t["hashes"]) for t in ts) for ts in stages.values())
        workflows.append(SimWorkflow(calls[0]["workflow_arrival"], calls[0]["slo_s"], plan, hashes))
    workflows.sort(key=lambda w: w.arrival)
    start = workflows[0].arrival if workflows else 0.0
    return [SimWorkflow(w.arrival - start, w.slo_s, w.stages, w.hashes) for w in workflows]


def fit_traces(traces: Iterable, decay: float = 1.0) -> StageTimeEstimator:
    """A stage-time model fitted on the measured calls, with their load and cached prefix
    (decay 1: every call counts alike; an engine's own decay, to seed replicas that adapt)."""
    profile = defaultdict(list)
    for t in traces:
        t = t if isinstance(t, dict) else t.to_dict()
        profile[t["kind"]].append(Observation(t["prompt_tokens"], t["output_tokens"], t["run_s"],
                                              t["cached_tokens"], t["load"]))
    return StageTimeEstimator(profile, decay=decay)


def call_time_of(model: StageTimeEstimator) -> CallTime:
    """A simulator's call times from a stage-time model."""
    return lambda kind, prompt, output, load, cached: model.predict(kind, prompt, output,
                                                                    cached, load)


@dataclass(frozen=True)
class AlphaTuning:
    best_alpha: float
    attainment: dict[float, float]       # per alpha
    round_robin: float                   # the baseline's attainment on the same replay


def tune_alpha(workflows: Sequence[SimWorkflow], call_time: CallTime, *,
               speeds: Sequence[float] = (1.0, 1.0), alphas: Sequence[float] = ALPHAS,
               policy: Callable[[], Policy] = Urgency,
               estimator: StageTimeEstimator | None = None, **engine) -> AlphaTuning:
    """Replay `workflows` under each alpha of the workload-balanced rule and under round
    robin, each run from a copy of `estimator` (the engines' profile; fresh if None); the best
    alpha is the one with the highest SLO attainment (ties: the smaller alpha, the more
    balanced). `engine`: simulate's max_inflight_seqs, block_size, cache_blocks."""
    slos = [w.slo_s for w in workflows]

    def score(rule) -> float:
        return attainment(simulate(workflows, policy(), call_time, speeds=speeds, dispatch=rule,
                                   estimator=copy.deepcopy(estimator), **engine), slos)

    by_alpha = {alpha: score(Balanced(alpha)) for alpha in alphas}
    best = max(by_alpha, key=lambda a: (by_alpha[a], -a))
    return AlphaTuning(best, by_alpha, score(RoundRobin()))
