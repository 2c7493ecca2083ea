"""Candidate rewrites and the pluggable generators that propose them.

A generator has a `name` and `propose(ctx) -> list[Candidate]`. It may propose anything; the
pipeline's safeguards decide. Built-in here: the DuckDB rules (one candidate per rule that
applies, plus all of them composed) and sqlglot's optimizer as one more candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from sqlglot import exp
from sqlglot.optimizer import optimize

from ..duck import DIALECT, Result
from ..schema import DatabaseProfile
from .rules import RULES, RuleCrashed, apply_rule


@dataclass
class Candidate:
    sql: str
    source: str                       # "rule:preaggregate", "sqlglot", "llm:db_aware/2", "mcts"
    steps: list[str] = field(default_factory=list)
    score: float | None = None        # e.g. the LLM's mean token logprob
    error: str | None = None          # the generator could not produce SQL, and why


@dataclass
class Measurement:
    seconds: float | None             # None when it failed or ran past the limit
    same_result: bool
    reason: str = ""


@dataclass
class RewriteContext:
    sql: str
    tree: exp.Expression
    profile: DatabaseProfile
    expected: Result
    # run a candidate once on the full database: its time and whether it kept the result
    measure: Callable[[str], Measurement] | None = None


class Generator(Protocol):
    name: str

    def propose(self, ctx: RewriteContext) -> list[Candidate]: ...


def compose_rules(tree: exp.Expression, profile: DatabaseProfile,
                  names: list[str]) -> tuple[exp.Expression, list[str]]:
    """Apply the rules in turn until none changes the tree any more."""
    steps: list[str] = []
    for _ in range(3):
        before = len(steps)
        for name in names:
            out = apply_rule(name, tree, profile)
            if out is not None:
                tree, steps = out, steps + [name]
        if len(steps) == before:
            break
    return tree, steps


class RuleGenerator:
    """One candidate per applicable rule, plus all applicable rules composed."""

    name = "rules"

    def __init__(self, rules: list[str] | None = None):
        unknown = set(rules or []) - set(RULES)
        if unknown:
            raise ValueError(f"unknown rewrite rules: {sorted(unknown)}; known: {sorted(RULES)}")
        self.rules = list(rules or RULES)

    def propose(self, ctx: RewriteContext) -> list[Candidate]:
        """A rule that crashes becomes a candidate with that error and is left out of the
        composition; the composition itself may still hit a crash, and then is one too."""
        out, crashed = [], []
        for name in self.rules:
            try:
                tree = apply_rule(name, ctx.tree, ctx.profile)
            except RuleCrashed as e:
                out.append(Candidate("", f"rule:{name}", [name], error=str(e)))
                crashed.append(name)
                continue
            if tree is not None:
                out.append(Candidate(tree.sql(DIALECT), f"rule:{name}", [name]))
        if len(out) - len(crashed) > 1:
            try:
                tree, steps = compose_rules(ctx.tree, ctx.profile,
                                            [n for n in self.rules if n not in crashed])
            except RuleCrashed as e:
                out.append(Candidate("", "rules:composed", error=str(e)))
            else:
                out.append(Candidate(tree.sql(DIALECT), "rules:composed", steps))
        return out


class SqlglotGenerator:
    """sqlglot's optimizer (qualify, push down, unnest subqueries, ...) as one candidate."""

    name = "sqlglot"

    def propose(self, ctx: RewriteContext) -> list[Candidate]:
        try:
            tree = optimize(ctx.tree.copy(), schema=ctx.profile.sqlglot_schema(), dialect=DIALECT)
        except Exception as e:  # sqlglot refuses some valid queries; report, do not crash
            return [Candidate("", self.name, error=f"optimizer failed: {' '.join(str(e).split())[:200]}")]
        return [Candidate(tree.sql(DIALECT), self.name, ["sqlglot.optimize"])]
