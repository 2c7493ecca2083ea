"""Engine replicas as Ray actors behind the dispatcher, on real vLLM (CPU build, tiny
dummy-weight model): two replicas for the module."""

import asyncio
import random
import time

import psutil
import pytest

from sluice.engine import CallError, EngineDead, SamplingParams, Stage, Workflow
from sluice.engine.dispatch import Balanced
from sluice.engine.replicas import ReplicaSet, cpu_shares
from sluice.engine.testing import command_line, is_engine_process

pytest_plugins = ["engine_fixtures"]
pytestmark = pytest.mark.vllm

WORDS = ["the", "data", "row", "text", "model", "score", "label", "filter", "ka", "lo"]


def engine_cores() -> set[int]:
    """vLLM engine processes below this one (the local Ray's replica actors' included), so a
    concurrent test process's engines are not counted."""
    return {p.pid for p in psutil.Process().children(recursive=True) if is_engine_process(p)}


@pytest.fixture(scope="module")
def replicas(loop, engine_config, ray_session):
    before = engine_cores()
    rs = ReplicaSet(engine_config, replicas=2, dispatch=Balanced(0.9))
    loop.run_until_complete(rs.start())
    yield rs
    loop.run_until_complete(rs.close())
    deadline = time.monotonic() + 30  # a killed engine core's worker notices its parent is gone
    while engine_cores() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    left = engine_cores() - before
    assert not left, [command_line(psutil.Process(pid)) for pid in left]  # no engine process left behind


def test_cpu_shares_split_the_cores():
    assert cpu_shares(2, [0, 1, 2, 3]) == ["0,1", "2,3"]
    assert cpu_shares(3, [5]) == ["5", "5", "5"]


def test_workflows_on_two_schemas_stay_with_their_cache(replicas, loop):
    rng = random.Random(5)
    schemas = [" ".join(rng.choice(WORDS) for _ in range(150)) for _ in range(2)]

    async def workflow(i):
        wf = Workflow([Stage("cand", "generate", fanout=2), Stage("check", "evaluate")], slo_s=120)
        prompt = schemas[i % 2] + f" question {i}"
        cands = await asyncio.gather(*[
            replicas.call(prompt + f" candidate {j}", SamplingParams(max_tokens=2 + i + j,
                                                                     ignore_eos=True),
                          workflow=wf, stage="cand") for j in range(2)])
        check = await replicas.call(f"check {i}", SamplingParams(max_tokens=1, ignore_eos=True),
                                    workflow=wf, stage="check")
        return [c.output_tokens for c in (*cands, check)]

    async def scenario():
        first = await workflow(0), await workflow(1)        # one schema cached on each replica
        return [*first, *await asyncio.gather(*[workflow(i) for i in range(2, 8)])]

    results = loop.run_until_complete(scenario())
    assert results == [[2 + i, 3 + i, 1] for i in range(8)]
    traces = list(replicas.traces)
    generate = [t for t in traces if t.kind == "generate"]
    assert len(generate) == 16 and {t.workflow for t in generate} == {t.workflow for t in traces}
    # once each schema is cached on a replica, its later calls mostly go there and hit (the
    # balance term may send one elsewhere when its replica holds much more work)
    first_two = sorted({t.workflow for t in generate})[:2]
    later = [t for t in generate if t.workflow not in first_two]
    assert sum(t.cached_tokens >= 3 * 32 for t in later) >= 10, [t.cached_tokens for t in later]
    assert replicas.dispatcher.calls == [0, 0]


def test_offline_batch_split_across_replicas_comes_back_in_order(replicas, loop):
    prompts = [f"row {i} " + "text " * (i % 5) for i in range(10)]
    params = [SamplingParams(max_tokens=1 + i % 3, ignore_eos=True) for i in range(10)]
    out = loop.run_until_complete(replicas.generate_offline(prompts, params))
    assert [c.output_tokens for c in out] == [1 + i % 3 for i in range(10)]


def test_a_call_streams_from_its_replica(replicas, loop):
    async def scenario():
        wf = Workflow([Stage("gen", "generate")], slo_s=60)
        return [c async for c in replicas.stream("stream this", SamplingParams(
            max_tokens=12, ignore_eos=True), workflow=wf, stage="gen")]

    chunks = loop.run_until_complete(scenario())
    assert len(chunks) > 1 and chunks[-1].output_tokens == 12
    assert chunks[-1].finish_reason == "length" and all(c.finish_reason is None for c in chunks[:-1])
    assert replicas.traces[-1].kind == "generate" and replicas.health().running == 0


def test_a_cancelled_call_is_aborted_on_its_replica(replicas, loop):
    async def scenario():
        long = asyncio.create_task(replicas.call("a b c", SamplingParams(max_tokens=500,
                                                                         ignore_eos=True)))
        # cancelled as soon as a replica runs it: a fixed wait lets a fast machine finish it
        while not any(h.running for h in await replicas.replica_health()):
            assert not long.done(), long
            await asyncio.sleep(0.01)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        for _ in range(50):                                 # the abort reaches the replica
            if all(h.running == 0 for h in await replicas.replica_health()):
                return True
            await asyncio.sleep(0.1)
        return False

    assert loop.run_until_complete(scenario())


def test_bad_calls_fail_alone_and_a_dead_replica_gets_no_more_calls(replicas, loop):
    import ray

    with pytest.raises(CallError, match="max_model_len"):
        loop.run_until_complete(replicas.call("word " * 600))
    ray.kill(replicas._actors[0])                           # replica 0's actor dies

    async def after():
        results = await asyncio.gather(*[replicas.call(f"q {i}", SamplingParams(max_tokens=2))
                                         for i in range(4)], return_exceptions=True)
        return results, await replicas.replica_health()

    results, health = loop.run_until_complete(after())
    assert [r.output_tokens for r in results] == [2, 2, 2, 2]   # sent again to the live one
    assert not health[0].ok and "replica 0: its actor stopped" in health[0].error
    assert health[1].ok
    ray.kill(replicas._actors[1])
    with pytest.raises(EngineDead, match="replica 1"):
        loop.run_until_complete(replicas.call("q", SamplingParams(max_tokens=2)))
