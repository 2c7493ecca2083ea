"""The one way every LLM-backed part of sluice reaches a model: an embedded vLLM batch engine.

    from sluice.engine import BatchEngine, EngineConfig, SamplingParams
    with BatchEngine(EngineConfig(model="path/or/org-name")) as engine:
        completions = engine.generate(["prompt", ...], SamplingParams(max_tokens=32))

Importing this package does not import vLLM; building an engine does.
"""

from .batch import BatchEngine, BatchReport
from .config import EngineConfig, EngineConfigError
from .prefix import Group, Plan, plan_batch
from .types import ChatMessages, Completion, Engine, Prompt, SamplingParams

__all__ = ["BatchEngine", "BatchReport", "EngineConfig", "EngineConfigError", "Group", "Plan",
           "plan_batch", "ChatMessages", "Completion", "Engine", "Prompt", "SamplingParams"]
