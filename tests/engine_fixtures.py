"""Session fixtures shared by the engine and LLM operator tests (loaded with `pytest_plugins`):
one tiny dummy-weight model directory and one vLLM engine for the whole session."""

import asyncio
import dataclasses

import pytest

from sluice.engine import BatchEngine, EngineConfig
from sluice.engine.testing import build_tiny_model

MAX_MODEL_LEN = 512
KV_CACHE_TOKENS = 4096


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def engine_config(tiny_model):
    return EngineConfig(model=tiny_model, load_format="dummy", enforce_eager=True,
                        dtype="float32", max_model_len=MAX_MODEL_LEN,
                        kv_cache_tokens=KV_CACHE_TOKENS)


@pytest.fixture(scope="session")
def engine(engine_config):
    """vLLM's engine core in the test process: no two processes importing vLLM (about 25 s
    of each start); the tests of the engine's processes build their own. Built with numba's
    llvmlite loaded, as in a Ray worker that ran the text operators."""
    import llvmlite.binding  # noqa: F401

    with BatchEngine(dataclasses.replace(engine_config, in_process=True)) as e:
        yield e


@pytest.fixture(scope="module")
def loop():
    """An event loop for a module's async engine tests (its engines live as long as it)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
