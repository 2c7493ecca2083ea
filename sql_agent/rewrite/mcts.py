"""Monte-Carlo tree search over rewrite steps.

A node is a query; its children are the queries one step away: each rule that applies, and
(with an engine) a few LLM rewrites of that query. Selection follows PUCT: a child's prior is
the softmax of the LLM's mean token logprob over its siblings (rules share a fixed logit), its
value the measured reward. A node is scored once when first visited by running it on the full
database (`ctx.measure`): reward = log(original time / its time) when the result is unchanged,
-1 (and never expanded) when it changes the result, fails or runs past 3x the original.
The `keep` best nodes that kept the result become candidates; the pipeline verifies and times
them in full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlglot import exp

from sluice.engine.types import Engine, SamplingParams

from ..duck import DIALECT, SqlError, parse_one
from .candidates import Candidate, RewriteContext
from .llm import to_candidate
from .prompts import HINTS, render
from .rules import RULES, apply_rule

RULE_LOGIT = -1.0  # a rule's prior weight, on the scale of a mean token logprob


@dataclass
class Node:
    sql: str
    tree: exp.Expression | None
    steps: list[str]
    prior: float = 1.0
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)
    visits: int = 0
    total: float = 0.0
    reward: float | None = None
    expanded: bool = False

    def value(self) -> float:
        return self.total / self.visits if self.visits else 0.0


class MCTSGenerator:
    name = "mcts"

    def __init__(self, engine: Engine | None = None, iterations: int = 16, c_puct: float = 1.0,
                 llm_samples: int = 2, max_tokens: int = 512, keep: int = 2, seed: int = 0):
        self.engine, self.iterations, self.c_puct = engine, iterations, c_puct
        self.llm_samples, self.keep = llm_samples, keep
        self.params = [SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=seed + i,
                                      logprobs=1) for i in range(llm_samples)]

    def propose(self, ctx: RewriteContext) -> list[Candidate]:
        if ctx.measure is None:
            return []
        base = ctx.measure(ctx.sql)
        if base.seconds is None:
            return []
        self.base_s = base.seconds
        root = Node(ctx.sql, ctx.tree, [], reward=0.0)
        seen = {ctx.tree.sql(DIALECT)}
        scored: list[Node] = []
        for _ in range(self.iterations):
            node = root
            while node.expanded and node.children:
                node = self._select(node)
            if node.reward is None:
                node.reward = self._score(node, ctx)
                scored.append(node)
            elif node.reward > -1 and not node.expanded:
                self._expand(node, ctx, seen)
                if node.children:
                    node = self._select(node)
                    node.reward = self._score(node, ctx)
                    scored.append(node)
            self._backup(node, node.reward)
        # every step that kept the result may be the winner: the pipeline times them properly
        best = sorted((n for n in scored if n.reward > -1), key=lambda n: -n.reward)[:self.keep]
        return [Candidate(n.sql, "mcts", n.steps) for n in best]

    def _select(self, node: Node) -> Node:
        sqrt_n = math.sqrt(max(1, node.visits))
        return max(node.children, key=lambda ch: ch.value()
                   + self.c_puct * ch.prior * sqrt_n / (1 + ch.visits))

    def _score(self, node: Node, ctx: RewriteContext) -> float:
        if node.tree is None:
            return -1.0
        m = ctx.measure(node.sql)
        if m.seconds is None or not m.same_result:
            return -1.0
        return math.log(self.base_s / max(m.seconds, 1e-6))

    def _backup(self, node: Node | None, reward: float) -> None:
        while node is not None:
            node.visits += 1
            node.total += reward
            node = node.parent

    def _expand(self, node: Node, ctx: RewriteContext, seen: set[str]) -> None:
        node.expanded = True
        proposals: list[tuple[str, exp.Expression, str, float]] = []
        for name in RULES:
            out = apply_rule(name, node.tree, ctx.profile)
            if out is not None:
                proposals.append((out.sql(DIALECT), out, f"rule:{name}", RULE_LOGIT))
        if self.engine is not None:
            prompts = [render("basic", node.sql, hint) for hint in HINTS.values()]
            hints = list(HINTS)
            texts = [p for p in prompts for _ in self.params]
            names = [h for h in hints for _ in self.params]
            done = self.engine.generate(texts, [p for _ in prompts for p in self.params])
            for hint, comp in zip(names, done):
                cand = to_candidate(hint, comp)
                if cand.error:
                    continue
                try:
                    tree = parse_one(cand.sql)
                except SqlError:
                    continue  # a step that does not parse is not a step
                if isinstance(tree, exp.Query):
                    proposals.append((tree.sql(DIALECT), tree, cand.source,
                                      cand.score if cand.score is not None else RULE_LOGIT))
        fresh = []
        for sql, tree, step, logit in proposals:
            if sql not in seen:
                seen.add(sql)
                fresh.append((sql, tree, step, logit))
        if not fresh:
            return
        top = max(logit for *_, logit in fresh)
        weights = [math.exp(logit - top) for *_, logit in fresh]
        total = sum(weights)
        node.children = [Node(sql, tree, node.steps + [step], w / total, node)
                         for (sql, tree, step, _), w in zip(fresh, weights)]
