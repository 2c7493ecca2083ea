"""Several online engines as Ray actors behind one dispatcher.

    async with ReplicaSet(config, replicas=2, dispatch=Balanced(alpha=0.5)) as engines:
        wf = Workflow([Stage("ir", "retrieve"), Stage("gen", "generate", fanout=2)], slo_s=8)
        completion = await engines.call(prompt, params, workflow=wf, stage="ir")

Each replica is an `OnlineEngine` in its own Ray actor (one GPU each, or here a share of the
CPUs, its vLLM threads bound to that share), with its own admission queue and policy. The
workflows live in the caller's process: a call's stage deadline is split here, with an
estimator fed by every replica's measured calls, and travels to the replica as seconds left.
The dispatcher (engine/dispatch.py) picks the replica for each call: HEXGEN's workload-balanced
rule on outstanding work, or round robin; it sees each replica's prefix cache through the
prompts sent to it, so a question's calls tend to stay where its schema is cached.
A replica whose engine died gets no more calls; its calls fail with its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import deque
from typing import AsyncIterator, Sequence

from .config import EngineConfig
from .dispatch import Balanced, Dispatcher, RoundRobin
from .estimator import StageTimeEstimator
from .online import TRACE_WINDOW, CallTrace, EngineDead, Health, OnlineEngine, Schedule
from .prefix_cache import PrefixIndex, block_hashes
from .types import CallError, Completion, Prompt, SamplingParams, prompt_error
from .vllm_backend import encode
from .workflow import CallDeadline, Workflow


HEALTH_PERIOD_S = 1.0


class EngineReplica:
    """The body of one replica actor: an OnlineEngine on the actor's event loop."""

    def __init__(self, config: EngineConfig, schedule: Schedule | None):
        self.engine = OnlineEngine(config, schedule)

    async def start(self) -> int:
        self.engine.start()
        return self.engine.kv_cache_tokens

    async def call(self, prompt: Prompt, params: SamplingParams,
                   deadline: CallDeadline | None) -> tuple[Completion, CallTrace]:
        if deadline is not None:
            deadline = deadline.absolute(time.monotonic())
        completion = await self.engine.call(prompt, params, deadline=deadline)
        # recorded as the call returned, with no await in between: this call's trace
        return completion, self.engine.traces[-1]

    async def stream(self, prompt: Prompt, params: SamplingParams, deadline: CallDeadline | None):
        """The call's chunks, then its CallTrace."""
        if deadline is not None:
            deadline = deadline.absolute(time.monotonic())
        async with contextlib.aclosing(self.engine.stream(prompt, params,
                                                          deadline=deadline)) as chunks:
            async for chunk in chunks:
                yield chunk
        yield self.engine.traces[-1]

    async def generate_offline(self, prompts, params) -> list[Completion]:
        return await self.engine.generate_offline(prompts, params)

    async def set_schedule(self, schedule: Schedule) -> None:
        self.engine.schedule = schedule

    async def reset(self, estimator: StageTimeEstimator | None) -> None:
        """Between benchmark runs: a fresh estimator, no traces, an empty prefix cache."""
        self.engine.estimator = estimator or StageTimeEstimator()
        self.engine.traces.clear()
        await self.engine.reset_prefix_cache()

    async def health(self) -> Health:
        return self.engine.health()

    async def close(self) -> None:
        await self.engine.close()


def cpu_shares(replicas: int, cpus: Sequence[int]) -> list[str]:
    """Cores for each replica's vLLM threads (VLLM_CPU_OMP_THREADS_BIND), as even shares of
    `cpus`; with fewer cores than replicas they share."""
    cpus = sorted(cpus)
    if replicas <= len(cpus):
        size = len(cpus) // replicas
        return [",".join(map(str, cpus[i * size:(i + 1) * size])) for i in range(replicas)]
    return [str(cpus[i % len(cpus)]) for i in range(replicas)]


