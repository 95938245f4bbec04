"""The three roles of the refinement loop (after TheraAgent): Critic, Coach, Therapist.

Each role is a prompt plus a typed, schema-constrained output, so it runs on any ChatModel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from theraloop._prompting import delimit, with_data_notice
from theraloop.judge import Judgment
from theraloop.llm import ChatModel, ChatRequest, Message, StructuredResult, complete_structured
from theraloop.rubrics import Rubric

# Concrete moves per dimension, given to the Coach: small models plan far better from a menu.
PLAYBOOK: dict[str, str] = {
    "safety": "acknowledge any risk directly and point to immediate help: a crisis line (988 in the US, "
              "116 123 in the UK), emergency services, and a professional",
    "empathy": "name the specific feeling the person expressed and validate it warmly before anything else",
    "understanding": "reflect back the person's situation in your own words, including what they did not say outright",
    "relevance": "answer the person's actual concern; remove generic or off-topic advice",
    "guidance": "offer two or three concrete, realistic next steps that fit the person's situation",
    "informativeness": "add one or two accurate facts that help the person understand what they are going through",
    "helpfulness": "end with something the person can do today and an invitation to keep talking",
    "active_listening": "summarise what the person said and ask one open question",
    "self_motivated_change": "ask about the person's own reasons and strengths instead of instructing",
    "trust_rapport": "use a warm, respectful, non-judgemental tone",
    "patient_autonomy": "offer options and make clear the choice is the person's",
    "overall": "make the response warmer, more specific and more useful",
    # EPITOME's mechanisms (the encoder judge's rubric)
    "emotional_reactions": "name the specific feeling the person expressed and respond to it with warmth and concern",
    "interpretations": "show you understood: reflect their feelings and experience back in your own words",
    "explorations": "ask one gentle, open question about their specific experience or feelings",
}


class FailingDimension(BaseModel):
    dimension: str
    problem: str
    spans: list[str] = Field(default_factory=list, description="phrases of the response that cause the problem")


class Critique(BaseModel):
    failing: list[FailingDimension]
    strengths: list[str] = Field(default_factory=list)


class PlanStep(BaseModel):
    dimension: str
    action: str


class RevisionPlan(BaseModel):
    steps: list[PlanStep]
    keep: list[str] = Field(default_factory=list)


class Revision(BaseModel):
    response: str


def _short_string(max_length: int, min_length: int = 1) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_length}


def critique_schema(failing: Sequence[str]) -> dict[str, Any]:
    entry = {"type": "object", "properties": {
        "dimension": {"type": "string", "enum": list(failing)},
        "problem": _short_string(240),
        "spans": {"type": "array", "items": _short_string(160), "maxItems": 3},
    }, "required": ["dimension", "problem", "spans"], "additionalProperties": False}
    return {"type": "object", "properties": {
        "failing": {"type": "array", "items": entry, "minItems": 1, "maxItems": len(failing)},
        "strengths": {"type": "array", "items": _short_string(160), "maxItems": 3},
    }, "required": ["failing", "strengths"], "additionalProperties": False}


def plan_schema(failing: Sequence[str]) -> dict[str, Any]:
    step = {"type": "object", "properties": {
        "dimension": {"type": "string", "enum": list(failing)},
        "action": _short_string(240),
    }, "required": ["dimension", "action"], "additionalProperties": False}
    return {"type": "object", "properties": {
        "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": 2 * len(failing)},
        "keep": {"type": "array", "items": _short_string(160), "maxItems": 3},
    }, "required": ["steps", "keep"], "additionalProperties": False}


def revision_schema(max_chars: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"response": _short_string(max_chars, 40)}, "required": ["response"],
            "additionalProperties": False}


def _scores_block(rubric: Rubric, judgment: Judgment) -> str:
    lines = []
    for key in rubric.keys:
        score = judgment.scores.get(key) if judgment.scores else None
        rationale = (judgment.rationales or {}).get(key, "")
        shown = f"{score:g}" if score is not None else "?"
        lines.append(f"- {key}: {shown}/{rubric.scale.max}" + (f" ({rationale})" if rationale else ""))
    return "\n".join(lines)


def _post_block(context: str, history: str | None = None) -> str:
    """What the help-seeker wrote; for a turn of a session, the conversation before it comes first, so every
    role reads the reply in context."""
    if not history:
        return f"## What the help-seeker wrote\n{delimit('help_seeker_post', context)}"
    return (f"## The conversation so far\n{delimit('conversation', history)}\n\n"
            f"## The help-seeker's latest message, which the response answers\n{delimit('help_seeker_post', context)}")


ESCALATION_STEPS = {
    "emergency": "The help-seeker may be in a medical emergency now: the first step MUST tell them to call emergency "
                 "services or go to an emergency department immediately.",
    "crisis": "The help-seeker shows signs of acute risk: an early step MUST add crisis resources (a crisis line) and "
              "encourage contacting a professional.",
    "child_protection": "The help-seeker discloses abuse: include a step that points to child-protection help (a "
                        "children's helpline, a trusted adult); never promise to keep it secret.",
    "domestic_violence": "The help-seeker discloses partner violence: include a step that points to a domestic-violence "
                         "helpline and their safety.",
    "professional": "The help-seeker shows risk signals: include a step that encourages professional support.",
}


class Roles:
    """Runs the roles on one ChatModel. Every call is schema-constrained and retried on bad output."""

    def __init__(self, llm: ChatModel, rubric: Rubric, temperature: float = 0.3, seed: int = 0,
                 max_attempts: int = 3, revision_max_chars: int = 1500, revision_max_tokens: int = 700):
        self.llm = llm
        self.rubric = rubric
        self.temperature = temperature
        self.seed = seed
        self.max_attempts = max_attempts
        self.revision_max_chars = revision_max_chars
        self.revision_max_tokens = revision_max_tokens

    async def _run(self, system: str, user: str, schema: dict[str, Any], max_tokens: int,
                   seed_offset: int) -> StructuredResult:
        request = ChatRequest(messages=[Message(role="system", content=with_data_notice(system)),
                                        Message(role="user", content=user)],
                              temperature=self.temperature, max_tokens=max_tokens, seed=self.seed + seed_offset,
                              json_schema=schema)
        return await complete_structured(self.llm, request, max_attempts=self.max_attempts)

    def _word_range(self) -> str:
        # About 6.5 characters a word; the default 1500 characters keeps the original 80 to 200 words.
        most = min(200, self.revision_max_chars * 2 // 15)
        return f"{min(80, most // 2)} to {most} words"

    async def critic(self, context: str, response: str, judgment: Judgment, failing: Sequence[str],
                     round_index: int, history: str | None = None) -> tuple[StructuredResult, Critique | None]:
        user = (f"{_post_block(context, history)}\n\n"
                f"## The response\n{delimit('response', response)}\n\n"
                f"## A judge's scores\n{_scores_block(self.rubric, judgment)}\n\n"
                f"These dimensions are below target: {', '.join(failing)}.\n"
                "For each of them, say what is wrong and quote the exact phrases of the response that cause it "
                "(an empty list when the problem is something missing). Also name up to three strengths to keep.")
        system = "You are a clinical supervisor reviewing a response written to a person seeking mental-health support."
        result = await self._run(system, user, critique_schema(failing), 600, 1000 * round_index + 1)
        return result, Critique.model_validate(result.value) if result.ok else None

    async def coach(self, context: str, response: str, critique: Critique, failing: Sequence[str],
                    escalation_missing: Sequence[str], round_index: int,
                    history: str | None = None) -> tuple[StructuredResult, RevisionPlan | None]:
        problems = "\n".join(f"- {item.dimension}: {item.problem}" for item in critique.failing)
        menu = "\n".join(f"- {key}: {PLAYBOOK[key]}" for key in failing if key in PLAYBOOK)
        escalation = "".join("\n" + ESCALATION_STEPS[kind] for kind in escalation_missing if kind in ESCALATION_STEPS)
        user = (f"{_post_block(context, history)}\n\n"
                f"## The response\n{delimit('response', response)}\n\n"
                f"## Critique\n{problems}\nStrengths: {'; '.join(critique.strengths) or 'none named'}\n\n"
                f"## Moves that usually fix each dimension\n{menu}\n{escalation}\n\n"
                "Write an ordered revision plan: concrete actions, most important first (safety first), one or "
                "two per failing dimension; and list what to keep from the current response.")
        system = "You are a counselling coach who turns a critique into a precise plan for rewriting a response."
        result = await self._run(system, user, plan_schema(failing), 500, 1000 * round_index + 2)
        return result, RevisionPlan.model_validate(result.value) if result.ok else None

    async def therapist(self, context: str, response: str, plan: RevisionPlan,
                        round_index: int, history: str | None = None) -> tuple[StructuredResult, Revision | None]:
        steps = "\n".join(f"{index}. ({step.dimension}) {step.action}" for index, step in enumerate(plan.steps, 1))
        keep = "\n".join(f"- {item}" for item in plan.keep) or "- (nothing in particular)"
        user = (f"{_post_block(context, history)}\n\n"
                f"## Your previous response\n{delimit('response', response)}\n\n"
                f"## Revision plan\n{steps}\n\n## Keep\n{keep}\n\n"
                "Rewrite the response following the plan, keeping what is listed. Speak to the person directly, "
                f"warmly and concretely, in {self._word_range()}. Return only the new response.")
        system = "You are a warm, skilled therapist writing to a person who asked for support online."
        result = await self._run(system, user, revision_schema(self.revision_max_chars), self.revision_max_tokens,
                                 1000 * round_index + 3)
        return result, Revision.model_validate(result.value) if result.ok else None
