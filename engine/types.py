"""What goes into the engine and what comes out: the contract every LLM caller codes against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, Union

ChatMessages = list[dict[str, str]]
Prompt = Union[str, ChatMessages]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None          # top-k logprobs per generated token
    choices: tuple[str, ...] | None = None  # structured output: answer is one of these


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int = 0                # prompt tokens served from the prefix cache
    cumulative_logprob: float | None = None
    token_logprobs: list[float] = field(default_factory=list)  # logprob of each chosen token
    finish_reason: str | None = None
    error: str | None = None              # set when this one request could not run


class CallError(ValueError):
    """One call cannot run (the others are unaffected); the message says why, in one line."""


def _is_empty(prompt: Prompt) -> bool:
    if isinstance(prompt, str):
        return not prompt.strip()
    return not any(str(m.get("content", "")).strip() for m in prompt)


def prompt_error(prompt: Prompt, token_ids: Sequence[int], max_model_len: int) -> str | None:
    """Why this prompt cannot run on an engine of `max_model_len` tokens, or None."""
    if _is_empty(prompt):
        return "empty prompt"
    if len(token_ids) >= max_model_len:
        return (f"prompt is {len(token_ids)} tokens; max_model_len {max_model_len} leaves no room "
                "to generate")
    return None


class Engine(Protocol):
    """Anything that turns prompts into completions, in the caller's order."""

    def generate(self, prompts: Sequence[Prompt],
                 params: SamplingParams | Sequence[SamplingParams]) -> list[Completion]: ...
