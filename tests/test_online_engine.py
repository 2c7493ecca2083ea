"""The online engine on real vLLM (CPU build, tiny dummy-weight model): concurrent workflows,
cancellation, offline work below online calls, per-call errors, streaming, a dead engine and
a clean close. One engine serves the module; the two lifecycle tests build their own."""

import asyncio
import os
import random

import psutil
import pytest

from sluice.engine import (CallError, DeadlinePassed, EngineDead, FCFS, OnlineEngine, Schedule,
                           SamplingParams, Stage, UnknownStage, Workflow)

pytest_plugins = ["engine_fixtures"]
pytestmark = pytest.mark.vllm

WORDS = ["the", "data", "row", "text", "model", "score", "label", "filter", "ka", "lo"]


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def fixed(n):
    return SamplingParams(max_tokens=n, ignore_eos=True)


@pytest.fixture(scope="module")
def online(loop, engine_config):
    engine = OnlineEngine(engine_config, Schedule(max_inflight_seqs=4))
    loop.run_until_complete(engine.__aenter__())
    yield engine
    loop.run_until_complete(engine.close())


@pytest.fixture
def run(loop, online):
    online.schedule = Schedule(max_inflight_seqs=4)
    yield loop.run_until_complete
    assert online.health().ok and online.health().running == 0


def test_concurrent_workflows_each_get_their_own_results(online, run):
    rng = random.Random(3)
    schema = words(rng, 200)                 # every stage of every question shares the schema

    async def workflow(i):
        wf = Workflow([Stage("ir", "retrieve"), Stage("cand", "generate", fanout=2),
                       Stage("check", "evaluate")], slo_s=60.0)
        question = f" question {i}: " + words(rng, 5 + i)
        ir = await online.call(schema + question, fixed(2 + i), workflow=wf, stage="ir")
        cands = await asyncio.gather(*[
            online.call(schema + question + f" candidate {j}", fixed(3 + j + i), workflow=wf,
                        stage="cand") for j in range(2)])
        check = await online.call(question, fixed(1 + i), workflow=wf, stage="check")
        return wf.id, i, [ir, *cands, check]

    async def scenario():
        return await asyncio.gather(*[workflow(i) for i in range(6)])

    before = len(online.traces)
    results = run(scenario())
    for wf_id, i, (ir, c0, c1, check) in results:
        assert [c.output_tokens for c in (ir, c0, c1, check)] == [2 + i, 3 + i, 4 + i, 1 + i]
        assert all(c.error is None and c.finish_reason == "length" for c in (ir, c0, c1, check))
        traces = [t for t in list(online.traces)[before:] if t.workflow == wf_id]
        assert sorted(t.stage for t in traces) == ["cand", "cand", "check", "ir"]
        # each stage was issued after the one before it finished, by the traces' own times
        stages = {s: [t for t in traces if t.stage == s] for s in ("ir", "cand", "check")}
        for earlier, later in (("ir", "cand"), ("cand", "check")):
            finished = max(t.admitted_at + t.run_s for t in stages[earlier])
            assert all(finished <= t.admitted_at - t.queued_s + 1e-3 for t in stages[later])
    report = online.stage_report()
    assert report["generate"]["calls"] >= 12
    assert report["generate"]["cache_hit_fraction"] > 0.5          # the shared schema prefix
    assert all(t.run_s > 0 and t.queued_s >= 0 for t in online.traces)


def test_a_cancelled_call_frees_its_slot(online, run):
    online.schedule = Schedule(max_inflight_seqs=1)

    async def scenario():
        running = asyncio.create_task(online.call("long " * 20, fixed(400)))
        waiting = asyncio.create_task(online.call("next " * 20, fixed(400)))
        while online.health().running < 1 or online.health().waiting < 1:
            await asyncio.sleep(0.01)
        waiting.cancel()                      # leaves the queue
        await asyncio.sleep(0.05)
        assert online.health().waiting == 0
        running.cancel()                      # aborted in vLLM, its KV freed
        for task in (running, waiting):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert online.health().running == 0
        await asyncio.sleep(0.2)
        assert online._llm.get_num_unfinished_requests() == 0
        return await asyncio.wait_for(online.call("after", fixed(3)), 30)

    assert run(scenario()).output_tokens == 3


BATCH = 40


