"""Benchmark of `sluice sql rewrite` on TPC-H SF1 (22 queries), DSB on TPC-DS SF1, and our own
set of TPC-H queries with the redundancies generated SQL tends to carry (benchmarks/queries/).

For every query: the candidates tried, the verdict and the speedup; then per suite the count
of productive rewrites (>= --min-speedup) and their geometric-mean speedup, a confirmation
re-timing of every accepted rewrite (to show none is slower), and sqlglot's optimizer alone
as a baseline, measured in the same run against the same original timings.

Build the data first (offline, a few minutes): .venv/bin/python benchmarks/make_tpc_data.py
    .venv/bin/python benchmarks/bench_sql_rewrite.py --suite tpch
    .venv/bin/python benchmarks/bench_sql_rewrite.py --suite dsb --dsb-per-template 1
    .venv/bin/python benchmarks/bench_sql_rewrite.py --suite redundant
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
from pathlib import Path

from sluice.sql_agent.duck import SqlError
from sluice.sql_agent.rewrite.candidates import RuleGenerator, SqlglotGenerator
from sluice.sql_agent.rewrite.mcts import MCTSGenerator
from sluice.sql_agent.rewrite.pipeline import RewriteConfig, Rewriter

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
SHARED = ROOT.parent / "shared" / "data"


def sql_files(folder: Path) -> list[tuple[str, str]]:
    return [(f.stem, f.read_text()) for f in sorted(folder.glob("*.sql"))]


def dsb_queries(path: Path, per_template: int) -> list[tuple[str, str]]:
    """The first `per_template` instances of each DSB template (templates told apart by their
    text with numbers removed)."""
    seen: dict[str, int] = {}
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            sql = row["original_sql"]
            template = re.sub(r"\d+", "", " ".join(sql.split()))[:120]
            if seen.get(template, 0) < per_template:
                seen[template] = seen.get(template, 0) + 1
                out.append((f"dsb{int(row['']):04d}", sql))
    return out


def geomean(xs: list[float]) -> float | None:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def run_suite(name: str, db: Path, queries, args) -> dict:
    config = RewriteConfig(min_speedup=args.min_speedup, runs=args.runs, timeout_s=args.timeout)
    gens = [RuleGenerator(), SqlglotGenerator(), MCTSGenerator(None, iterations=args.mcts_iterations)]
    t0 = time.perf_counter()
    rw = Rewriter(db, gens, config)
    print(f"\n== {name}: {len(queries)} queries on {db.name} (setup {time.perf_counter() - t0:.1f}s: "
          f"perturbed copies and statistics)")
    print(f"{'query':<10} {'orig_s':>7} {'tried':>5} {'verdict':<14} {'source':<26} {'speedup':>8} "
          f"{'confirm':>8} {'sqlglot':>8} wrong-caught")
    rows = []
    with rw:
        for qname, sql in queries:
            t1 = time.perf_counter()
            try:
                res = rw.rewrite(sql)
            except SqlError as e:
                print(f"{qname:<10} error: {e}")
                rows.append({"query": qname, "verdict": "error", "error": str(e)})
                continue
            confirm = None
            if res.accepted:  # re-time the accepted rewrite in a fresh side-by-side run
                a, b = rw.sandbox.time_pair(sql, res.chosen, args.runs)
                confirm = a / b
            sg = next((c for c in res.candidates if c.source == "sqlglot"), None)
            caught = sum("different result" in c.reason or "only one of the two fails" in c.reason
                         for c in res.candidates)
            row = {"query": qname, "verdict": "rewritten" if res.accepted else "kept",
                   "source": res.source or "", "speedup": res.speedup, "confirmed": confirm,
                   "original_s": res.original_s, "tried": len(res.candidates),
                   "sqlglot_kept_result": bool(sg and sg.speedup is not None),
                   "sqlglot_speedup": sg.speedup if sg else None,
                   "wrong_caught": caught, "seconds": time.perf_counter() - t1,
                   "candidates": [{"source": c.source, "verdict": c.verdict, "reason": c.reason,
                                   "speedup": c.speedup} for c in res.candidates]}
            rows.append(row)
            print(f"{qname:<10} {res.original_s:7.3f} {row['tried']:5d} {row['verdict']:<14} "
                  f"{row['source'][:26]:<26} {fmt(res.speedup):>8} {fmt(confirm):>8} "
                  f"{fmt(row['sqlglot_speedup']):>8} {caught}", flush=True)
    ok = [r for r in rows if r["verdict"] != "error"]
    productive = [r["speedup"] for r in ok if r["speedup"] and r["speedup"] >= args.min_speedup]
    confirmed = [r["confirmed"] for r in ok if r["confirmed"] is not None]
    sg = [r["sqlglot_speedup"] for r in ok if r["sqlglot_speedup"]]
    summary = {
        "suite": name, "queries": len(queries), "errors": len(queries) - len(ok),
        "candidates_tried": sum(r["tried"] for r in ok),
        "rewritten": sum(r["verdict"] == "rewritten" for r in ok),
        "productive": len(productive), "geomean_productive": geomean(productive),
        "accepted_slower_on_confirmation": sum(c < 1.0 for c in confirmed),
        "geomean_confirmed": geomean(confirmed),
        "wrong_results_caught": sum(r["wrong_caught"] for r in ok),
        "sqlglot_kept_result": sum(r["sqlglot_kept_result"] for r in ok),
        "sqlglot_geomean_all": geomean(sg),
        "sqlglot_productive": sum(s >= args.min_speedup for s in sg),
        "sqlglot_slower": sum(s < 1.0 for s in sg),
        "pipeline_geomean_all": geomean([r["speedup"] or 1.0 for r in ok]),
    }
    print(f"-- {name}: {summary['rewritten']}/{len(ok)} rewritten, {summary['productive']} productive "
          f"(>= {args.min_speedup:g}x), geometric mean {fmt(summary['geomean_productive'])}; "
          f"confirmation re-timing: {summary['accepted_slower_on_confirmation']} accepted rewrites "
          f"slower, geometric mean {fmt(summary['geomean_confirmed'])}; "
          f"{summary['wrong_results_caught']} result-changing candidates caught, 0 accepted")
    print(f"-- {name} whole workload (original = 1.0x where kept): pipeline geometric mean "
          f"{fmt(summary['pipeline_geomean_all'])}; sqlglot alone: kept the result on "
          f"{summary['sqlglot_kept_result']}/{len(ok)}, geometric mean {fmt(summary['sqlglot_geomean_all'])}, "
          f"{summary['sqlglot_productive']} >= {args.min_speedup:g}x, {summary['sqlglot_slower']} slower")
    return {"summary": summary, "queries": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=["tpch", "dsb", "redundant", "all"], default="all")
    ap.add_argument("--tpch-db", type=Path, default=DATA / "tpch_sf1.duckdb")
    ap.add_argument("--tpcds-db", type=Path, default=DATA / "tpcds_sf1.duckdb")
    ap.add_argument("--tpch-queries", type=Path, default=SHARED / "tpch")
    ap.add_argument("--redundant-queries", type=Path, default=ROOT / "benchmarks" / "queries" / "tpch_redundant")
    ap.add_argument("--dsb-csv", type=Path, default=SHARED / "dsb" / "queries_dsb_train.csv")
    ap.add_argument("--dsb-per-template", type=int, default=1)
    ap.add_argument("--limit", type=int, help="first N queries of each suite")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--min-speedup", type=float, default=1.5)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--mcts-iterations", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sql_rewrite.json")
    args = ap.parse_args()
    suites = []
    if args.suite in ("tpch", "all"):
        suites.append(("TPC-H SF1", args.tpch_db, sql_files(args.tpch_queries)))
    if args.suite in ("dsb", "all"):
        suites.append(("DSB on TPC-DS SF1", args.tpcds_db, dsb_queries(args.dsb_csv, args.dsb_per_template)))
    if args.suite in ("redundant", "all"):
        suites.append(("Redundant SQL on TPC-H SF1", args.tpch_db, sql_files(args.redundant_queries)))
    for _, db, _ in suites:
        if not db.is_file():
            print(f"{db}: missing; build it with benchmarks/make_tpc_data.py", file=sys.stderr)
            return 2
    results = [run_suite(n, db, qs[:args.limit] if args.limit else qs, args) for n, db, qs in suites]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "results": results}, indent=1, default=str))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
