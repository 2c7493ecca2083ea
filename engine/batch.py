"""BatchEngine: the offline batch engine every LLM caller uses (the `Engine` protocol).

It tokenizes a batch, answers requests it cannot run (empty, too long) with a per-request
error, plans the rest with the prefix planner, runs the plan wave by wave on the backend and
returns completions in the caller's order, with a report of the batch's cache use and speed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

from .config import EngineConfig
from .prefix import max_reusable_tokens, plan_batch
from .types import Completion, Prompt, SamplingParams, prompt_error


@dataclass
class BatchReport:
    requests: int
    rejected: int                 # requests answered with an error, not run
    prompt_tokens: int
    cached_tokens: int            # prompt tokens served from vLLM's prefix cache
    max_reusable_tokens: int      # what a perfect prefix cache could have served
    output_tokens: int
    seconds: float
    plan_seconds: float           # of `seconds`: tokenizing and planning, before vLLM runs
    groups: int
    waves: int

    @property
    def tokens_per_s(self) -> float:
        return (self.prompt_tokens + self.output_tokens) / max(self.seconds, 1e-9)

    @property
    def cache_hit_fraction(self) -> float:
        """Served from cache / theoretical maximum (1.0 when nothing was reusable)."""
        return self.cached_tokens / self.max_reusable_tokens if self.max_reusable_tokens else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s,
                "cache_hit_fraction": self.cache_hit_fraction}


class BatchEngine:
    """Build from an EngineConfig, `generate(prompts, params)`, close (or use `with`)."""

    def __init__(self, config: EngineConfig, backend=None):
        if backend is None:
            from .vllm_backend import VLLMBackend
            backend = VLLMBackend(config)
        self.config = config
        self.backend = backend
        self.reports: list[BatchReport] = []

    @property
    def last_report(self) -> BatchReport | None:
        return self.reports[-1] if self.reports else None

    def generate(self, prompts: Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams]) -> list[Completion]:
        start = time.perf_counter()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"generate: {len(prompts)} prompts but {len(params)} sampling params")
        token_ids = self.backend.encode(prompts)
        results: list[Completion | None] = [None] * len(prompts)
        runnable = []
        limit = self.config.max_model_len
        for i, ids in enumerate(token_ids):
            error = prompt_error(prompts[i], ids, limit)
            if error:
                results[i] = Completion(text="", prompt_tokens=len(ids), output_tokens=0, error=error)
            else:
                runnable.append(i)

        run_ids = [token_ids[i] for i in runnable]
        reusable = max_reusable_tokens(run_ids, self.config.block_size)
        # With nothing to share, planning has nothing to gain: the batch goes as given.
        waves, groups = ([runnable] if runnable else []), 0
        if self.config.prefix_grouping and reusable:
            max_new = [min(params[i].max_tokens, limit - len(token_ids[i])) for i in runnable]
            plan = plan_batch(run_ids, max_new, self.config.block_size, self.backend.kv_cache_tokens)
            waves = [[runnable[j] for j in wave] for wave in plan.waves]
            groups = len(plan.groups)
        planned = time.perf_counter()

        for wave in waves:
            done = self.backend.run([token_ids[i] for i in wave], [params[i] for i in wave])
            for i, completion in zip(wave, done):
                results[i] = completion

        ran = [results[i] for i in runnable]
        self.reports.append(BatchReport(
            requests=len(prompts), rejected=len(prompts) - len(runnable),
            prompt_tokens=sum(c.prompt_tokens for c in ran),
            cached_tokens=sum(c.cached_tokens for c in ran),
            max_reusable_tokens=reusable, output_tokens=sum(c.output_tokens for c in ran),
            seconds=time.perf_counter() - start, plan_seconds=planned - start,
            groups=groups, waves=len(waves)))
        return results

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "BatchEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
