"""Structured output: ask for JSON matching a schema, validate it, retry, and report failures."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from pydantic import BaseModel, Field

from theraloop.llm._types import ChatModel, ChatRequest, ChatResponse, Message

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class StructuredOutputError(ValueError):
    """The model's text is not JSON matching the schema."""


def extract_json(text: str) -> Any:
    """Parse the JSON object in `text`: bare, inside a ``` fence, or the outermost {...} span."""
    candidates = [text.strip()]
    candidates += [match.strip() for match in _FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise StructuredOutputError(f"no JSON object found in output: {text[:200]!r}")


def parse_structured(text: str, schema: dict[str, Any]) -> Any:
    value = extract_json(text)
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "<root>"
        raise StructuredOutputError(f"output does not match schema at {where}: {exc.message}") from None
    return value


def schema_instruction(schema: dict[str, Any]) -> str:
    return ("Answer with one JSON object only, no other text, matching this JSON schema:\n"
            + json.dumps(schema, ensure_ascii=False))


class StructuredResult(BaseModel):
    """The outcome of a structured call: `value` is None when every attempt failed to parse."""

    value: Any = None
    ok: bool = False
    attempts: int = 0
    errors: list[str] = Field(default_factory=list)
    responses: list[ChatResponse] = Field(default_factory=list)

    @property
    def completion_tokens(self) -> int:
        return sum(response.usage.completion_tokens for response in self.responses)

    @property
    def prompt_tokens(self) -> int:
        return sum(response.usage.prompt_tokens for response in self.responses)


async def complete_structured(model: ChatModel, request: ChatRequest, max_attempts: int = 3,
                              retry_temperature: float = 0.7) -> StructuredResult:
    """Run `request` (which carries a json_schema) until its output validates, at most max_attempts times.

    The schema is always restated in the prompt (small models follow it better). Each retry changes
    the seed and samples (temperature >= retry_temperature), so a deterministic or cached failure
    is not simply replayed.
    """
    if request.json_schema is None:
        raise ValueError("complete_structured needs a request with json_schema")
    messages = list(request.messages)
    instruction = schema_instruction(request.json_schema)
    last = messages[-1]
    messages[-1] = Message(role=last.role, content=f"{last.content}\n\n{instruction}")
    result = StructuredResult()
    base_seed = request.seed if request.seed is not None else 0
    for attempt in range(max_attempts):
        update: dict[str, Any] = {"messages": messages, "seed": base_seed + attempt}
        if attempt > 0:
            update["temperature"] = max(request.temperature, retry_temperature)
        attempt_request = request.model_copy(update=update)
        response = await model.complete(attempt_request)
        result.attempts += 1
        result.responses.append(response)
        try:
            result.value = parse_structured(response.text, request.json_schema)
        except StructuredOutputError as exc:
            result.errors.append(str(exc))
            continue
        result.ok = True
        break
    return result
