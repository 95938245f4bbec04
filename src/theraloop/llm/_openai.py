"""OpenAI-compatible chat completions over HTTP: vLLM, Ollama, llama.cpp server, OpenAI."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Literal

import httpx

from theraloop.llm._types import ChatRequest, ChatResponse, LLMError, LLMRequestError, Usage

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
SchemaMode = Literal["response_format", "guided_json", "prompt"]


class OpenAIChatModel:
    """Async client with bounded concurrency and retries with exponential backoff.

    Retries 408/409/429/5xx, timeouts and connection errors (honouring Retry-After); any other
    4xx raises LLMRequestError at once. `schema_mode` says how a JSON schema reaches the server:
    OpenAI-style `response_format` (OpenAI, vLLM, llama.cpp server, Ollama), vLLM's older
    `guided_json`, or `prompt` (schema only in the prompt; output validated afterwards).
    """

    def __init__(self, model: str, base_url: str, api_key: str | None = None, concurrency: int = 8,
                 max_retries: int = 5, timeout_s: float = 120.0, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 schema_mode: SchemaMode = "response_format", extra_body: dict[str, Any] | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.schema_mode = schema_mode
        self.extra_body = dict(extra_body or {})
        # httpx clients and semaphores belong to one event loop; rebuilt if the loop changes.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

    @property
    def backend(self) -> str:
        return "openai"

    @property
    def model_id(self) -> str:
        return f"{self._model}@{self.base_url}"

    @property
    def supports_json_schema(self) -> bool:
        return self.schema_mode != "prompt"

    def _ensure_client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._semaphore is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self.timeout_s)
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._loop = loop
        return self._client, self._semaphore

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._model,
            "messages": [message.model_dump() for message in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "top_p": request.top_p,
        }
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.stop:
            payload["stop"] = request.stop
        if request.json_schema is not None:
            if self.schema_mode == "response_format":
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": True},
                }
            elif self.schema_mode == "guided_json":
                payload["guided_json"] = request.json_schema
        payload.update(self.extra_body)
        return payload

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff_s)
            except ValueError:
                pass
        base = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        return base * (0.5 + random.random() / 2)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        client, semaphore = self._ensure_client()
        payload = self._payload(request)
        last_problem = ""
        async with semaphore:
            for attempt in range(self.max_retries + 1):
                started = time.perf_counter()
                retry_after = None
                try:
                    reply = await client.post("/chat/completions", json=payload)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    last_problem = f"{type(exc).__name__}: {exc}"
                else:
                    if reply.status_code == 200:
                        return self._parse(reply, time.perf_counter() - started)
                    if reply.status_code not in RETRYABLE_STATUS:
                        raise LLMRequestError(reply.status_code, reply.text)
                    last_problem = f"HTTP {reply.status_code}: {reply.text[:200]}"
                    retry_after = reply.headers.get("retry-after")
                if attempt < self.max_retries:
                    delay = self._delay(attempt, retry_after)
                    log.warning("%s (attempt %d/%d); retrying in %.2fs", last_problem, attempt + 1,
                                self.max_retries + 1, delay)
                    await asyncio.sleep(delay)
        raise LLMError(f"{self.model_id}: gave up after {self.max_retries + 1} attempts; last: {last_problem}")

    def _parse(self, reply: httpx.Response, latency: float) -> ChatResponse:
        try:
            body = reply.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.model_id}: malformed completion response ({exc}): {reply.text[:300]}") from None
        usage = body.get("usage") or {}
        return ChatResponse(
            text=text,
            model=body.get("model") or self._model,
            backend=self.backend,
            finish_reason=choice.get("finish_reason"),
            usage=Usage(prompt_tokens=usage.get("prompt_tokens") or 0,
                        completion_tokens=usage.get("completion_tokens") or 0),
            latency_s=latency,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
