"""The online engine's pure parts, no vLLM: workflow plans and the deadline split, the
stage-time estimator, the prefix index, and the admission orders on hand-made queues."""

import math
import random

import pytest

from sluice.engine import (EDF, FCFS, AdmissionQueue, DeadlinePassed, Observation, Pending,
                           PrefixIndex, Stage, StageTimeEstimator, UnknownStage, Urgency,
                           Workflow, WorkflowPlan, block_hashes, split_deadline, urgency)


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


# --- workflow plan and deadline split ---------------------------------------------------

def test_split_gives_each_stage_its_share_of_the_time_left():
    assert split_deadline(10.0, 2.0, [3.0, 5.0]) == pytest.approx(2.0)
    assert split_deadline(10.0, 5.0, []) == 10.0
    assert split_deadline(9.0, 0.0, [0.0, 0.0]) == pytest.approx(3.0)   # no estimates: even


def test_stage_deadlines_follow_the_plan_and_the_time_already_spent():
    clock = Clock()
    times = {"retrieve": 1.0, "generate": 4.0, "revise": 2.0, "evaluate": 1.0}
    plan = WorkflowPlan([Stage("ir", "retrieve"), Stage("cand", "generate", fanout=2),
                         Stage("rev-1", "revise"), Stage("eval", "evaluate", fanout=5)])
    wf = Workflow(plan, slo_s=16.0, clock=clock)
    stage_time = lambda s: times[s.kind]
    assert wf.stage_deadline("ir", clock.t, stage_time) == pytest.approx(100.0 + 16.0 * 1 / 8)
    clock.t = 103.0                          # the first stage overran: 13 s left for 7 s of work
    assert wf.stage_deadline("cand", clock.t, stage_time) == pytest.approx(103.0 + 13.0 * 4 / 7)
    clock.t = 104.0                          # a later call of a started stage keeps its deadline
    assert wf.stage_deadline("cand", clock.t, stage_time) == pytest.approx(103.0 + 13.0 * 4 / 7)
    plan.add(Stage("rev-2", "revise"), after="rev-1")         # the plan grows as it runs
    clock.t = 110.0
    assert wf.stage_deadline("rev-1", clock.t, stage_time) == pytest.approx(110.0 + 6.0 * 2 / 5)


def test_plan_updates_and_bad_calls():
    plan = WorkflowPlan([Stage("a", "k"), Stage("b", "k")])
    plan.update("b", fanout=7)
    assert plan.get("b").fanout == 7
    plan.remove("a")
    assert [s.name for s in plan.stages] == ["b"]
    with pytest.raises(ValueError, match="already in the plan"):
        plan.add(Stage("b", "k"))
    clock = Clock()
    wf = Workflow(plan, slo_s=1.0, clock=clock)
    with pytest.raises(UnknownStage, match="stage 'zz' is not in the workflow's plan \\(stages: b\\)"):
        wf.check_call("zz", clock.t)
    wf.check_call("b", clock.t + 0.5)
    with pytest.raises(DeadlinePassed, match="deadline passed 1.000 s ago"):
        wf.check_call("b", clock.t + 2.0)
    Workflow(plan, slo_s=1.0, late="run", clock=clock).check_call("b", clock.t + 2.0)


# --- estimator ----------------------------------------------------------------------------

def made_up_time(prompt, output, cached=0):
    return 0.02 + 4e-5 * (prompt - cached) + 0.015 * output


def test_estimator_converges_on_made_up_timings():
    rng = random.Random(0)
    est = StageTimeEstimator()
    for _ in range(80):
        p, o = rng.randint(200, 4000), rng.randint(5, 200)
        est.observe("revise", p, o, made_up_time(p, o) * rng.uniform(0.95, 1.05))
    assert est.relative_error("revise", skip=50) < 0.05
    assert est.predict("revise", 3000, 100) == pytest.approx(made_up_time(3000, 100), rel=0.05)
    # a kind never seen borrows the pooled fit; nothing seen at all predicts 0
    assert est.predict("evaluate", 1000, 30) == pytest.approx(made_up_time(1000, 30), rel=0.1)
    assert StageTimeEstimator().predict("x", 10, 10) == 0.0


def test_estimator_credits_cached_prompt_tokens_and_follows_a_slower_engine():
    rng = random.Random(1)
    est = StageTimeEstimator(profile={"gen": [Observation(p, o, made_up_time(p, o))
                                              for p, o in [(500, 10), (4000, 50), (2000, 200)]]})
    for _ in range(40):
        p, o, c = rng.randint(1000, 5000), rng.randint(5, 100), rng.randint(0, 900)
        est.observe("gen", p, o, made_up_time(p, o, c), cached_tokens=c)
    assert est.predict("gen", 4000, 10, cached_tokens=3000) == \
        pytest.approx(made_up_time(4000, 10, 3000), rel=0.02)
    for _ in range(150):                   # the engine gets 2x slower (load): the fit follows
        p, o = rng.randint(1000, 5000), rng.randint(5, 100)
        est.observe("gen", p, o, 2 * made_up_time(p, o))
    assert est.predict("gen", 3000, 50) == pytest.approx(2 * made_up_time(3000, 50), rel=0.1)


def test_estimator_learns_how_running_calls_slow_a_call_down():
    rng = random.Random(2)
    est = StageTimeEstimator()
    shared_steps = lambda o, load: 0.01 + 0.01 * o * (1 + 0.5 * load)
    for _ in range(60):
        o, load = rng.randint(5, 100), rng.randint(0, 8)
        est.observe("gen", 100, o, shared_steps(o, load), load=load)
    assert est.predict("gen", 100, 50, load=6) == pytest.approx(shared_steps(50, 6), rel=0.02)
    assert est.predict("gen", 100, 50, load=0) == pytest.approx(shared_steps(50, 0), rel=0.02)


