"""LLM operators: generate, score, filter and classify rows with the embedded vLLM engine.

Each is a whole-dataset stage:
1. a `map_batches` renders the jinja2 prompt of every row and derives a routing key from the
   first `prefix_key_chars` characters of the rendered prompt;
2. a hash repartition on that key makes `num_actors * buckets_per_actor` buckets, each holding
   every row of its keys; an actor pool takes each bucket, whole, as one batch on one engine,
   so rows that share a prompt prefix meet wherever they sat in the dataset, and the engine's
   prefix planner prefills their prefix once (global grouping);
3. each actor loads one engine in its constructor and keeps it for all its buckets.

A row the engine cannot take (a template field the row lacks, an empty prompt, a prompt longer
than max_model_len) is rejected with the reason; an answer that cannot be parsed is rejected
with the raw output. Rejected rows stay in the output dataset marked in `__reject__`; the
pipeline moves them to the rejects output. Output rows come grouped by prompt prefix, not in
input order; `__id__` keeps the input order.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from typing import ClassVar, Optional

import jinja2
import jinja2.sandbox
import pyarrow as pa
import pyarrow.compute as pc

from sluice.engine import BatchEngine, Completion, EngineConfig, EngineConfigError, SamplingParams

from .base import (REJECT_COLUMN, STATS_PREFIX, ParamError, WholeDatasetOperator, in_range, param,
                   register)
from .html_render import html_table

PROMPT_COLUMN = "__prompt__"
ROUTE_COLUMN = "__route__"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclasses.dataclass(kw_only=True, repr=False)
class EngineOperator(WholeDatasetOperator):
    """The engine parameters every operator that runs a model shares (not registered itself)."""

    kind: ClassVar[str] = "llm"
    row_local: ClassVar[bool] = False

    model: str = param(doc="local model directory or hub id (org/name)")
    seed: Optional[int] = param(None, doc="sampling seed")
    dtype: str = param("auto", doc="model dtype", choices=("auto", "float32", "float16", "bfloat16"))
    max_model_len: int = param(4096, doc="prompt + output tokens per row; longer prompts are rejected", ge=16)
    kv_cache_tokens: Optional[int] = param(None, doc="KV cache budget in tokens per engine; null: vLLM sizes it", ge=16)
    block_size: int = param(32, doc="KV cache block in tokens (a multiple of 32 on CPU)", ge=16)
    max_num_batched_tokens: Optional[int] = param(None, doc="tokens per engine step; null: vLLM default", ge=16)
    load_format: str = param("auto", doc="'dummy' for random weights (tests, benchmarks)", choices=("auto", "dummy", "safetensors", "pt"))
    enforce_eager: bool = param(False, doc="skip graph compilation: faster start, slower steps")
    memory_utilization: float = param(0.3, doc="fraction of device (or CPU) memory vLLM may reserve", gt=0, le=1)
    prefix_grouping: bool = param(True, doc="plan each batch by shared prompt prefixes before generating")
    # Ray Data
    num_actors: int = param(1, doc="engine actors, one engine each", ge=1)
    num_gpus_per_actor: float = param(0.0, doc="GPUs per engine actor (0 on CPU)", ge=0)

    def setup(self) -> None:
        try:
            self.engine_config().check()
        except EngineConfigError as e:
            raise ParamError(self.name, None, str(e)) from None

    def engine_config(self, in_process: bool = True) -> EngineConfig:
        """`in_process`: the batch engine keeps vLLM in the Ray actor's own process, so nothing
        outlives the actor when Ray stops it; the online engine needs its own engine process."""
        return EngineConfig(
            model=self.model, dtype=self.dtype, max_model_len=self.max_model_len,
            kv_cache_tokens=self.kv_cache_tokens, block_size=self.block_size,
            max_num_batched_tokens=self.max_num_batched_tokens, seed=self.seed or 0,
            load_format=self.load_format, enforce_eager=self.enforce_eager,
            memory_utilization=self.memory_utilization, prefix_grouping=self.prefix_grouping,
            in_process=in_process)


@dataclasses.dataclass(kw_only=True, repr=False)
class LLMOperator(EngineOperator):
    """Shared parameters and the Ray Data plan of every LLM operator (not registered itself)."""

    prompt: str = param("{{ text }}", doc="jinja2 template over the row's fields")
    system_prompt: Optional[str] = param(None, doc="system message (chat) or text put before the prompt")
    chat: bool = param(False, doc="send the prompt as chat messages through the model's chat template")
    max_tokens: int = param(64, doc="most tokens to generate per row", ge=1)
    temperature: float = param(0.0, doc="sampling temperature; 0 is greedy", ge=0)
    top_p: float = param(1.0, doc="nucleus sampling mass", gt=0, le=1)
    buckets_per_actor: int = param(4, doc="routing buckets per actor; a bucket is one engine batch", ge=1)
    prefix_key_chars: int = param(1000, doc="rendered prompt characters that decide the routing bucket", ge=1)

    def setup(self) -> None:
        try:
            self.template
        except jinja2.TemplateSyntaxError as e:
            raise ParamError(self.name, "prompt", f"template syntax error: {e.message}") from None
        super().setup()

    @property
    def template(self) -> jinja2.Template:
        if "_template" not in self.__dict__:
            # a prompt comes from a recipe: sandboxed, so it reads row fields and nothing else
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
            env.globals.clear()
            self.__dict__["_template"] = env.from_string(self.prompt)
        return self.__dict__["_template"]

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_template", None)    # jinja2 templates do not pickle; rebuilt on first use
        return state

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature,
                              top_p=self.top_p, seed=self.seed)

    # ---- stage 1: prompts and routing ----

    def template_vars(self) -> dict:
        """Variables the prompt template sees besides the row's fields (a row field wins)."""
        return {}

    def render(self, table: pa.Table) -> pa.Table:
        """Add the rendered prompt and the routing bucket; reject rows whose prompt fails."""
        # Per-row Python: jinja2 renders one row at a time. It costs microseconds per row,
        # against milliseconds per row of generation.
        prompts, routes, reasons = [], [], []
        extra = self.template_vars()
        for row in table.to_pylist():
            fields = {k: v for k, v in row.items() if v is not None}   # a null field is missing
            try:
                text = self.template.render({**extra, **fields})
                reason = None if text.strip() else "empty prompt"
            except jinja2.UndefinedError as e:
                text, reason = "", f"prompt template: {e.message} (missing or null in this row)"
            except jinja2.sandbox.SecurityError as e:
                text, reason = "", f"prompt template: {e} (a prompt may read row fields only)"
            prompts.append(text)
            reasons.append(reason)
            routes.append(zlib.crc32(text[:self.prefix_key_chars].encode()))
        table = table.append_column(PROMPT_COLUMN, pa.array(prompts, pa.string()))
        table = table.append_column(ROUTE_COLUMN, pa.array(routes, pa.int64()))
        rejected = pa.array([r is not None for r in reasons])
        return self.reject(table, rejected, pa.array(reasons, pa.string()))

    # ---- stage 2: generation on an engine ----

    def messages(self, text: str):
        if self.chat:
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            return system + [{"role": "user", "content": text}]
        return f"{self.system_prompt}\n\n{text}" if self.system_prompt else text

    def run_batch(self, table: pa.Table, engine, *, analyze: bool = False) -> pa.Table:
        """Generate for the rows not yet rejected, let the operator turn answers into columns,
        then drop the rows it drops (none in an analyze-only run)."""
        if REJECT_COLUMN not in table.column_names:
            table = self.reject(table, pa.array([False] * table.num_rows), "")
        pending = pc.is_null(table.column(REJECT_COLUMN)).to_pylist()
        rows = [i for i, ok in enumerate(pending) if ok]
        prompts = table.column(PROMPT_COLUMN).to_pylist()
        done = engine.generate([self.messages(prompts[i]) for i in rows], self.sampling_params())
        completions: list[Completion | None] = [None] * table.num_rows
        for i, c in zip(rows, done):
            completions[i] = c
        errors = [c.error if c is not None else None for c in completions]
        table = self.reject(table, pa.array([e is not None for e in errors]), pa.array(errors, pa.string()))
        answered = [c if c is not None and c.error is None else None for c in completions]
        table = self.finish(table.drop_columns([PROMPT_COLUMN, ROUTE_COLUMN]), answered)
        return table if analyze else self.drop(table)

    def finish(self, table: pa.Table, completions: list[Completion | None]) -> pa.Table:
        """Add this operator's columns; `completions[i]` is None for rows already rejected."""
        raise NotImplementedError

    def drop(self, table: pa.Table) -> pa.Table:
        """`table` without the rows this operator drops, after `finish`; most drop none."""
        return table

    def apply(self, ds, ctx):
        import ray

        from .shuffle import group_by

        # Hash-partition by prefix key: every bucket holds all rows of its keys. Materialized
        # before the actor pool starts, since its actors may hold every CPU of the cluster.
        buckets = group_by(ds.map_batches(self.render, batch_format="pyarrow"), ROUTE_COLUMN, _bucket,
                           self.num_actors * self.buckets_per_actor).materialize()
        log = ray.remote(num_cpus=0)(BatchLog).remote()
        out = buckets.map_batches(
            EngineActor, fn_constructor_args=(self, log, ctx.analyze), batch_format="pyarrow",
            batch_size=None,
            compute=ray.data.ActorPoolStrategy(size=self.num_actors),
            num_gpus=self.num_gpus_per_actor or None,
            # On CPU, vLLM pins its threads to cores by default; engines sharing a node would
            # pin to the same cores. Leave placement to the OS.
            runtime_env={"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}}).materialize()
        self.batch_reports = ray.get(log.reports.remote())
        ray.kill(log)
        ctx.add_report_section(f"{self.name}: engine batches", batch_table_html(self.batch_reports))
        return out

    # ---- answers ----

    def texts(self, completions) -> list[str | None]:
        return [c.text if c is not None else None for c in completions]

    def parsed_column(self, table: pa.Table, completions, parse, key: str, type_: pa.DataType) -> pa.Table:
        """Add column `key` of parsed answers; reject rows whose answer `parse` returns None for."""
        values, reasons = [], []
        for c in completions:
            value = parse(c.text) if c is not None else None
            values.append(value)
            reasons.append(f"{self.name}: unparseable answer: {c.text!r}"
                           if c is not None and value is None else None)
        table = self.reject(table, pa.array([r is not None for r in reasons]), pa.array(reasons, pa.string()))
        return table.append_column(key, pa.array(values, type_))


def _bucket(rows: pa.Table) -> pa.Table:
    return rows


class EngineActor:
    """Ray Data actor: one engine, loaded once, runs every bucket routed to this actor and
    reports each batch to `log` (a `BatchLog` actor); `analyze`: drop no rows."""

    def __init__(self, op: LLMOperator, log, analyze: bool):
        import os

        self.op, self.log, self.analyze, self.pid = op, log, analyze, os.getpid()
        self.engine = BatchEngine(op.engine_config())

    def __call__(self, table: pa.Table) -> pa.Table:
        import ray

        out = self.op.run_batch(table, self.engine, analyze=self.analyze)
        ray.get(self.log.add.remote({"actor": self.pid, **self.engine.last_report.to_dict()}))
        return out

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


class BatchLog:
    """Ray actor: the engine report of every batch an LLM operator ran, in arrival order."""

    def __init__(self):
        self._reports: list[dict] = []

    def add(self, report: dict) -> None:
        self._reports.append(report)

    def reports(self) -> list[dict]:
        return self._reports


BATCH_COLUMNS = ("actor", "requests", "rejected", "prompt_tokens", "cached_tokens",
                 "max_reusable_tokens", "output_tokens", "groups", "waves", "seconds", "tokens_per_s")


def batch_table_html(reports: list[dict]) -> str:
    """The per-batch engine reports as an HTML table for the run report."""
    return html_table(BATCH_COLUMNS, [[f"{r[c]:.2f}" if isinstance(r[c], float) else r[c] for c in BATCH_COLUMNS]
                                      for r in reports])


@register
class llm_generate(LLMOperator):
    """Adds the model's answer to each row's prompt as a new column (`output_key`), and the
    logprob of every generated token when `logprobs` is set. Keeps every row; rows whose
    prompt cannot be built or run are rejected with the reason."""

    output_key: str = param("llm_output", doc="column for the generated text")
    logprobs: bool = param(False, doc="also write <output_key>_logprobs: logprob of each generated token")
    stop: list[str] = param([], doc="strings that end generation")
    ignore_eos: bool = param(False, doc="generate exactly max_tokens tokens (benchmarks)")

    def sampling_params(self) -> SamplingParams:
        return dataclasses.replace(super().sampling_params(), stop=tuple(self.stop),
                                   ignore_eos=self.ignore_eos, logprobs=1 if self.logprobs else None)

    def finish(self, table, completions):
        table = table.append_column(self.output_key, pa.array(self.texts(completions), pa.string()))
        if self.logprobs:
            values = [c.token_logprobs if c is not None else None for c in completions]
            table = table.append_column(f"{self.output_key}_logprobs", pa.array(values, pa.list_(pa.float64())))
        return table


SCORE_PROMPT = (
    "Rate the quality of the following text for training a language model, from "
    "{{ scale_min }} (useless) to {{ scale_max }} (excellent). Answer with the number only.\n\n"
    "Text:\n{{ text[:4000] }}\n\nScore:")


@register
class llm_score(LLMOperator):
    """Scores each row with a rubric prompt and writes the number to `score_key`. Keeps every
    row; an answer with no number on the scale is rejected with the raw output. By default the
    answer is constrained (vLLM structured output) to the integers of the scale."""

    prompt: str = param(SCORE_PROMPT, doc="rubric template over the row's fields (and scale_min, scale_max)")
    max_tokens: int = param(8, doc="most tokens to generate per row", ge=1)
    score_key: str = param("llm_score", doc="column for the score")
    scale_min: int = param(1, doc="lowest score on the rubric's scale")
    scale_max: int = param(5, doc="highest score on the rubric's scale")
    constrained: bool = param(True, doc="force the answer to one integer of the scale")

    def setup(self) -> None:
        if self.scale_max <= self.scale_min:
            raise ParamError(self.name, "scale_max", f"must be above scale_min ({self.scale_min})")
        super().setup()

    def template_vars(self) -> dict:
        return {"scale_min": self.scale_min, "scale_max": self.scale_max}

    def sampling_params(self) -> SamplingParams:
        choices = tuple(str(k) for k in range(self.scale_min, self.scale_max + 1))
        return dataclasses.replace(super().sampling_params(),
                                   choices=choices if self.constrained else None)

    def parse(self, text: str) -> float | None:
        match = _NUMBER.search(text)
        if match is None:
            return None
        score = float(match.group())
        return score if self.scale_min <= score <= self.scale_max else None

    def finish(self, table, completions):
        return self.parsed_column(table, completions, self.parse, self.score_key, pa.float64())


@register
class llm_filter(llm_score):
    """Scores each row like `llm_score` (into `stats.<score_key>`) and keeps the rows whose
    score lies within [min_score, max_score]; drops the rest (an analyze-only run drops
    none). An unparseable answer is rejected with the raw output."""

    min_score: Optional[float] = param(3.0, doc="lowest score kept")
    max_score: Optional[float] = param(None, doc="highest score kept")

    def finish(self, table, completions):
        return self.parsed_column(table, completions, self.parse, STATS_PREFIX + self.score_key,
                                  pa.float64())

    def drop(self, table):
        keep = pc.or_(in_range(table.column(STATS_PREFIX + self.score_key), self.min_score, self.max_score),
                      pc.is_valid(table.column(REJECT_COLUMN)))
        return table.filter(keep)


@register
class llm_classify(LLMOperator):
    """Labels each row with exactly one of `labels`, chosen by the model under vLLM structured
    output, in `output_key`. Keeps every row; an answer outside the labels (cut short by
    max_tokens) is rejected with the raw output."""

    labels: list[str] = param(doc="the allowed labels")
    prompt: str = param("Classify the following text.\n\n{{ text[:4000] }}\n\nLabel:",
                        doc="jinja2 template over the row's fields (and labels)")
    max_tokens: int = param(16, doc="most tokens to generate; enough for the longest label", ge=1)
    output_key: str = param("llm_label", doc="column for the label")

    def setup(self) -> None:
        if len(set(self.labels)) < 2:
            raise ParamError(self.name, "labels", "give at least two distinct labels")
        super().setup()

    def template_vars(self) -> dict:
        return {"labels": self.labels}

    def sampling_params(self) -> SamplingParams:
        return dataclasses.replace(super().sampling_params(), choices=tuple(self.labels))

    def finish(self, table, completions):
        labels = set(self.labels)
        return self.parsed_column(table, completions, lambda t: t if t in labels else None,
                                  self.output_key, pa.string())


__all__ = ["EngineOperator", "LLMOperator", "EngineActor", "BatchLog", "llm_generate", "llm_score", "llm_filter", "llm_classify"]
