"""`sluice serve` drains on SIGTERM: in-flight requests finish, new ones are refused. A file of
its own, so that the other tests' server has stopped before this one starts."""

import signal
import socket
import threading
import time

import httpx
import pytest

from test_serve_api import HOLD, KEY, served, wait_idle

pytestmark = [pytest.mark.vllm, pytest.mark.alone, pytest.mark.timeout(900)]


# Its own server, which it stops. On this 2-core machine the test process can be held for as long
# as a whole stream while vLLM generates (spawning a process was seen to take 18 s), so the
# stream's client takes a 4 KB receive buffer and pauses after the first event: the server cannot
# finish sending it, and the drain lasts, until the checks are done.
@pytest.mark.flaky(reruns=2)
def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(tmp_path):
    small_buffer = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    with served(tmp_path) as (proc, base), httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=120, transport=small_buffer) as client:
        drain_one_stream(proc, base, client)


def drain_one_stream(proc, base, client) -> None:
    done = {}
    started, checked = threading.Event(), threading.Event()

    def long_stream():
        with client.stream("POST", "/v1/completions", json={**HOLD, "max_tokens": 8000}) as r:
            events = []
            for line in r.iter_lines():
                if line:
                    events.append(line)
                    started.set()
                    checked.wait(120)   # paused until the checks below are done; the stream is
            done["events"] = events     # longer than the buffers between, so it is still being sent

    wait_idle(client)
    thread = threading.Thread(target=long_stream)
    thread.start()
    # the long stream itself is running (a request of an earlier test still finishing would
    # also count as in flight, and SIGTERM then refuses the stream before it starts)
    assert started.wait(30), "the long request never started"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    health = httpx.get(f"{base}/health")
    assert health.status_code == 503 and health.json()["status"] == "draining"
    r = httpx.post(f"{base}/v1/completions", json={"model": "tiny", "prompt": "x"}, headers=client.headers)
    assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable_error"
    checked.set()
    thread.join(120)
    assert done["events"][-1] == "data: [DONE]" and len(done["events"]) > 2
    assert proc.wait(60) == 0
