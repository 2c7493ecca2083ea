"""`sluice engine tune-alpha`: pick the dispatch alpha for engine replicas by replaying a trace
the engines recorded on the simulator (engine/simulator.py)."""

from __future__ import annotations

import argparse

from sluice.engine.admission import POLICIES
from sluice.engine.estimator import DECAY
from sluice.engine.simulator import (ALPHAS, call_time_of, fit_traces, tune_alpha,
                                    workflows_from_traces)
from sluice.engine.trace_file import read_traces


def add_engine_commands(sub) -> None:
    engine = sub.add_parser("engine", help="online engine tools")
    tools = engine.add_subparsers(dest="engine_command", required=True)
    tune = tools.add_parser(
        "tune-alpha", help="replay a recorded trace under each dispatch alpha; print the best",
        description="Replays the workflows of a trace file (written by the engine, for example "
                    "benchmarks/bench_online.py --replicas 2 --trace-out) on the simulator, "
                    "with call times fitted on the trace's measured calls, under each alpha of "
                    "the workload-balanced dispatch rule and under round robin.")
    tune.add_argument("trace", help="trace file (JSON lines with a sluice-trace header)")
    tune.add_argument("--replicas", type=int, help="engines to replay on (default: the trace's)")
    tune.add_argument("--speeds", type=float, nargs="+",
                      help="relative speed of each replica (default: all 1)")
    tune.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS),
                      help="alphas to try (default 0, 0.1, ..., 1)")
    tune.add_argument("--policy", choices=sorted(POLICIES), default="urgency",
                      help="each replica's admission policy (default urgency)")
    tune.add_argument("--inflight", type=int,
                      help="calls a replica runs at once (default: the trace's, else 8)")
    tune.set_defaults(func=cmd_tune_alpha)


def cmd_tune_alpha(args: argparse.Namespace) -> int:
    header, calls = read_traces(args.trace)
    workflows = workflows_from_traces(calls)
    if not workflows:
        raise ValueError(f"{args.trace}: no workflow calls to replay (calls need a workflow "
                         "and its SLO)")
    replicas = args.replicas or header.get("replicas") or 2
    speeds = args.speeds or [1.0] * replicas
    if len(speeds) != replicas:
        raise ValueError(f"--speeds: {len(speeds)} speeds for {replicas} replicas")
    block_size = header.get("block_size", 32)
    result = tune_alpha(workflows, call_time_of(fit_traces(calls)), speeds=speeds,
                        estimator=fit_traces(calls, decay=DECAY),   # the replicas' profile
                        alphas=args.alphas, policy=POLICIES[args.policy],
                        max_inflight_seqs=args.inflight or header.get("max_inflight_seqs") or 8,
                        block_size=block_size,
                        cache_blocks=header.get("kv_cache_tokens", 0) // block_size)
    print(f"{len(workflows)} workflows, {len(calls)} calls, {replicas} replicas "
          f"(speeds {', '.join(f'{s:g}' for s in speeds)}), policy {args.policy}")
    print("alpha  SLO attainment")
    for alpha, share in result.attainment.items():
        mark = "  <- best" if alpha == result.best_alpha else ""
        print(f"{alpha:5.2f}  {100 * share:5.1f}%{mark}")
    print(f"round robin: {100 * result.round_robin:.1f}%")
    print(f"best alpha: {result.best_alpha:g}")
    return 0
