"""The HTTP API of `sluice serve`: one OnlineEngine (or engine replicas as a Ray Serve deployment
routed by the workload-balanced dispatcher, engine/serve_replicas.py), the SQL agents over named
databases.

    app = create_app(load_serve_config("serve.yaml"))     # run with uvicorn (serving/serve_cli.py)

Routes: /v1/completions, /v1/chat/completions (OpenAI-compatible; `stream: true` sends
server-sent events ending with `data: [DONE]`), /v1/models, /v1/sql/ask (one Text-to-SQL
question, one workflow with its SLO), /v1/sql/rewrite (the verified rewriter, in a thread),
/health and /metrics. Bearer keys are checked on /v1 paths only. Every error is a JSON body
`{"error": {"message", "type", "param", "code"}}`; a refused request also gets `Retry-After`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import math
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from sluice.engine import (CallError, Completion, EngineDead, OnlineEngine, Stage, Workflow,
                           prompt_error)
from sluice.engine.replicas import ReplicaClient
from sluice.engine.vllm_backend import encode
from sluice.sql_agent.duck import SqlError
from sluice.sql_agent.text2sql.agent import Text2SQL, plan

from . import schemas as s
from .metrics import ServeMetrics
from .overload import Gate, Refused
from .serve_config import ServeConfig

ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/sql/ask",
          "/v1/sql/rewrite", "/health", "/metrics")
REWRITE_SEARCH = argparse.Namespace(rules=None, no_sqlglot=False, mcts_iterations=8,
                                    llm_samples=1, llm_max_tokens=512)   # rules, sqlglot, search


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.status, self.type, self.param, self.reason = status, type_, param, reason


class ClientGone(Exception):
    """The client disconnected before its answer was ready; its calls were cancelled."""


def error_response(status: int, message: str, type_: str, param: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = s.ErrorResponse(error=s.ErrorDetail(message=message, type=type_, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class Door:
    """ASGI middleware in front of every route: bodies over the limit get 413 before the app
    sees them (the body is read here, bounded, and replayed), and every response is counted."""

    def __init__(self, app, max_body_bytes: int, metrics: ServeMetrics):
        self.app, self.limit, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = {}

        async def counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        body = await self._body(scope, receive)
        if body is None:
            self.metrics.refusals.labels("body_too_large").inc()
            response = error_response(413, f"the request body is over the limit of {self.limit:,} "
                                           "bytes", "request_too_large")
            return await response(scope, receive, counted)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()       # after the body: waits for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, counted)

    async def _body(self, scope, receive) -> bytes | None:
        """The whole body, or None when it is (or says it is) over the limit."""
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class HeldStream(StreamingResponse):
    """Server-sent events holding their admission slot until the response ends, however it
    ends (a client can leave before the first event, when the events never start)."""

    def __init__(self, events, slot):
        super().__init__(events, media_type="text/event-stream")
        self.slot = slot

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


class Server:
    """What the routes share: the config, the engine, the agents, the gate and the metrics."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.gate = Gate(config.limits.max_queue)
        self.metrics = ServeMetrics()
        self.engine: OnlineEngine | ReplicaClient | None = None
        self.agents: dict[str, Text2SQL] = {}
        self.rewriters: dict = {}
        self.rewrite_locks = {name: asyncio.Lock() for name in config.databases}

    def build_engine(self) -> OnlineEngine | ReplicaClient:
        r = self.config.replicas
        if not r.on_ray:
            return OnlineEngine(self.config.engine, self.config.schedule)
        from sluice.engine.serve_replicas import ServeReplicas

        return ServeReplicas(self.config.engine, self.config.schedule, replicas=r.count,
                             dispatch=r.dispatch, alpha=r.alpha, num_cpus=r.num_cpus,
                             num_gpus=r.num_gpus, ray_address=r.ray_address)

    @asynccontextmanager
    async def running(self, app):
        async with self.build_engine() as engine:
            self.engine = engine
            with contextlib.ExitStack() as stack:
                for name, path in self.config.databases.items():
                    self.agents[name] = stack.enter_context(Text2SQL(path, engine, self.config.text2sql))
                stack.callback(lambda: [r.close() for r in self.rewriters.values()])
                yield

    # --- checks --------------------------------------------------------------------------

    def tenant(self, request: Request) -> str:
        """The tenant of the request's bearer key (every key compared, in constant time)."""
        if not self.config.keys:
            return "default"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        found = None
        for key, tenant in self.config.keys.items():
            if hmac.compare_digest(token.strip().encode(), key.encode()):
                found = tenant
        if found is None or scheme.lower() != "bearer":
            raise APIError(401, "a valid API key is required: `Authorization: Bearer KEY`",
                           "authentication_error", "authorization", reason="unauthorized")
        return found

    def check_model(self, model: str) -> None:
        if model != self.config.model_name:
            raise APIError(404, f"model '{model}' is not served here; /v1/models lists "
                                f"'{self.config.model_name}'", "not_found_error", "model")

    def database(self, name: str) -> str:
        if name not in self.config.databases:
            known = ", ".join(self.config.databases) or "none"
            raise APIError(404, f"database '{name}' is not served here (databases: {known})",
                           "not_found_error", "database")
        return name

    def admit(self, tenant: str, priority: int, own_s: float, slo_s: float):
        try:
            return self.gate.admit(self.engine, tenant, priority, own_s, slo_s)
        except Refused as e:
            self.metrics.refusals.labels(e.reason).inc()
            raise

    async def unless_gone(self, request: Request, route: str, work):
        """Await `work`; if the client disconnects first, cancel it (the engine aborts its calls)."""
        task, gone = asyncio.ensure_future(work), asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            self.metrics.disconnects.labels(route).inc()
            raise ClientGone()
        return task.result()

    # --- LLM calls -----------------------------------------------------------------------

    async def llm(self, body: s.LLMRequest, prompt, request: Request, tenant: str, route: str):
        self.check_model(body.model)
        arrival, engine, params = time.monotonic(), self.engine, body.sampling()
        slo_s = (body.slo_ms or self.config.slo.completion_ms) / 1000
        ids = encode(engine.tokenizer, [prompt])[0]
        error = prompt_error(prompt, ids, self.config.engine.max_model_len)
        if error:
            raise APIError(400, error, param="prompt" if isinstance(prompt, str) else "messages")
        tokens = len(ids)
        own_s = engine.estimator.predict("completion", tokens, params.max_tokens, 0,
                                         engine.health().running)
        slot = self.admit(tenant, body.priority, own_s, slo_s)
        workflow = Workflow([Stage("completion", "completion", prompt_tokens=tokens,
                                   output_tokens=params.max_tokens)], slo_s)
        call = dict(workflow=workflow, stage="completion")
        reply = Reply(self.config.model_name, route)
        if body.stream:
            return HeldStream(self._events(reply, engine.stream(prompt, params, **call), arrival,
                                           slo_s), slot)
        try:
            done = await self.unless_gone(request, route, engine.call(prompt, params, **call))
        finally:
            slot.release()
        self.metrics.answered(route, time.monotonic() - arrival, slo_s)
        return reply.whole(done)

    async def _events(self, reply: "Reply", stream, arrival: float, slo_s: float):
        """Server-sent events of one streamed call; a client that leaves aborts it."""
        try:
            async with contextlib.aclosing(stream) as chunks:
                first = True
                async for chunk in chunks:
                    yield f"data: {reply.chunk(chunk, first)}\n\n"
                    first = False
            self.metrics.answered(reply.route, time.monotonic() - arrival, slo_s)
        except (CallError, EngineDead) as e:
            status, type_ = (400, "invalid_request_error") if isinstance(e, CallError) else (503, "engine_error")
            detail = s.ErrorDetail(message=str(e), type=type_, code=status)
            yield f"data: {s.ErrorResponse(error=detail).model_dump_json()}\n\n"
        except asyncio.CancelledError:
            self.metrics.disconnects.labels(reply.route).inc()
            raise
        yield "data: [DONE]\n\n"

    # --- SQL -----------------------------------------------------------------------------

    async def ask(self, body: s.SqlAskRequest, request: Request, tenant: str) -> s.SqlAskResponse:
        agent = self.agents[self.database(body.database)]
        arrival = time.monotonic()
        slo_s = (body.slo_ms or self.config.slo.sql_ask_ms) / 1000
        own_s = sum(self.engine.estimator.stage_time(stage) for stage in plan(agent.config))
        slot = self.admit(tenant, body.priority, own_s, slo_s)
        try:
            answer = await self.unless_gone(request, "/v1/sql/ask", agent.ask_async(
                body.question, hint=body.hint, slo_s=slo_s))
        finally:
            slot.release()
        self.metrics.answered("/v1/sql/ask", time.monotonic() - arrival, slo_s)
        data = json.loads(json.dumps(answer.to_dict(), default=str))
        top = {k: data.pop(k) for k in ("question", "status", "sql", "columns", "rows", "truncated",
                                        "reason", "seconds")}
        return s.SqlAskResponse(database=body.database, **top, evidence=data)

    async def rewrite(self, body: s.SqlRewriteRequest, tenant: str) -> s.SqlRewriteResponse:
        name = self.database(body.database)
        arrival = time.monotonic()
        slot = self.admit(tenant, 0, 0.0, math.inf)
        try:
            async with self.rewrite_locks[name]:      # one rewrite at a time per database
                result = await asyncio.to_thread(self._rewrite, name, body.sql)
        finally:
            slot.release()
        self.metrics.answered("/v1/sql/rewrite", time.monotonic() - arrival, None)
        data = json.loads(json.dumps(result.to_dict(), default=str))
        return s.SqlRewriteResponse(database=name, diff=result.diff(), **data)

    def _rewrite(self, name: str, sql: str):
        """In a worker thread: the database's rewriter (built on first use) on one query."""
        from sluice.serving.sql_cli import build_generators
        from sluice.sql_agent.rewrite.pipeline import Rewriter

        if name not in self.rewriters:
            self.rewriters[name] = Rewriter(self.config.databases[name], build_generators(REWRITE_SEARCH),
                                            self.config.rewrite)
        return self.rewriters[name].rewrite(sql)

    def health(self) -> tuple[s.Health, int]:
        h = self.engine.health()
        status = "dead" if not h.ok else "draining" if self.gate.draining else "ok"
        body = s.Health(status=status, error=h.error, waiting=h.waiting, running=h.running,
                        inflight=self.gate.inflight)
        return body, 200 if status == "ok" else 503


