"""`sluice serve` end to end: a real uvicorn server on a free loopback port, the tiny
dummy-weight model on vLLM CPU, a DuckDB shop database; httpx as the client. One server for
the module; the last test stops it with SIGTERM and checks that it drains."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from sluice.engine.testing import build_tiny_model
from sluice.serving.testing import free_port, wait_healthy
from sluice.sql_agent.testing import make_shop_db

pytestmark = [pytest.mark.vllm, pytest.mark.alone, pytest.mark.timeout(600)]

KEY, OTHER_KEY = "test-key-alice-0123456789", "test-key-bob-0123456789"
MAX_BODY = 131072
STARTUP_S = 480
HOLD = {"model": "tiny", "prompt": "hold", "max_tokens": 16000, "ignore_eos": True, "stream": True,
        "slo_ms": 600_000}     # a stream that holds its slot (and meets its deadline) for about a
                                # minute: a client kept off the cores for seconds still finds it running


@contextlib.contextmanager
def served(root):
    """A `sluice serve` on the tiny model and a shop database under `root`, stopped at the end."""
    build_tiny_model(root / "tiny", max_position=16384)
    make_shop_db(root / "shop.duckdb", customers=50, products=20, orders=200)
    (root / "keys.txt").write_text(f"alice={KEY}\nbob={OTHER_KEY}\n")
    (root / "serve.yaml").write_text(f"""\
model: {{path: tiny, name: tiny}}
engine: {{dtype: float32, max_model_len: 16384, kv_cache_tokens: 65536, load_format: dummy,
         enforce_eager: true}}
schedule: {{max_inflight_seqs: 4}}
databases: {{shop: shop.duckdb}}
auth: {{keys_file: keys.txt}}
limits: {{max_queue: 8, max_body_bytes: {MAX_BODY}}}
text2sql: {{candidates: 2, revisions: 1, unit_tests: 2, max_tokens: 16, schema_selection: false,
           cache_dir: cache}}
rewrite: {{runs: 1, cache_dir: cache}}
drain: {{grace_s: 300}}
""")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sluice.serving.cli", "serve", "--config",
                             str(root / "serve.yaml"), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, root / "server.log", STARTUP_S)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with served(tmp_path_factory.mktemp("serve")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[1], headers={"Authorization": f"Bearer {KEY}"},
                      timeout=120) as c:
        yield c


def wait_idle(client, timeout_s: float = 30) -> None:
    """Until every request has released its slot (closed streams end asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while client.get("/health").json()["inflight"]:
        assert time.monotonic() < deadline, "requests still in flight"
        time.sleep(0.05)


def metric(client, name: str, **labels) -> float:
    text = client.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} " if want else f"{name} "):
            return float(line.split()[-1])
    return 0.0


def test_completion(client):
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "the data row", "max_tokens": 8,
                                             "ignore_eos": True, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["id"].startswith("cmpl-") and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8 and body["usage"]["prompt_tokens"] > 0


def test_chat_stream_is_server_sent_events_ending_with_done(client):
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 6, "ignore_eos": True, "stream": True, "priority": -1, "slo_ms": 60000}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len({c["id"] for c in chunks}) == 1


def test_models_and_auth(server, client):
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "tiny" and models["data"][0]["max_model_len"] == 16384
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        r = httpx.get(f"{server[1]}/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["param"] == "authorization"
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server[1]}/v1/models", headers={"Authorization": f"Bearer {OTHER_KEY}"}).status_code == 200
    assert httpx.get(f"{server[1]}/health").status_code == 200       # no key needed off /v1


def test_an_impossible_deadline_is_refused_at_once_with_retry_after(client):
    for n in (8, 64):                  # calls of two lengths: the estimator's fit brackets 32
        assert client.post("/v1/completions", json={"model": "tiny", "prompt": "a row of text",
                                                    "max_tokens": n, "ignore_eos": True}).status_code == 200
    began = time.monotonic()
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "a row of text",
                                             "max_tokens": 32, "ignore_eos": True,
                                             "slo_ms": 1})
    assert time.monotonic() - began < 2
    assert r.status_code == 429, r.text
    assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error"
    assert "past its deadline" in r.json()["error"]["message"]
    assert metric(client, "sluice_refusals_total", reason="deadline") >= 1


@pytest.mark.parametrize("body, status, param", [
    ({"model": "tiny", "prompt": "x", "max_token": 3}, 400, "max_token"),
    ({"model": "tiny", "prompt": 7}, 400, "prompt"),
    ({"model": "tiny"}, 400, "prompt"),
    ({"model": "big", "prompt": "x"}, 404, "model"),
    ({"model": "tiny", "prompt": "data " * 17000}, 400, "prompt"),
    ({"model": "tiny", "prompt": "x", "slo_ms": -5}, 400, "slo_ms"),
])
def test_bad_requests_are_4xx_naming_the_field(client, body, status, param):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_malformed_json_and_a_body_over_the_limit(client):
    r = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x" * (MAX_BODY + 10)})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
    assert metric(client, "sluice_refusals_total", reason="body_too_large") >= 1
    assert client.get("/health").status_code == 200


