"""The LITHE-style rewrite pipeline: generate candidates, verify each, keep the fastest.

Safeguards, in order, before a candidate is accepted (the first one it fails is its reason):
parses; is a query like the original; binds (EXPLAIN); same output columns and types and the
same result as the original on the full database; the same on each perturbed copy (empty
tables, injected NULLs, duplicated rows, a subsample); then a measured speedup of at least
`min_speedup` (one warm-up, median of `runs` alternated runs), seen twice: a second
measurement must confirm it. Otherwise the original stays.
"""

from __future__ import annotations

import difflib
import os
import statistics
from dataclasses import asdict, dataclass, field

import sqlglot
from sqlglot import exp

from ..duck import (DIALECT, QueryFailed, QueryTimeout, Result, Sandbox, SandboxConfig, SqlError,
                    check_query, parse_one, statement_type)
from ..equivalence import compare, order_spec
from ..perturb import perturbed_copies
from ..schema import profile
from .candidates import Candidate, Generator, Measurement, RewriteContext
from .rules import RuleCrashed


@dataclass(frozen=True)
class RewriteConfig:
    min_speedup: float = 1.5
    runs: int = 5
    timeout_s: float = 60.0
    perturb: bool = True
    memory_limit: str = "4GB"
    threads: int = 2
    cache_dir: str | None = None


@dataclass
class CandidateReport:
    source: str
    sql: str
    verdict: str                   # "accepted", "rejected" or "slower"
    reason: str
    checks: list[str] = field(default_factory=list)
    original_s: float | None = None
    candidate_s: float | None = None
    steps: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        if self.original_s and self.candidate_s:
            return self.original_s / self.candidate_s
        return None


@dataclass
class RewriteResult:
    original: str
    chosen: str
    accepted: bool
    source: str | None
    speedup: float | None
    original_s: float              # the original's median time (its first run if none was timed)
    rows: int
    candidates: list[CandidateReport]

    @property
    def evidence(self) -> list[str]:
        best = next((c for c in self.candidates if c.verdict == "accepted"), None)
        return best.checks if best else []

    def diff(self) -> str:
        a, b = pretty(self.original), pretty(self.chosen)
        return "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True),
                                            "original.sql", "rewritten.sql"))

    def to_dict(self) -> dict:
        d = asdict(self)
        for c, rep in zip(d["candidates"], self.candidates):
            c["speedup"] = rep.speedup
        d["evidence"] = self.evidence
        return d


def pretty(sql: str) -> str:
    try:
        return sqlglot.transpile(sql, read=DIALECT, write=DIALECT, pretty=True)[0] + "\n"
    except sqlglot.errors.SqlglotError:
        return sql.strip() + "\n"


def align_output_names(tree: exp.Expression, names: list[str]) -> exp.Expression:
    """Give the candidate's output columns the original's names (sqlglot and LLMs rename
    them); ORDER BY references to a renamed alias follow. Values are still compared."""
    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.left
    if not isinstance(select, exp.Select) or len(select.expressions) != len(names) or any(
            isinstance(p, exp.Star) or isinstance(p.unalias(), exp.Column) and p.unalias().is_star
            for p in select.expressions):
        return tree
    renamed = {}
    for proj, name in zip(list(select.expressions), names):
        if proj.alias_or_name.lower() != name.lower():
            if proj.alias:
                renamed[proj.alias.lower()] = name
            proj.replace(exp.alias_(proj.unalias().copy(), name, quoted=True))
    order = tree.args.get("order")
    if renamed and order:
        for col in order.find_all(exp.Column):
            if not col.table and col.name.lower() in renamed:
                col.replace(exp.column(exp.to_identifier(renamed[col.name.lower()], quoted=True)))
    return tree


class Rewriter:
    """Rewrites queries over one DuckDB database; holds its sandboxes and cached stats."""

    def __init__(self, db_path: str | os.PathLike, generators: list[Generator],
                 config: RewriteConfig = RewriteConfig()):
        self.config = config
        self.generators = generators
        sandbox_cfg = SandboxConfig(config.timeout_s, config.memory_limit, config.threads)
        self.sandbox = Sandbox(db_path, sandbox_cfg)
        copies = perturbed_copies(db_path, config.cache_dir) if config.perturb else {}
        self.copies = {name: Sandbox(path, sandbox_cfg) for name, path in copies.items()}
        self.profile = profile(self.sandbox, config.cache_dir)

    def close(self) -> None:
        for sb in [self.sandbox, *self.copies.values()]:
            sb.close()

    def __enter__(self) -> "Rewriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def rewrite(self, sql: str) -> RewriteResult:
        """Raises SqlError when the original itself cannot run (does not parse, is not a
        query, does not bind, runs past the timeout, nests too deeply to work on)."""
        try:
            return self._rewrite(sql)
        except RecursionError:
            raise SqlError("the query nests too deeply to rewrite") from None

    def _rewrite(self, sql: str) -> RewriteResult:
        tree = check_query(sql)
        self.sandbox.explain(sql)
        expected = self.sandbox.query(sql)
        run = _Verification(self, sql, tree, expected)
        ctx = RewriteContext(sql, tree, self.profile, expected, measure=run.measure)
        candidates: list[Candidate] = []
        for gen in self.generators:
            try:
                candidates += gen.propose(ctx)
            except RecursionError:
                candidates.append(Candidate("", gen.name, error="the query nests too deeply"))
            except (SqlError, RuleCrashed) as e:  # RuleCrashed: a rule crashed inside a search
                candidates.append(Candidate("", gen.name, error=str(e)))
        reports = [run.verify(c) for c in candidates]
        accepted = [r for r in reports if r.verdict == "accepted"]
        best = max(accepted, key=lambda r: r.speedup, default=None)
        for r in accepted:
            if r is not best:
                r.verdict, r.reason = "slower", f"verified, but {best.source} is faster"
        reports.sort(key=lambda r: r is not best)
        timed = [r.original_s for r in reports if r.original_s]
        original_s = best.original_s if best else (statistics.median(timed) if timed
                                                   else expected.seconds)
        return RewriteResult(sql, best.sql if best else sql, best is not None,
                             best.source if best else None, best.speedup if best else None,
                             original_s, len(expected.rows), reports)


