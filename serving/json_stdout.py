"""`--json`: stdout holds one JSON document and nothing else, whatever vLLM, Ray, their
subprocesses or a user's operator print there (they write to file descriptor 1 directly)."""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO


def reserve_stdout() -> TextIO:
    """Point file descriptor 1, and so `print` and every child process started from now on, at
    stderr for the rest of this process; return a stream on the real stdout, for the JSON."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(real, "w", encoding="utf-8")


def write_json(stream: TextIO, document) -> None:
    stream.write(json.dumps(document, indent=1, default=str) + "\n")
    stream.flush()
