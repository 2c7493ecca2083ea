"""HEXGEN's workload-balanced dispatch rule across engine replicas, on outstanding work.

    score_e = alpha * t_base / t_e - (1 - alpha) * W_e / W_base,   pick the argmax

t_e is the call's estimated time on engine e (t_base the fastest engine's), W_e the estimated
work engine e still has to do (queued plus running; W_base the largest, so both terms lie in
[0, 1]). HEXGEN's W_e only ever grows (work assigned since the start): an engine that was busy
an hour ago keeps losing calls after it has drained. Outstanding work drops as calls finish, so
a drained engine wins again. alpha = 0 balances load only; alpha = 1 picks the fastest engine.
"""

from __future__ import annotations

from typing import Sequence


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
