"""A throwaway two-node Ray cluster on this machine for tests: `ray start --head` and a second
node; `--block` keeps each node's processes under one parent that the test stops, so no other
Ray on the machine is touched."""

import contextlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sluice.serving.testing import free_port

RAY = str(Path(sys.executable).parent / "ray")


@contextlib.contextmanager
def two_node_cluster(env: dict, *, head_cpus: int = 1, node_cpus: int = 1, node_prefix: tuple = ()):
    """Yields the head's address once both nodes are alive; the second node's command is run
    under `node_prefix` (for example a new mount namespace)."""
    from ray.util import get_node_ip_address

    port = free_port()
    address = f"{get_node_ip_address()}:{port}"
    env = {**env, "RAY_AUTH_MODE": "disabled"}  # no auth token to hand to this cluster's clients
    quiet = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = [subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                               f"--ray-client-server-port={free_port()}", "--block", f"--num-cpus={head_cpus}",
                               "--disable-usage-stats"], **quiet)]
    try:
        _wait_for_nodes(address, 1, env)
        nodes.append(subprocess.Popen([*node_prefix, RAY, "start", f"--address={address}", "--block",
                                       f"--num-cpus={node_cpus}", "--disable-usage-stats"], **quiet))
        _wait_for_nodes(address, 2, env)
        yield address
    finally:
        for node in reversed(nodes):
            node.terminate()
        for node in nodes:
            node.wait(timeout=60)


def _wait_for_nodes(address: str, count: int, env: dict) -> None:
    script = f"import ray,time\nray.init(address='{address}')\n" + textwrap.dedent(f"""
        for _ in range(90):
            alive = [n for n in ray.nodes() if n['Alive']]
            if len(alive) >= {count}:
                break
            time.sleep(1)
        print(len(alive))
    """)
    for _ in range(30):  # the head takes some seconds before it takes a client
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
        if run.returncode == 0:
            assert run.stdout.strip() == str(count), f"{run.stdout.strip()} of {count} Ray nodes came up"
            return
        time.sleep(2)
    raise AssertionError(f"the Ray head at {address} did not come up: {run.stderr[-500:]}")
