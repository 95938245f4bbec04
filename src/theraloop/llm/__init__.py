"""The LLM layer: one ChatModel Protocol, several backends, structured output and a persistent cache."""

from __future__ import annotations

from theraloop._lazy import lazy_exports

_EXPORTS = {
    "CachedChatModel": "theraloop.llm._cache",
    "ChatModel": "theraloop.llm._types",
    "ChatRequest": "theraloop.llm._types",
    "ChatResponse": "theraloop.llm._types",
    "CompletionCache": "theraloop.llm._cache",
    "ContextOverflow": "theraloop.llm._types",
    "EMBEDDED_NAME": "theraloop.llm._llamacpp",
    "LLMConfig": "theraloop.llm._factory",
    "LLMError": "theraloop.llm._types",
    "LLMRequestError": "theraloop.llm._types",
    "LLMUnavailable": "theraloop.llm._types",
    "LlamaCppChatModel": "theraloop.llm._llamacpp",
    "Message": "theraloop.llm._types",
    "OpenAIChatModel": "theraloop.llm._openai",
    "ScriptedChatModel": "theraloop.llm._scripted",
    "StructuredOutputError": "theraloop.llm._structured",
    "StructuredResult": "theraloop.llm._structured",
    "Usage": "theraloop.llm._types",
    "build_llm": "theraloop.llm._factory",
    "complete_structured": "theraloop.llm._structured",
    "default_cache_path": "theraloop.llm._factory",
    "describe_default": "theraloop.llm._factory",
    "embedded_gguf_path": "theraloop.llm._llamacpp",
    "extract_json": "theraloop.llm._structured",
    "map_concurrent": "theraloop.llm._run",
    "parse_structured": "theraloop.llm._structured",
    "request_key": "theraloop.llm._cache",
    "run_sync": "theraloop.llm._run",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
