"""Requests, responses and the one Protocol every chat backend implements."""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """One chat completion. `json_schema` asks for output constrained to that schema."""

    messages: list[Message]
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(512, ge=1)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = None
    json_schema: dict[str, Any] | None = None
    schema_name: str = "output"

    @classmethod
    def from_prompt(cls, user: str, system: str | None = None, **params: Any) -> ChatRequest:
        messages = ([Message(role="system", content=system)] if system else []) + [Message(role="user", content=user)]
        return cls(messages=messages, **params)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatResponse(BaseModel):
    text: str
    model: str
    backend: str
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    cached: bool = False


@runtime_checkable
class ChatModel(Protocol):
    """A chat-completion backend. `backend` and `model_id` identify it in caches and outputs."""

    @property
    def backend(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def supports_json_schema(self) -> bool:
        """True when `json_schema` constrains decoding; False when the backend only prompts for it."""
        ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


class LLMError(RuntimeError):
    """A backend failed after its retries."""


class LLMRequestError(LLMError):
    """The server refused the request (a 4xx other than 429): retrying will not help."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class LLMUnavailable(LLMError):
    """No backend can be built from the configuration; the message names the options."""


class ContextOverflow(LLMError):
    """A prompt does not fit the model's context window; the item, not the run, has failed."""
