"""OnlineEngine: vLLM's AsyncLLM in this process, shared by many concurrent workflows, with
sluice's own admission queue deciding what vLLM runs next.

    async with OnlineEngine(config) as engine:          # closing stops every engine process
        wf = Workflow([Stage("ir", "retrieve"), Stage("cand", "generate", fanout=2)], slo_s=8)
        first = await engine.call(prompt, params, workflow=wf, stage="ir")
        async for chunk in engine.stream(prompt, params, workflow=wf, stage="cand"): ...
        await engine.generate_offline(prompts, params)  # below every online call

A call is tokenized and checked, then waits in the admission queue; the schedule's policy picks
the next call whenever a slot frees, and a call is handed to vLLM only while the calls in flight
stay within `max_inflight_seqs` sequences (by default vLLM's own batch bound, `max_num_seqs`)
and `max_inflight_tokens` KV tokens, so vLLM runs
what it is given at once and the admission order is the schedule. Each call's result or error
is its own: `CallError` for a call that cannot run (empty or over-long prompt, unknown stage,
deadline passed), `EngineDead` (every waiting call, one message) once vLLM's engine is gone.
A caller that cancels its call takes it out of the queue, or aborts it in vLLM, freeing its KV.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import AsyncIterator, Callable, Sequence

from .admission import AdmissionQueue, Pending, Policy, Urgency
from .config import EngineConfig, EngineConfigError
from .estimator import StageTimeEstimator
from .prefix_cache import PrefixIndex, block_hashes
from .types import CallError, Completion, Prompt, SamplingParams, prompt_error
from .vllm_backend import (CLOSE_TIMEOUT_S, child_pids, children_since, encode, reap,
                           to_completion, to_vllm)
from .vllm_internals import kv_cache_blocks, max_num_seqs
from .workflow import CallDeadline, Workflow

VLLM_PRIORITIES = ("class", "workflow")
TRACE_WINDOW = 20_000       # finished calls kept in `traces` (a server runs for days)
OFFLINE_VLLM_PRIORITY = 2 ** 62


class EngineDead(RuntimeError):
    """vLLM's engine is gone (crashed or closed): no call can run until a new engine is built."""


@dataclass(frozen=True)
class Schedule:
    """How the online engine admits calls. Replaceable between runs (`engine.schedule = ...`)."""
    policy: Policy = field(default_factory=Urgency)
    max_inflight_seqs: int | str | None = "auto"   # "auto": the sequences vLLM batches in one
                                            # step (its max_num_seqs); a number: at most that
                                            # many; None: no admission control, every call goes
                                            # to vLLM when issued (plain vLLM)
    max_inflight_tokens: int | None = None  # prompt + max output tokens in flight; None: KV cache
    offline_seqs: int = 2                   # sequences offline work may hold at most: each one
                                            # shares every decode step with the online calls
    vllm_priority: str = "class"            # vLLM's own priority: "class" (online 0, offline
                                            # last) or "workflow" (the workflow's arrival order)

    def __post_init__(self):
        if isinstance(self.max_inflight_seqs, str) and self.max_inflight_seqs != "auto":
            raise ValueError(f"schedule: max_inflight_seqs must be a number, auto or None, got "
                             f"{self.max_inflight_seqs!r}")
        if isinstance(self.max_inflight_seqs, int) and self.max_inflight_seqs < 1:
            raise ValueError(f"schedule: max_inflight_seqs must be at least 1, got {self.max_inflight_seqs}")
        if self.offline_seqs < 1:
            raise ValueError(f"schedule: offline_seqs must be at least 1, got {self.offline_seqs}")
        if self.vllm_priority not in VLLM_PRIORITIES:
            raise ValueError(f"schedule: vllm_priority must be one of {VLLM_PRIORITIES}")

    def seq_bound(self, engine_max_seqs: int | None) -> int | None:
        """Calls in flight at most on an engine that batches `engine_max_seqs` sequences."""
        if self.max_inflight_seqs == "auto":
            return engine_max_seqs
        return self.max_inflight_seqs


