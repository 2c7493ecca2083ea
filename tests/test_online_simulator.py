"""The discrete-event simulator on hand-made workflows: the same queue and policies as the
engine, on a simulated clock."""

import pytest

from sluice.engine import (EDF, FCFS, Observation, SimWorkflow, Stage, StageTimeEstimator,
                           Urgency, simulate)

TIMES = {"long": 4.0, "short": 1.0}


def call_time(kind, prompt, output, load):
    return TIMES[kind]


def profiled():
    return StageTimeEstimator({k: [Observation(0, 0, t)] for k, t in TIMES.items()})


def one_stage(arrival, kind, slo):
    return SimWorkflow(arrival, slo, (Stage("only", kind),))


# one slot: w0 holds it until t=1; then the long loose w1 and the short tight w2 both wait
WORKLOAD = [one_stage(0.0, "short", 100.0), one_stage(0.1, "long", 100.0),
            one_stage(0.2, "short", 2.5)]


def test_fcfs_runs_in_arrival_order_and_misses_the_tight_workflow():
    latencies = simulate(WORKLOAD, FCFS(), call_time, max_inflight_seqs=1, estimator=profiled())
    assert latencies == pytest.approx([1.0, 4.9, 5.8])


def test_urgency_and_edf_serve_the_tight_workflow_first():
    for policy in (Urgency(), EDF()):
        latencies = simulate(WORKLOAD, policy, call_time, max_inflight_seqs=1, estimator=profiled())
        assert latencies == pytest.approx([1.0, 5.9, 1.8])
        assert latencies[2] <= 2.5


def test_stages_run_in_order_with_fanout_in_parallel_and_the_estimator_learns():
    wf = SimWorkflow(0.0, 50.0, (Stage("a", "short"), Stage("b", "long", fanout=3),
                                 Stage("c", "short")))
    est = StageTimeEstimator()
    [latency] = simulate([wf], Urgency(), call_time, max_inflight_seqs=2, estimator=est)
    assert latency == pytest.approx(1 + 4 + 4 + 1)           # 3 parallel calls on 2 slots
    assert est.predict("long", 0, 0) == pytest.approx(4.0)
