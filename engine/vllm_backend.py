"""vLLM embedded in this process: tokenize prompts, run token prompts, shut down cleanly.

Only this module and the online engine import vllm, and only when an engine is built, so
`sluice.engine` imports without vLLM installed; what they read of vLLM's internals is in
`vllm_internals`. By default vLLM runs its engine core in a spawned subprocess (a script
that builds a backend must do so under `if __name__ == "__main__":`), which `close` stops and
waits for; with `in_process` everything stays in the calling process (used in Ray actors).
"""

from __future__ import annotations

import contextlib
from multiprocessing import resource_tracker
from typing import Sequence

import psutil

from .config import EngineConfig, EngineConfigError
from .types import Completion, Prompt, SamplingParams
from .vllm_internals import engine_core_in_this_process, kv_cache_blocks, shutdown_engine_core

CLOSE_TIMEOUT_S = 5

# vLLM keeps one distributed state per process and an in-process engine core tears it down when
# it closes, so a second in-process engine would share the first's and break when either closes.
_open_in_process: "VLLMBackend | None" = None


class VLLMBackend:
    """One `vllm.LLM` built from an EngineConfig."""

    def __init__(self, config: EngineConfig):
        global _open_in_process
        config.check()
        if config.in_process and _open_in_process is not None:
            raise EngineConfigError(
                "engine: an in-process vLLM engine is already open in this process (vLLM keeps "
                "one distributed state per process); close it first or build this one with "
                "in_process=False")
        from vllm import LLM

        self.config = config
        before = child_pids()
        with engine_core_in_this_process() if config.in_process else contextlib.nullcontext():
            self.llm = LLM(**config.vllm_kwargs())
        if config.in_process:
            _open_in_process = self
        self._processes = children_since(before)
        self.tokenizer = self.llm.get_tokenizer()
        # vLLM keeps one block as its null block; the rest hold KV.
        self.kv_cache_tokens = (kv_cache_blocks(self.llm.llm_engine) - 1) * config.block_size

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        return encode(self.tokenizer, prompts)

    def run(self, token_ids: Sequence[list[int]], params: Sequence[SamplingParams]) -> list[Completion]:
        """Submit token prompts in this order and return their completions in the same order."""
        if not token_ids:
            return []
        from vllm.inputs import TokensPrompt

        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(t)) for t in token_ids],
                                    [to_vllm(p) for p in params], use_tqdm=False)
        return [to_completion(o, p) for o, p in zip(outputs, params)]

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Stop the engine core and its workers and wait until they are gone; safe to call twice."""
        global _open_in_process
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        shutdown_engine_core(llm, CLOSE_TIMEOUT_S)
        reap(self._processes)
        if _open_in_process is self:
            _open_in_process = None


def child_pids() -> set[int]:
    """This process's children now. multiprocessing's resource tracker is started first: vLLM
    would start it, it lives as long as this process and ignores SIGTERM, so it is not one of
    the engine's processes to stop."""
    resource_tracker.ensure_running()
    return {c.pid for c in psutil.Process().children(recursive=True)}


def children_since(before: set[int]) -> list[psutil.Process]:
    """Processes started below this one since `before` was taken (vLLM's engine core, workers)."""
    return [c for c in psutil.Process().children(recursive=True) if c.pid not in before]


def reap(processes: Sequence[psutil.Process]) -> None:
    """Wait for the engine's processes to end after a shutdown; kill any that do not."""
    _, alive = psutil.wait_procs(processes, timeout=CLOSE_TIMEOUT_S)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=CLOSE_TIMEOUT_S)


def encode(tokenizer, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids vLLM would build: special tokens for text, the chat template for messages."""
    ids: list[list[int]] = [[] for _ in prompts]
    text_idx = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    chat_idx = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if text_idx:
        encoded = tokenizer([prompts[i] for i in text_idx], add_special_tokens=True)
        for i, t in zip(text_idx, encoded["input_ids"]):
            ids[i] = list(t)
    if chat_idx:
        rendered = [tokenizer.apply_chat_template(prompts[i], tokenize=False,
                                                  add_generation_prompt=True)
                    for i in chat_idx]
        encoded = tokenizer(rendered, add_special_tokens=False)
        for i, t in zip(chat_idx, encoded["input_ids"]):
            ids[i] = list(t)
    return ids


def to_vllm(p: SamplingParams):
    from vllm import SamplingParams as VSamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    structured = StructuredOutputsParams(choice=list(p.choices)) if p.choices is not None else None
    return VSamplingParams(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p,
                           seed=p.seed, stop=list(p.stop) or None, ignore_eos=p.ignore_eos,
                           logprobs=p.logprobs, structured_outputs=structured)


def to_completion(output, params: SamplingParams) -> Completion:
    out = output.outputs[0]
    token_logprobs = []
    if params.logprobs is not None and out.logprobs:
        token_logprobs = [step[tok].logprob for tok, step in zip(out.token_ids, out.logprobs)]
    return Completion(text=out.text, prompt_tokens=len(output.prompt_token_ids),
                      output_tokens=len(out.token_ids),
                      cached_tokens=output.num_cached_tokens or 0,
                      cumulative_logprob=out.cumulative_logprob,
                      token_logprobs=token_logprobs, finish_reason=out.finish_reason)
