"""Workflows: a plan of LLM-call stages with an end-to-end SLO, and the split of that SLO into
per-stage deadlines that the urgency policy reads.

A stage is one sequential step; parallel calls of one kind (candidates, test evaluations) form
one stage with a fan-out. The plan holds the stages known so far, in execution order, and is
updated as the workflow runs (a revision loop adds stages; a skipped step is removed). When a
stage's first call arrives the stage starts and gets its deadline, fixed from then on:

    D_s = (SLO - elapsed) * t(s) / (t(s) + sum of t(s') over the later stages not yet started)

where t is the estimated time of a stage (the estimator's, learned online).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

from .types import CallError

LATE_POLICIES = ("fail", "run")


class UnknownStage(CallError):
    """A call names a stage its workflow's plan does not hold."""


class DeadlinePassed(CallError):
    """A call arrives after its workflow's deadline (and the workflow fails late calls)."""


@dataclass(frozen=True)
class Stage:
    name: str                          # unique within the plan: "revise-2"
    kind: str                          # what the estimator models: "revise"
    fanout: int = 1                    # parallel calls in this stage (as far as known)
    prompt_tokens: int | None = None   # expected per call; None: the estimator's mean for kind
    output_tokens: int | None = None

    def __post_init__(self):
        if not self.name or not self.kind:
            raise ValueError("stage: name and kind must be non-empty")
        if self.fanout < 1:
            raise ValueError(f"stage {self.name}: fanout must be at least 1, got {self.fanout}")


class WorkflowPlan:
    """The stages known so far, in the order they run; editable while the workflow runs."""

    def __init__(self, stages: Iterable[Stage] = ()):
        self._stages: list[Stage] = []
        for stage in stages:
            self.add(stage)

    @property
    def stages(self) -> tuple[Stage, ...]:
        return tuple(self._stages)

    def __contains__(self, name: str) -> bool:
        return any(s.name == name for s in self._stages)

    def index(self, name: str) -> int:
        for i, stage in enumerate(self._stages):
            if stage.name == name:
                return i
        known = ", ".join(s.name for s in self._stages) or "none"
        raise UnknownStage(f"stage '{name}' is not in the workflow's plan (stages: {known})")

    def get(self, name: str) -> Stage:
        return self._stages[self.index(name)]

    def add(self, stage: Stage, *, after: str | None = None) -> None:
        """Append a stage, or insert it right after the stage named `after`."""
        if stage.name in self:
            raise ValueError(f"stage '{stage.name}' is already in the plan")
        at = self.index(after) + 1 if after is not None else len(self._stages)
        self._stages.insert(at, stage)

    def update(self, name: str, **changes) -> None:
        """Change a stage's fan-out or expected tokens (`update("evaluate", fanout=7)`)."""
        i = self.index(name)
        self._stages[i] = replace(self._stages[i], **changes)

    def remove(self, name: str) -> None:
        del self._stages[self.index(name)]

    def after(self, name: str) -> list[Stage]:
        return self._stages[self.index(name) + 1:]


def split_deadline(remaining_s: float, stage_s: float, later_s: Sequence[float]) -> float:
    """This stage's share of the time left: remaining * t(s) / (t(s) + sum t(later)).

    With no estimate at all (every t is 0) the time left is split evenly."""
    total = stage_s + sum(later_s)
    if total <= 0:
        return remaining_s / (1 + len(later_s))
    return remaining_s * stage_s / total


@dataclass(frozen=True)
class CallDeadline:
    """One workflow call as the admission queue sees it: the stage's kind and the two deadlines
    the policies read. Resolved where the workflow lives (`Workflow.deadline_for`); an engine
    replica in another process gets it with the deadlines as seconds left (`relative`), since
    clocks differ between machines, and puts them back on its own clock (`absolute`)."""
    kind: str
    stage: str
    workflow: int
    stage_deadline: float
    workflow_deadline: float
    slo_s: float
    late: str = "fail"

    def shifted(self, by: float) -> "CallDeadline":
        return replace(self, stage_deadline=self.stage_deadline + by,
                       workflow_deadline=self.workflow_deadline + by)

    def relative(self, now: float) -> "CallDeadline":
        return self.shifted(-now)

    def absolute(self, now: float) -> "CallDeadline":
        return self.shifted(now)

    def check(self, now: float) -> None:
        """The error a call must get at `now` on the engine, if any."""
        if self.late == "fail" and now > self.workflow_deadline:
            raise DeadlinePassed(
                f"workflow {self.workflow}: deadline passed {now - self.workflow_deadline:.3f} s "
                f"ago (SLO {self.slo_s:.3f} s); call to stage '{self.stage}' refused")


_workflow_ids = itertools.count()


class Workflow:
    """One running workflow: its plan, its SLO and the deadlines of the stages started so far.

    `late="fail"`: a call issued after the deadline is refused with `DeadlinePassed`;
    `late="run"`: it still runs, as the most urgent work (benchmarks measure full latency)."""

    def __init__(self, plan: WorkflowPlan | Iterable[Stage], slo_s: float, *, late: str = "fail",
                 clock: Callable[[], float] = time.monotonic):
        if not slo_s > 0:
            raise ValueError(f"workflow: slo_s must be positive, got {slo_s}")
        if late not in LATE_POLICIES:
            raise ValueError(f"workflow: late must be one of {LATE_POLICIES}, got {late!r}")
        self.plan = plan if isinstance(plan, WorkflowPlan) else WorkflowPlan(plan)
        self.id = next(_workflow_ids)      # arrival order across workflows
        self.slo_s = slo_s
        self.late = late
        self.arrival = clock()
        self.deadline = self.arrival + slo_s
        self._stage_deadlines: dict[str, float] = {}

    def check_call(self, stage: str, now: float) -> None:
        """Raise the error a call to `stage` at `now` must get, if any."""
        self.plan.index(stage)
        CallDeadline("", stage, self.id, self.deadline, self.deadline, self.slo_s,
                     self.late).check(now)

    def started(self, stage: str) -> bool:
        return stage in self._stage_deadlines

    def deadline_for(self, stage: str | None, now: float,
                     stage_time: Callable[[Stage], float]) -> "CallDeadline":
        """Check a call to `stage` issued at `now` and say where it stands (raises the call's
        error, as `check_call`)."""
        if stage is None:
            raise CallError(f"workflow {self.id}: a workflow call must name its stage")
        self.check_call(stage, now)
        return CallDeadline(self.plan.get(stage).kind, stage, self.id,
                            self.stage_deadline(stage, now, stage_time), self.deadline,
                            self.slo_s, self.late)

    def stage_deadline(self, stage: str, now: float, stage_time: Callable[[Stage], float]) -> float:
        """Absolute deadline of `stage`, fixed when its first call arrives (at `now`)."""
        if stage not in self._stage_deadlines:
            later = [stage_time(s) for s in self.plan.after(stage) if not self.started(s.name)]
            share = split_deadline(self.deadline - now, stage_time(self.plan.get(stage)), later)
            self._stage_deadlines[stage] = now + share
        return self._stage_deadlines[stage]

