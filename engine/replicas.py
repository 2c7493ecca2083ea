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
import itertools
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
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


class ReplicaDead(EngineDead):
    """A replica's engine is gone; `replica` names it (for a retry elsewhere)."""

    def __init__(self, message: str, replica: str | None = None):
        super().__init__(message)
        self.replica = replica


@dataclass(frozen=True)
class Route:
    """What a dispatcher reads of a call: its kind, lengths, prompt blocks, and the replicas
    this call already found dead (`avoid`, by name)."""
    kind: str
    prompt_tokens: int
    max_tokens: int
    hashes: tuple[int, ...] = ()
    avoid: tuple[str, ...] = ()


class EngineReplica:
    """The body of one replica (a Ray actor or a Ray Serve replica): an OnlineEngine on the
    replica's event loop. `name` goes on every trace it returns and every error it raises."""

    def __init__(self, config: EngineConfig, schedule: Schedule | None, name: str | None = None):
        self.engine = OnlineEngine(config, schedule)
        self.name = name

    async def start(self) -> dict:
        self.engine.start()
        return self.describe()

    def describe(self) -> dict:
        return dict(kv_cache_tokens=self.engine.kv_cache_tokens,
                    max_num_seqs=self.engine.max_num_seqs, name=self.name)

    def _trace(self) -> CallTrace:
        """The trace of the call that just returned (recorded with no await in between)."""
        return replace(self.engine.traces[-1], replica=self.name)

    def _dead(self, error: EngineDead) -> ReplicaDead:
        return ReplicaDead(f"replica {self.name}: {error}" if self.name else str(error), self.name)

    async def call(self, prompt: Prompt, params: SamplingParams, deadline: CallDeadline | None,
                   route: Route | None = None) -> tuple[Completion, CallTrace]:
        """`route` is what the dispatcher read; the replica itself has no use for it."""
        if deadline is not None:
            deadline = deadline.absolute(time.monotonic())
        try:
            completion = await self.engine.call(prompt, params, deadline=deadline)
        except EngineDead as e:
            raise self._dead(e) from None
        return completion, self._trace()

    async def stream(self, prompt: Prompt, params: SamplingParams, deadline: CallDeadline | None,
                     route: Route | None = None):
        """The call's chunks, then its CallTrace."""
        if deadline is not None:
            deadline = deadline.absolute(time.monotonic())
        try:
            async with contextlib.aclosing(self.engine.stream(prompt, params,
                                                              deadline=deadline)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except EngineDead as e:
            raise self._dead(e) from None
        yield self._trace()

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


def init_ray(address: str | None) -> bool:
    """Join `address` or start a local Ray unless one runs here; True if this started it.
    ray.init replaces the SIGTERM handler with one that exits at once; a server that drains on
    SIGTERM keeps its own (the caller stops Ray when it closes)."""
    import ray

    if ray.is_initialized():
        return False
    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(address=address or "local", include_dashboard=False, logging_level="WARNING",
             log_to_driver=False)   # vLLM's INFO lines
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm)
    return True


class ReplicaClient:
    """The caller's side of engine replicas, whoever places each call (sluice's dispatcher on
    Ray actors, `ReplicaSet`; or a Ray Serve request router, engine/serve_replicas.py): the
    call checks, the deadline split, the estimator fed by every replica's calls, the retry of
    a call on another replica when its replica is found dead before its first chunk, and the
    set's health. `call`/`stream` as OnlineEngine's."""

    def __init__(self, config: EngineConfig, schedule: Schedule | None, replicas: int):
        if replicas < 1:
            raise ValueError(f"replicas: need at least 1, got {replicas}")
        self.config, self.schedule, self.replicas = config, schedule or Schedule(), replicas
        self.estimator = StageTimeEstimator()   # splits deadlines; learns every replica's calls
        self.traces: deque[CallTrace] = deque(maxlen=TRACE_WINDOW)   # online calls, as returned
        self.sent = 0                           # calls sent and not finished
        self.max_num_seqs: int | None = None    # each replica's vLLM batch bound, once started

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _load_tokenizer(self) -> None:
        from transformers import AutoTokenizer     # the tokenizer vLLM builds for the model

        self.tokenizer = AutoTokenizer.from_pretrained(self.config.model)

    # what a kind of replicas provides
    def _target(self, route: Route):
        """Where this attempt of a call goes (None: the router decides); EngineDead if nowhere."""
        raise NotImplementedError

    def _send(self, target, route: Route, prompt: Prompt, params: SamplingParams,
              deadline: CallDeadline | None, whole: bool) -> AsyncIterator:
        """The call's items on its replica: chunks (or one completion) and its CallTrace."""
        raise NotImplementedError

    def _lost(self, target, cause: BaseException, attempt: int) -> str:
        """The replica of this attempt died: record it, say why; EngineDead if no retry is left."""
        raise NotImplementedError

    def _done(self, target) -> None:
        pass

    def live_replicas(self) -> int:
        raise NotImplementedError

    def errors(self) -> str | None:
        raise NotImplementedError

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
        if getattr(self, "tokenizer", None) is None:
            raise EngineDead("replicas: not started; use `async with` on the replica set")
        ids = encode(self.tokenizer, [prompt])[0]
        error = prompt_error(prompt, ids, self.config.max_model_len)
        if error:
            raise CallError(error)
        deadline, kind = None, stage or "call"
        if workflow is not None:
            now = time.monotonic()
            deadline = workflow.deadline_for(stage, now, self.estimator.stage_time)
            kind, deadline = deadline.kind, deadline.relative(now)
        route = Route(kind, len(ids), min(params.max_tokens, self.config.max_model_len - len(ids)),
                      block_hashes(ids, self.config.block_size))
        for attempt in itertools.count():
            target = self._target(route)
            started = False
            self.sent += 1
            try:
                async with contextlib.aclosing(self._send(target, route, prompt, params, deadline,
                                                          whole)) as items:
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
                message = self._lost(target, cause, attempt)
                if started:
                    raise EngineDead(message) from None
                if isinstance(cause, ReplicaDead) and cause.replica:
                    route = replace(route, avoid=route.avoid + (cause.replica,))
            finally:
                self.sent -= 1
                self._done(target)

    def _observe(self, trace: CallTrace) -> None:
        self.traces.append(trace)
        self.estimator.observe(trace.kind, trace.prompt_tokens, trace.output_tokens, trace.run_s,
                               trace.cached_tokens, trace.load)

    # --- state ------------------------------------------------------------------------------

    @property
    def call_slots(self) -> int | None:
        """Calls the live replicas run at once (None: unbounded)."""
        per = self.schedule.seq_bound(self.max_num_seqs)
        return per and per * self.live_replicas()

    def health(self) -> Health:
        """The set's health as one engine's: ok while a replica is alive; calls sent and not
        finished count as running up to the slots, the rest as waiting."""
        slots = self.call_slots
        running = self.sent if slots is None else min(self.sent, slots)
        return Health(self.live_replicas() > 0, self.errors(), self.sent - running, running)


