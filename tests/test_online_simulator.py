"""The discrete-event simulator on hand-made workflows: the same queue and policies as the
engine, on a simulated clock."""

import pytest

from sluice.engine import (EDF, FCFS, Observation, SimWorkflow, Stage, StageTimeEstimator,
                           Urgency, simulate)

TIMES = {"long": 4.0, "short": 1.0}


def call_time(kind, prompt, output, load, cached):
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


def pairs(n, slo, gap=20.0):
    """n pairs of one-call workflows arriving together, far enough apart to drain between."""
    return [one_stage(i * gap, "short", slo) for i in range(n) for _ in range(2)]


def test_tuning_picks_a_high_alpha_when_one_replica_is_much_slower():
    # replica 1 runs at a quarter of replica 0's speed: a pair's second call makes its 2 s SLO
    # only by waiting for the fast replica (alpha above 4/7), never on the slow one (4 s)
    from sluice.engine.simulator import tune_alpha

    result = tune_alpha(pairs(10, slo=2.0), call_time, speeds=(1.0, 0.25), max_inflight_seqs=1,
                        policy=lambda: FCFS())
    assert result.best_alpha == pytest.approx(0.6)
    assert result.attainment[0.0] < 0.6 and result.attainment[1.0] >= 0.9
    assert result.round_robin < result.attainment[result.best_alpha]


def test_tuning_picks_balance_when_replicas_are_alike_and_busy():
    # two like replicas, one call at a time each: alpha 1 sees equal call times and piles every
    # call on replica 0; alpha 0 splits the pairs and every workflow makes its SLO
    from sluice.engine.simulator import tune_alpha

    result = tune_alpha(pairs(10, slo=1.5), call_time, speeds=(1.0, 1.0), max_inflight_seqs=1,
                        policy=lambda: FCFS())
    assert result.best_alpha == 0.0 and result.attainment[0.0] == 1.0
    assert result.attainment[1.0] == pytest.approx(0.5)


def test_a_recorded_trace_replays_as_its_workflows():
    from sluice.engine.simulator import call_time_of, fit_traces, workflows_from_traces

    def trace(wf, stage, kind, enqueued, run_s, arrival, slo=5.0, prompt=100, hashes=()):
        return dict(kind=kind, stage=stage, workflow=wf, offline=False, prompt_tokens=prompt,
                    cached_tokens=0, output_tokens=10, admitted_at=enqueued + 0.1, queued_s=0.1,
                    run_s=run_s, estimate_s=0.0, load=0, workflow_arrival=arrival, slo_s=slo,
                    hashes=list(hashes))

    calls = [trace(7, "plan", "extract", 10.0, 1.0, 10.0),
             trace(7, "cands", "generate", 11.0, 2.0, 10.0, hashes=(1, 2)),
             trace(7, "cands", "generate", 11.0, 2.0, 10.0, hashes=(1, 3)),
             trace(3, "plan", "extract", 12.5, 1.0, 12.5, slo=9.0),
             dict(trace(None, None, "offline", 0.0, 1.0, None), offline=True)]
    a, b = workflows_from_traces(reversed(calls))
    assert (a.arrival, a.slo_s, b.arrival, b.slo_s) == (0.0, 5.0, 2.5, 9.0)
    assert [(s.name, s.kind, s.fanout) for s in a.stages] == [("plan", "extract", 1),
                                                             ("cands", "generate", 2)]
    assert sorted(a.hashes[1]) == [(1, 2), (1, 3)]
    assert call_time_of(fit_traces(calls))("generate", 100, 10, 0, 0) == pytest.approx(2.0, rel=1e-3)


def test_tune_alpha_command_replays_a_trace_file(tmp_path, capsys):
    from sluice.engine.trace_file import write_traces
    from sluice.serving.cli import main

    calls = []
    for i in range(20):                         # pairs of one-call workflows, 1 s each, SLO 2 s
        t0 = (i // 2) * 20.0
        calls.append(dict(kind="short", stage="only", workflow=i, offline=False,
                          prompt_tokens=10, cached_tokens=0, output_tokens=5, admitted_at=t0,
                          queued_s=0.0, run_s=1.0, estimate_s=1.0, load=0,
                          workflow_arrival=t0, slo_s=2.0, hashes=[]))
    path = tmp_path / "trace.jsonl"
    write_traces(path, calls, replicas=2, block_size=32, max_inflight_seqs=1)
    assert main(["engine", "tune-alpha", str(path), "--speeds", "1", "0.25",
                 "--policy", "fcfs"]) == 0
    out = capsys.readouterr().out
    assert "20 workflows, 20 calls, 2 replicas (speeds 1, 0.25), policy fcfs" in out
    assert "round robin: 50.0%" in out
    # the replicas learn that replica 1 is slow; the highest alphas wait for replica 0
    assert " 0.00   50.0%" in out and " 1.00  100.0%  <- best" in out and "best alpha: 1" in out
    (tmp_path / "bad.jsonl").write_text('{"format": "sluice-trace-v1"}\n{oops\n')
    assert main(["engine", "tune-alpha", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl:2: not a JSON call record" in capsys.readouterr().err
