"""The LLM layer: one ChatModel Protocol, several backends, structured output and a persistent cache."""

from theraloop.llm._cache import CachedChatModel, CompletionCache, request_key
from theraloop.llm._factory import LLMConfig, build_llm, default_cache_path, describe_default
from theraloop.llm._llamacpp import EMBEDDED_NAME, LlamaCppChatModel, embedded_gguf_path
from theraloop.llm._openai import OpenAIChatModel
from theraloop.llm._run import map_concurrent, run_sync
from theraloop.llm._scripted import ScriptedChatModel
from theraloop.llm._structured import (
    StructuredOutputError,
    StructuredResult,
    complete_structured,
    extract_json,
    parse_structured,
)
from theraloop.llm._types import (
    ChatModel,
    ChatRequest,
    ChatResponse,
    LLMError,
    LLMRequestError,
    LLMUnavailable,
    Message,
    Usage,
)

__all__ = [
    "EMBEDDED_NAME",
    "CachedChatModel",
    "ChatModel",
    "ChatRequest",
    "ChatResponse",
    "CompletionCache",
    "LLMConfig",
    "LLMError",
    "LLMRequestError",
    "LLMUnavailable",
    "LlamaCppChatModel",
    "Message",
    "OpenAIChatModel",
    "ScriptedChatModel",
    "StructuredOutputError",
    "StructuredResult",
    "Usage",
    "build_llm",
    "complete_structured",
    "default_cache_path",
    "describe_default",
    "embedded_gguf_path",
    "extract_json",
    "map_concurrent",
    "parse_structured",
    "request_key",
    "run_sync",
]
