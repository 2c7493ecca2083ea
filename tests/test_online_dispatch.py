"""HEXGEN's dispatch rule on outstanding work, on hand-made engine states."""

import pytest

from sluice.engine import choose_engine, dispatch_scores


def test_scores_follow_the_rule():
    # engine 0 is 2x faster for this call; engine 1 has half the outstanding work
    scores = dispatch_scores(0.5, call_times=[1.0, 2.0], outstanding=[10.0, 5.0])
    assert scores == pytest.approx([0.5 * 1 - 0.5 * 1.0, 0.5 * 0.5 - 0.5 * 0.5])


def test_alpha_trades_speed_against_balance():
    times, work = [1.0, 2.0], [10.0, 5.0]
    assert choose_engine(1.0, times, work) == 0        # speed only: the fast engine
    assert choose_engine(0.0, times, work) == 1        # balance only: the less loaded one
    assert choose_engine(0.3, times, work) == 1
    assert choose_engine(0.7, times, work) == 0


def test_a_drained_engine_wins_again():
    # outstanding work, not cumulative: once engine 0 drains it gets calls again
    assert choose_engine(0.2, [1.0, 1.0], [0.0, 3.0]) == 0
    assert choose_engine(0.2, [1.0, 1.0], [0.0, 0.0]) == 0     # idle cluster: ties go first
    with pytest.raises(ValueError, match="alpha"):
        choose_engine(1.5, [1.0], [0.0])


def dispatcher(rule, replicas=2, cache_blocks=64):
    from sluice.engine import Observation, PrefixIndex, StageTimeEstimator
    from sluice.engine.dispatch import Dispatcher

    # a call costs 1 s plus 1 s per 1,000 uncached prompt tokens
    est = StageTimeEstimator({"gen": [Observation(0, 0, 1.0), Observation(1000, 0, 2.0),
                                      Observation(2000, 0, 3.0)]})
    return Dispatcher(rule, [est] * replicas, [PrefixIndex(100, cache_blocks) for _ in range(replicas)])


def test_round_robin_takes_replicas_in_turn_whatever_their_state():
    from sluice.engine.dispatch import RoundRobin

    d = dispatcher(RoundRobin(), replicas=3)
    picks = [d.assign("gen", 1000, 0, (1, 2, 3))[0] for _ in range(5)]
    assert picks == [0, 1, 2, 0, 1]
    assert d.calls == [2, 2, 1]


def test_balanced_dispatch_follows_the_cached_prefix_and_the_outstanding_work():
    from sluice.engine.dispatch import Balanced

    schema_a, schema_b = tuple(range(10)), tuple(range(100, 110))     # 1,000-token prefixes
    d = dispatcher(Balanced(0.5))
    assert d.assign("gen", 1000, 0, schema_a)[0] == 0          # idle: the first replica
    assert d.assign("gen", 1000, 0, schema_b)[0] == 1          # replica 0 holds work now
    e, estimate = d.assign("gen", 1000, 0, schema_a)           # schema a is cached on 0:
    assert e == 0 and estimate == pytest.approx(1.0)           # 1 s there, 2 s on replica 1
    assert d.outstanding == pytest.approx([3.0, 2.0])
    d.finished(0, 2.0)
    d.finished(0, 1.0)
    assert d.outstanding == pytest.approx([0.0, 2.0]) and d.calls == [0, 1]
    d.alive[0] = False                                         # a dead replica gets nothing
    assert d.assign("gen", 1000, 0, schema_a)[0] == 1
