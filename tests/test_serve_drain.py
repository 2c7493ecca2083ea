"""`sluice serve` drains on SIGTERM: in-flight requests finish, new ones are refused. A file of
its own, so that the other tests' server has stopped before this one starts."""

import signal
import threading
import time

import httpx
import pytest

from test_serve_api import HOLD, KEY, served, wait_idle

pytestmark = [pytest.mark.vllm, pytest.mark.alone, pytest.mark.timeout(900)]


# Its own server, which it stops. The drain lasts while the stream is generated (about 17 s on
# this 2-core machine); the checks go through the client made before the stream starts: one
# made while vLLM generated took as long as the whole stream (its SSL context was loading), and
# the server had then finished the stream and stopped.
@pytest.mark.flaky(reruns=2)
def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(tmp_path):
    with served(tmp_path) as (proc, base), httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        drain_one_stream(proc, client)


def drain_one_stream(proc, client) -> None:
    done = {}
    started = threading.Event()

    def long_stream():
        with client.stream("POST", "/v1/completions", json={**HOLD, "max_tokens": 8000}) as r:
            events = []
            for line in r.iter_lines():
                if line:
                    events.append(line)
                    started.set()
            done["events"] = events

    wait_idle(client)
    thread = threading.Thread(target=long_stream)
    thread.start()
    # the long stream itself is running (a request of an earlier test still finishing would
    # also count as in flight, and SIGTERM then refuses the stream before it starts)
    assert started.wait(30), "the long request never started"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "draining"
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
    assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable_error"
    thread.join(120)
    assert done["events"][-1] == "data: [DONE]" and len(done["events"]) > 2
    assert proc.wait(60) == 0
