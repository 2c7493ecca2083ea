"""Starting an HTTP server with a /health route (`sluice serve`, `vllm serve`) as a subprocess
on a free loopback port: for the tests and benchmarks/bench_serve.py."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, base: str, log: Path, timeout_s: float) -> None:
    """Until `base`/health answers 200; RuntimeError with the log's tail if the server exits,
    TimeoutError if it is not healthy within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n"
                               f"{Path(log).read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server did not become healthy in {timeout_s:.0f} s; see {log}")
