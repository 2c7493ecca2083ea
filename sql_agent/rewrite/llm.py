"""LLM candidates: the prompt ensemble sent through the project's engine in one batch.

Works with anything that follows `sluice.engine.types.Engine`. The answer's SQL is taken from
its first ```sql block, else from its first SELECT/WITH on; whatever comes out is only a
candidate, so random text from a dummy-weight model simply fails the parse or bind check.
"""

from __future__ import annotations

import re

from sluice.engine.types import Completion, Engine, SamplingParams

from .candidates import Candidate, RewriteContext
from .prompts import ensemble

_FENCED = re.compile(r"```(?:sql)?\s*(.*?)(?:```|$)", re.S | re.I)
_START = re.compile(r"\b(WITH|SELECT)\b", re.I)


def extract_sql(text: str) -> str:
    m = _FENCED.search(text)
    if m and m.group(1).strip():
        body = m.group(1)
    else:
        start = _START.search(text)
        body = text[start.start():] if start else text
    return body.strip().rstrip(";").strip()


def mean_logprob(c: Completion) -> float | None:
    if c.token_logprobs:
        return sum(c.token_logprobs) / len(c.token_logprobs)
    if c.cumulative_logprob is not None and c.output_tokens:
        return c.cumulative_logprob / c.output_tokens
    return None


def to_candidate(name: str, c: Completion) -> Candidate:
    if c.error:
        return Candidate("", f"llm:{name}", error=f"engine error: {c.error}")
    return Candidate(extract_sql(c.text), f"llm:{name}", [f"llm:{name}"], mean_logprob(c))


class LLMGenerator:
    """Basic and database-sensitive prompts (every hint), `samples` answers each."""

    name = "llm"

    def __init__(self, engine: Engine, samples: int = 1, max_tokens: int = 512,
                 temperature: float = 0.7, seed: int = 0,
                 kinds: tuple[str, ...] = ("basic", "db_aware")):
        self.engine, self.samples, self.kinds = engine, samples, kinds
        self.params = [SamplingParams(max_tokens=max_tokens, temperature=temperature,
                                      seed=seed + i, logprobs=1) for i in range(samples)]

    def propose(self, ctx: RewriteContext) -> list[Candidate]:
        prompts = ensemble(ctx.sql, ctx.tree, ctx.profile, self.kinds)
        names = [f"{n}/{i}" for n, _ in prompts for i in range(self.samples)]
        texts = [p for _, p in prompts for _ in range(self.samples)]
        params = [p for _ in prompts for p in self.params]
        return [to_candidate(n, c) for n, c in zip(names, self.engine.generate(texts, params))]
