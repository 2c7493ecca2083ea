"""Text-to-SQL as one workflow of LLM calls on the online engine (CHESS's stages).

    async with OnlineEngine(config) as engine:
        answer = await Text2SQL("shop.duckdb", engine).ask_async("How many orders shipped?")

Stages: keywords (LLM) -> entity retrieval (column names, values; no LLM) -> schema selection
(LLM, optional) -> candidates (LLM, two prompt styles in parallel) -> execution in the sandbox
and revision of failing candidates (LLM, up to k rounds) -> selection: clusters by result, and
when they disagree unit tests written and judged by the LLM (most passes wins, ties to the
largest cluster) -> optional verified rewrite. Every call names its workflow and stage, so the
engine splits the question's SLO over the stages and the schema prefix is shared.

`engine` is anything with `async call(prompt, params, *, workflow, stage) -> Completion`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sluice.engine.types import CallError, Completion, SamplingParams
from sluice.engine.workflow import Stage, Workflow

from ..duck import QueryFailed, QueryRefused, QueryTimeout, Result, Sandbox, SandboxConfig, SqlError
from ..schema import DatabaseProfile, profile
from . import stages
from .values import ColumnMatch, ValueIndex, ValueMatch, match_columns, similarity


@dataclass(frozen=True)
class Text2SQLConfig:
    candidates: int = 4             # samples, spread over the prompt styles
    revisions: int = 2              # rounds of revision for candidates that fail
    unit_tests: int = 5
    schema_selection: bool = True
    schema_chars: int = 12_000      # schema text budget in the prompt; more is narrowed by retrieval
    max_tokens: int = 256           # per candidate or revision answer
    temperature: float = 0.7
    slo_s: float = 60.0
    row_cap: int = 1000             # rows kept in the answer and compared between candidates
    timeout_s: float = 10.0         # per candidate statement
    rewrite: bool = False           # put the chosen query through the verified rewriter
    cache_dir: str | None = None
    seed: int = 0


@dataclass
class CandidateRecord:
    sql: str
    style: str
    status: str = "pending"   # ok | empty | parse_error | refused | failed | timeout | engine_error
    error: str | None = None
    rows: int | None = None
    truncated: bool = False
    revisions: int = 0
    cluster: int | None = None
    passes: int | None = None


@dataclass
class StageRecord:
    stage: str
    calls: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class Answer:
    question: str
    sql: str | None
    status: str                            # ok | no valid SQL
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    truncated: bool = False
    reason: str | None = None
    keywords: list[str] = field(default_factory=list)
    values: list[ValueMatch] = field(default_factory=list)
    columns_matched: list[ColumnMatch] = field(default_factory=list)
    schema: dict[str, list[str]] = field(default_factory=dict)
    tables_shown: list[str] = field(default_factory=list)
    candidates: list[CandidateRecord] = field(default_factory=list)
    clusters: list[list[int]] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    rewritten_by: str | None = None
    stages: dict[str, StageRecord] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rows"] = [list(r) for r in self.rows]
        return data


@dataclass(frozen=True)
class Turn:
    """An earlier question of the same conversation, given to follow-up questions."""
    question: str
    sql: str


def plan(config: Text2SQLConfig) -> list[Stage]:
    """The stages as far as known before the question runs; revision and tests may be dropped."""
    out = [Stage("keywords", "keywords", output_tokens=48)]
    if config.schema_selection:
        out.append(Stage("schema", "schema", output_tokens=96))
    out.append(Stage("candidates", "candidates", fanout=config.candidates, output_tokens=config.max_tokens))
    out += [Stage(f"revise-{i}", "revise", fanout=config.candidates, output_tokens=config.max_tokens)
            for i in range(1, config.revisions + 1)]
    out += [Stage("unit_tests", "unit_tests", output_tokens=128),
            Stage("judge", "judge", fanout=config.candidates, output_tokens=32)]
    return out


def narrow_schema(prof: DatabaseProfile, budget_chars: int, columns: list[ColumnMatch],
                  values: list[ValueMatch], keywords: list[str]) -> tuple[list, list[str]]:
    """(tables to show, names left out): every table if they fit, else the tables retrieval
    ranks highest, whole, until the budget is spent; never a table cut in half."""
    tables = list(prof.tables.values())
    sizes = {t.name: len(stages.describe(t)) for t in tables}
    if sum(sizes.values()) <= budget_chars:
        return tables, []
    score = Counter()
    for c in columns:
        score[c.table] += 2 * c.score
    for v in values:
        score[v.table] += 2 * v.score
    for t in tables:
        score[t.name] += max((similarity(k, t.name.replace("_", " ")) for k in keywords), default=0.0)
    ranked = sorted(tables, key=lambda t: (-score[t.name], t.name))
    shown, used = [], 0
    for t in ranked:
        if used + sizes[t.name] <= budget_chars or not shown:
            shown.append(t)
            used += sizes[t.name]
    names = {t.name for t in shown}
    return shown, [t.name for t in tables if t.name not in names]


def result_key(rows: list[tuple]) -> tuple:
    """Candidates that return the same rows (in any order) fall in one cluster."""
    return tuple(sorted(repr(r) for r in rows))


class Text2SQL:
    """Questions over one DuckDB database; holds its sandbox, profile and value index."""

    def __init__(self, db_path: str | os.PathLike, engine, config: Text2SQLConfig = Text2SQLConfig()):
        self.config = config
        self.engine = engine
        self.sandbox = Sandbox(db_path, SandboxConfig(timeout_s=config.timeout_s))
        self._sandbox_lock = threading.Lock()   # one statement at a time on the sandbox's worker
        try:
            self.profile = profile(self.sandbox, config.cache_dir)
            if not self.profile.tables:
                raise SqlError(f"{Path(db_path)}: the database has no tables to ask about")
            self.index = ValueIndex.for_database(self.sandbox, self.profile, config.cache_dir)
        except BaseException:
            self.sandbox.close()
            raise

    def close(self) -> None:
        self.sandbox.close()

    async def run_candidate(self, sql: str) -> Result:
        """Run a candidate in a thread, so the event loop (other questions, a server) goes on."""
        def run():
            with self._sandbox_lock:
                return self.sandbox.query(sql, row_cap=self.config.row_cap)
        return await asyncio.to_thread(run)

    def __enter__(self) -> "Text2SQL":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ask(self, question: str, **kwargs) -> Answer:
        """Synchronous form, for engines not bound to a running event loop."""
        return asyncio.run(self.ask_async(question, **kwargs))

    async def ask_async(self, question: str, *, hint: str | None = None,
                        previous: list[Turn] = (), slo_s: float | None = None) -> Answer:
        if not question or not question.strip():
            raise SqlError("the question is empty; ask something about the database")
        return await _Run(self, question.strip(), hint, list(previous), slo_s).run()


class _Run:
    """One question's workflow: its state, its evidence and its calls."""

    def __init__(self, agent: Text2SQL, question: str, hint, previous, slo_s):
        self.agent, self.cfg = agent, agent.config
        self.workflow = Workflow(plan(self.cfg), slo_s or self.cfg.slo_s, late="run")
        self.answer = Answer(question, None, "no valid SQL")
        self.context = {"question": question, "hint": hint, "previous": previous,
                        "tables": list(agent.profile.tables.values()), "omitted": []}
        self.results: dict[int, Result] = {}   # id(candidate) -> its result, while it is ok
        self.start = time.monotonic()

    def _result(self, c: CandidateRecord) -> Result:
        return self.results[id(c)]

    async def _call(self, stage: str, kind: str, prompt: str, params: SamplingParams) -> Completion | str:
        """The completion, or the error text of this call."""
        began = time.monotonic()
        record = self.answer.stages.setdefault(kind, StageRecord(kind))
        try:
            c = await self.agent.engine.call(prompt, params, workflow=self.workflow, stage=stage)
        except CallError as e:
            return f"engine error: {e}"
        finally:
            record.calls += 1
            record.seconds += time.monotonic() - began
        record.prompt_tokens += c.prompt_tokens
        record.output_tokens += c.output_tokens
        record.cached_tokens += c.cached_tokens
        return c if c.error is None else f"engine error: {c.error}"

    def _params(self, max_tokens: int, i: int = 0, temperature: float | None = None) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, seed=self.cfg.seed + i,
                              temperature=self.cfg.temperature if temperature is None else temperature)

    async def run(self) -> Answer:
        a = self.answer
        await self._retrieve()
        if self.cfg.schema_selection:
            await self._select_schema()
        await self._candidates()
        rounds = 0
        while rounds < self.cfg.revisions and any(c.status != "ok" for c in a.candidates):
            rounds += 1
            await self._revise([c for c in a.candidates if c.status != "ok"], rounds)
        for unused in range(rounds + 1, self.cfg.revisions + 1):
            self.workflow.plan.remove(f"revise-{unused}")
        await self._select()
        a.seconds = time.monotonic() - self.start
        return a

    async def _retrieve(self) -> None:
        """Retrieval on the question's words narrows the schema once, before any prompt, so
        every stage shares one prefix; the keywords stage then adds the values it names."""
        a = self.answer
        words = a.question.replace("?", " ").split()
        terms = [" ".join(words[i:i + n]) for n in (1, 2, 3) for i in range(len(words) - n + 1)]
        self._match(terms)
        shown, omitted = narrow_schema(self.agent.profile, self.cfg.schema_chars, a.columns_matched,
                                       a.values, terms)
        a.tables_shown = [t.name for t in shown]
        self.context.update(tables=shown, omitted=omitted)
        got = await self._call("keywords", "keywords", stages.render("keywords", **self.context),
                               self._params(48, temperature=0.0))
        a.keywords = stages.parse_keywords(got.text) if isinstance(got, Completion) else []
        self._match(a.keywords + terms)
        self.context["values"] = a.values

    def _match(self, terms: list[str]) -> None:
        a = self.answer
        terms = [t for t in dict.fromkeys(terms) if len(t) >= 3]
        a.columns_matched = match_columns(self.agent.profile, terms)
        found: dict[tuple, ValueMatch] = {}
        for term in terms:
            for m in self.agent.index.search(term, k=3):
                key = (m.table, m.column, m.value)
                if m.score >= 0.7 and (key not in found or found[key].score < m.score):
                    found[key] = m
        a.values = sorted(found.values(), key=lambda m: -m.score)[:10]

    async def _select_schema(self) -> None:
        got = await self._call("schema", "schema", stages.render("schema", **self.context),
                               self._params(96, temperature=0.0))
        if isinstance(got, Completion):
            self.answer.schema = stages.parse_schema_selection(got.text, self.agent.profile)

    def _linked(self) -> str:
        return "; ".join(f"{t}({', '.join(cols)})" for t, cols in self.answer.schema.items())

    async def _candidates(self) -> None:
        styles = [stages.CANDIDATE_STYLES[i % len(stages.CANDIDATE_STYLES)] for i in range(self.cfg.candidates)]
        prompts = {s: stages.render(f"candidate_{s}", linked=self._linked(), **self.context) for s in set(styles)}
        answers = await asyncio.gather(*(self._call("candidates", "candidates", prompts[s],
                                                    self._params(self.cfg.max_tokens, i))
                                         for i, s in enumerate(styles)))
        for style, got in zip(styles, answers):
            record = CandidateRecord("", style)
            if isinstance(got, str):
                record.status, record.error = "engine_error", got
            else:
                record.sql = stages.parse_sql(got.text)
                await self._execute(record)
            self.answer.candidates.append(record)

    async def _execute(self, c: CandidateRecord) -> None:
        self.results.pop(id(c), None)
        try:
            result = await self.agent.run_candidate(c.sql)
        except QueryRefused as e:
            c.status, c.error = "refused", str(e)
        except QueryTimeout as e:
            c.status, c.error = "timeout", str(e)
        except QueryFailed as e:
            c.status, c.error = "failed", str(e)
        except SqlError as e:
            c.status, c.error = "parse_error", str(e)
        else:
            c.rows, c.truncated, c.error = len(result.rows), result.truncated, None
            c.status = "ok" if result.rows else "empty"
            if c.status == "empty":
                c.error = "the query returned no rows"
            else:
                self.results[id(c)] = result

    async def _revise(self, failing: list[CandidateRecord], round_: int) -> None:
        stage = f"revise-{round_}"
        self.workflow.plan.update(stage, fanout=len(failing))
        prompts = [stages.render("revise", sql=c.sql or "(no query)", feedback=c.error, **self.context)
                   for c in failing]
        answers = await asyncio.gather(*(self._call(stage, "revise", p, self._params(self.cfg.max_tokens, i))
                                         for i, p in enumerate(prompts)))
        for c, got in zip(failing, answers):
            c.revisions += 1
            if isinstance(got, str):
                c.status, c.error = "engine_error", got
                continue
            c.sql = stages.parse_sql(got.text)
            await self._execute(c)

    async def _select(self) -> None:
        a = self.answer
        valid = [i for i, c in enumerate(a.candidates) if c.status == "ok"]
        groups: dict[tuple, list[int]] = {}
        for i in valid:
            groups.setdefault(result_key(self._result(a.candidates[i]).rows), []).append(i)
        a.clusters = sorted(groups.values(), key=len, reverse=True)
        for n, members in enumerate(a.clusters):
            for i in members:
                a.candidates[i].cluster = n
        self.workflow.plan.update("judge", fanout=max(1, len(a.clusters)))
        if not a.clusters:
            for stage in ("unit_tests", "judge"):
                self.workflow.plan.remove(stage)
            reasons = Counter(c.status for c in a.candidates)
            a.reason = "no candidate ran: " + ", ".join(f"{n} {s}" for s, n in reasons.most_common())
            return
        if len(a.clusters) == 1:
            for stage in ("unit_tests", "judge"):
                self.workflow.plan.remove(stage)
            chosen = a.clusters[0][0]
        else:
            chosen = await self._judge()
        self._finish(a.candidates[chosen])

    async def _judge(self) -> int:
        """Unit tests written once, each cluster's first query judged; most passes, then size."""
        a = self.answer
        got = await self._call("unit_tests", "unit_tests",
                               stages.render("unit_tests", count=self.cfg.unit_tests, **self.context),
                               self._params(128, temperature=0.0))
        a.tests = stages.parse_unit_tests(got.text, self.cfg.unit_tests) if isinstance(got, Completion) else []
        if not a.tests:
            return a.clusters[0][0]
        heads = [members[0] for members in a.clusters]
        prompts = [stages.render("judge", sql=a.candidates[i].sql, rows=len(self._result(a.candidates[i]).rows),
                                 sample=self._result(a.candidates[i]).rows[:5], tests=a.tests, **self.context)
                   for i in heads]
        verdicts = await asyncio.gather(*(self._call("judge", "judge", p, self._params(32, temperature=0.0))
                                          for p in prompts))
        for n, (head, got) in enumerate(zip(heads, verdicts)):
            passes = sum(stages.parse_verdicts(got.text, len(a.tests))) if isinstance(got, Completion) else 0
            for i in a.clusters[n]:
                a.candidates[i].passes = passes
        best = max(range(len(heads)), key=lambda n: (a.candidates[heads[n]].passes, len(a.clusters[n]), -n))
        return heads[best]

    def _finish(self, chosen: CandidateRecord) -> None:
        a = self.answer
        result = self._result(chosen)
        a.sql, a.status = chosen.sql, "ok"
        a.columns, a.rows, a.truncated = result.columns, result.rows, result.truncated
        if self.cfg.rewrite:
            self._rewrite()

    def _rewrite(self) -> None:
        from ..rewrite.candidates import RuleGenerator, SqlglotGenerator
        from ..rewrite.pipeline import RewriteConfig, Rewriter

        a = self.answer
        config = RewriteConfig(timeout_s=self.cfg.timeout_s, cache_dir=self.cfg.cache_dir)
        with Rewriter(self.agent.sandbox.path, [RuleGenerator(), SqlglotGenerator()], config) as rw:
            try:
                result = rw.rewrite(a.sql)
            except SqlError:
                return
        if result.accepted:
            a.sql, a.rewritten_by = result.chosen, result.source
