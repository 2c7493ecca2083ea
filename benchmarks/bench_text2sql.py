"""Value retrieval for Text-to-SQL on TPC-H and TPC-DS SF1: can a misspelled literal of a real
query still find the database value it meant?

For each suite, the string literals compared with `=` or `IN` in the queries' predicates (the
22 TPC-H queries; the DSB queries over TPC-DS) that are values of an indexed column are
misspelled three ways (a typo: one character dropped, doubled or swapped; the case changed;
a word dropped from a value of three or more words) and looked up in the value index. Reported:
recall@10 per kind, index build time, values and size on disk, lookup latency.

With `--workflows`, the agent itself on the tiny dummy-weight model and the shop test
database: questions one after another (prompt tokens and prefix-cache hits per stage, the share
served from cache after the first question), then a burst of concurrent questions with an SLO
under the urgency policy and under FCFS on the same engine, alternated after a warm-up burst
(SLO attainment, P50/P95 latency).
Dummy weights make every candidate fail, so each question runs its full revision loop.

Build the data first (offline, a few minutes): .venv/bin/python benchmarks/make_tpc_data.py
    .venv/bin/python benchmarks/bench_text2sql.py [--suite tpch|dsb|all]
    .venv/bin/python benchmarks/bench_text2sql.py --workflows 50 --slo 10 --window 10
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlglot
from sqlglot import exp

from sluice.sql_agent.duck import Sandbox
from sluice.sql_agent.schema import profile
from sluice.sql_agent.text2sql.values import ValueIndex

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "data"


def literals(queries: list[str]) -> set[str]:
    found = set()
    for sql in queries:
        try:
            tree = sqlglot.parse_one(sql, read="duckdb")
        except sqlglot.errors.ParseError:
            continue
        for node in tree.find_all(exp.EQ, exp.In):
            for lit in node.find_all(exp.Literal):
                if lit.is_string and len(lit.this) >= 3:
                    found.add(lit.this)
    return found


def typo(value: str, rng: random.Random) -> str:
    i = rng.randrange(len(value) - 1)
    kind = rng.choice(["drop", "double", "swap"])
    if kind == "drop":
        return value[:i] + value[i + 1:]
    if kind == "double":
        return value[:i] + value[i] + value[i:]
    return value[:i] + value[i + 1] + value[i] + value[i + 2:]


def misspellings(value: str, rng: random.Random) -> dict[str, str]:
    out = {"typo": typo(value, rng), "case": value.swapcase()}
    words = value.split()
    if len(words) > 2:  # from two words, the one left ("County") names many values
        drop = rng.randrange(len(words))
        out["dropped word"] = " ".join(w for j, w in enumerate(words) if j != drop)
    return out


def run_suite(name: str, db: Path, queries: list[str], cache: Path) -> dict:
    with Sandbox(db) as sb:
        prof = profile(sb, cache)
        start = time.perf_counter()
        index = ValueIndex.for_database(sb, prof, cache)
        build_s = time.perf_counter() - start
    known = {v for _, _, v in index.values}
    targets = sorted(literals(queries) & known)
    rng = random.Random(7)
    hits: dict[str, list[bool]] = {}
    latencies = []
    for value in targets:
        for kind, wrong in misspellings(value, rng).items():
            t = time.perf_counter()
            found = [m.value for m in index.search(wrong, k=10)]
            latencies.append(time.perf_counter() - t)
            hits.setdefault(kind, []).append(value in found)
    size = sum(p.stat().st_size for p in cache.glob("values-*"))
    row = {"suite": name, "values": len(index.values), "literals": len(targets),
           "build_s": build_s, "size_mb": size / 1e6,
           "lookup_ms_median": 1000 * statistics.median(latencies) if latencies else 0.0,
           **{f"recall@10 {k}": sum(v) / len(v) for k, v in hits.items()},
           "recall@10 all": sum(map(sum, hits.values())) / max(1, sum(map(len, hits.values())))}
    return row


QUESTIONS = ["How many orders have status {s}?", "Which customers in the {r} region ordered {c}?",
             "What is the total price of {c} products?", "How many {s} orders came from the {r}?",
             "List the {c} products bought by customers in the {r} region."]


def questions(n: int) -> list[str]:
    rng = random.Random(3)
    return [rng.choice(QUESTIONS).format(s=rng.choice(["shipped", "open", "returned"]),
                                         r=rng.choice(["north", "south", "east", "west"]),
                                         c=rng.choice(["books", "games", "tools", "food"]))
            for _ in range(n)]


async def run_workflows(n: int, slo_s: float, window_s: float) -> None:
    from sluice.engine import EngineConfig, FCFS, OnlineEngine, Schedule, Urgency
    from sluice.engine.testing import build_tiny_model
    from sluice.sql_agent.testing import make_shop_db
    from sluice.sql_agent.text2sql.agent import Text2SQL, Text2SQLConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = EngineConfig(model=str(build_tiny_model(tmp / "tiny")), load_format="dummy",
                              enforce_eager=True, dtype="float32", max_model_len=4096,
                              kv_cache_tokens=32768)
        cfg = Text2SQLConfig(candidates=4, revisions=2, max_tokens=64, cache_dir=str(tmp / "cache"))
        async with OnlineEngine(config) as engine:
            with Text2SQL(make_shop_db(tmp / "shop.duckdb"), engine, cfg) as agent:
                stages: dict[str, list[int]] = {}
                for i, q in enumerate(questions(5)):
                    a = await agent.ask_async(q)
                    for name, st in a.stages.items():
                        if i or name != "keywords":
                            acc = stages.setdefault(name, [0, 0])
                            acc[0] += st.prompt_tokens
                            acc[1] += st.cached_tokens
                total = [sum(v[0] for v in stages.values()), sum(v[1] for v in stages.values())]
                for name, (prompt, cached) in stages.items():
                    print(f"stage {name}: {prompt:,} prompt tokens, {cached / prompt:.0%} from cache")
                print(f"5 questions in a row: {total[1] / total[0]:.0%} of prompt tokens from cache "
                      "(after the first call)", flush=True)
                # a warm-up burst first (estimator and caches), then the two policies alternated
                for run, policy in enumerate((FCFS(), Urgency(), FCFS(), Urgency(), FCFS())):
                    engine.schedule = Schedule(policy=policy)
                    rng = random.Random(5)

                    async def one(q, delay):
                        await asyncio.sleep(delay)
                        start = time.monotonic()
                        await agent.ask_async(q, slo_s=slo_s)
                        return time.monotonic() - start

                    arrivals = [sum(rng.expovariate(n / window_s) for _ in range(i)) for i in range(n)]
                    latency = sorted(await asyncio.gather(*(one(q, d) for q, d in zip(questions(n), arrivals))))
                    met = sum(x <= slo_s for x in latency) / n
                    if run == 0:
                        continue
                    print(f"{type(policy).__name__}: {n} questions (Poisson over ~{window_s:g} s), SLO {slo_s:g} s: "
                          f"attainment {met:.0%}, P50 {latency[n // 2]:.1f} s, "
                          f"P95 {latency[min(n - 1, int(0.95 * n))]:.1f} s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", choices=["tpch", "dsb", "all"], default="all")
    ap.add_argument("--tpch-db", type=Path, default=HERE / "data" / "tpch_sf1.duckdb")
    ap.add_argument("--tpcds-db", type=Path, default=HERE / "data" / "tpcds_sf1.duckdb")
    ap.add_argument("--workflows", type=int, help="run the agent on N concurrent questions instead")
    ap.add_argument("--slo", type=float, default=30.0, help="seconds per question with --workflows")
    ap.add_argument("--window", type=float, default=30.0, help="seconds over which the questions arrive")
    args = ap.parse_args()
    if args.workflows:
        asyncio.run(run_workflows(args.workflows, args.slo, args.window))
        return 0
    suites = []
    if args.suite in ("tpch", "all"):
        suites.append(("TPC-H SF1", args.tpch_db,
                       [p.read_text() for p in sorted((SHARED / "tpch").glob("*.sql"))]))
    if args.suite in ("dsb", "all"):
        with (SHARED / "dsb" / "queries_dsb_train.csv").open() as f:
            suites.append(("DSB on TPC-DS SF1", args.tpcds_db, [r["original_sql"] for r in csv.DictReader(f)]))
    for name, db, queries in suites:
        if not db.is_file():
            print(f"{db}: missing; build it with benchmarks/make_tpc_data.py", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as cache:
            row = run_suite(name, db, queries, Path(cache))
        print(" | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
