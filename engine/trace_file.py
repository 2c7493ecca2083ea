"""Recorded calls as a file: one JSON header line (how the engines were set up), then one JSON
line per finished call (`CallTrace.to_dict()`), for `sluice engine tune-alpha` to replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

FORMAT = "sluice-trace-v1"


def write_traces(path: str | Path, traces: Iterable, **setup) -> int:
    """Write `traces` (CallTrace or dicts) after a header holding `setup` (replicas,
    block_size, kv_cache_tokens, max_inflight_seqs); returns the number of calls written."""
    n = 0
    with open(path, "w") as f:
        f.write(json.dumps({"format": FORMAT, **setup}) + "\n")
        for t in traces:
            f.write(json.dumps(t if isinstance(t, dict) else t.to_dict()) + "\n")
            n += 1
    return n


def read_traces(path: str | Path) -> tuple[dict, list[dict]]:
    """The header and the calls of a trace file; ValueError naming the line if it is not one."""
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sluice trace file (its first line must be a "
                         f"'{FORMAT}' header; write one with engine.trace_file.write_traces)")
    calls = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            calls.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not a JSON call record ({e.msg})") from None
    return header, calls
