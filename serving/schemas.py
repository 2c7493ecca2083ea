"""Request and response bodies of the HTTP API (OpenAI-compatible where OpenAI has the route).

Unknown fields are refused (a misspelt `max_token` would otherwise be ignored in silence).
sluice's own fields: `priority` (lower is more important, vLLM's convention; positive values
are shed first under load), `slo_ms` (the deadline, from arrival to the last byte) and vLLM's
`ignore_eos`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sluice.engine import SamplingParams


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMRequest(Body):
    model: str
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: Literal[1] = 1
    ignore_eos: bool = False
    priority: int = 0
    slo_ms: float | None = Field(None, gt=0)

    def sampling(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature,
                              top_p=self.top_p, seed=self.seed, stop=tuple(stop),
                              ignore_eos=self.ignore_eos)


class CompletionRequest(LLMRequest):
    prompt: str


class Message(Body):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(LLMRequest):
    messages: list[Message] = Field(min_length=1)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str | None = None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: str | None = None


class ChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "sluice"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SqlAskRequest(Body):
    database: str
    question: str = Field(min_length=1)
    hint: str | None = None
    priority: int = 0
    slo_ms: float | None = Field(None, gt=0)


class SqlAskResponse(BaseModel):
    database: str
    question: str
    status: str                      # ok | no valid SQL
    sql: str | None
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    reason: str | None
    seconds: float
    evidence: dict[str, Any]         # keywords, values, schema shown, candidates, tests, stages


class SqlRewriteRequest(Body):
    database: str
    sql: str = Field(min_length=1)


class SqlRewriteResponse(BaseModel):
    database: str
    original: str
    chosen: str
    accepted: bool
    source: str | None
    speedup: float | None
    original_s: float
    rows: int
    diff: str
    evidence: list[str]
    candidates: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok", "draining", "dead"]
    error: str | None = None
    waiting: int
    running: int
    inflight: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorDetail
