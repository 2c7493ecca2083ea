"""`sluice serve --replicas 2`: the same server with two engine replicas as Ray actors behind
sluice's dispatcher (a real uvicorn server on loopback, the tiny dummy-weight model on vLLM
CPU); /health turns 503 when the replicas' engines die; SIGTERM leaves no process behind."""

import concurrent.futures
import json
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from sluice.engine.testing import build_tiny_model
from sluice.serving.testing import free_port, wait_healthy
from test_serve_api import STARTUP_S, metric

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-replicas")
    build_tiny_model(root / "tiny")
    (root / "serve.yaml").write_text("""\
model: {path: tiny, name: tiny}
engine: {dtype: float32, max_model_len: 1024, kv_cache_tokens: 8192, load_format: dummy,
         enforce_eager: true}
schedule: {max_inflight_seqs: 4}
replicas: {dispatch: balanced, alpha: 0.5}
drain: {grace_s: 30}
""")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sluice.serving.cli", "serve", "--config",
                             str(root / "serve.yaml"), "--port", str(port), "--replicas", "2"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", root / "server.log", STARTUP_S)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[1], timeout=120) as c:
        yield c


def engine_cores(proc) -> list[psutil.Process]:
    return [p for p in psutil.Process(proc.pid).children(recursive=True)
            if "EngineCore" in " ".join(p.cmdline())]


def test_concurrent_completions_spread_over_both_replicas(server, client):
    assert len(engine_cores(server[0])) == 2

    def complete(i):
        return client.post("/v1/completions", json={
            "model": "tiny", "prompt": f"shared schema words {i}", "max_tokens": 4 + i,
            "ignore_eos": True})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(complete, range(6)))
    assert [r.status_code for r in replies] == [200] * 6
    assert [r.json()["usage"]["completion_tokens"] for r in replies] == [4 + i for i in range(6)]
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
            "ignore_eos": True, "stream": True}) as r:
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"
    assert metric(client, "sluice_prompt_tokens_total", stage="completion") > 0
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["running"] == 0


def test_dead_replicas_turn_health_to_503_and_sigterm_leaves_nothing(server, client):
    proc = server[0]
    below = psutil.Process(proc.pid).children(recursive=True)
    for core in engine_cores(proc):
        core.kill()
    deadline = time.monotonic() + 30
    while client.get("/health").status_code == 200:
        assert time.monotonic() < deadline, "/health still 200 after both engines died"
        time.sleep(0.5)
    health = client.get("/health").json()
    assert health["status"] == "dead" and "replica 0" in health["error"]
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 503 and r.json()["error"]["type"] == "engine_error"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(90) == 0
    _, alive = psutil.wait_procs(below, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
