"""The LLM judge: every rubric dimension in one schema-constrained call, absolute or pairwise."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from theraloop._prompting import delimit, with_data_notice
from theraloop.config import StrictModel
from theraloop.judge._types import Judgment, PairJudgment, Winner
from theraloop.llm import ChatModel, ChatRequest, LLMConfig, Message, StructuredResult, complete_structured
from theraloop.manifest import config_hash
from theraloop.records import ResponseItem
from theraloop.rubrics import Rubric, load_rubric

DEFAULT_SYSTEM_PROMPT = (
    "You are an experienced clinical psychologist who evaluates responses written to people seeking "
    "mental-health support. Judge strictly and honestly against the rubric: quote or point to the part of "
    "the response behind each rating, and reserve the top of the scale for responses that fully meet it."
)


class JudgeConfig(StrictModel):
    rubric: str = Field("therajudge", description="bundled rubric name or YAML path")
    dimensions: list[str] | None = Field(None, description="a subset of the rubric's dimensions")
    mode: Literal["absolute", "pairwise"] = "absolute"
    max_attempts: int = Field(3, ge=1, description="attempts before a parse failure is recorded")
    temperature: float = Field(0.0, ge=0.0)
    max_tokens: int = Field(1024, ge=64)
    rationale_max_chars: int = Field(300, ge=20)
    seed: int = 0
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    llm: LLMConfig = Field(default_factory=LLMConfig)

    def load_rubric(self) -> Rubric:
        rubric = load_rubric(self.rubric)
        return rubric.subset(self.dimensions) if self.dimensions else rubric


def rubric_text(rubric: Rubric) -> str:
    lines = [f"Rate each dimension on an integer scale from {rubric.scale.min} to {rubric.scale.max}."]
    for dimension in rubric.dimensions:
        lines.append(f"\n### {dimension.key} ({dimension.name})\n{dimension.question}")
        lines += [f"- {level}: {text}" for level, text in sorted(dimension.anchors.items())]
    return "\n".join(lines)


def absolute_schema(rubric: Rubric, rationale_max_chars: int) -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {
            "rationale": {"type": "string", "minLength": 1, "maxLength": rationale_max_chars},
            "score": {"type": "integer", "enum": rubric.scale.levels},
        },
        "required": ["rationale", "score"],
        "additionalProperties": False,
    }
    return {"type": "object", "properties": {key: item for key in rubric.keys}, "required": rubric.keys,
            "additionalProperties": False}


def pairwise_schema(rubric: Rubric, rationale_max_chars: int) -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {
            "rationale": {"type": "string", "minLength": 1, "maxLength": rationale_max_chars},
            "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        },
        "required": ["rationale", "winner"],
        "additionalProperties": False,
    }
    return {"type": "object", "properties": {key: item for key in rubric.keys}, "required": rubric.keys,
            "additionalProperties": False}


def absolute_prompt(rubric: Rubric, context: str, response: str) -> str:
    return (
        f"## What the help-seeker wrote\n{delimit('help_seeker_post', context)}\n\n"
        f"## The response to evaluate\n{delimit('response', response)}\n\n"
        f"## Rubric\n{rubric_text(rubric)}\n\n"
        "For every dimension, first give a one-sentence rationale that refers to the response, then the score."
    )


def pairwise_prompt(rubric: Rubric, context: str, first: str, second: str) -> str:
    dimensions = "\n".join(f"- {d.key} ({d.name}): {d.question}" for d in rubric.dimensions)
    return (
        f"## What the help-seeker wrote\n{delimit('help_seeker_post', context)}\n\n"
        f"## Response A\n{delimit('response_a', first)}\n\n"
        f"## Response B\n{delimit('response_b', second)}\n\n## Criteria\n{dimensions}\n\n"
        "For every criterion, give a one-sentence rationale, then the better response: \"A\", \"B\", or \"tie\" "
        "when they are equally good or equally bad. The order in which the responses appear says nothing "
        "about their quality."
    )


def _swap(winner: Winner) -> Winner:
    return {"A": "B", "B": "A", "tie": "tie"}[winner]


class LLMJudge:
    """Scores responses with any ChatModel. A `system_prompt` override turns it into a persona judge."""

    def __init__(self, llm: ChatModel, config: JudgeConfig | None = None, rubric: Rubric | None = None):
        self.llm = llm
        self.config = config or JudgeConfig()
        self._rubric = rubric or self.config.load_rubric()
        self._config_hash = config_hash(self.config)

    @property
    def rubric(self) -> Rubric:
        return self._rubric

    @property
    def name(self) -> str:
        return f"llm:{self.llm.backend}:{self.llm.model_id}"

    def _request(self, prompt: str, schema: dict[str, Any], system_prompt: str | None, seed: int) -> ChatRequest:
        return ChatRequest(
            # Persona prompts and user overrides get the notice too: the judged texts are untrusted.
            messages=[Message(role="system", content=with_data_notice(system_prompt or self.config.system_prompt)),
                      Message(role="user", content=prompt)],
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            seed=seed,
            json_schema=schema,
            schema_name="judgment",
        )

    async def _call(self, prompt: str, schema: dict[str, Any], system_prompt: str | None) -> StructuredResult:
        request = self._request(prompt, schema, system_prompt, self.config.seed)
        return await complete_structured(self.llm, request, max_attempts=self.config.max_attempts)

    async def score(self, item: ResponseItem, system_prompt: str | None = None) -> Judgment:
        schema = absolute_schema(self.rubric, self.config.rationale_max_chars)
        result = await self._call(absolute_prompt(self.rubric, item.context, item.response), schema, system_prompt)
        judgment = Judgment(id=item.id, system=item.system, judge=self.name, rubric=self.rubric.name,
                            config_hash=self._config_hash, parse_ok=result.ok, attempts=result.attempts,
                            errors=result.errors, prompt_tokens=result.prompt_tokens,
                            completion_tokens=result.completion_tokens)
        if result.ok:
            judgment.scores = {key: float(result.value[key]["score"]) for key in self.rubric.keys}
            judgment.rationales = {key: result.value[key]["rationale"] for key in self.rubric.keys}
        return judgment

    async def compare_once(self, context: str, response_a: str, response_b: str, a_first: bool,
                           system_prompt: str | None = None) -> tuple[StructuredResult, dict[str, Winner] | None]:
        """One presentation. Verdicts come back in the caller's A/B terms whichever order was shown."""
        first, second = (response_a, response_b) if a_first else (response_b, response_a)
        schema = pairwise_schema(self.rubric, self.config.rationale_max_chars)
        result = await self._call(pairwise_prompt(self.rubric, context, first, second), schema, system_prompt)
        if not result.ok:
            return result, None
        shown = {key: result.value[key]["winner"] for key in self.rubric.keys}
        return result, shown if a_first else {key: _swap(winner) for key, winner in shown.items()}

    async def compare(self, item_a: ResponseItem, item_b: ResponseItem, orders: tuple[str, ...] = ("AB", "BA"),
                      system_prompt: str | None = None) -> PairJudgment:
        """Judge a pair in each requested order; where two orders disagree the combined verdict is a tie."""
        if item_a.context != item_b.context:
            raise ValueError(f"pair {item_a.id}/{item_b.id}: the two responses answer different contexts")
        verdict = PairJudgment(id=item_a.id, system_a=item_a.system, system_b=item_b.system, judge=self.name,
                               rubric=self.rubric.name, config_hash=self._config_hash)
        parsed: list[dict[str, Winner]] = []
        for order in orders:
            result, winners = await self.compare_once(item_a.context, item_a.response, item_b.response,
                                                      a_first=order == "AB", system_prompt=system_prompt)
            verdict.attempts += result.attempts
            verdict.errors += result.errors
            verdict.prompt_tokens += result.prompt_tokens
            verdict.completion_tokens += result.completion_tokens
            verdict.orders[order] = winners
            if winners is not None:
                parsed.append(winners)
                verdict.rationales[order] = {key: result.value[key]["rationale"] for key in self.rubric.keys}
        verdict.parse_ok = len(parsed) == len(orders)
        if verdict.parse_ok:
            verdict.winners = {key: parsed[0][key] if all(p[key] == parsed[0][key] for p in parsed) else "tie"
                               for key in self.rubric.keys}
        return verdict