def test_offline_batch_runs_below_online_calls(online, run):
    online.schedule = Schedule(max_inflight_seqs=3, offline_seqs=2)
    rng = random.Random(5)

    async def scenario():
        batch = asyncio.create_task(online.generate_offline(
            [words(rng, 50) for _ in range(BATCH)], fixed(64)))
        while online.health().running < 2:    # the batch fills the engine...
            await asyncio.sleep(0.01)
        wfs = [Workflow([Stage("a", "step"), Stage("b", "step")], slo_s=60.0) for _ in range(3)]

        async def online_workflow(wf):
            for stage in ("a", "b"):
                await online.call(words(rng, 30), fixed(8), workflow=wf, stage=stage)
        await asyncio.gather(*[online_workflow(wf) for wf in wfs])   # ...online calls arrive
        return await batch

    start = len(online.traces)
    out = run(scenario())
    assert [c.output_tokens for c in out] == [64] * BATCH and all(c.error is None for c in out)
    traces = list(online.traces)[start:]
    offline = [t for t in traces if t.offline]
    online_calls = [t for t in traces if not t.offline]
    assert len(offline) == BATCH and len(online_calls) == 6
    # no offline call was admitted while an online call waited
    for o in online_calls:
        waited_from = o.admitted_at - o.queued_s
        assert not [f for f in offline if waited_from < f.admitted_at < o.admitted_at]
    # the batch filled idle time: it started before the online calls and finished after them
    last_online = max(o.admitted_at + o.run_s for o in online_calls)
    assert min(f.admitted_at for f in offline) < min(o.admitted_at for o in online_calls)
    assert max(f.admitted_at + f.run_s for f in offline) > last_online


def test_bad_calls_get_their_own_error_while_the_rest_finish(online, run):
    async def scenario():
        wf = Workflow([Stage("only", "step")], slo_s=60.0)
        late = Workflow([Stage("only", "step")], slo_s=0.01)
        await asyncio.sleep(0.05)
        calls = [online.call("fine", fixed(4)),
                 online.call("gamma " * 600, fixed(4)),
                 online.call("   ", fixed(4)),
                 online.call("fine too", fixed(5), workflow=wf, stage="nope"),
                 online.call("late", fixed(4), workflow=late, stage="only"),
                 online.call("fine three", fixed(6), workflow=wf, stage="only")]
        return await asyncio.gather(*calls, return_exceptions=True)

    ok, long, empty, unknown, late, ok2 = run(scenario())
    assert ok.output_tokens == 4 and ok2.output_tokens == 6
    assert isinstance(long, CallError) and "max_model_len 512" in str(long)
    assert isinstance(empty, CallError) and str(empty) == "empty prompt"
    assert isinstance(unknown, UnknownStage) and "'nope'" in str(unknown)
    assert isinstance(late, DeadlinePassed)


def test_streaming_yields_new_text_until_the_last_chunk(online, run):
    async def scenario():
        return [c async for c in online.stream("stream this", fixed(12))]

    chunks = run(scenario())
    assert len(chunks) > 1 and chunks[-1].output_tokens == 12
    assert chunks[-1].finish_reason == "length"
    assert [c.output_tokens for c in chunks] == sorted(c.output_tokens for c in chunks)


def engine_processes_gone(processes):
    return not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_dead_engine_fails_every_waiting_call_and_close_leaves_no_processes(engine_config):
    async def scenario():
        async with OnlineEngine(engine_config, Schedule(policy=FCFS(), max_inflight_seqs=1)) as e:
            processes = list(e._processes)
            assert processes and all(p.is_running() for p in processes)
            assert (await e.call("warm up", fixed(2))).output_tokens == 2
            calls = [asyncio.create_task(e.call(f"call {i}", fixed(300))) for i in range(4)]
            while e.health().running < 1:
                await asyncio.sleep(0.01)
            [core] = [p for p in processes if p.ppid() == os.getpid()     # not always retitled
                      and "resource_tracker" not in " ".join(p.cmdline())]
            core.kill()
            results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)
            health = e.health()
            with pytest.raises(EngineDead):
                await e.call("after death", fixed(2))
        return processes, results, health

    processes, results, health = asyncio.run(scenario())
    assert all(isinstance(r, EngineDead) for r in results)
    assert len({str(r) for r in results[1:]}) == 1                  # the waiting calls: one message
    assert not health.ok and "stopped unexpectedly" in health.error
    assert engine_processes_gone(processes)


def test_closing_with_calls_running_ends_them_and_leaves_no_processes(engine_config):
    async def scenario():
        e = OnlineEngine(engine_config, Schedule(max_inflight_seqs=1))
        async with e:
            processes = list(e._processes)
            calls = [asyncio.create_task(e.call(f"call {i}", fixed(300))) for i in range(3)]
            while e.health().running < 1:
                await asyncio.sleep(0.01)
        results = await asyncio.gather(*calls, return_exceptions=True)
        return e, processes, results

    e, processes, results = asyncio.run(scenario())
    assert all(isinstance(r, EngineDead) and str(r) == "engine: closed" for r in results)
    assert not e.health().ok
    assert engine_processes_gone(processes)
