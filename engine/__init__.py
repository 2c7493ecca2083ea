"""The one way every LLM-backed part of sluice reaches a model: an embedded vLLM engine.

Offline, a batch at a time:

    from sluice.engine import BatchEngine, EngineConfig, SamplingParams
    with BatchEngine(EngineConfig(model="path/or/org-name")) as engine:
        completions = engine.generate(["prompt", ...], SamplingParams(max_tokens=32))

Online, many concurrent workflows with deadlines (docs/online.md):

    async with OnlineEngine(config) as engine:
        wf = Workflow([Stage("ir", "retrieve"), Stage("gen", "generate", fanout=2)], slo_s=8.0)
        completion = await engine.call(prompt, params, workflow=wf, stage="ir")

Several engines as Ray actors behind HEXGEN's workload-balanced dispatcher:

    async with ReplicaSet(config, replicas=2, dispatch=Balanced(alpha=0.5)) as engines: ...

Importing this package does not import vLLM; building an engine does.
"""

from .admission import EDF, FCFS, POLICIES, AdmissionQueue, Pending, Policy, Urgency, urgency
from .batch import BatchEngine, BatchReport
from .config import EngineConfig, EngineConfigError
from .dispatch import Balanced, Dispatcher, RoundRobin, choose_engine, dispatch_scores
from .estimator import Observation, StageTimeEstimator
from .online import CallTrace, EngineDead, Health, OnlineEngine, Schedule
from .prefix import Group, Plan, plan_batch
from .prefix_cache import PrefixIndex, block_hashes
from .replicas import ReplicaSet
from .simulator import SimWorkflow, simulate, tune_alpha, workflows_from_traces
from .types import CallError, ChatMessages, Completion, Engine, Prompt, SamplingParams, prompt_error
from .workflow import CallDeadline, DeadlinePassed, Stage, UnknownStage, Workflow, WorkflowPlan, split_deadline

__all__ = ["BatchEngine", "BatchReport", "EngineConfig", "EngineConfigError", "Group", "Plan",
           "plan_batch", "ChatMessages", "Completion", "Engine", "Prompt", "SamplingParams",
           "CallError", "prompt_error",
           "EDF", "FCFS", "POLICIES", "AdmissionQueue", "Pending", "Policy", "Urgency", "urgency",
           "Balanced", "Dispatcher", "RoundRobin", "ReplicaSet", "CallDeadline",
           "tune_alpha", "workflows_from_traces", "choose_engine", "dispatch_scores", "CallTrace", "EngineDead", "Health", "OnlineEngine", "Schedule", "Observation", "StageTimeEstimator", "PrefixIndex", "block_hashes",
           "SimWorkflow", "simulate", "DeadlinePassed", "Stage", "UnknownStage", "Workflow", "WorkflowPlan", "split_deadline"]
