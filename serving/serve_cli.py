"""`sluice serve --config serve.yaml [--host 127.0.0.1] [--port 8000]`: the HTTP API on uvicorn.

SIGTERM (or Ctrl-C) drains: new requests get 503 at once while the in-flight ones finish, for
up to the config's `drain.grace_s`; then the server stops and the engine with it. A second
signal stops at once (in-flight requests are cancelled and their calls aborted).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import uvicorn

CANCEL_AFTER_S = 1.0      # once draining ends, requests still running get this long


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gate, grace_s: float):
        super().__init__(config)
        self.gate, self.grace_s = gate, grace_s
        self.drain_until: float | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.drain_until is None:
            self.gate.draining = True
            self.drain_until = time.monotonic() + self.grace_s
            print(f"sluice serve: draining {self.gate.inflight} in-flight request(s), up to "
                  f"{self.grace_s:g} s", file=sys.stderr, flush=True)
        else:
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and (self.gate.inflight == 0
                                             or time.monotonic() > self.drain_until):
            self.should_exit = True
        return await super().on_tick(counter)


def add_serve_command(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve", help="serve LLM calls, Text-to-SQL and SQL rewriting over HTTP",
        description="OpenAI-compatible /v1/completions and /v1/chat/completions, /v1/models, "
                    "/v1/sql/ask, /v1/sql/rewrite, /health and /metrics on one embedded online "
                    "engine. Requests that cannot meet their deadline are refused at once with "
                    "429 and Retry-After. SIGTERM drains in-flight requests, then stops.")
    serve.add_argument("--config", required=True, help="the serve config (YAML; see docs/serving.md)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--replicas", type=int,
                       help="engine replicas as a Ray Serve deployment routed by sluice's "
                            "dispatcher (needs the serve extra; default: the config's "
                            "replicas.count, else 1: one engine in this process)")
    serve.add_argument("--ray-address", help="run the replicas on this Ray cluster (default: local Ray)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    # vLLM logs to stdout unless told otherwise; the server's own logs go to stderr too
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    from sluice.serving.api import create_app
    from sluice.serving.serve_config import load_serve_config

    config = load_serve_config(args.config)
    config.engine.check()
    if args.replicas is not None or args.ray_address:
        config = dataclasses.replace(config, replicas=dataclasses.replace(
            config.replicas,
            count=config.replicas.count if args.replicas is None else args.replicas,
            ray_address=args.ray_address or config.replicas.ray_address))
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be 0 to 65535, got {args.port}")
    if not config.keys:
        print("sluice serve: no API keys configured (auth): every client is tenant 'default'",
              file=sys.stderr)
    app = create_app(config)
    server = DrainingServer(uvicorn.Config(app, host=args.host, port=args.port, lifespan="on",
                                           timeout_graceful_shutdown=CANCEL_AFTER_S),
                            app.state.server.gate, config.drain.grace_s)
    server.run()
    return 0 if server.started else 2