class Reply:
    """OpenAI-shaped bodies for one request: whole completions and streamed chunks."""

    def __init__(self, model: str, route: str):
        self.model, self.route = model, route
        self.chat = route == "/v1/chat/completions"
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _usage(self, c: Completion) -> s.Usage:
        return s.Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.output_tokens,
                       total_tokens=c.prompt_tokens + c.output_tokens, cached_tokens=c.cached_tokens)

    def whole(self, c: Completion):
        head = dict(id=self.id, created=self.created, model=self.model, usage=self._usage(c))
        if self.chat:
            return s.ChatResponse(**head, choices=[s.ChatChoice(
                message=s.ChatMessageOut(content=c.text), finish_reason=c.finish_reason)])
        return s.CompletionResponse(**head, choices=[s.CompletionChoice(text=c.text,
                                                                        finish_reason=c.finish_reason)])

    def chunk(self, c: Completion, first: bool) -> str:
        head = dict(id=self.id, created=self.created, model=self.model)
        if self.chat:
            delta = s.ChatDelta(role="assistant" if first else None, content=c.text)
            out = s.ChatChunk(**head, choices=[s.ChatChunkChoice(delta=delta, finish_reason=c.finish_reason)])
        else:
            out = s.CompletionResponse(**head, choices=[s.CompletionChoice(
                text=c.text, finish_reason=c.finish_reason)],
                usage=self._usage(c) if c.finish_reason else None)
        return out.model_dump_json(exclude_none=self.chat)