# The tests that hold slots with long streams can fail on a busy 2-core machine without a fault
# in the server (a generating vLLM keeps both cores; the client or the server's event loop then
# waits seconds), so they run again before they fail.
@pytest.mark.flaky(reruns=2)
def test_a_client_that_disconnects_has_its_call_aborted(server, client):
    long = {**HOLD, "stream": False}
    body = json.dumps(long).encode()
    wait_idle(client)
    with socket.create_connection(("127.0.0.1", int(server[1].rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n"
                     b"Authorization: " + client.headers["Authorization"].encode() +
                     b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        deadline = time.monotonic() + 30
        while metric(client, "sluice_engine_running_calls") < 1:
            assert time.monotonic() < deadline, "the long call never started"
            time.sleep(0.1)
    # closed while its call runs, before any answer
    with client.stream("POST", "/v1/completions", json={**long, "stream": True}) as r:
        next(r.iter_lines())         # the line iterator, dropped, closes the connection
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
            metric(client, "sluice_client_disconnects_total", route="/v1/completions") < 2
            or metric(client, "sluice_engine_running_calls") > 0):
        time.sleep(0.2)
    assert metric(client, "sluice_client_disconnects_total", route="/v1/completions") == 2
    assert metric(client, "sluice_engine_running_calls") == 0
    wait_idle(client, 0)


@pytest.mark.flaky(reruns=2)
def test_low_priority_work_is_shed_when_the_queue_is_busy(client):
    with client.stream("POST", "/v1/completions", json=HOLD) as r:
        lines = r.iter_lines()       # kept: a line iterator closed early closes the response
        next(lines)
        shed = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "priority": 7})
        assert shed.status_code == 429 and "queue is full" in shed.json()["error"]["message"]
        assert int(shed.headers["retry-after"]) >= 1
    assert metric(client, "sluice_refusals_total", reason="queue_full") >= 1


@pytest.mark.flaky(reruns=2)
def test_under_load_a_tenant_past_its_fair_share_is_refused_and_others_are_not(client):
    bob = {"Authorization": f"Bearer {OTHER_KEY}"}
    # the stream an earlier test (or try) closed may still hold alice's slot for a moment, and
    # one more of hers would be refused before her fourth stream
    wait_idle(client)
    with contextlib.ExitStack() as stack:
        def hold(headers=None):     # the response starts (200) once the request is admitted
            return stack.enter_context(client.stream("POST", "/v1/completions", json=HOLD,
                                                     headers=headers)).status_code
        assert hold(bob) == 200
        assert [hold() for _ in range(4)] == [200] * 4   # 5 of max_queue 8; alice's share: 4
        refused = client.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert refused.status_code == 429 and "fair share" in refused.json()["error"]["message"], (
            refused.json(), metric(client, "sluice_inflight_requests"))   # admitted, not finished
        assert hold(bob) == 200
    assert metric(client, "sluice_refusals_total", reason="tenant_share") >= 1
    wait_idle(client)


def test_sql_ask_answers_with_its_evidence(client):
    r = client.post("/v1/sql/ask", json={"database": "shop", "question": "How many orders shipped?",
                                         "slo_ms": 120000})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["database"] == "shop" and a["status"] == "no valid SQL" and a["sql"] is None
    assert len(a["evidence"]["candidates"]) == 2 and "keywords" in a["evidence"]["stages"]
    assert all(c["status"] != "ok" for c in a["evidence"]["candidates"])
    r = client.post("/v1/sql/ask", json={"database": "/etc/passwd", "question": "x"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "database"


def test_sql_rewrite(client):
    r = client.post("/v1/sql/rewrite", json={
        "database": "shop", "sql": "SELECT o_id FROM orders WHERE o_id IN (SELECT o_id FROM items)"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["original"].startswith("SELECT o_id") and out["rows"] > 0 and out["candidates"]
    assert isinstance(out["accepted"], bool) and isinstance(out["diff"], str)
    bad = client.post("/v1/sql/rewrite", json={"database": "shop", "sql": "DROP TABLE orders"})
    assert bad.status_code == 400


def test_metrics(client):
    text = client.get("/metrics").text
    for name in ("sluice_queue_depth", "sluice_inflight_requests", "sluice_slo_attainment",
                 "sluice_stage_latency_seconds_bucket", "sluice_prefix_cache_hit_tokens_total",
                 "sluice_refusals_total", "sluice_requests_total", "sluice_engine_up 1.0"):
        assert name in text, name
    assert 'sluice_stage_latency_seconds_count{stage="completion"}' in text
    assert 'sluice_slo_attainment{route="/v1/completions"}' in text
