"""The batch engine on real vLLM (CPU build, tiny dummy-weight model): order, counts, prefix
cache use, per-request errors, chat, logprobs, structured output, clean shutdown."""

import dataclasses
import random

import psutil
import pytest

from sluice.engine import BatchEngine, EngineConfig, EngineConfigError, SamplingParams

pytest_plugins = ["engine_fixtures"]
pytestmark = pytest.mark.vllm

FIXED = SamplingParams(max_tokens=3, ignore_eos=True)


def words(rng, n):
    return " ".join(rng.choice(["the", "data", "row", "text", "model", "score", "label", "filter"]) for _ in range(n))


def test_completions_come_back_in_the_callers_order_with_token_counts(engine):
    prompts = [f"row {i}: " + "beta " * (3 * i) for i in range(12)]
    random.Random(1).shuffle(prompts)
    expected = engine.backend.encode(prompts)
    out = engine.generate(prompts, [SamplingParams(max_tokens=1 + i % 4, ignore_eos=True)
                                    for i in range(len(prompts))])
    assert [c.prompt_tokens for c in out] == [len(t) for t in expected]
    assert [c.output_tokens for c in out] == [1 + i % 4 for i in range(len(prompts))]
    assert all(c.error is None and c.finish_reason == "length" for c in out)


def test_grouping_serves_shared_prefixes_from_cache_when_the_cache_is_too_small(engine):
    rng = random.Random(7)
    prefixes = [words(rng, 400) for _ in range(24)]         # 24 x ~400 tokens > 2 x 4096 KV tokens
    prompts = [p + f" question {j} " + words(rng, 3) for p in prefixes for j in range(3)]
    rng.shuffle(prompts)

    engine.backend.reset_prefix_cache()
    engine.generate(prompts, FIXED)
    grouped = engine.last_report
    assert grouped.max_reusable_tokens > 0.6 * grouped.prompt_tokens
    assert grouped.cached_tokens >= 0.95 * grouped.max_reusable_tokens
    assert grouped.waves >= 3 and grouped.groups == 24

    engine.config = EngineConfig(**{**engine.config.to_dict(), "prefix_grouping": False})
    try:
        engine.backend.reset_prefix_cache()
        engine.generate(prompts, FIXED)
    finally:
        engine.config = EngineConfig(**{**engine.config.to_dict(), "prefix_grouping": True})
    plain = engine.last_report
    assert plain.max_reusable_tokens == grouped.max_reusable_tokens
    assert plain.cached_tokens < 0.9 * grouped.cached_tokens


def test_bad_prompts_get_a_per_request_error_and_the_rest_complete(engine):
    prompts = ["fine prompt", "", "   ", "gamma " * 600, [{"role": "user", "content": "hi"}]]
    out = engine.generate(prompts, FIXED)
    assert [c.error for c in out[1:3]] == ["empty prompt", "empty prompt"]
    assert "max_model_len 512" in out[3].error and out[3].prompt_tokens >= 512
    assert out[0].error is None and out[0].output_tokens == 3
    assert out[4].error is None and out[4].output_tokens == 3
    assert engine.last_report.rejected == 3


def test_chat_messages_go_through_the_chat_template(engine):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    rendered = engine.backend.tokenizer.apply_chat_template(messages, tokenize=False,
                                                            add_generation_prompt=True)
    [chat] = engine.generate([messages], FIXED)
    [plain] = engine.generate(["hello"], FIXED)
    assert chat.prompt_tokens == len(engine.backend.tokenizer(rendered)["input_ids"])
    assert chat.prompt_tokens > plain.prompt_tokens


def test_logprobs_are_given_per_generated_token(engine):
    [c] = engine.generate(["kappa sigma"], SamplingParams(max_tokens=5, ignore_eos=True, logprobs=1))
    assert len(c.token_logprobs) == c.output_tokens == 5
    assert all(lp <= 0 for lp in c.token_logprobs)
    assert c.cumulative_logprob == pytest.approx(sum(c.token_logprobs), rel=1e-4)


def test_structured_output_answers_with_one_of_the_choices(engine):
    choices = ("positive", "negative", "neutral")
    out = engine.generate([f"classify {i}" for i in range(6)],
                          SamplingParams(max_tokens=8, temperature=1.0, seed=3, choices=choices))
    assert all(c.text in choices for c in out)


def test_missing_model_path_fails_before_building(tmp_path):
    with pytest.raises(EngineConfigError, match="model path .*does not exist"):
        BatchEngine(EngineConfig(model=str(tmp_path / "nope"), load_format="dummy"))
    with pytest.raises(EngineConfigError, match="has no config.json"):
        BatchEngine(EngineConfig(model=str(tmp_path), load_format="dummy"))


def test_missing_vllm_install_is_one_clear_error(tiny_model, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(EngineConfigError, match="vLLM is not installed"):
        EngineConfig(model=tiny_model).check()


@pytest.mark.parametrize("installed", ["0.31.2", "0.33.0", "1.0.0rc1"])
def test_vllm_outside_the_pinned_range_is_one_clear_error(tmp_path, monkeypatch, installed):
    from sluice.engine import vllm_internals

    monkeypatch.setattr(vllm_internals, "installed_vllm", lambda: installed)
    with pytest.raises(EngineConfigError, match=rf"^engine: vLLM {installed} is installed; .*written for "
                                                r"vllm>=0.32,<0.33 .*: pip install 'vllm>=0.32,<0.33'$"):
        EngineConfig(model=str(tmp_path)).check()
    monkeypatch.setattr(vllm_internals, "installed_vllm", lambda: "0.32.1+cpu")
    with pytest.raises(EngineConfigError, match="has no config.json"):  # past the version check
        EngineConfig(model=str(tmp_path)).check()


def test_closing_the_engine_leaves_no_engine_processes(engine_config):
    with BatchEngine(engine_config) as e:
        spawned = list(e.backend._processes)
        assert spawned and all(p.is_running() for p in spawned)
        assert e.generate(["one more"], FIXED)[0].output_tokens == 3
    assert not [p for p in spawned if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_an_in_process_engine_starts_beside_numba_and_leaves_vllm_as_it_was(engine):
    """The session engine is built in this process with the text operators' numba loaded (as in
    a Ray worker that ran them); afterwards vLLM's environment still says engine cores get their
    own process, so an online engine (which needs one) can start here."""
    import os
    import sys

    import vllm.envs

    assert "llvmlite.binding.ffi" in sys.modules
    assert not engine.backend._processes
    assert engine.generate(["one more"], FIXED)[0].output_tokens == 3
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    assert vllm.envs.VLLM_ENABLE_V1_MULTIPROCESSING


def test_a_second_in_process_engine_is_refused_and_the_open_one_keeps_working(engine, engine_config):
    """Closing a second in-process engine would tear down the vLLM state the first one runs on."""
    with pytest.raises(EngineConfigError, match=r"^engine: an in-process vLLM engine is already open"):
        BatchEngine(dataclasses.replace(engine_config, in_process=True))
    assert engine.generate(["still here"], FIXED)[0].output_tokens == 3
