"""What a whole-dataset operator may use while it runs: where output goes, the CPUs, the inputs, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunContext:
    output_dir: Path | None = None
    num_cpus: int = 1
    # An analyze-only run computes stats and drops nothing.
    analyze: bool = False
    # The run's inputs by source name (`__source__`), with their mixture weights.
    sources: dict = field(default_factory=dict)
    # (title, html) pairs shown in the run's HTML report, in order.
    report_sections: list[tuple[str, str]] = field(default_factory=list)

    def add_report_section(self, title: str, html: str) -> None:
        self.report_sections.append((title, html))