@dataclass
class CallTrace:
    """One finished call: what it was, what it cost, what the estimator expected."""
    kind: str
    stage: str | None
    workflow: int | None
    offline: bool
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    admitted_at: float       # when it was handed to vLLM (the engine's clock)
    queued_s: float          # waiting in sluice's queue
    run_s: float             # handed to vLLM until finished
    estimate_s: float        # the estimator's prediction at admission
    load: int                # calls running when it was admitted
    workflow_arrival: float | None = None   # the engine's clock; with slo_s and the block
    slo_s: float | None = None              # hashes, what a replay on the simulator needs
    hashes: tuple[int, ...] = ()            # (engine.simulator.workflows_from_traces)
    replica: str | None = None              # the replica that ran it (engine/replicas.py)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Health:
    ok: bool
    error: str | None
    waiting: int
    running: int


@dataclass(eq=False)
class _Ticket:
    pending: Pending
    token_ids: list[int]
    params: SamplingParams
    stage: str | None
    deadline: CallDeadline | None
    request_id: str
    vllm_priority: int
    admitted: asyncio.Future
    admitted_at: float = math.nan


class OnlineEngine:
    """Build from an EngineConfig, `async with` it, then `call`/`stream`/`generate_offline`."""

    def __init__(self, config: EngineConfig, schedule: Schedule | None = None,
                 estimator: StageTimeEstimator | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if config.in_process:
            raise EngineConfigError("engine: in_process is for the batch engine; the online "
                                    "engine always runs vLLM's engine core in its own process")
        self.config = config
        self.schedule = schedule or Schedule()
        self._estimator = estimator or StageTimeEstimator()
        self.traces: deque[CallTrace] = deque(maxlen=TRACE_WINDOW)
        self._clock = clock
        self._llm = None
        self._dead: str | None = None
        self._inflight: set[_Ticket] = set()
        self._ids = itertools.count()
        self.max_num_seqs = config.max_num_seqs     # vLLM's batch bound, read once it starts

    @property
    def call_slots(self) -> int | None:
        """Calls the engine runs at once (None: no admission bound)."""
        return self.schedule.seq_bound(self.max_num_seqs)

    @property
    def estimator(self) -> StageTimeEstimator:
        return self._estimator

    @estimator.setter
    def estimator(self, estimator: StageTimeEstimator) -> None:
        """Replace the stage-time model (a fresh profile between benchmark runs)."""
        self._estimator = estimator
        if self._llm is not None:
            self._queue.estimator = estimator

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> "OnlineEngine":
        self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def start(self) -> None:
        self.config.check()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        before = child_pids()
        args = AsyncEngineArgs(**self.config.vllm_kwargs(), scheduling_policy="priority",
                               disable_log_stats=True)
        self._llm = AsyncLLM.from_engine_args(args)
        self._processes = children_since(before)
        self.tokenizer = self._llm.get_tokenizer()
        blocks = kv_cache_blocks(self._llm) - 1   # minus the null block
        self.kv_cache_tokens = blocks * self.config.block_size
        self.max_num_seqs = max_num_seqs(self._llm)
        self.prefix = PrefixIndex(self.config.block_size, blocks)
        self._queue = AdmissionQueue(self.estimator, self.prefix)

    async def close(self) -> None:
        """Fail waiting calls, abort running ones, stop vLLM and wait for its processes."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        self._fail_waiting(self._dead or "engine: closed")
        if self._inflight and not llm.errored:
            await llm.abort([t.request_id for t in self._inflight])
        llm.shutdown(timeout=CLOSE_TIMEOUT_S)
        reap(self._processes)

    def health(self) -> Health:
        if self._dead is None and self._llm is not None and self._llm.errored:
            self._fail_waiting("engine: the vLLM engine stopped unexpectedly; build a new engine")
        return Health(ok=self._dead is None and self._llm is not None, error=self._dead,
                      waiting=len(self._queue) if self._llm else 0, running=len(self._inflight))

    async def reset_prefix_cache(self) -> None:
        """Forget every cached prefix, here and in vLLM (between benchmark runs)."""
        self.prefix.clear()
        await self._llm.reset_prefix_cache()

    # --- calls ---------------------------------------------------------------------------

    async def call(self, prompt: Prompt, params: SamplingParams = SamplingParams(), *,
                   workflow: Workflow | None = None, stage: str | None = None,
                   deadline: CallDeadline | None = None) -> Completion:
        """Run one call and return its completion; raises CallError/EngineDead for this call.
        A workflow call names its workflow and stage, or gives the `deadline` its workflow
        resolved elsewhere (`Workflow.deadline_for`, on this engine's clock)."""
        async with contextlib.aclosing(self._outputs(prompt, params, workflow, stage,
                                                     deadline)) as outputs:
            async for output in outputs:
                last = output
        return to_completion(last, params)

    async def stream(self, prompt: Prompt, params: SamplingParams = SamplingParams(), *,
                     workflow: Workflow | None = None, stage: str | None = None,
                     deadline: CallDeadline | None = None) -> AsyncIterator[Completion]:
        """Yield the call's progress: each Completion's `text` is the new text since the last
        one, its token counts are totals so far, `finish_reason` is set on the last. Iterate to
        the end or close it (`contextlib.aclosing`); a stream left early aborts the call."""
        seen = ""
        async with contextlib.aclosing(self._outputs(prompt, params, workflow, stage,
                                                     deadline)) as outputs:
            async for output in outputs:
                completion = to_completion(output, params)
                text, completion.text = completion.text, completion.text[len(seen):]
                seen = text
                yield completion

    async def generate_offline(self, prompts: Sequence[Prompt],
                               params: SamplingParams | Sequence[SamplingParams]) -> list[Completion]:
        """Batch work at the lowest priority: it runs only in slots no online call is waiting
        for. Completions come back in the caller's order, a bad prompt as `Completion.error`.
        Prompts are submitted sorted by tokens, so shared prefixes run back to back."""
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"generate_offline: {len(prompts)} prompts but {len(params)} sampling params")
        token_ids = encode(self.tokenizer, prompts)

        async def one(i: int) -> Completion:
            try:
                async with contextlib.aclosing(self._outputs(
                        prompts[i], params[i], None, None, None, token_ids[i],
                        offline=True)) as outputs:
                    async for output in outputs:
                        last = output
                return to_completion(last, params[i])
            except CallError as e:
                return Completion(text="", prompt_tokens=len(token_ids[i]), output_tokens=0,
                                  error=str(e))

        order = sorted(range(len(prompts)), key=lambda i: token_ids[i])
        tasks = {i: asyncio.create_task(one(i)) for i in order}    # tasks start in this order
        try:
            return [await tasks[i] for i in range(len(prompts))]
        finally:                                                   # cancelled: so are its calls
            for task in tasks.values():
                task.cancel()

    # --- inside ----------------------------------------------------------------------------

    def _ticket(self, prompt: Prompt, params: SamplingParams, workflow: Workflow | None,
                stage: str | None, deadline: CallDeadline | None, token_ids: list[int] | None,
                offline: bool) -> _Ticket:
        if self._llm is None:
            raise EngineDead(self._dead or "engine: not started; use `async with OnlineEngine(config)`")
        if not self.health().ok:
            raise EngineDead(self._dead)
        ids = token_ids if token_ids is not None else encode(self.tokenizer, [prompt])[0]
        error = prompt_error(prompt, ids, self.config.max_model_len)
        if error:
            raise CallError(error)
        now = self._clock()
        if workflow is not None:
            deadline = workflow.deadline_for(stage, now, self.estimator.stage_time)
        elif deadline is not None:
            deadline.check(now)
        stage = deadline.stage if deadline else stage
        kind = deadline.kind if deadline else stage or ("offline" if offline else "call")
        max_tokens = min(params.max_tokens, self.config.max_model_len - len(ids))
        pending = Pending(kind, len(ids), max_tokens, block_hashes(ids, self.config.block_size),
                          deadline.stage_deadline if deadline else math.inf,
                          deadline.workflow_deadline if deadline else math.inf, offline,
                          enqueued=now)
        if offline:
            priority = OFFLINE_VLLM_PRIORITY
        elif self.schedule.vllm_priority == "workflow" and deadline is not None:
            priority = deadline.workflow
        else:
            priority = 0
        ticket = _Ticket(pending, ids, replace(params, max_tokens=max_tokens), stage, deadline,
                         f"sluice-{next(self._ids)}", priority,
                         asyncio.get_running_loop().create_future())
        pending.ticket = ticket
        return ticket

    async def _outputs(self, prompt, params, workflow, stage, deadline, token_ids=None,
                       offline=False):
        """The vLLM outputs of one call (cumulative), after it is admitted."""
        ticket = self._ticket(prompt, params, workflow, stage, deadline, token_ids, offline)
        self._queue.push(ticket.pending)
        self._dispatch()
        from vllm.inputs import TokensPrompt

        last = None
        try:
            await ticket.admitted
            async for output in self._llm.generate(
                    TokensPrompt(prompt_token_ids=ticket.token_ids), to_vllm(ticket.params),
                    ticket.request_id, priority=ticket.vllm_priority):
                last = output
                yield output
        except (asyncio.CancelledError, GeneratorExit, CallError, EngineDead):
            raise
        except Exception as e:
            if self._llm is None or self._llm.errored:
                self._fail_waiting(self._dead or "engine: the vLLM engine stopped unexpectedly "
                                   f"({type(e).__name__}); build a new engine")
                raise EngineDead(self._dead) from None
            raise CallError(f"vLLM refused the call: {e}") from e
        finally:
            self._release(ticket, last)
        if self._dead is not None:                      # aborted by close()
            raise EngineDead(self._dead)

    def _dispatch(self) -> None:
        """Admit calls, best first by the schedule's policy, while they fit."""
        while len(self._queue):
            now = self._clock()
            call = self._queue.choose(self.schedule.policy, now, load=len(self._inflight))
            ticket = call.ticket
            if ticket.admitted.done():                   # cancelled before it was admitted
                self._queue.remove(call)
                continue
            if not self._fits(call):
                return
            self._queue.remove(call)
            self.prefix.add(call.hashes)
            ticket.admitted_at = now
            self._inflight.add(ticket)
            ticket.admitted.set_result(None)

    def _fits(self, call: Pending) -> bool:
        s, slots = self.schedule, self.call_slots
        if slots is None or not self._inflight:
            return True
        tokens = s.max_inflight_tokens or self.kv_cache_tokens
        held = sum(t.pending.kv_tokens for t in self._inflight)
        if call.offline and sum(t.pending.offline for t in self._inflight) >= s.offline_seqs:
            return False
        return len(self._inflight) < slots and held + call.kv_tokens <= tokens

    def _release(self, ticket: _Ticket, last) -> None:
        if ticket.pending in self._queue:
            self._queue.remove(ticket.pending)
        if ticket in self._inflight:
            self._inflight.discard(ticket)
            if last is not None and last.finished and self._dead is None:
                self._record(ticket, last)
        if self._llm is not None and self._dead is None:
            self._dispatch()

    def _record(self, ticket: _Ticket, output) -> None:
        p, d, done = ticket.pending, ticket.deadline, to_completion(output, ticket.params)
        run_s = self._clock() - ticket.admitted_at
        self.estimator.observe(p.kind, done.prompt_tokens, done.output_tokens, run_s,
                               done.cached_tokens, p.load)
        self.traces.append(CallTrace(
            kind=p.kind, stage=ticket.stage, offline=p.offline,
            workflow=d.workflow if d else None,
            prompt_tokens=done.prompt_tokens, cached_tokens=done.cached_tokens,
            output_tokens=done.output_tokens, admitted_at=ticket.admitted_at,
            queued_s=ticket.admitted_at - p.enqueued,
            run_s=run_s, estimate_s=p.estimate_s, load=p.load,
            workflow_arrival=d.workflow_deadline - d.slo_s if d else None,
            slo_s=d.slo_s if d else None, hashes=p.hashes))

    def _fail_waiting(self, message: str) -> None:
        """The engine is gone: every waiting call fails with this one message."""
        self._dead = message
        for call in self._queue:
            self._queue.remove(call)
            if not call.ticket.admitted.done():
                call.ticket.admitted.set_exception(EngineDead(message))

    def stage_report(self) -> dict[str, dict]:
        """Per stage kind: calls, tokens, prefix-cache hits, mean times, estimator error."""
        report = {}
        for kind in sorted({t.kind for t in self.traces}):
            ts = [t for t in self.traces if t.kind == kind]
            prompt, cached = sum(t.prompt_tokens for t in ts), sum(t.cached_tokens for t in ts)
            report[kind] = dict(
                calls=len(ts), prompt_tokens=prompt, cached_tokens=cached,
                cache_hit_fraction=cached / prompt if prompt else 0.0,
                output_tokens=sum(t.output_tokens for t in ts),
                mean_queued_s=sum(t.queued_s for t in ts) / len(ts),
                mean_run_s=sum(t.run_s for t in ts) / len(ts),
                estimate_error=self.estimator.relative_error(kind))
        return report
