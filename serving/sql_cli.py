"""`sluice sql ...`: SQL tools on DuckDB. `sluice sql rewrite --db FILE.duckdb QUERY.sql`."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from pathlib import Path

EXIT_INPUT, EXIT_TIMEOUT = 2, 3


def add_sql_commands(subparsers) -> None:
    from sluice.serving.sql_ask_cli import add_ask_command

    sql = subparsers.add_parser("sql", help="SQL tools on DuckDB (rewrite, ask)")
    sql_sub = sql.add_subparsers(dest="sql_command", required=True)
    add_ask_command(sql_sub)
    rw = sql_sub.add_parser(
        "rewrite", help="rewrite queries to run faster, verified on the database",
        description="Propose rewrites (rules, sqlglot, optionally an LLM and tree search), verify "
                    "each on the database and perturbed copies of it, keep the fastest one that "
                    "is at least --min-speedup faster. One query prints the result; several "
                    "(or a folder) run as a batch and write a report.")
    rw.add_argument("queries", nargs="+", metavar="QUERY",
                    help="a .sql file, '-' for stdin, or a folder of .sql files")
    rw.add_argument("--db", required=True, help="the DuckDB database file (opened read-only)")
    rw.add_argument("--json", action="store_true", help="print JSON for machines")
    rw.add_argument("--explain", action="store_true", help="also print both query plans (EXPLAIN)")
    rw.add_argument("--model", help="local model directory: adds LLM prompts and tree search")
    rw.add_argument("--dummy-weights", action="store_true",
                    help="load --model with random weights (for tests: answers are random text)")
    rw.add_argument("--min-speedup", type=float, default=1.5, help="accept at this speedup or more (default 1.5)")
    rw.add_argument("--runs", type=int, default=5, help="timed runs per query, median taken (default 5)")
    rw.add_argument("--timeout", type=float, default=60.0, help="seconds per statement (default 60)")
    rw.add_argument("--rules", help="comma-separated rules to use (default: all)")
    rw.add_argument("--no-sqlglot", action="store_true", help="leave out sqlglot's optimizer")
    rw.add_argument("--llm-samples", type=int, default=1, help="answers per LLM prompt (default 1)")
    rw.add_argument("--llm-max-tokens", type=int, default=512, help="tokens per LLM answer (default 512)")
    rw.add_argument("--mcts-iterations", type=int, default=8,
                    help="tree search iterations over rule (and, with --model, LLM) steps; 0: off")
    rw.add_argument("--report", default="sql_rewrite_report", help="batch report folder (default ./sql_rewrite_report)")
    rw.add_argument("--cache-dir", help="where perturbed copies and statistics are cached (default: ~/.cache/sluice/sql, private to the user)")
    rw.set_defaults(func=cmd_rewrite)


def fail(message: str, code: int = EXIT_INPUT, command: str = "rewrite") -> int:
    """One line on stderr for an error the user can fix; returns the exit code."""
    print(f"sluice sql {command}: error: {message}", file=sys.stderr)
    return code


def _read_queries(items: list[str]) -> list[tuple[str, str]]:
    """[(name, sql)] from files, folders (every *.sql, sorted) and '-' (stdin)."""
    out = []
    for item in items:
        if item == "-":
            out.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(item)
        if path.is_dir():
            files = sorted(path.glob("*.sql"))
            if not files:
                raise FileNotFoundError(f"{path}: no .sql files in this folder")
            out += [(str(f), _read_sql(f)) for f in files]
        elif path.is_file():
            out.append((str(path), _read_sql(path)))
        else:
            raise FileNotFoundError(f"{path}: no such query file or folder")
    return out


def _read_sql(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None


def engine_config(args):
    """The engine for --model (and --dummy-weights), checked; vLLM logs go to stderr."""
    # stdout carries the query (or JSON); vLLM logs to stdout unless told otherwise
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    from sluice.engine import EngineConfig

    config = EngineConfig(model=args.model, max_model_len=4096, kv_cache_tokens=32768,
                          enforce_eager=True, load_format="dummy" if args.dummy_weights else "auto")
    config.check()
    return config


def _engine(args):
    from sluice.engine import BatchEngine

    return BatchEngine(engine_config(args))


def build_generators(args, engine=None) -> list:
    from sluice.sql_agent.rewrite.candidates import RuleGenerator, SqlglotGenerator
    from sluice.sql_agent.rewrite.llm import LLMGenerator
    from sluice.sql_agent.rewrite.mcts import MCTSGenerator

    rules = [r.strip() for r in args.rules.split(",") if r.strip()] if args.rules else None
    gens = [RuleGenerator(rules)]
    if not args.no_sqlglot:
        gens.append(SqlglotGenerator())
    if engine is not None:
        gens.append(LLMGenerator(engine, samples=args.llm_samples, max_tokens=args.llm_max_tokens))
    if args.mcts_iterations > 0:  # without an engine the search composes rules only
        gens.append(MCTSGenerator(engine, iterations=args.mcts_iterations,
                                  max_tokens=args.llm_max_tokens))
    return gens


def cmd_rewrite(args, engine=None) -> int:
    """`engine` lets tests and embedders pass an Engine instead of --model."""
    from sluice.sql_agent.duck import SqlError
    from sluice.sql_agent.rewrite.pipeline import RewriteConfig, Rewriter

    from sluice.sql_agent.duck import check_timeout

    if not (math.isfinite(args.min_speedup) and args.min_speedup > 0) or args.runs < 1:
        return fail("--min-speedup must be positive (and finite) and --runs at least 1")
    own_engine = None
    try:
        check_timeout(args.timeout, "--timeout")
        queries = _read_queries(args.queries)
        if len(queries) > 1 and Path(args.report).exists() and not Path(args.report).is_dir():
            raise ValueError(f"--report {args.report} is a file; give a folder for the report")
        config = RewriteConfig(min_speedup=args.min_speedup, runs=args.runs,
                               timeout_s=args.timeout, cache_dir=args.cache_dir)
        rewriter = Rewriter(args.db, [], config)
        if engine is None and args.model:
            engine = own_engine = _engine(args)
        rewriter.generators = build_generators(args, engine)
    except (SqlError, FileNotFoundError, ValueError) as e:
        return fail(str(e))
    try:
        if len(queries) == 1:
            return _rewrite_one(*queries[0], rewriter, args)
        return _rewrite_batch(queries, rewriter, args)
    finally:
        rewriter.close()
        if own_engine is not None:
            own_engine.close()


def _rewrite_one(name: str, sql: str, rewriter, args) -> int:
    from sluice.sql_agent.duck import QueryTimeout, SqlError

    try:
        result = rewriter.rewrite(sql)
    except QueryTimeout as e:
        return fail(f"{name}: {e}", EXIT_TIMEOUT)
    except SqlError as e:
        return fail(f"{name}: {e}")
    _print_one(result, rewriter, args)
    return 0


def _rewrite_batch(queries, rewriter, args) -> int:
    from sluice.sql_agent.duck import SqlError
    from sluice.sql_agent.rewrite.report import summary_row, totals, write_report

    rows, details = [], []
    for name, sql in queries:
        try:
            result = rewriter.rewrite(sql)
        except SqlError as e:
            rows.append(summary_row(name, error=str(e)))
            details.append({"query": name, "error": str(e)})
        except Exception as e:  # a bug on one query is that query's result, not the batch's end
            error = f"internal error: {type(e).__name__}: {e}"
            rows.append(summary_row(name, error=error))
            details.append({"query": name, "error": error, "traceback": traceback.format_exc()})
        else:
            rows.append(summary_row(name, result))
            details.append({"query": name, **result.to_dict()})
        if not args.json:
            r = rows[-1]
            speed = f"{r['speedup']:.2f}x via {r['source']}" if r["speedup"] else r["error"] or ""
            print(f"{name}: {r['verdict']} {speed}", flush=True)
    paths = write_report(args.report, rows, details, args.min_speedup)
    tot = totals(rows, args.min_speedup)
    if args.json:
        print(json.dumps({"totals": tot, "queries": rows,
                          "report": {k: str(v) for k, v in paths.items()}}, default=str))
    else:
        geo = tot["geomean_productive_speedup"]
        print(f"{tot['queries']} queries: {tot['rewritten']} rewritten, {tot['productive']} "
              f"productive (>= {args.min_speedup:g}x), geometric mean "
              f"{f'{geo:.2f}x' if geo else 'n/a'}, {tot['errors']} errors")
        print(f"report: {paths['html']} ({paths['csv'].name}, {paths['json'].name})")
    return 1 if tot["errors"] else 0


def _print_one(result, rewriter, args) -> None:
    from sluice.sql_agent.rewrite.pipeline import pretty

    plans = {}
    if args.explain:
        plans = {"original": rewriter.sandbox.explain(result.original),
                 "chosen": rewriter.sandbox.explain(result.chosen)}
    if args.json:
        print(json.dumps({**result.to_dict(), "diff": result.diff(), "plans": plans}, default=str))
        return
    print(pretty(result.chosen), end="")
    print()
    if result.accepted:
        print(f"-- rewritten by {result.source}: {result.speedup:.2f}x faster")
        print(result.diff(), end="")
        print("-- verification:")
        for check in result.evidence:
            print(f"--   {check}")
    else:
        print(f"-- kept the original: no candidate was verified and at least "
              f"{args.min_speedup:g}x faster ({len(result.candidates)} tried)")
    for c in result.candidates:
        if c.verdict != "accepted":
            print(f"--   {c.source}: {c.verdict}: {c.reason}")
    for name, plan in plans.items():
        print(f"\n-- plan of the {name} query:\n{plan}")