def cpu_shares(replicas: int, cpus: Sequence[int]) -> list[str]:
    """Cores for each replica's vLLM threads (VLLM_CPU_OMP_THREADS_BIND), as even shares of
    `cpus`; with fewer cores than replicas they share."""
    cpus = sorted(cpus)
    if replicas <= len(cpus):
        size = len(cpus) // replicas
        return [",".join(map(str, cpus[i * size:(i + 1) * size])) for i in range(replicas)]
    return [str(cpus[i % len(cpus)]) for i in range(replicas)]


class ReplicaSet(ReplicaClient):
    """`replicas` online engines as Ray actors behind one dispatcher; `call` as OnlineEngine's.

    `dispatch`: `Balanced(alpha)` (default alpha 0.5; `sluice engine tune-alpha` picks one on a
    recorded trace) or `RoundRobin()`. `num_gpus` per replica (0 on CPU: each replica then gets
    `num_cpus` Ray CPUs and, on a local Ray, its own share of this machine's cores).
    Uses the running Ray session, or starts a local one (or joins `ray_address`)."""

    def __init__(self, config: EngineConfig, schedule: Schedule | None = None, *,
                 replicas: int = 2, dispatch: RoundRobin | Balanced | None = None,
                 num_cpus: float = 1, num_gpus: float = 0, ray_address: str | None = None):
        super().__init__(config, schedule, replicas)
        self.rule = dispatch or Balanced(0.5)
        self.num_cpus, self.num_gpus, self.ray_address = num_cpus, num_gpus, ray_address
        self._actors: list = []
        self._errors: list[str | None] = []
        self._started_ray = False

    async def start(self) -> None:
        self.config.check()
        self._started_ray = init_ray(self.ray_address)
        import ray

        local = not self.ray_address and self.num_gpus == 0
        shares = cpu_shares(self.replicas, os.sched_getaffinity(0)) if local else []
        actor = ray.remote(EngineReplica)
        for i in range(self.replicas):
            env = {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": shares[i]}} if shares else {}
            self._actors.append(actor.options(
                num_cpus=self.num_cpus, num_gpus=self.num_gpus, runtime_env=env,
                max_concurrency=10_000).remote(self.config, self.schedule, str(i)))
        infos = await asyncio.gather(*[a.start.remote() for a in self._actors])
        self._errors = [None] * self.replicas
        self._load_tokenizer()
        self.kv_cache_tokens = min(i["kv_cache_tokens"] for i in infos)
        self.max_num_seqs = min(i["max_num_seqs"] for i in infos)
        blocks = [i["kv_cache_tokens"] // self.config.block_size for i in infos]
        self.dispatcher = Dispatcher(self.rule, [self.estimator] * self.replicas,
                                     [PrefixIndex(self.config.block_size, b) for b in blocks],
                                     self.schedule.seq_bound(self.max_num_seqs))
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

    def _target(self, route: Route) -> tuple[int, float]:
        if not self._actors:
            raise EngineDead("replicas: not started; use `async with ReplicaSet(config)`")
        if not any(self.dispatcher.alive):
            raise EngineDead("; ".join(e for e in self._errors if e))
        return self.dispatcher.assign(route.kind, route.prompt_tokens, route.max_tokens,
                                      route.hashes)

    async def _send(self, target, route, prompt, params, deadline, whole):
        actor = self._actors[target[0]]
        if whole:
            completion, trace = await self._cancellable(actor.call.remote(prompt, params, deadline))
            yield trace
            yield completion
            return
        async for item in self._chunks(actor.stream.options(num_returns="streaming").remote(
                prompt, params, deadline)):
            yield item

    def _lost(self, target, cause: BaseException, attempt: int) -> str:
        return self._mark_dead(target[0], cause)

    def _done(self, target) -> None:
        self.dispatcher.finished(*target)

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

    def _mark_dead(self, e: int, cause: BaseException) -> str:
        """Replica e's engine or actor is gone: it gets no more calls; says why."""
        if self._errors[e] is None:
            if isinstance(cause, ReplicaDead):
                self._errors[e] = str(cause)
            else:
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

    def live_replicas(self) -> int:
        return sum(self.dispatcher.alive) if self._actors else 0

    def errors(self) -> str | None:
        return "; ".join(e for e in self._errors if e) or None

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
        self.dispatcher.max_load = schedule.seq_bound(self.max_num_seqs)
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