class _Verification:
    """The safeguards for one original query; caches the original's results per copy."""

    def __init__(self, rw: Rewriter, sql: str, tree: exp.Expression, expected: Result):
        self.rw, self.sql, self.tree, self.expected = rw, sql, tree, expected
        self.order = order_spec(tree, expected.columns)
        self.seen: dict[str, str] = {_normal(tree): "the original"}
        self._copy_results: dict[str, Result | str] = {}

    def _original_on(self, name: str) -> Result | str:
        if name not in self._copy_results:
            self._copy_results[name] = _run(self.rw.copies[name], self.sql)
        return self._copy_results[name]

    def measure(self, sql: str) -> Measurement:
        """One run on the full database with a limit of 3x the original's time (for search)."""
        limit = max(1.0, 3 * self.expected.seconds)
        got = _run(self.rw.sandbox, sql, limit)
        if isinstance(got, str):
            return Measurement(None, False, got)
        verdict = compare(self.expected, got, self.order)
        return Measurement(got.seconds, verdict.equal, verdict.reason)

    def verify(self, c: Candidate) -> CandidateReport:
        rep = CandidateReport(c.source, c.sql, "rejected", "", steps=list(c.steps))
        if c.error:
            rep.reason = c.error
            return rep
        try:
            tree = parse_one(c.sql)
        except SqlError as e:
            rep.reason = str(e)
            return rep
        rep.checks.append("parses")
        if not isinstance(tree, exp.Query):
            rep.reason = f"statement type {statement_type(tree)} is not a query like the original"
            return rep
        rep.checks.append("is a query")
        tree = align_output_names(tree, self.expected.columns)
        rep.sql = tree.sql(DIALECT)
        key = _normal(tree)
        if key in self.seen:
            rep.reason = f"same as {self.seen[key]}"
            return rep
        self.seen[key] = c.source
        try:
            self.rw.sandbox.explain(rep.sql)
        except SqlError as e:
            rep.reason = f"does not bind: {e}"
            return rep
        rep.checks.append("binds (EXPLAIN)")
        got = _run(self.rw.sandbox, rep.sql)
        if isinstance(got, str):
            rep.reason = f"fails on the full database: {got}"
            return rep
        verdict = compare(self.expected, got, self.order)
        if not verdict:
            rep.reason = f"different result on the full database: {verdict.reason}"
            return rep
        rep.checks.append(f"same columns, types and result on the full database "
                          f"({len(got.rows)} rows)")
        for name, box in self.rw.copies.items():
            want, have = self._original_on(name), _run(box, rep.sql)
            if isinstance(want, str) or isinstance(have, str):
                if not (isinstance(want, str) and isinstance(have, str)):
                    rep.reason = (f"on the {name} copy only one of the two fails: "
                                  f"{want if isinstance(want, str) else have}")
                    return rep
                rep.checks.append(f"both fail alike on the {name} copy")
                continue
            verdict = compare(want, have, self.order)
            if not verdict:
                rep.reason = f"different result on the {name} copy: {verdict.reason}"
                return rep
            rep.checks.append(f"same result on the {name} copy ({len(have.rows)} rows)")
        cfg = self.rw.config
        # A speedup must show in two separate measurements (the lower one counts), so one
        # burst of load on a shared machine cannot get a rewrite accepted.
        for attempt in ("", "confirmed: "):
            try:
                orig_s, cand_s = self.rw.sandbox.time_pair(self.sql, rep.sql, cfg.runs)
            except SqlError as e:
                rep.reason = f"timing failed: {e}"
                return rep
            if not attempt or orig_s / cand_s < rep.speedup:
                rep.original_s, rep.candidate_s = orig_s, cand_s
            timing = (f"{attempt}speedup {orig_s / cand_s:.2f}x (median of {cfg.runs} alternated "
                      f"runs after a warm-up: {orig_s:.4f}s -> {cand_s:.4f}s)")
            if rep.speedup < cfg.min_speedup:
                rep.reason = f"not fast enough: {timing}, below {cfg.min_speedup:g}x"
                return rep
            rep.checks.append(timing)
        rep.verdict = "accepted"
        return rep


def _normal(tree: exp.Expression) -> str:
    return tree.sql(DIALECT, normalize=True)


def _run(box: Sandbox, sql: str, timeout_s: float | None = None) -> Result | str:
    """The result, or the one-line reason it failed."""
    try:
        return box.query(sql, timeout_s)
    except (QueryFailed, QueryTimeout) as e:
        return str(e)
