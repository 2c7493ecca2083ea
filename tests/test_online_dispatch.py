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
