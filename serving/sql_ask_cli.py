"""`sluice sql ask --db FILE.duckdb "question"`: Text-to-SQL on the online engine."""

from __future__ import annotations

import asyncio
import json

EXIT_NO_SQL, EXIT_INPUT = 1, 2


def add_ask_command(sql_sub) -> None:
    ask = sql_sub.add_parser(
        "ask", help="answer a question with SQL over a DuckDB database (Text-to-SQL)",
        description="Keywords, value retrieval, schema selection, candidates in two prompt "
                    "styles, sandboxed execution with revision, selection by result clusters "
                    "and unit tests: one workflow on the embedded online engine. Exit 0 with an "
                    "answer, 1 when no candidate gave valid SQL, 2 for bad input.")
    ask.add_argument("question", help="the question, in words")
    ask.add_argument("--db", required=True, help="the DuckDB database file (opened read-only)")
    ask.add_argument("--model", required=True, help="local model directory or hub id")
    ask.add_argument("--dummy-weights", action="store_true",
                     help="load --model with random weights (for tests: every candidate fails)")
    ask.add_argument("--hint", help="extra knowledge for the question (BIRD's evidence)")
    ask.add_argument("--slo", type=float, default=60.0, help="seconds the question may take (default 60)")
    ask.add_argument("--candidates", type=int, default=4, help="candidate queries (default 4)")
    ask.add_argument("--revisions", type=int, default=2, help="revision rounds (default 2)")
    ask.add_argument("--timeout", type=float, default=10.0, help="seconds per candidate statement")
    ask.add_argument("--rows", type=int, default=20, help="result rows to print (default 20)")
    ask.add_argument("--rewrite", action="store_true", help="put the chosen SQL through the rewriter")
    ask.add_argument("--json", action="store_true", help="print the answer and its evidence as JSON")
    ask.add_argument("--explain", action="store_true", help="also print the evidence of every stage")
    ask.add_argument("--cache-dir", help="where the schema profile and value index are cached")
    ask.set_defaults(func=cmd_ask)


def cmd_ask(args) -> int:
    from sluice.engine import EngineConfigError
    from sluice.serving.sql_cli import engine_config, fail
    from sluice.sql_agent.duck import SqlError, check_timeout
    from sluice.sql_agent.text2sql.agent import Text2SQL, Text2SQLConfig

    try:
        if not args.question.strip():
            raise SqlError("the question is empty; ask something about the database")
        check_timeout(args.slo, "--slo")
        if args.candidates < 1 or args.revisions < 0 or args.rows < 0:
            raise SqlError("--candidates must be at least 1, --revisions and --rows at least 0")
        config = Text2SQLConfig(candidates=args.candidates, revisions=args.revisions,
                                slo_s=args.slo, timeout_s=check_timeout(args.timeout, "--timeout"),
                                rewrite=args.rewrite, cache_dir=args.cache_dir)
        agent = Text2SQL(args.db, None, config)
        engine = engine_config(args)
    except (SqlError, EngineConfigError, ValueError) as e:
        return fail(str(e), EXIT_INPUT, "ask")
    try:
        answer = asyncio.run(_ask(agent, engine, args))
    except SqlError as e:
        return fail(str(e), EXIT_INPUT, "ask")
    finally:
        agent.close()
    _print(answer, args)
    return 0 if answer.ok else EXIT_NO_SQL


async def _ask(agent, config, args):
    from sluice.engine import OnlineEngine

    async with OnlineEngine(config) as engine:
        agent.engine = engine
        return await agent.ask_async(args.question, hint=args.hint, slo_s=args.slo)


def _print(answer, args) -> None:
    if args.json:
        print(json.dumps(answer.to_dict(), default=str))
        return
    if answer.ok:
        print(answer.sql.rstrip() + ";")
        print()
        print(_table(answer.columns, answer.rows[:args.rows]))
        more = len(answer.rows) - args.rows
        if more > 0 or answer.truncated:
            print(f"... {'more than ' if answer.truncated else ''}{len(answer.rows)} rows in all")
    else:
        print(f"-- no valid SQL: {answer.reason}")
    if args.explain or not answer.ok:
        for i, c in enumerate(answer.candidates):
            where = f", cluster {c.cluster}" if c.cluster is not None else ""
            print(f"-- candidate {i} ({c.style}, {c.revisions} revisions{where}): {c.status}"
                  + (f": {c.error}" if c.error else ""))
    if args.explain:
        print(f"-- keywords: {', '.join(answer.keywords) or '(none)'}")
        print("-- values: " + ("; ".join(f"{v.table}.{v.column} = {v.value!r} ({v.score:.2f})"
                                          for v in answer.values) or "(none)"))
        print(f"-- tables shown: {', '.join(answer.tables_shown)}")
        for test in answer.tests:
            print(f"-- unit test: {test}")
        for s in answer.stages.values():
            print(f"-- stage {s.stage}: {s.calls} calls, {s.seconds:.2f} s, {s.prompt_tokens} prompt "
                  f"tokens ({s.cached_tokens} cached), {s.output_tokens} output tokens")
    print(f"-- {answer.seconds:.2f} s")


def _table(columns: list[str], rows: list[tuple]) -> str:
    cells = [columns] + [["NULL" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