def create_app(config: ServeConfig) -> FastAPI:
    server = Server(config)
    app = FastAPI(title="sluice", lifespan=server.running)
    app.state.server = server
    _handlers(app, server)
    tenant = Depends(server.tenant)

    @app.post("/v1/completions", response_model=s.CompletionResponse)
    async def completions(body: s.CompletionRequest, request: Request, who: str = tenant):
        return await server.llm(body, body.prompt, request, who, "/v1/completions")

    @app.post("/v1/chat/completions", response_model=s.ChatResponse)
    async def chat(body: s.ChatRequest, request: Request, who: str = tenant):
        messages = [m.model_dump() for m in body.messages]
        return await server.llm(body, messages, request, who, "/v1/chat/completions")

    @app.get("/v1/models", response_model=s.ModelList)
    async def models(who: str = tenant):
        return s.ModelList(data=[s.ModelCard(id=config.model_name,
                                             max_model_len=config.engine.max_model_len)])

    @app.post("/v1/sql/ask", response_model=s.SqlAskResponse)
    async def sql_ask(body: s.SqlAskRequest, request: Request, who: str = tenant):
        return await server.ask(body, request, who)

    @app.post("/v1/sql/rewrite", response_model=s.SqlRewriteResponse)
    async def sql_rewrite(body: s.SqlRewriteRequest, who: str = tenant):
        return await server.rewrite(body, who)

    @app.get("/health", response_model=s.Health)
    async def health():
        body, status = server.health()
        return JSONResponse(body.model_dump(), status_code=status)

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(server.engine, server.gate.inflight),
                        media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(Door, max_body_bytes=config.limits.max_body_bytes, metrics=server.metrics)
    return app


def _handlers(app: FastAPI, server: Server) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        if e.reason:
            server.metrics.refusals.labels(e.reason).inc()
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return error_response(e.status, str(e), e.type, e.param, headers)

    @app.exception_handler(Refused)
    async def refused(request, e: Refused):
        headers = {"Retry-After": str(math.ceil(e.retry_after_s))} if e.retry_after_s else None
        type_ = "rate_limit_error" if e.status == 429 else "unavailable_error"
        return error_response(e.status, str(e), type_, None, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        if first["type"] == "json_invalid":
            message, param = f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}", None
        else:
            message = f"{param or 'body'}: {first['msg']}"
        return error_response(400, message, "invalid_request_error", param)

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        return error_response(e.status_code, str(e.detail), "not_found_error" if e.status_code == 404
                              else "invalid_request_error")

    @app.exception_handler(CallError)
    async def call_error(request, e: CallError):
        return error_response(400, str(e), "invalid_request_error", "prompt")

    @app.exception_handler(SqlError)
    async def sql_error(request, e: SqlError):
        return error_response(400, str(e), "invalid_request_error")

    @app.exception_handler(EngineDead)
    async def engine_dead(request, e: EngineDead):
        return error_response(503, str(e), "engine_error")

    @app.exception_handler(ClientGone)
    async def client_gone(request, e: ClientGone):
        return Response(status_code=499)