def test_stage_time_uses_the_plans_lengths_or_the_kinds_mean():
    est = StageTimeEstimator()
    for p, o in [(1000, 10), (3000, 30)]:
        est.observe("gen", p, o, made_up_time(p, o))
    assert est.stage_time(Stage("s", "gen")) == pytest.approx(made_up_time(2000, 20), rel=0.05)
    assert est.stage_time(Stage("s", "gen", prompt_tokens=3000, output_tokens=30)) == \
        pytest.approx(made_up_time(3000, 30), rel=0.05)


# --- prefix index --------------------------------------------------------------------------

def test_prefix_index_counts_the_leading_cached_blocks_and_evicts_lru():
    shared = list(range(64))
    a, b = block_hashes(shared + [1, 2, 3], 32), block_hashes(shared + [9] * 40, 32)
    assert len(a) == 2 and len(b) == 3 and a == b[:2]
    assert block_hashes(list(range(32)), 32) == ()             # the last token is never cached
    index = PrefixIndex(block_size=32, capacity_blocks=3)
    index.add(a)
    assert index.cached_tokens(b) == 64
    index.add(block_hashes(list(range(100, 200)), 32))         # 3 new blocks push out a's two
    assert index.cached_tokens(b) == 0


# --- admission orders on hand-made queues --------------------------------------------------

def queue_with(calls, estimates=None):
    est = StageTimeEstimator()
    for kind, seconds in (estimates or {}).items():
        est.observe(kind, 0, 0, seconds)                      # constant time per kind
    q = AdmissionQueue(est, PrefixIndex(32, 1000))
    for c in calls:
        q.push(c)
    return q


def drain(q, policy, now):
    order = []
    while len(q):
        call = q.choose(policy, now)
        q.remove(call)
        q.prefix.add(call.hashes)
        order.append(call.kind)
    return order


def test_fcfs_edf_and_urgency_orders():
    now = 10.0
    calls = [  # kind, arrival, stage deadline, workflow deadline
        Pending("long", 0, 0, enqueued=1.0, deadline=now + 5.0, workflow_deadline=30.0),
        Pending("short", 0, 0, enqueued=2.0, deadline=now + 1.0, workflow_deadline=20.0),
        Pending("mid", 0, 0, enqueued=3.0, deadline=now + 3.0, workflow_deadline=25.0),
        Pending("free", 0, 0, enqueued=4.0),                   # no workflow: no deadline
    ]
    times = {"long": 4.8, "short": 0.1, "mid": 1.0, "free": 0.1}
    assert drain(queue_with(calls, times), FCFS(), now) == ["long", "short", "mid", "free"]
    assert drain(queue_with(calls, times), EDF(), now) == ["short", "mid", "long", "free"]
    # slack - estimate: long 0.2, short 0.9, mid 2.0 -> the long call has least room
    assert drain(queue_with(calls, times), Urgency(prefix_window=None), now) == \
        ["long", "short", "mid", "free"]
    assert urgency(calls[0], now) == pytest.approx(-0.2, abs=1e-4)
    late = Pending("late", 0, 0, enqueued=0.5, deadline=now - 2.0, workflow_deadline=now - 1.0)
    assert drain(queue_with(calls + [late], times), Urgency(prefix_window=None), now) == \
        ["long", "short", "mid", "late", "free"]


def test_urgency_is_recomputed_at_each_decision():
    a = Pending("a", 0, 0, deadline=20.0)
    b = Pending("b", 0, 0, deadline=12.0)
    q = queue_with([a, b], {"a": 9.0, "b": 0.5})
    assert q.choose(Urgency(None), now=0.0) is a          # a: 11 s room, b: 11.5 s
    q.estimator.observe("a", 0, 0, 0.0)                    # a turns out much faster...
    q.estimator.observe("a", 0, 0, 0.0)
    assert q.choose(Urgency(None), now=0.0) is b           # ...so b is now the more urgent


def test_prefix_awareness_breaks_ties_among_similar_urgency_only():
    schema = list(range(300))
    warm = Pending("gen", 300, 10, hashes=block_hashes(schema + [7, 8], 32), deadline=10.05)
    cold = Pending("gen", 300, 10, hashes=block_hashes(list(range(500, 800)), 32), deadline=10.0)
    urgent = Pending("gen", 300, 10, hashes=block_hashes(list(range(900, 1200)), 32), deadline=9.0)
    q = queue_with([cold, warm], {"gen": 1.0})
    q.prefix.add(block_hashes(schema + [1], 32))
    assert q.choose(Urgency(prefix_window=None), now=0.0) is cold
    assert q.choose(Urgency(prefix_window=0.1), now=0.0) is warm
    assert warm.cached_tokens == 288
    q.push(urgent)                                  # 1 s more urgent: beyond 0.1 x its 1 s estimate
    assert q.choose(Urgency(prefix_window=0.1), now=0.0) is urgent


def test_offline_calls_wait_behind_every_online_call_in_submission_order():
    off = [Pending("batch", 0, 0, offline=True) for _ in range(3)]
    late = Pending("late", 0, 0, enqueued=9.0)
    q = queue_with(off + [late])
    assert q.choose(FCFS(), 0.0) is late
    q.remove(late)
    assert [q.choose(FCFS(), 0.0) is off[0], len(q)] == [True, 3]
    assert math.isinf(Pending("x", 0, 0).deadline)
