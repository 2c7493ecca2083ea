"""A run's progress on stderr: one line per stage; on a terminal, the line of the stage in
progress updates in place."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.live = sys.stderr.isatty()
        self.pending = False  # a line in place on the terminal, not yet ended

    def update(self, text: str) -> None:
        """The stage in progress: shown in place on a terminal, nowhere else."""
        if not self.quiet and self.live:
            print(f"\r{text}", end="", file=sys.stderr, flush=True)
            self.pending = True

    def done(self, text: str) -> None:
        """A stage that finished: one line."""
        if not self.quiet:
            print(f"\r{text}" if self.pending else text, file=sys.stderr, flush=True)
            self.pending = False
