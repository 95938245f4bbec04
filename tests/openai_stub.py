"""A small OpenAI-compatible server for tests: real HTTP on localhost, scripted failures.

`StubServer.plan` is a queue of actions consumed one per request ("429", "500", "400", "slow", "bad");
when empty, the server answers 200 with JSON that satisfies the request's schema (so a judge or a
refine loop can run against it) or with a fixed text.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def fill_schema(schema: dict[str, Any]) -> Any:
    """A value valid against the subset of JSON schema theraloop emits (objects, enums, bounded ints)."""
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema.get("type")
    if kind == "object":
        return {key: fill_schema(sub) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = max(schema.get("minItems", 1), 1)
        return [fill_schema(schema.get("items", {"type": "string"})) for _ in range(count)]
    if kind == "integer":
        return schema.get("maximum", 4) - 1 if "maximum" in schema else 4
    if kind == "number":
        return 0.5
    if kind == "boolean":
        return True
    text = "The reply reflects the feeling and suggests a next step."
    return text[: schema.get("maxLength", len(text))]


class StubServer:
    def __init__(self) -> None:
        self.plan: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.slow_s = 2.0
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._complete)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StubServer:
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("stub server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            action = self.plan.pop(0) if self.plan else "ok"
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if action == "429":
                return JSONResponse({"error": "rate limited"}, status_code=429, headers={"Retry-After": "0"})
            if action == "500":
                return JSONResponse({"error": "boom"}, status_code=500)
            if action == "400":
                return JSONResponse({"error": {"message": "unknown model"}}, status_code=400)
            if action == "slow":
                await asyncio.sleep(self.slow_s)
            if action == "hold":  # an ordinary answer that takes a moment, to observe concurrency
                await asyncio.sleep(0.2)
            if action == "bad":
                return JSONResponse({"unexpected": True})
            return JSONResponse(self._answer(body))
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _answer(body: dict[str, Any]) -> dict[str, Any]:
        import json

        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        text = json.dumps(fill_schema(schema)) if schema else "Hello from the stub."
        return {"id": "stub", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 11, "completion_tokens": len(text.split())}}
