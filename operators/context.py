"""What a whole-dataset operator may use while it runs: where output goes, the seed, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunContext:
    output_dir: Path | None = None
    seed: int = 42
    num_cpus: int = 1
    # An analyze-only run computes stats and drops nothing.
    analyze: bool = False
    # The run's inputs by source name (`__source__`), with their mixture weights.
    sources: dict = field(default_factory=dict)
    # (title, html) pairs shown in the run's HTML report, in order.
    report_sections: list[tuple[str, str]] = field(default_factory=list)
    # Seconds a whole-dataset operator spent, keyed by operator name, for the run summary.
    seconds: dict[str, float] = field(default_factory=dict)

    def add_report_section(self, title: str, html: str) -> None:
        self.report_sections.append((title, html))