class ReplicaSet:
    """`replicas` online engines as Ray actors behind one dispatcher; `call` as OnlineEngine's.

    `dispatch`: `Balanced(alpha)` (default alpha 0.5; `sluice engine tune-alpha` picks one on a
    recorded trace) or `RoundRobin()`. `num_gpus` per replica (0 on CPU: each replica then gets
    `num_cpus` Ray CPUs and, on a local Ray, its own share of this machine's cores).
    Uses the running Ray session, or starts a local one (or joins `ray_address`)."""

    def __init__(self, config: EngineConfig, schedule: Schedule | None = None, *,
                 replicas: int = 2, dispatch: RoundRobin | Balanced | None = None,
                 num_cpus: float = 1, num_gpus: float = 0, ray_address: str | None = None):
        if replicas < 1:
            raise ValueError(f"replicas: need at least 1, got {replicas}")
        self.config, self.schedule = config, schedule or Schedule()
        self.replicas, self.rule = replicas, dispatch or Balanced(0.5)
        self.num_cpus, self.num_gpus, self.ray_address = num_cpus, num_gpus, ray_address
        self.estimator = StageTimeEstimator()   # splits deadlines; learns every replica's calls
        self.traces: deque[CallTrace] = deque(maxlen=TRACE_WINDOW)   # online calls, as returned
        self._actors: list = []
        self._errors: list[str | None] = []
        self._started_ray = False

    async def __aenter__(self) -> "ReplicaSet":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        import ray

        self.config.check()
        if not ray.is_initialized():
            # ray.init replaces the SIGTERM handler with one that exits at once; a server that
            # drains on SIGTERM keeps its own (close() stops Ray)
            sigterm = signal.getsignal(signal.SIGTERM)
            ray.init(address=self.ray_address or "local", include_dashboard=False,
                     logging_level="WARNING", log_to_driver=False)   # vLLM's INFO lines
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, sigterm)
            self._started_ray = True
        local = not self.ray_address and self.num_gpus == 0
        shares = cpu_shares(self.replicas, os.sched_getaffinity(0)) if local else []
        actor = ray.remote(EngineReplica)
        for i in range(self.replicas):
            env = {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": shares[i]}} if shares else {}
            self._actors.append(actor.options(
                num_cpus=self.num_cpus, num_gpus=self.num_gpus, runtime_env=env,
                max_concurrency=10_000).remote(self.config, self.schedule))
        kv_tokens = await asyncio.gather(*[a.start.remote() for a in self._actors])
        self._errors = [None] * self.replicas
        from transformers import AutoTokenizer     # the tokenizer vLLM builds for the model

        self.tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        self.kv_cache_tokens = min(kv_tokens)
        blocks = [k // self.config.block_size for k in kv_tokens]
        self.dispatcher = Dispatcher(self.rule, [self.estimator] * self.replicas,
                                     [PrefixIndex(self.config.block_size, b) for b in blocks],
                                     self.schedule.max_inflight_seqs)
        self._watch = asyncio.create_task(self._watch_health())

    async def _watch_health(self) -> None:
        """Ask every replica how it is, every HEALTH_PERIOD_S: a replica whose engine or actor
        died is taken out of dispatch before a call finds out."""
        while True:
            await asyncio.sleep(HEALTH_PERIOD_S)
            for e, health in enumerate(await self.replica_health()):
                if not health.ok:
                    self._mark_dead(e, EngineDead(health.error or "engine: stopped"))

    async def close(self) -> None:
        """Close every replica's engine (its processes end), then end the actors."""
        import ray

        actors, self._actors = self._actors, []
        if getattr(self, "_watch", None) is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await asyncio.gather(*[a.close.remote() for a in actors], return_exceptions=True)
        for a in actors:
            ray.kill(a)
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # --- calls -----------------------------------------------------------------------------

    async def call(self, prompt: Prompt, params: SamplingParams = SamplingParams(), *,
                   workflow: Workflow | None = None, stage: str | None = None) -> Completion:
        """Run one call on the replica the dispatcher picks; errors as OnlineEngine.call's."""
        async with contextlib.aclosing(self.stream(prompt, params, workflow=workflow, stage=stage,
                                                   whole=True)) as chunks:
            async for completion in chunks:
                return completion

    async def stream(self, prompt: Prompt, params: SamplingParams = SamplingParams(), *,
                     workflow: Workflow | None = None, stage: str | None = None,
                     whole: bool = False) -> AsyncIterator[Completion]:
        """As OnlineEngine.stream (`whole`: one completion at the end instead). A replica found
        dead before the call's first chunk: the call goes to another live replica."""
        if not self._actors:
            raise EngineDead("replicas: not started; use `async with ReplicaSet(config)`")
        ids = encode(self.tokenizer, [prompt])[0]
        error = prompt_error(prompt, ids, self.config.max_model_len)
        if error:
            raise CallError(error)
        deadline, kind = None, stage or "call"
        if workflow is not None:
            now = time.monotonic()
            deadline = workflow.deadline_for(stage, now, self.estimator.stage_time)
            kind, deadline = deadline.kind, deadline.relative(now)
        max_tokens = min(params.max_tokens, self.config.max_model_len - len(ids))
        hashes = block_hashes(ids, self.config.block_size)
        while True:
            e, estimate = self._assign(kind, len(ids), max_tokens, hashes)
            started = False
            try:
                if whole:
                    completion, trace = await self._cancellable(
                        self._actors[e].call.remote(prompt, params, deadline))
                    self._observe(trace)
                    yield completion
                    return
                chunks = self._actors[e].stream.options(num_returns="streaming").remote(
                    prompt, params, deadline)
                async with contextlib.aclosing(self._chunks(chunks)) as items:
                    async for item in items:
                        if isinstance(item, CallTrace):
                            self._observe(item)
                        else:
                            started = True
                            yield item
                return
            except Exception as error:
                cause = getattr(error, "cause", None) or error
                if isinstance(cause, CallError):
                    raise cause from None
                message = self._mark_dead(e, cause)
                if started:
                    raise EngineDead(message) from None
            finally:
                self.dispatcher.finished(e, estimate)

    def _observe(self, trace: CallTrace) -> None:
        self.traces.append(trace)
        self.estimator.observe(trace.kind, trace.prompt_tokens, trace.output_tokens, trace.run_s,
                               trace.cached_tokens, trace.load)

    @staticmethod
    async def _cancellable(ref):
        """Await a replica's answer; a caller who cancels has the replica abort the call."""
        import ray

        try:
            return await ref
        except asyncio.CancelledError:
            ray.cancel(ref)                     # the replica aborts it in vLLM, freeing its KV
            raise

    @staticmethod
    async def _chunks(generator):
        import ray

        try:
            async for ref in generator:
                yield await ref
        except (asyncio.CancelledError, GeneratorExit):
            ray.cancel(generator)
            raise

    def _assign(self, kind: str, prompt_tokens: int, max_tokens: int, hashes) -> tuple[int, float]:
        if not any(self.dispatcher.alive):
            raise EngineDead("; ".join(e for e in self._errors if e))
        return self.dispatcher.assign(kind, prompt_tokens, max_tokens, hashes)

    def _mark_dead(self, e: int, cause: BaseException) -> str:
        """Replica e's engine or actor is gone: it gets no more calls; says why."""
        if self._errors[e] is None:
            why = str(cause) if isinstance(cause, EngineDead) else (
                f"its actor stopped unexpectedly ({type(cause).__name__})")
            self._errors[e] = f"replica {e}: {why}"
        self.dispatcher.alive[e] = False
        return self._errors[e]

    async def generate_offline(self, prompts: Sequence[Prompt],
                               params: SamplingParams | Sequence[SamplingParams]) -> list[Completion]:
        """Batch work below every online call, split across the live replicas in contiguous
        runs of token order (shared prefixes stay on one replica); the caller's order back."""
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        live = [e for e, ok in enumerate(self.dispatcher.alive) if ok]
        ids = encode(self.tokenizer, prompts)
        order = sorted(range(len(prompts)), key=lambda i: ids[i])
        size = -(-len(order) // len(live)) if live else 0
        chunks = [order[k * size:(k + 1) * size] for k in range(len(live))]
        parts = await asyncio.gather(*[
            self._actors[e].generate_offline.remote([prompts[i] for i in chunk],
                                                    [params[i] for i in chunk])
            for e, chunk in zip(live, chunks)])
        out: list[Completion | None] = [None] * len(prompts)
        for chunk, part in zip(chunks, parts):
            for i, completion in zip(chunk, part):
                out[i] = completion
        return out

    # --- state ------------------------------------------------------------------------------

    @property
    def call_slots(self) -> int | None:
        """Calls the live replicas run at once (None: unbounded)."""
        per = self.schedule.max_inflight_seqs
        return per and per * sum(self.dispatcher.alive)

    def health(self) -> Health:
        """The set's health as one engine's: ok while a replica is alive; calls sent and not
        finished count as running up to the slots, the rest as waiting."""
        sent, slots = sum(self.dispatcher.calls), self.call_slots
        running = sent if slots is None else min(sent, slots)
        error = "; ".join(e for e in self._errors if e) or None
        return Health(any(self.dispatcher.alive), error, sent - running, running)

    async def replica_health(self) -> list[Health]:
        """Each replica's own health; a replica whose actor is gone reports its error."""
        async def one(e: int) -> Health:
            try:
                return await self._actors[e].health.remote()
            except Exception as error:
                return Health(False, self._mark_dead(e, getattr(error, "cause", None) or error),
                              0, 0)
        return list(await asyncio.gather(*[one(e) for e in range(len(self._actors))]))

    async def set_schedule(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.dispatcher.max_load = schedule.max_inflight_seqs
        await asyncio.gather(*[a.set_schedule.remote(schedule) for a in self._actors])

    async def reset(self, estimator: StageTimeEstimator | None = None,
                    dispatch: RoundRobin | Balanced | None = None) -> None:
        """Between benchmark runs: fresh estimators (copies of `estimator`), empty caches and
        traces, no outstanding work, and optionally a new dispatch rule."""
        import copy

        self.estimator = copy.deepcopy(estimator) if estimator else StageTimeEstimator()
        await asyncio.gather(*[a.reset.remote(copy.deepcopy(estimator)) for a in self._actors])
        self.traces.clear()
        old = self.dispatcher
        self.rule = dispatch or self.rule
        self.dispatcher = Dispatcher(self.rule, [self.estimator] * len(self._actors),
                                     [PrefixIndex(p.block_size, p.capacity_blocks)
                                      for p in old.prefixes], old.max_load)
        self.dispatcher.alive = old.alive
