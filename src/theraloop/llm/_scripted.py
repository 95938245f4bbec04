"""A deterministic backend whose replies come from a Python function: for tests and dry runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from theraloop.llm._types import ChatRequest, ChatResponse, Usage

Script = Callable[[ChatRequest], str]


class ScriptedChatModel:
    """Replies with `script(request)`; every request is recorded in `requests`.

    The script sees the full request (messages, schema, seed), so a test can answer each role of a
    pipeline differently and check exactly what that pipeline sent.
    """

    def __init__(self, script: Script, model: str = "scripted", json_schema_support: bool = True,
                 delay_s: float = 0.0):
        self.script = script
        self._model = model
        self._json_schema_support = json_schema_support
        self.delay_s = delay_s
        self.requests: list[ChatRequest] = []

    @property
    def backend(self) -> str:
        return "scripted"

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def supports_json_schema(self) -> bool:
        return self._json_schema_support

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = self.script(request)
        prompt_words = sum(len(message.content.split()) for message in request.messages)
        return ChatResponse(text=text, model=self._model, backend=self.backend, finish_reason="stop",
                            usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(text.split())))
